"""A stack of cells run as one cell (multi-layer recurrence, optional residuals)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Cell


@dataclasses.dataclass(frozen=True)
class StackedCell(Cell):
    """Layers of cells; layer l's output is layer l+1's input at the same step.

    y^0_t = x_t;  (carry^l_t, y^l_t) = cell_l.step(params[l], carry^l_{t-1}, y^{l-1}_t)
    With `residual=True`, y^l_t += y^{l-1}_t wherever their shapes agree.

    Parameters: a tuple, one entry per layer. Carry: a tuple of the layers'
    carries. Output: the last layer's output. Only the first layer's input
    projection is hoisted out of the time loop (the others depend on the step).

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> cell = rnnvision.cells.stack("gru", num_layers=2, residual=True, hidden_size=8)
      >>> params = cell.init(jax.random.key(0), (8,))
      >>> carry = cell.initial_carry(params, (3, 8))
      >>> carry, y = cell.step(params, carry, jnp.ones((3, 8)))
      >>> y.shape
      (3, 8)
    """

    cells: tuple[Cell, ...] = ()
    residual: bool = False

    def validate(self):
        if not self.cells or not all(isinstance(c, Cell) for c in self.cells):
            raise ValueError(f"cells={self.cells!r} must be a non-empty tuple of Cells")

    def _input_shapes(self, input_shape):
        shapes = [tuple(input_shape)]
        for cell in self.cells[:-1]:
            shapes.append(cell.output_shape(shapes[-1]))
        return shapes

    def init(self, key, input_shape):
        keys = jax.random.split(key, len(self.cells))
        shapes = self._input_shapes(input_shape)
        return tuple(c.init(k, s) for c, k, s in zip(self.cells, keys, shapes))

    def initial_carry(self, params, x_shape):
        # Layer l+1's input shape is layer l's output shape with the same batch dims
        # (any number of them), found by tracing layer l's step for shapes only.
        shape, carries = tuple(x_shape), []
        for cell, p in zip(self.cells, params):
            carry = cell.initial_carry(p, shape)
            carries.append(carry)
            _, y = jax.eval_shape(cell.step, p, carry, jax.ShapeDtypeStruct(shape, jnp.float32))
            shape = tuple(y.shape)
        return tuple(carries)

    def project_inputs(self, params, x):
        return (x, self.cells[0].project_inputs(params[0], x))

    def step_projected(self, params, carry, px):
        x, y = px[0], None
        new = []
        for l, (cell, p, c) in enumerate(zip(self.cells, params, carry)):
            c, y = cell.step_projected(p, c, px[1]) if l == 0 else cell.step(p, c, x)
            if self.residual and y.shape == x.shape:
                y = y + x
            new.append(c)
            x = y
        return tuple(new), y
