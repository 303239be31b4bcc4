"""The base `Cell`'s defaults, used by a new cell that implements `step` only."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnvision.cells.base import Cell


@dataclasses.dataclass(frozen=True)
class LeakyIntegrator(Cell):
    """h' = decay * h + x @ w, y = h': a user's cell that defines only `step`."""

    decay: float = 0.5

    def init(self, key, input_shape):
        return {"w": jnp.arange(6.0).reshape(input_shape[-1], 2)}

    def initial_carry(self, params, x_shape):
        return jnp.zeros((*x_shape[:-1], 2))

    def step(self, params, h, x):
        h = self.decay * h + x @ params["w"]
        return h, h


@dataclasses.dataclass(frozen=True)
class NoStep(Cell):
    pass


def test_a_step_only_cell_gets_project_inputs_and_step_projected():
    cell = LeakyIntegrator(decay=0.25)
    params = cell.init(None, (3,))
    x = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    h = np.array([[4.0, -8.0], [1.0, 2.0]])
    expected = 0.25 * h + x @ np.arange(6.0).reshape(3, 2)  # by hand, outside the cell
    px = cell.project_inputs(params, x)
    np.testing.assert_array_equal(px, x)  # the identity
    new_h, y = cell.step_projected(params, jnp.asarray(h), px)
    np.testing.assert_allclose(new_h, expected, rtol=1e-6)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert cell.output_shape((3,)) == (2,)


def test_a_cell_without_step_or_step_projected_names_itself():
    cell = NoStep()
    with pytest.raises(NotImplementedError, match="NoStep must define step or step_projected"):
        cell.step_projected({}, jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(NotImplementedError, match="NoStep must define step or step_projected"):
        cell.step({}, jnp.zeros(2), jnp.zeros(2))


def test_hparams_are_the_dataclass_fields():
    assert LeakyIntegrator(decay=0.75).hparams() == {"compute_dtype": "float32", "decay": 0.75}
    assert LeakyIntegrator(compute_dtype="bfloat16").hparams() == {
        "compute_dtype": "bfloat16", "decay": 0.5}


def test_an_unknown_compute_dtype_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"compute_dtype='int8'; allowed: \('float32', 'bfloat16'"):
        LeakyIntegrator(compute_dtype="int8")


def test_matmul_rounds_the_operands_to_compute_dtype_and_accumulates_in_float32():
    """bfloat16 keeps 8 significant bits: 1 + 2^-10 rounds to 1, while 2^-8 is exact.
    The products are summed in float32 (and returned as float32), so 1 + 3 * 2^-8 comes
    back exactly; a bfloat16 sum would round it to 1 + 2^-6 (= 1 + 4 * 2^-8). With
    jax_enable_x64 on, float32 stays float32 and float64 compute gives float64."""
    bf16, f32 = LeakyIntegrator(compute_dtype="bfloat16"), LeakyIntegrator()
    ones = np.ones((4, 1), np.float32)
    y = bf16.matmul(np.array([[1.0, 2.0**-8, 2.0**-8, 2.0**-8]], np.float32), ones)
    assert y.dtype == jnp.float32 and float(y[0, 0]) == 1.0 + 3 * 2.0**-8
    x = np.array([[1.0 + 2.0**-10, 0.0, 0.0, 0.0]], np.float32)
    assert float(bf16.matmul(x, ones)[0, 0]) == 1.0  # x rounded
    assert float(bf16.matmul(np.ones((1, 4), np.float32), x.T)[0, 0]) == 1.0  # w rounded
    assert float(f32.matmul(x, ones)[0, 0]) == 1.0 + 2.0**-10
    with jax.enable_x64(True):
        for cell, dtype in [(bf16, jnp.float32), (f32, jnp.float32),
                            (LeakyIntegrator(compute_dtype="float64"), jnp.float64)]:
            out = cell.matmul(x, ones)
            assert out.dtype == dtype, (cell.compute_dtype, out.dtype)
        exact = LeakyIntegrator(compute_dtype="float64").matmul(
            np.array([[1.0, 2.0**-40]]), np.ones((2, 1)))
        assert exact.dtype == jnp.float64 and float(exact[0, 0]) == 1.0 + 2.0**-40
