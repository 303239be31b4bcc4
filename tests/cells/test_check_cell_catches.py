"""check_cell fails, with a message naming the property, on cells that break the contract."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import pytest

from rnnvision.cells import SimpleRNNCell
from rnnvision.testing import check_cell

# Every broken cell is a SimpleRNNCell of this size with one thing wrong.
H, INPUT = 4, (3,)


@dataclasses.dataclass(frozen=True)
class ProjectionMismatch(SimpleRNNCell):
    """step does more than step_projected(project_inputs(x)) (unroll would skip it)."""

    def step(self, params, h, x):
        return super().step(params, h, 2.0 * x)


@dataclasses.dataclass(frozen=True)
class CarryDtypeDrift(SimpleRNNCell):
    """The carry comes back in a different dtype (lax.scan would refuse it)."""

    def step_projected(self, params, h, px):
        h, y = super().step_projected(params, h, px)
        return h.astype(jnp.bfloat16), y


@dataclasses.dataclass(frozen=True)
class WrongOutputShape(SimpleRNNCell):
    """output_shape promises H features; step returns 2H."""

    def output_shape(self, input_shape):
        return (self.hidden_size,)

    def step_projected(self, params, h, px):
        h, y = super().step_projected(params, h, px)
        return h, jnp.concatenate([y, y], axis=-1)


_calls = itertools.count()


@dataclasses.dataclass(frozen=True)
class Impure(SimpleRNNCell):
    """Reads Python state that changes between calls (baked into each trace)."""

    def step_projected(self, params, h, px):
        return super().step_projected(params, h, px + next(_calls))


@jax.custom_vjp
def _tanh_with_wrong_gradient(x):
    return jnp.tanh(x)


_tanh_with_wrong_gradient.defvjp(lambda x: (jnp.tanh(x), x),
                                 lambda x, g: (1.1 * g * (1 - jnp.tanh(x) ** 2),))


@dataclasses.dataclass(frozen=True)
class WrongGradient(SimpleRNNCell):
    """Right values, gradients 10% too large (as a hand-written backward pass might be)."""

    def step_projected(self, params, h, px):
        h = _tanh_with_wrong_gradient(px + self.matmul(h, params["w_h"]))
        return h, h


@dataclasses.dataclass(frozen=True)
class Unhashable(SimpleRNNCell):
    """A list hyper-parameter: jit cannot take the cell as a static argument."""

    widths: list = dataclasses.field(default_factory=lambda: [1, 2])


@pytest.mark.parametrize("cls, message", [
    (ProjectionMismatch, "step_projected"),
    (CarryDtypeDrift, "carry"),
    (WrongOutputShape, "output_shape"),
    (Impure, "Python state"),
    (WrongGradient, "finite differences"),
    (Unhashable, "hashable"),
])
def test_check_cell_rejects(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_cell(cls(hidden_size=H), INPUT)
