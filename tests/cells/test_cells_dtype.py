"""compute_dtype="bfloat16": matmuls/convolutions in bfloat16, parameters and carry in float32."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision import cells
from rnnvision.recurrence import unroll
from rnnvision.testing import prng_key

CASES = {  # name -> (hyper-parameters, one step's input shape); sizes as in test_cells_contract
    "rnn": ({"hidden_size": 4}, (3,)),
    "lstm": ({"hidden_size": 4}, (3,)),
    "gru": ({"hidden_size": 4}, (3,)),
    "conv_lstm": ({"features": 3}, (5, 6, 2)),
    "row_lstm": ({"features": 3, "mask": "B"}, (7, 2)),
}
T = 6


@functools.partial(jax.jit, static_argnums=(2, 3))
def _run_both(params, xs, cell32, cell16):
    """unroll in float32 and in bfloat16 from the same params; one compilation per cell."""
    outs = []
    for cell in (cell32, cell16):
        carry = cell.initial_carry(params, xs[:, 0].shape)
        outs.append(unroll(cell, params, carry, xs))
    return outs



@pytest.mark.parametrize("name", CASES)
def test_bfloat16_close_to_float32_and_state_stays_float32(name):
    hparams, input_shape = CASES[name]
    cell32 = cells.get(name, **hparams)
    cell16 = dataclasses.replace(cell32, compute_dtype="bfloat16")
    params = cell16.init(prng_key(0), input_shape)
    xs = np.random.default_rng(0).standard_normal((2, T, *input_shape), np.float32)
    (c32, y32), (c16, y16) = _run_both(params, xs, cell32, cell16)

    for leaf in jax.tree.leaves((params, c16, y16)):
        assert leaf.dtype == jnp.float32, "bfloat16 compute must keep params, carry and output float32"
    assert jax.tree.structure(c16) == jax.tree.structure(c32)
    # bfloat16 has an 8-bit mantissa (relative rounding 2^-9 per operand); the
    # states are O(1) and a few steps of saturating gates do not amplify it much.
    err = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves((c16, y16)),
                                                             jax.tree.leaves((c32, y32))))
    assert err < 2e-2, f"bfloat16 drifts {err} from float32 over {T} steps"
    # ...and it is really computing in bfloat16 (not silently in float32).
    assert err > 1e-5, "bfloat16 output equals float32: is compute_dtype ignored?"
