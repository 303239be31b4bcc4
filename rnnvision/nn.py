"""Flax (linen) adapters: a functional cell inside a `flax.linen` model.

The cell's parameters become one entry, "cell", of the module's parameters, so
they live in the Flax variable tree under the module's name, are initialised by
`model.init` and trained like any other Flax parameter:

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, images):                      # (B, rows, cols)
            _, ys = RNN(rnnvision.cells.get("lstm", hidden_size=128), name="rnn")(images)
            return nn.Dense(10)(ys[:, -1])               # variables["params"]["rnn"]["cell"]

Shape legend: B batch, T time, F... one step's features.
"""

from __future__ import annotations

import flax.linen as nn

from rnnvision import recurrence
from rnnvision.cells.base import Array, Carry, Cell


class CellModule(nn.Module):
    """One step of `cell` as a Flax module: (carry, x (B, *F)) -> (carry, y (B, *F_out)).

    The parameters are created on the first call from x's shape (without the
    batch dim) with `cell.init`; `carry=None` starts from `cell.initial_carry`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> step = CellModule(rnnvision.cells.get("gru", hidden_size=8))
      >>> x = jnp.ones((2, 3))
      >>> variables = step.init(jax.random.key(0), None, x)
      >>> sorted(variables["params"]["cell"])
      ['b_h', 'b_x', 'w_h', 'w_x']
      >>> carry, y = step.apply(variables, None, x)
      >>> carry, y = step.apply(variables, carry, x)
      >>> y.shape
      (2, 8)
    """

    cell: Cell

    @nn.compact
    def __call__(self, carry: Carry | None, x: Array) -> tuple[Carry, Array]:
        params = self.param("cell", lambda key: self.cell.init(key, x.shape[1:]))
        if carry is None:
            carry = self.cell.initial_carry(params, x.shape)
        return self.cell.step(params, carry, x)


class RNN(nn.Module):
    """`cell` unrolled over a batch-major sequence with `rnnvision.recurrence.unroll`.

    Call: (xs (B, T, *F), carry=None, mask=None, resets=None) -> (carry, ys (B, T, *F_out)).
    `carry=None` starts from `cell.initial_carry`; mask and resets are (B, T)
    booleans (see `recurrence.unroll`). Pass the returned carry back in to
    continue a sequence across calls.

    Attributes:
      cell: the functional cell; its parameters are this module's "cell" param.
      truncation: truncated BPTT window k (None: full backpropagation through time).
      remat: gradient checkpointing (True: ~sqrt(T) chunks; an int: chunk length).
      reverse: process the sequence from its end (ys stay in time order).
      unroll: lax.scan's loop-unrolling factor (None: automatic, see recurrence.unroll).

    Example:
      >>> import jax, jax.numpy as jnp, rnnvision
      >>> model = RNN(rnnvision.cells.get("lstm", hidden_size=8))
      >>> xs = jnp.ones((2, 5, 3))                     # (B, T, I)
      >>> variables = model.init(jax.random.key(0), xs)
      >>> jax.tree.map(jnp.shape, variables["params"]["cell"])
      {'b': (32,), 'w_h': (8, 32), 'w_x': (3, 32)}
      >>> carry, ys = model.apply(variables, xs)
      >>> ys.shape, carry.h.shape
      ((2, 5, 8), (2, 8))
    """

    cell: Cell
    truncation: int | None = None
    remat: bool | int = False
    reverse: bool = False
    unroll: int | None = None

    @nn.compact
    def __call__(self, xs: Array, carry: Carry | None = None, mask: Array | None = None,
                 resets: Array | None = None) -> tuple[Carry, Array]:
        params = self.param("cell", lambda key: self.cell.init(key, xs.shape[2:]))
        if carry is None:
            carry = self.cell.initial_carry(params, (xs.shape[0], *xs.shape[2:]))
        return recurrence.unroll(self.cell, params, carry, xs, truncation=self.truncation,
                                 mask=mask, resets=resets, reverse=self.reverse,
                                 remat=self.remat, unroll=self.unroll)
