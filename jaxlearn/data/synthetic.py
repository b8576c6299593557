"""Synthetic datasets with known ground truth: modular arithmetic, teacher-student networks,
sparse parity, and Gaussian / sinusoid regression.

All sampling is host-side numpy. Where a dataset has several random parts (the hidden rule,
the train inputs, the test inputs, the label noise) each part draws from its own child of
``np.random.SeedSequence(seed)``, so for a fixed seed the rule and the test set do not change
when ``n_train`` does — a learning curve over ``n_train`` then shares one teacher and one test
set, and the smaller training set is a prefix of the larger one.
"""
from __future__ import annotations

import math

import numpy as np

from jaxlearn._checks import check_choice, check_int, check_real
from jaxlearn.data.dataset import Dataset, split_sizes

MODULAR_OPS = ("+", "-", "*", "/", "x2+xy+y2")
TEACHER_ACTIVATIONS = ("relu", "tanh", "linear")


def _streams(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _is_prime(p: int) -> bool:
    if p < 2:
        return False
    return all(p % d for d in range(2, math.isqrt(p) + 1))


def modular_arithmetic(p: int = 97, op: str = "+", train_fraction: float = 0.5,
                       seed: int = 0) -> Dataset:
    """Binary operation tables modulo ``p``: the algorithmic tasks of Power et al. 2022,
    "Grokking: generalization beyond overfitting on small algorithmic datasets".

    Every pair ``(a, b)`` in ``[0, p)^2`` is one example with label ``c``:

    ======================  =============================================
    ``op``                  ``c``
    ======================  =============================================
    ``"+"``                 ``(a + b) mod p``
    ``"-"``                 ``(a - b) mod p``
    ``"*"``                 ``(a * b) mod p``
    ``"/"``                 ``a * b^{-1} mod p``, pairs with ``b = 0`` left out
    ``"x2+xy+y2"``          ``(a^2 + a b + b^2) mod p``
    ======================  =============================================

    so there are ``p^2`` examples (``p (p - 1)`` for ``"/"``). They are shuffled by
    ``np.random.default_rng(seed)`` and the first ``round(train_fraction * N)`` form the train
    split, the rest the test split.

    Args:
      p: modulus, an integer >= 2; for ``"/"`` it must be prime (so every ``b != 0`` has an
        inverse).
      op: one of ``"+", "-", "*", "/", "x2+xy+y2"``.
      train_fraction: share of all pairs used for training, in (0, 1).
      seed: shuffling seed.

    Returns:
      ``Dataset`` with ``x`` int32 ``(n, 2)`` tokens ``(a, b)``, ``y`` int32 ``(n,)``,
      ``num_classes=p``, name ``"modular_arithmetic"``. Models embed the two tokens (the
      equals sign of the original sequence format carries no information and is omitted).

    Examples:
        >>> from jaxlearn import data
        >>> ds = data.modular_arithmetic(p=5, op="+", train_fraction=0.6, seed=0)
        >>> ds.num_train + ds.num_test, ds.x_train.dtype.name, ds.num_classes
        (25, 'int32', 5)
        >>> bool(((ds.x_train[:, 0] + ds.x_train[:, 1]) % 5 == ds.y_train).all())
        True
    """
    p = check_int(p, "p", minimum=2, where="modular_arithmetic", noun="integer")
    op = check_choice(op, "op", MODULAR_OPS, where="modular_arithmetic")
    train_fraction = check_real(train_fraction, "train_fraction", minimum=0, maximum=1, open_minimum=True,
                                open_maximum=True, where="modular_arithmetic")
    seed = check_int(seed, "seed", minimum=0, where="modular_arithmetic", noun="integer")
    if op == "/" and not _is_prime(p):
        raise ValueError(f"p must be prime for op '/', got p={p}")

    a, b = (g.ravel() for g in np.meshgrid(np.arange(p, dtype=np.int64),
                                          np.arange(p, dtype=np.int64), indexing="ij"))
    if op == "+":
        c = a + b
    elif op == "-":
        c = a - b
    elif op == "*":
        c = a * b
    elif op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
        inverse = np.array([0] + [pow(v, -1, p) for v in range(1, p)], dtype=np.int64)
        c = a * inverse[b]
    else:
        c = a * a + a * b + b * b
    c = np.mod(c, p)

    x = np.stack([a, b], axis=1).astype(np.int32)
    y = c.astype(np.int32)
    n_train = split_sizes("train_fraction", train_fraction, len(y))
    perm = np.random.default_rng(seed).permutation(len(y))
    train, test = perm[:n_train], perm[n_train:]
    return Dataset(x[train], y[train], x[test], y[test], num_classes=p,
                   name="modular_arithmetic")


def teacher_student(seed: int = 0, n_train: int = 1000, n_test: int = 1000, d_in: int = 10,
                    hidden: int = 64, d_out: int = 1, activation: str = "relu",
                    noise_std: float = 0.0) -> Dataset:
    """Regression on the outputs of a random two-layer teacher network.

    ``x ~ N(0, I_{d_in})`` and, with ``W1 (d_in, hidden)``, ``W2 (hidden, d_out)`` having
    i.i.d. ``N(0, 1)`` entries (standard/NTK scaling, so targets are O(1) at any width)::

        y = phi(x @ W1 / sqrt(d_in)) @ W2 / sqrt(hidden),   phi in {relu, tanh}
        y = x @ W / sqrt(d_in)                              activation="linear" (hidden unused)

    Training targets get i.i.d. ``N(0, noise_std^2)`` noise; test targets are noise-free, so
    the test MSE is the excess risk. The teacher is computed in float64 from the stored float32
    inputs. The teacher, train inputs, test inputs and noise come from separate seed streams
    (see the module docstring).

    Returns:
      ``Dataset`` with ``x`` float32 ``(n, d_in)``, ``y`` float32 ``(n, d_out)``,
      ``num_classes=None``, name ``"teacher_student"``.

    Examples:
        >>> from jaxlearn import data
        >>> ds = data.teacher_student(seed=0, n_train=100, n_test=20, d_in=4, hidden=8)
        >>> ds.x_train.shape, ds.y_train.shape, ds.num_classes
        ((100, 4), (100, 1), None)
    """
    seed = check_int(seed, "seed", minimum=0, where="teacher_student", noun="integer")
    n_train = check_int(n_train, "n_train", minimum=1, where="teacher_student", noun="integer")
    n_test = check_int(n_test, "n_test", minimum=1, where="teacher_student", noun="integer")
    d_in = check_int(d_in, "d_in", minimum=1, where="teacher_student", noun="integer")
    hidden = check_int(hidden, "hidden", minimum=1, where="teacher_student", noun="integer")
    d_out = check_int(d_out, "d_out", minimum=1, where="teacher_student", noun="integer")
    activation = check_choice(activation, "activation", TEACHER_ACTIVATIONS, where="teacher_student")
    noise_std = check_real(noise_std, "noise_std", minimum=0, where="teacher_student")

    teacher_rng, train_rng, test_rng, noise_rng = _streams(seed, 4)
    if activation == "linear":
        w = teacher_rng.standard_normal((d_in, d_out))

        def teacher(x):
            return x @ w / math.sqrt(d_in)
    else:
        w1 = teacher_rng.standard_normal((d_in, hidden))
        w2 = teacher_rng.standard_normal((hidden, d_out))
        phi = (lambda h: np.maximum(h, 0.0)) if activation == "relu" else np.tanh

        def teacher(x):
            return phi(x @ w1 / math.sqrt(d_in)) @ w2 / math.sqrt(hidden)

    return _regression(teacher, train_rng.standard_normal((n_train, d_in)),
                       test_rng.standard_normal((n_test, d_in)), noise_rng, noise_std,
                       "teacher_student")


def gaussian_regression(seed: int = 0, n_train: int = 1000, n_test: int = 1000, d_in: int = 10,
                        noise_std: float = 0.0) -> Dataset:
    """Noisy linear regression with isotropic Gaussian inputs.

    ``x ~ N(0, I_d)``, ``w* ~ N(0, I_d)``, ``y = x @ w* / sqrt(d) + eps`` with
    ``eps ~ N(0, noise_std^2)`` on training targets only (test targets are noise-free, so the
    test MSE is the excess risk; add ``noise_std^2`` for the risk on noisy targets). This is
    the setting of the ridgeless double-descent analyses (e.g. Hastie et al. 2022, "Surprises
    in high-dimensional ridgeless least squares interpolation"). ``w*``, train inputs, test
    inputs and noise come from separate seed streams (see the module docstring).

    Returns:
      ``Dataset`` with ``x`` float32 ``(n, d_in)``, ``y`` float32 ``(n, 1)``,
      ``num_classes=None``, name ``"gaussian_regression"``.
    """
    seed = check_int(seed, "seed", minimum=0, where="gaussian_regression", noun="integer")
    n_train = check_int(n_train, "n_train", minimum=1, where="gaussian_regression", noun="integer")
    n_test = check_int(n_test, "n_test", minimum=1, where="gaussian_regression", noun="integer")
    d_in = check_int(d_in, "d_in", minimum=1, where="gaussian_regression", noun="integer")
    noise_std = check_real(noise_std, "noise_std", minimum=0, where="gaussian_regression")

    teacher_rng, train_rng, test_rng, noise_rng = _streams(seed, 4)
    w_star = teacher_rng.standard_normal((d_in, 1))
    return _regression(lambda x: x @ w_star / math.sqrt(d_in),
                       train_rng.standard_normal((n_train, d_in)),
                       test_rng.standard_normal((n_test, d_in)), noise_rng, noise_std,
                       "gaussian_regression")


def sinusoid_regression(seed: int = 0, n_train: int = 100, n_test: int = 100,
                        noise_std: float = 0.0, x_range: tuple[float, float] = (-math.pi, math.pi),
                        frequency: float = 1.0) -> Dataset:
    """One-dimensional regression of ``y = sin(frequency * x)``.

    ``x ~ Uniform(x_range)`` independently for train and test; training targets get i.i.d.
    ``N(0, noise_std^2)`` noise, test targets are noise-free. A standard probe of spectral bias
    (higher ``frequency`` is learned later) and of kernel regression in one dimension.

    Returns:
      ``Dataset`` with ``x`` float32 ``(n, 1)``, ``y`` float32 ``(n, 1)``,
      ``num_classes=None``, name ``"sinusoid_regression"``.
    """
    seed = check_int(seed, "seed", minimum=0, where="sinusoid_regression", noun="integer")
    n_train = check_int(n_train, "n_train", minimum=1, where="sinusoid_regression", noun="integer")
    n_test = check_int(n_test, "n_test", minimum=1, where="sinusoid_regression", noun="integer")
    noise_std = check_real(noise_std, "noise_std", minimum=0, where="sinusoid_regression")
    frequency = check_real(frequency, "frequency", where="sinusoid_regression")
    try:
        low, high = (check_real(v, "x_range", where="sinusoid_regression") for v in x_range)
    except (TypeError, ValueError):
        raise ValueError(f"x_range must be a pair (low, high) of finite numbers, "
                         f"got {x_range!r}") from None
    if not low < high:
        raise ValueError(f"x_range must satisfy low < high, got {x_range!r}")

    _, train_rng, test_rng, noise_rng = _streams(seed, 4)
    return _regression(lambda x: np.sin(frequency * x),
                       train_rng.uniform(low, high, (n_train, 1)),
                       test_rng.uniform(low, high, (n_test, 1)), noise_rng, noise_std,
                       "sinusoid_regression")


def _regression(target_fn, x_train, x_test, noise_rng, noise_std, name) -> Dataset:
    # Targets are computed from the float32 inputs actually stored, so the stored (x, y) obey
    # the rule up to the float32 rounding of y alone.
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    y_train = target_fn(x_train.astype(np.float64))
    y_test = target_fn(x_test.astype(np.float64))
    y_train = y_train + noise_std * noise_rng.standard_normal(y_train.shape)
    return Dataset(x_train, y_train.astype(np.float32), x_test, y_test.astype(np.float32),
                   num_classes=None, name=name)


def sparse_parity(n_bits: int = 20, k: int = 3, n_train: int = 1000, n_test: int = 1000,
                  seed: int = 0) -> Dataset:
    """The (n, k)-sparse parity problem (Barak et al. 2022, "Hidden progress in deep learning:
    SGD learns parities near the computational limit").

    ``x`` is uniform on ``{-1, +1}^n_bits``; a hidden support ``S`` of ``k`` distinct
    coordinates is drawn from ``seed``; the label is the parity of the bits of ``S`` read as
    0/1 with ``-1 -> 1``: ``y = 1 if prod_{i in S} x_i == -1 else 0``. ``S`` is not stored:
    it is the unique ``k``-subset consistent with enough labels. The support, train inputs and
    test inputs come from separate seed streams (see the module docstring).

    Returns:
      ``Dataset`` with ``x`` float32 ``(n, n_bits)`` in {-1, +1}, ``y`` int32 ``(n,)`` in
      {0, 1}, ``num_classes=2``, name ``"sparse_parity"``.

    Examples:
        >>> from jaxlearn import data
        >>> ds = data.sparse_parity(n_bits=8, k=3, n_train=16, n_test=4, seed=0)
        >>> ds.x_train.shape, ds.num_classes
        ((16, 8), 2)
    """
    n_bits = check_int(n_bits, "n_bits", minimum=1, where="sparse_parity", noun="integer")
    k = check_int(k, "k", minimum=1, where="sparse_parity", noun="integer")
    if k > n_bits:
        raise ValueError(f"k must be <= n_bits={n_bits}, got k={k}")
    n_train = check_int(n_train, "n_train", minimum=1, where="sparse_parity", noun="integer")
    n_test = check_int(n_test, "n_test", minimum=1, where="sparse_parity", noun="integer")
    seed = check_int(seed, "seed", minimum=0, where="sparse_parity", noun="integer")

    support_rng, train_rng, test_rng = _streams(seed, 3)
    support = support_rng.choice(n_bits, size=k, replace=False)

    def sample(rng, n):
        x = (1 - 2 * rng.integers(0, 2, size=(n, n_bits))).astype(np.float32)
        y = (np.prod(x[:, support], axis=1) < 0).astype(np.int32)
        return x, y

    x_train, y_train = sample(train_rng, n_train)
    x_test, y_test = sample(test_rng, n_test)
    return Dataset(x_train, y_train, x_test, y_test, num_classes=2, name="sparse_parity")
