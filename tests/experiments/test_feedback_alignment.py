"""The feedback-alignment study's pieces against ground truth: the readout control's update is
backprop's output-layer gradient and zero elsewhere; the alignment angle is 0 for backprop, 90 for
the readout control, 0 for FA once its feedback matrices are set to the forward weights (FA with
B = W is backprop), and for FA and DFA it equals the angle computed in NumPy from hand-written
FA / DFA updates of a one-hidden-layer tanh network."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import runner, train

REPO = pathlib.Path(__file__).resolve().parents[2]
N = 24


@pytest.fixture(scope="module")
def study():
    return runner.load_experiment("feedback_alignment", [REPO]).module


def _setup(study, rule, widths=(6,)):
    config = study.Config(rule=rule, widths=widths, angle_examples=N)
    arrays = study.data(config)
    state = study.init(config, jax.random.key(3))
    return config, arrays, state


def _angles(study, state, config, arrays):
    return jax.jit(lambda s: study.alignment_angles(s, config, arrays))(state)


def _np_angle(u, v):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))


def _hand(state, arrays, feedback):
    """The hidden-layer update (W1, b1 flattened) of a 40-H-10 tanh net under ``feedback`` (the
    matrix that replaces W2ᵀ: W2ᵀ itself for backprop), in NumPy."""
    (dense1, _), out = state.params
    W1, b1, W2, b2 = (np.asarray(a, np.float64) for a in (dense1["W"], dense1["b"], out["W"], out["b"]))
    x, y = np.asarray(arrays.x_train[:N], np.float64), np.asarray(arrays.y_train[:N])
    h = np.tanh(x @ W1 + b1)
    logits = h @ W2 + b2
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    e = (p - np.eye(10)[y]) / N
    delta = (e @ feedback) * (1 - h ** 2)
    return np.concatenate([(x.T @ delta).ravel(), delta.sum(0)])


@pytest.mark.parametrize("rule", ["feedback_alignment", "dfa"])
def test_angle_is_the_hand_computed_angle(study, rule):
    config, arrays, state = _setup(study, rule)
    got = _angles(study, state, config, arrays)
    W2 = np.asarray(state.params[1]["W"], np.float64)
    feedback = (np.asarray(state.model_state["layers"][1]["B"], np.float64).T if rule == "feedback_alignment"
                else np.asarray(state.model_state["feedback"][0], np.float64))
    want = _np_angle(_hand(state, arrays, feedback), _hand(state, arrays, W2.T))
    assert 30 < want < 150  # a random feedback matrix: far from the gradient at initialisation
    for name in ("angle", "angle_first", "angle_last"):  # one hidden layer: all three are its angle
        assert float(got[name]) == pytest.approx(want, abs=0.05)


def test_angles_by_construction(study):
    config, arrays, state = _setup(study, "backprop", (6, 5))
    assert all(float(v) < 0.05 for v in _angles(study, state, config, arrays).values())
    config, arrays, state = _setup(study, "readout", (6, 5))
    assert all(float(v) == 90.0 for v in _angles(study, state, config, arrays).values())
    config, arrays, state = _setup(study, "feedback_alignment", (6, 5))
    layers = state.model_state["layers"]
    aligned = {**state.model_state, "layers": (({"B": state.params[0][0]["W"]}, ()),
                                               ({"B": state.params[1][0]["W"]}, ()), {"B": state.params[2]["W"]})}
    assert jax.tree.structure(aligned["layers"]) == jax.tree.structure(layers)
    angles = _angles(study, state._replace(model_state=aligned), config, arrays)
    assert all(float(v) < 0.05 for v in angles.values())
    assert float(_angles(study, state, config, arrays)["angle_first"]) > 30


def test_readout_only_is_the_output_layer_gradient(study):
    config, arrays, state = _setup(study, "readout", (6, 5))
    model = study.model(config)
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)
    batch = (arrays.x_train[:N], arrays.y_train[:N])
    (loss, _), grads = study.readout_only(lambda p: objective(p, state.model_state, batch, None), state.params, None)
    true = jax.grad(lambda p: objective(p, state.model_state, batch, None)[0])(state.params)
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(grads[:-1]))
    np.testing.assert_array_equal(grads[-1]["W"], true[-1]["W"])
    assert float(loss) == pytest.approx(float(train.softmax_cross_entropy(model.apply(state.params, batch[0],
                                                                                      state.model_state), batch[1])))


def test_every_rule_starts_from_the_same_weights(study):
    params = [_setup(study, rule, (6, 5))[2].params for rule in study.RULES]
    for other in params[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(other)))

