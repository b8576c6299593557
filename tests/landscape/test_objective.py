"""Model objectives: chunked dataset means equal direct NumPy means (ragged last chunk included)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import landscape as ls
from jaxlearn import nn
from jaxlearn.landscape.objective import ModelObjective, mse, softmax_cross_entropy


def _numpy_ce(logits, labels):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


@pytest.mark.float64
@pytest.mark.parametrize("batch_size", [None, 4, 50])  # 4: chunks of 4, 4 and a ragged 3
def test_chunked_metrics_equal_direct_means(batch_size):
    model = nn.mlp([5], 4, activation="tanh")
    params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 3), jnp.float64))
    x = jax.random.normal(jax.random.key(1), (11, 3))
    y = jnp.arange(11) % 4
    objective = ModelObjective(model.apply, softmax_cross_entropy, (x, y), batch_size)
    logits = np.asarray(model.apply(params, x))
    metrics = jax.jit(lambda p: ls.dataset_metrics(objective, p))(params)
    np.testing.assert_allclose(metrics["loss"], _numpy_ce(logits, np.asarray(y)).mean(), rtol=1e-13)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(-1) == np.asarray(y)), rtol=1e-13)
    np.testing.assert_allclose(ls.dataset_loss(objective, params), metrics["loss"], rtol=1e-13)


@pytest.mark.float64
def test_mse_per_example_mean_is_train_mse():
    from jaxlearn import train

    out = jax.random.normal(jax.random.key(2), (6, 3))
    target = jax.random.normal(jax.random.key(3), (6, 3))
    objective = ModelObjective(lambda p, x: x * p, mse, (out, target), 4)
    np.testing.assert_allclose(ls.dataset_loss(objective, 1.0), train.mse(out, target), rtol=1e-14)


def test_per_example_losses_are_the_train_ones():
    from jaxlearn import train

    assert ls.softmax_cross_entropy is softmax_cross_entropy is train.per_example_softmax_cross_entropy
    assert ls.mse is mse is train.per_example_mse is train.mse.per_example


def test_bad_objectives():
    x, y = jnp.zeros((4, 2)), jnp.zeros(3, jnp.int32)
    with pytest.raises(ValueError, match="objective.data: x has 4 examples but y has 3"):
        ls.dataset_loss(ModelObjective(lambda p, x: x, softmax_cross_entropy, (x, y)), None)
    with pytest.raises(ValueError, match="per_example_loss must return a scalar per example"):
        ls.dataset_loss(ModelObjective(lambda p, x: x, lambda o, t: o, (x, jnp.zeros(4))), None)
    with pytest.raises(TypeError, match="expected a callable loss_fn"):
        ls.hvp(3.0, {"w": jnp.ones(2)}, {"w": jnp.ones(2)})
