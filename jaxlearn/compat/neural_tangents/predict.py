"""neural-tangents' ``nt.predict`` on :mod:`jaxlearn.kernels.predict`.

``gradient_descent_mse``, ``gp_inference`` and ``gradient_descent_mse_ensemble`` are jaxlearn's
closed forms (the same conventions: ``trace_axes=(-1,)``, time in steps of ``learning_rate``, the
loss ``½·mean``) behind neural-tangents' signatures and return conventions (``fx_train_0=None`` /
``fx_test_0=None`` leave out that set; ``get=None`` means both kinds; tuples come back as the
namedtuple ``Gaussians``). ``gradient_descent`` (any loss) integrates the function-space ODE with
``jax.experimental.ode.odeint``; ``max_learning_rate`` is ``2(1 + momentum)·n / λ_max``.

Kernels must be the ``(N, M)`` matrices of a trace over every output axis (``trace_axes`` covering
all non-batch axes of the targets); kernels with output axes of their own raise
``NotImplementedError``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.experimental.ode import odeint

from jaxlearn import kernels
from jaxlearn.compat.neural_tangents.kernel import canonical_get, pack
from jaxlearn.kernels import Gaussian

__all__ = ["gradient_descent_mse", "gp_inference", "gradient_descent_mse_ensemble", "gradient_descent",
           "max_learning_rate", "ODEState", "Gaussian"]


def _matrix(k, name: str):
    shape = jnp.shape(k)
    if len(shape) != 2:
        raise NotImplementedError(f"{name}: kernels with output axes (shape {shape}; trace_axes not covering every "
                                  f"output axis) are not supported; pass the (N, M) kernel of trace_axes=(-1,)")
    return jnp.asarray(k)


def _check_kernels(*named):
    for value, name in named:
        if value is None:
            continue
        for kind in ("nngp", "ntk"):
            part = value if not hasattr(value, kind) else getattr(value, kind)
            if part is not None and jnp.ndim(part) != 2:
                _matrix(part, name)


def _check_test_inputs(fx_test_0, k_test_train):
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError("predict_fn: k_test_train is needed when fx_test_0 is given (the test outputs)")


def _select(fx_train_t, fx_test_t, fx_train_0, fx_test_0):
    if fx_test_0 is None:
        return fx_train_t
    if fx_train_0 is None:
        return fx_test_t
    return fx_train_t, fx_test_t


def gradient_descent_mse(k_train_train, y_train, learning_rate=1., diag_reg=0., diag_reg_absolute_scale=False,
                         trace_axes=(-1,)):
    """Outputs of a linearized network trained by gradient flow on MSE
    (:func:`jaxlearn.kernels.gradient_descent_mse`). Returns ``predict_fn(t=None, fx_train_0=0.,
    fx_test_0=None, k_test_train=None)``: ``fx_train_t``, or ``(fx_train_t, fx_test_t)`` when
    ``fx_test_0`` is given, or ``fx_test_t`` alone when ``fx_train_0=None``."""
    k = _matrix(k_train_train, "gradient_descent_mse: k_train_train")
    predict = kernels.gradient_descent_mse(k, y_train, learning_rate, diag_reg, diag_reg_absolute_scale)

    def predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None):
        _check_test_inputs(fx_test_0, k_test_train)
        k_test = None if fx_test_0 is None else _matrix(k_test_train, "predict_fn: k_test_train")
        fx_train_t, fx_test_t = predict(t, 0. if fx_train_0 is None else fx_train_0,
                                        0. if fx_test_0 is None else fx_test_0, k_test)
        return _select(fx_train_t, fx_test_t, fx_train_0, fx_test_0)

    return predict_fn


def _gaussians(get):
    names, single = canonical_get(("nngp", "ntk") if get is None else get, "predict_fn")
    return names, single


def _repack(out, names, single):
    values = {names[0]: out} if single else dict(zip(names, out))
    return pack(values, names, single, "Gaussians")


def gp_inference(k_train_train, y_train, diag_reg=0., diag_reg_absolute_scale=False, trace_axes=(-1,)):
    """NNGP / NTK-ensemble / NTK-GP posteriors (:func:`jaxlearn.kernels.gp_inference`). Returns
    ``predict_fn(get=None, k_test_train=None, k_test_test=None)``: per kind the mean, or a
    ``Gaussian(mean, covariance)`` with ``k_test_test``; ``k_test_train=None`` gives the train set
    (``N(y_train, 0)``)."""
    _check_kernels((k_train_train, "gp_inference: k_train_train"))
    predict = kernels.gp_inference(k_train_train, y_train, diag_reg, diag_reg_absolute_scale)
    y = jnp.asarray(y_train)

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        names, single = _gaussians(get)
        if k_test_train is None:  # the train set: the regularised-away posterior N(y_train, 0)
            n = y.shape[0]
            value = (y if k_test_test is None else Gaussian(y, jnp.zeros((n, n), y.dtype)))
            return pack({g: value for g in names}, names, single, "Gaussians")
        _check_kernels((k_test_train, "predict_fn: k_test_train"), (k_test_test, "predict_fn: k_test_test"))
        out = predict(names[0] if single else names, k_test_train, k_test_test)
        return _repack(out, names, single)

    return predict_fn


def _as_kernel_fn(kernel_fn, kwargs):
    """``kernel_fn(x1, x2)`` returning ``.nngp``/``.ntk`` (neural-tangents' ``kernel_fn(x1, x2, get,
    **kwargs)`` with both kinds asked for)."""
    return lambda x1, x2: kernel_fn(x1, x2, ("nngp", "ntk"), **kwargs)


def gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=1., diag_reg=0.0,
                                  diag_reg_absolute_scale=False, trace_axes=(-1,), **kernel_fn_train_train_kwargs):
    """Mean and covariance of the infinite ensemble of infinitely wide networks trained by gradient
    descent on MSE (:func:`jaxlearn.kernels.gradient_descent_mse_ensemble`). Returns
    ``predict_fn(t=None, x_test=None, get=None, compute_cov=False)``; ``get=None`` means
    ``("nngp", "ntk")`` (a namedtuple ``Gaussians``), a string that kind alone."""
    kwargs = dict(kernel_fn_train_train_kwargs)
    predict = kernels.gradient_descent_mse_ensemble(_as_kernel_fn(kernel_fn, kwargs), x_train, y_train,
                                                    learning_rate, diag_reg, diag_reg_absolute_scale)

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_test_test_kwargs):
        if any(k not in kwargs or kernel_fn_test_test_kwargs[k] is not kwargs[k] for k in kernel_fn_test_test_kwargs):
            raise NotImplementedError(f"predict_fn: kernel_fn keyword arguments {sorted(kernel_fn_test_test_kwargs)} "
                                      f"that differ from the train-train ones are not supported")
        names, single = _gaussians(get)
        out = predict(t, x_test, names[0] if single else names, compute_cov)
        return _repack(out, names, single)

    return predict_fn


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ODEState:
    """The state of :func:`gradient_descent`'s ODE: outputs and (with momentum) their velocities."""
    fx_train: jax.Array | None = None
    fx_test: jax.Array | None = None
    qx_train: jax.Array | None = None
    qx_test: jax.Array | None = None


def gradient_descent(loss, k_train_train, y_train, learning_rate=1., momentum=None, trace_axes=(-1,)):
    """Function-space gradient descent on any ``loss(fx, y_hat)`` of a linearized network with NTK
    ``k_train_train`` (Lee et al. 2019, §2.2): ``dfx/dt = −Θ·∇_f loss`` (rows of the test set use
    ``k_test_train``), integrated by ``jax.experimental.ode.odeint`` in units of ``learning_rate``.
    With ``momentum`` the ODE is second order, ``d²f/dt² = −Θ·∇loss + (momentum − 1)/√η · df/dt``, in
    units of ``√learning_rate``. Returns ``predict_fn(t, fx_train_or_state_0=0., fx_test_0=None,
    k_test_train=None)``; ``t`` (a scalar or an increasing array) must be finite."""
    k = _matrix(k_train_train, "gradient_descent: k_train_train")
    y = jnp.asarray(y_train)
    grad_loss = jax.grad(lambda fx: loss(fx, y))
    scale = learning_rate if momentum is None else learning_rate ** 0.5
    friction = None if momentum is None else (momentum - 1.0) / scale

    def velocity(k_rows, g):  # −Θ·∇loss, Θ acting on the example axis of every output column
        return -jnp.tensordot(k_rows, g, (1, 0))

    def dstate_dt(state, _t, k_test):
        g = grad_loss(state.fx_train)
        d_train = velocity(k, g)
        d_test = None if state.fx_test is None else velocity(k_test, g)
        if friction is None:
            return ODEState(d_train, d_test)
        a_train = d_train + friction * state.qx_train
        a_test = None if d_test is None else d_test + friction * state.qx_test
        return ODEState(state.qx_train, state.qx_test, a_train, a_test)

    def initial_state(fx_train_or_state_0, fx_test_0, k_test):
        if isinstance(fx_train_or_state_0, ODEState):
            s = fx_train_or_state_0
            fx_train_0, fx_test_0, q_train, q_test = s.fx_train, s.fx_test, s.qx_train, s.qx_test
        else:
            fx_train_0, q_train, q_test = fx_train_or_state_0, None, None
        fx_train = jnp.broadcast_to(0. if fx_train_0 is None else fx_train_0, y.shape).astype(k.dtype)
        test_shape = None if k_test is None else (k_test.shape[0],) + y.shape[1:]
        fx_test = None if fx_test_0 is None else jnp.broadcast_to(fx_test_0, test_shape).astype(k.dtype)
        if friction is None:
            if q_train is not None or q_test is not None:
                raise ValueError("predict_fn: momentum state variables given, but momentum is None")
            return ODEState(fx_train, fx_test)
        q_train = jnp.zeros_like(fx_train) if q_train is None else jnp.broadcast_to(q_train, y.shape)
        q_test = None if fx_test is None else (jnp.zeros_like(fx_test) if q_test is None
                                               else jnp.broadcast_to(q_test, test_shape))
        return ODEState(fx_train, fx_test, q_train, q_test)

    def predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None):
        if t is None:
            raise ValueError("predict_fn: t=None (t → ∞) cannot be integrated; pass finite times (for MSE, "
                             "gradient_descent_mse has the t → ∞ limit in closed form)")
        _check_test_inputs(fx_test_0, k_test_train)
        k_test = None if k_test_train is None else _matrix(k_test_train, "predict_fn: k_test_train")
        times = jnp.asarray(t, k.dtype) * scale
        flat = times.reshape(-1)
        # odeint starts at its first time: prepend 0 (or a time just before it if the first is 0).
        start = jnp.where(flat[0] == 0, -1e-24, 0.).astype(k.dtype)[None]
        state_0 = initial_state(fx_train_or_state_0, fx_test_0, k_test)
        states = odeint(lambda s, tt: dstate_dt(s, tt, k_test), state_0, jnp.concatenate([start, flat]))
        states = jax.tree.map(lambda a: a[1:].reshape(times.shape + a.shape[1:]), states)
        if isinstance(fx_train_or_state_0, ODEState):
            return states
        return _select(states.fx_train, states.fx_test, fx_train_or_state_0, fx_test_0)

    return predict_fn


def _zipped_to_2d(k):
    """``(N1, N2, O1, O2, …)`` (pairs interleaved) as the matrix ``(N1·O1·…, N2·O2·…)``."""
    k = jnp.asarray(k)
    if k.ndim % 2:
        raise ValueError(f"max_learning_rate: expected a kernel with pairs of axes, got shape {k.shape}")
    k = jnp.transpose(k, tuple(range(0, k.ndim, 2)) + tuple(range(1, k.ndim, 2)))
    half = k.ndim // 2
    return k.reshape(math.prod(k.shape[:half]), math.prod(k.shape[half:]))


def max_learning_rate(ntk_train_train, y_train_size=None, momentum=0., eps=1e-12):
    """The largest learning rate for which full-batch gradient descent (with momentum) on
    ``½·mean`` squared error is stable for the linearized network: ``2(1 + momentum)·n / (λ_max + eps)``,
    ``n = y_train_size`` (default: the kernel's number of rows), ``λ_max`` the top eigenvalue of the NTK
    (Lee et al. 2019, §2.3; Goh 2017, "Why momentum really works")."""
    k = _zipped_to_2d(ntk_train_train)
    factor = k.shape[0] if y_train_size is None else y_train_size
    lam = jnp.linalg.eigvalsh(k)[-1]
    return 2 * (1 + momentum) * factor / (lam + eps)
