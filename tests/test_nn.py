"""rnnvision.nn: cells inside flax.linen models."""

import doctest

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnvision.nn
from rnnvision import cells
from rnnvision.nn import RNN, CellModule
from rnnvision.recurrence import unroll
from rnnvision.testing import prng_key

B, T, I, H = 32, 6, 3, 4


class Classifier(nn.Module):
    """An RNN over the sequence, then a linear read-out of its last output."""

    cell: cells.Cell

    @nn.compact
    def __call__(self, xs):
        _, ys = RNN(self.cell, name="encoder")(xs)
        return nn.Dense(2, name="head")(ys[:, -1])


MODEL = Classifier(cells.get("gru", hidden_size=H))
init_model = jax.jit(MODEL.init)  # one compilation, shared by the tests below


def _xs(seed=0, shape=(B, T, I)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_params_live_under_the_module_name():
    params = init_model(prng_key(0), _xs())["params"]
    assert set(params) == {"encoder", "head"}
    expected = jax.eval_shape(lambda k: MODEL.cell.init(k, (I,)), prng_key(0))
    assert jax.tree.map(jnp.shape, params["encoder"]["cell"]) == jax.tree.map(jnp.shape, expected)


def test_a_flax_model_with_an_rnn_trains():
    """Label: is the first step's mean positive? The RNN must carry it to the last step."""
    xs = _xs(seed=1)
    labels = (xs[:, 0].mean(axis=-1) > 0).astype(np.int32)
    params = init_model(prng_key(0), xs)["params"]
    optimizer = optax.adam(3e-2)

    @jax.jit
    def train_step(params, opt_state):
        def loss_fn(params):
            logits = MODEL.apply({"params": params}, xs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    losses = []
    for _ in range(30):
        params, opt_state, loss = train_step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses  # from ~0.72 (chance) to ~0.35


def test_rnn_and_cell_module_equal_the_functional_cell():
    cell = cells.get("lstm", hidden_size=H)
    params = cell.init(prng_key(0), (I,))
    variables = {"params": {"cell": params}}  # the layout RNN and CellModule create
    xs = _xs(shape=(4, T, I))
    resets = np.zeros((4, T), bool)
    resets[:, 3] = True
    rnn = RNN(cell, truncation=2, reverse=True)

    @jax.jit
    def both(params, xs):
        carry0 = jax.tree.map(lambda c: c + 0.3, cell.initial_carry(params, xs[:, 0].shape))
        first = CellModule(cell).apply(variables, None, xs[:, 0])
        return ((rnn.apply(variables, xs, carry=carry0, resets=resets),
                 CellModule(cell).apply(variables, first[0], xs[:, 1])),
                (unroll(cell, params, carry0, xs, truncation=2, reverse=True, resets=resets),
                 cell.step(params, first[0], xs[:, 1])))

    ours, reference = both(params, xs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # eager Flax init/apply compile op by op: several seconds on CPU
def test_docstring_examples_run():
    result = doctest.testmod(rnnvision.nn)
    assert result.attempted > 0 and result.failed == 0
