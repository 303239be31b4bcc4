"""The time loop: `unroll` a cell over a sequence under `jax.lax.scan`.

Shape legend: B batch, T time, F... one step's features (e.g. (I,) or (H, W, C)).

    carry, ys = unroll(cell, params, carry, xs)          # xs (B, T, *F) -> ys (B, T, *F_out)

`unroll` knows nothing of tasks, and the cells know nothing of time. What it adds:
  truncation=k  truncated BPTT: gradients cross at most k steps (windows of k
                steps in processing order; forward values are those of full BPTT).
  mask          (B, T) validity: the carry is frozen and the output is 0 where False
                (variable lengths, padding anywhere; a reversed pass over
                end-padded sequences thus starts at each sequence's last step).
  resets        (B, T) episode starts: the carry is replaced by the cell's initial
                carry before every step where True (with reverse=True, before the
                step preceding an episode start, so no episode sees another's steps).
  reverse       process the sequence from the end (outputs stay in time order).
  remat         gradient checkpointing: only the carries at chunk boundaries
                (every ~sqrt(T) steps, or every `remat` steps if an int) are kept
                for the backward pass; everything else is recomputed.
  unroll        lax.scan's loop-unrolling factor; None (default): chosen by the
                fast path where one applies (on CPU 4 for the loops of an
                LSTM training step, 1 otherwise; fused.dense_scan.auto_unroll),
                else 1.

The input-to-state map of the cell (`cell.project_inputs`) is applied to all steps
at once, outside the scan, so only the recurrent part runs sequentially.

Streaming TBPTT(k1, k2) for sequences too long to hold at once: `stream_init` and
`stream_unroll` below.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnvision import fused
from rnnvision.cells.base import Array, Carry, Cell, Params


def _where_batch(pred: Array, on_true: Any, on_false: Any) -> Any:
    """Per-example select between two pytrees whose leaves lead with the batch dim."""
    def select(a, b):
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - pred.ndim)), a, b)
    return jax.tree.map(select, on_true, on_false)


def _time_major(x: Array | None) -> Array | None:
    return None if x is None else jnp.swapaxes(x, 0, 1)


def _check_args(carry, xs, truncation, mask, resets, remat, unroll):
    if xs.ndim < 2:
        raise ValueError(f"xs must be batch-major (B, T, *features); got shape {xs.shape}")
    # A time-major xs (T, B, ...) would otherwise fail deep in the cell, or run
    # silently wrong when T == B: the carry's leading dim must be xs's batch dim.
    for leaf in jax.tree.leaves(carry):
        if jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] != xs.shape[0]:
            raise ValueError(f"xs must be batch-major (B, T, *features) with B = the carry's "
                             f"batch dim {jnp.shape(leaf)[0]}; got xs shape {xs.shape}")
    if truncation is not None and (isinstance(truncation, bool) or
                                   not isinstance(truncation, int) or truncation < 1):
        raise ValueError(f"truncation={truncation!r} must be None (full BPTT) or an integer >= 1")
    for name, m in (("mask", mask), ("resets", resets)):
        if m is not None and tuple(m.shape) != tuple(xs.shape[:2]):
            raise ValueError(f"{name} must have shape (B, T)={tuple(xs.shape[:2])}; got {tuple(m.shape)}")
    if not isinstance(remat, bool) and (not isinstance(remat, int) or remat < 1):
        raise ValueError(f"remat={remat!r} must be a bool or a chunk length >= 1")
    if unroll is not None and (isinstance(unroll, bool) or not isinstance(unroll, int)
                               or unroll < 1):
        raise ValueError(f"unroll={unroll!r} must be None (automatic) or an integer >= 1")


def _make_body(cell: Cell, params: Params, truncation, reset_carry):
    """The scan body over projected inputs: one step plus truncation/reset/mask."""

    def body(carry, inp):
        if truncation is not None:
            cut = (inp["s"] % truncation == 0) & (inp["s"] > 0)
            # where() passes no gradient to the branch it does not select.
            carry = jax.tree.map(lambda c: jnp.where(cut, lax.stop_gradient(c), c), carry)
        if "r" in inp:
            carry = _where_batch(inp["r"], reset_carry, carry)
        new_carry, y = cell.step_projected(params, carry, inp["px"])
        if "m" in inp:
            new_carry = _where_batch(inp["m"], new_carry, carry)
            y = _where_batch(inp["m"], y, jnp.zeros_like(y))
        return new_carry, y

    return body


def unroll(cell: Cell, params: Params, carry: Carry, xs: Array, *,
           truncation: int | None = None, mask: Array | None = None,
           resets: Array | None = None, reverse: bool = False,
           remat: bool | int = False, unroll: int | None = None) -> tuple[Carry, Array]:
    """Runs `cell` over `xs` (B, T, *F); returns (final carry, ys (B, T, *F_out)).

    See the module docstring for the options. Pure; composes with jit, vmap,
    grad and pmap.
    """
    _check_args(carry, xs, truncation, mask, resets, remat, unroll)
    num_steps = xs.shape[1]
    order = jnp.arange(num_steps, dtype=jnp.int32)
    inputs = {"x": _time_major(xs), "s": order[::-1] if reverse else order}
    if mask is not None:
        inputs["m"] = _time_major(mask.astype(bool))
    reset_carry = None
    if resets is not None:
        resets = resets.astype(bool)
        if reverse:  # episode t starts -> the backward pass resets after step t, i.e. before t-1
            resets = jnp.concatenate([resets[:, 1:], jnp.zeros_like(resets[:, :1])], axis=1)
        inputs["r"] = _time_major(resets)
        reset_carry = cell.initial_carry(params, xs[:, 0].shape)
    body = _make_body(cell, params, truncation, reset_carry)

    def project_and_scan(carry, inp):
        inp = dict(inp)
        inp["px"] = cell.project_inputs(params, inp.pop("x"))
        return lax.scan(body, carry, inp, reverse=reverse, unroll=unroll or 1)

    # A fused fast path (rnnvision/fused) with the same semantics, where one applies.
    project_and_scan = fused.scan_fn(cell, params, carry, inputs, truncation=truncation,
                                     reverse=reverse, unroll=unroll) or project_and_scan
    if remat:
        carry, ys = _chunked_remat(project_and_scan, carry, inputs, num_steps, remat, reverse)
    else:
        carry, ys = project_and_scan(carry, inputs)
    return carry, _time_major(ys)


def _chunked_remat(scan_fn, carry, inputs, num_steps: int, remat: bool | int, reverse: bool):
    """Runs `scan_fn` chunk by chunk under jax.checkpoint (sqrt(T) memory for sqrt(T) chunks)."""
    chunk = num_steps if remat is True and num_steps < 4 else (
        math.isqrt(num_steps - 1) + 1 if remat is True else int(remat))
    num_chunks = -(-num_steps // chunk)
    pad = num_chunks * chunk - num_steps
    if pad:  # padded steps are masked out: they freeze the carry
        valid = inputs.get("m", jnp.ones(inputs["s"].shape + inputs["x"].shape[1:2], bool))
        inputs = dict(inputs, m=valid)
        inputs = jax.tree.map(lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), inputs)
    chunked = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]), inputs)
    carry, ys = lax.scan(jax.checkpoint(scan_fn), carry, chunked, reverse=reverse)
    ys = jax.tree.map(lambda a: a.reshape((num_chunks * chunk,) + a.shape[2:])[:num_steps], ys)
    return carry, ys


def bidirectional(cell_fw: Cell, cell_bw: Cell, params: tuple[Params, Params],
                  carry: tuple[Carry, Carry], xs: Array, **unroll_kwargs) -> tuple[tuple, Array]:
    """Forward and reversed passes over `xs`, outputs concatenated on the last axis.

    params and carry are (forward, backward) pairs. With a `mask` of end-padded
    sequences the backward pass starts at each sequence's last valid step.
    Returns ((carry_fw, carry_bw), ys (B, T, F_fw + F_bw)).
    """
    c_fw, y_fw = unroll(cell_fw, params[0], carry[0], xs, **unroll_kwargs)
    c_bw, y_bw = unroll(cell_bw, params[1], carry[1], xs, reverse=True, **unroll_kwargs)
    return (c_fw, c_bw), jnp.concatenate([y_fw, y_bw], axis=-1)


# -- streaming truncated BPTT -------------------------------------------------

class StreamState(NamedTuple):
    """What TBPTT(k1, k2) carries between updates (a pytree).

    carry:   the cell's carry k2 - k1 steps before the next new step (no gradient).
    history: (B, k2 - k1, *F) the last k2 - k1 inputs, replayed with gradient.
    valid:   (B, k2 - k1) False for history slots not filled yet (stream start).
    """
    carry: Carry
    history: Array
    valid: Array


def stream_init(cell: Cell, params: Params, carry: Carry, x_shape, k1: int, k2: int,
                dtype=jnp.float32) -> StreamState:
    """An empty stream for inputs whose one step has shape x_shape (B, *F) and `dtype`
    (the stored history keeps the inputs' dtype, so the state's type never changes)."""
    if not (isinstance(k1, int) and isinstance(k2, int) and 1 <= k1 <= k2):
        raise ValueError(f"TBPTT needs integers 1 <= k1 <= k2; got k1={k1!r}, k2={k2!r}")
    batch = x_shape[0]
    history = jnp.zeros((batch, k2 - k1, *x_shape[1:]), dtype)
    return StreamState(carry=carry, history=history, valid=jnp.zeros((batch, k2 - k1), bool))


def stream_unroll(cell: Cell, params: Params, state: StreamState, xs_new: Array,
                  **unroll_kwargs) -> tuple[Array, StreamState]:
    """One TBPTT(k1, k2) update window: k1 = xs_new.shape[1] new steps.

    The window is the last k2 - k1 inputs (from `state`) followed by the k1 new
    ones. It runs from the stored carry (gradient stopped), so a loss on the
    returned outputs for the new steps backpropagates through at most k2 steps.
    Returns (ys_new (B, k1, *F_out), the state for the next call).
    """
    k1 = xs_new.shape[1]
    window = jnp.concatenate([state.history.astype(xs_new.dtype), xs_new], axis=1)
    valid = jnp.concatenate([state.valid, jnp.ones(xs_new.shape[:2], bool)], axis=1)
    carry = lax.stop_gradient(state.carry)
    mid, ys_head = unroll(cell, params, carry, window[:, :k1], mask=valid[:, :k1], **unroll_kwargs)
    ys = ys_head
    if window.shape[1] > k1:
        _, ys_tail = unroll(cell, params, mid, window[:, k1:], mask=valid[:, k1:], **unroll_kwargs)
        ys = jnp.concatenate([ys_head, ys_tail], axis=1)
    next_state = StreamState(carry=lax.stop_gradient(mid), history=window[:, k1:], valid=valid[:, k1:])
    return ys[:, -k1:], next_state
