"""The base `Cell`'s defaults, used by a new cell that implements `step` only."""

from __future__ import annotations

import dataclasses

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
