"""The dtype policy holds with jax_enable_x64 on: parameters, carry and output stay float32.

With x64 on, JAX's defaults turn float64 (jnp.zeros(shape), the initializers), so a
cell that leaves a dtype to the default would store float64 parameters or state
there. Shapes only (jax.eval_shape): nothing is compiled.
"""

import jax
import jax.numpy as jnp
import pytest

from rnnvision import cells

CASES = {  # name -> (hyper-parameters, one step's input shape)
    "rnn": ({"hidden_size": 4}, (3,)),
    "lstm": ({"hidden_size": 4}, (3,)),
    "gru": ({"hidden_size": 4}, (3,)),
    "conv_lstm": ({"features": 3}, (5, 6, 2)),
    "row_lstm": ({"features": 3, "mask": "A"}, (7, 2)),
}


@pytest.mark.parametrize("name", CASES)
def test_params_carry_and_output_stay_float32_under_x64(name):
    hparams, input_shape = CASES[name]
    cell = cells.get(name, **hparams)
    with jax.enable_x64(True):
        params = jax.eval_shape(lambda key: cell.init(key, input_shape), jax.random.key(0))
        x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
        carry = jax.eval_shape(lambda p: cell.initial_carry(p, x.shape), params)
        new_carry, y = jax.eval_shape(cell.step, params, carry, x)
    for what, tree in (("params", params), ("carry", carry), ("new carry", new_carry), ("y", y)):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            assert leaf.dtype == jnp.float32, f"{name}: {what}{jax.tree_util.keystr(path)} is {leaf.dtype}"
