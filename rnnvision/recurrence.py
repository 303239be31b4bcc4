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
                fast path where one runs (on CPU 4 for the loops of an LSTM
                training step, 1 otherwise; fused.dense_scan.auto_unroll), else 1.
  impl          which loop runs, resolved here and nowhere else:
                "scan"  the generic loop: cell.project_inputs on all steps at once,
                        then lax.scan over cell.step_projected (any cell);
                "fused" the fast path of rnnvision/fused (a hand-written backward
                        pass, the same values and gradients to float rounding); a
                        ValueError says why when it does not apply;
                "auto"  (default) "fused" where it applies, else "scan". It applies
                        to exactly the built-in `lstm`, `gru` and `rnn` cell classes
                        (not subclasses, which may change the maths), compute dtype
                        float32 or bfloat16, float32 params, carry and inputs, and
                        one batch dim. `resolve_impl` says which one a call runs.

The input-to-state map of the cell (`cell.project_inputs`) is applied to all steps
at once, outside the scan, so only the recurrent part runs sequentially.

`scan` is the same time loop (truncation, remat, unroll, reverse) for a step
function that is not a cell, e.g. a decoder whose step also attends over an image.
`TimeLoop` bundles these options into one typed value: the trainer builds it from
the config and every model runs its loops through it.

Streaming TBPTT(k1, k2) for sequences too long to hold at once: `stream_init` and
`stream_unroll` below.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnvision import fused
from rnnvision.cells.base import Array, Carry, Cell, Params

IMPLS = ("auto", "fused", "scan")


def _where_batch(pred: Array, on_true: Any, on_false: Any) -> Any:
    """Per-example select between two pytrees whose leaves lead with the batch dim."""
    def select(a, b):
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - pred.ndim)), a, b)
    return jax.tree.map(select, on_true, on_false)


def _swap01(tree: Any) -> Any:
    """(B, T, ...) <-> (T, B, ...) on every leaf of a pytree (None stays None)."""
    return None if tree is None else jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), tree)


def _check_loop_options(truncation, remat, unroll, impl="auto") -> None:
    if truncation is not None and (isinstance(truncation, bool) or
                                   not isinstance(truncation, int) or truncation < 1):
        raise ValueError(f"truncation={truncation!r} must be None (full BPTT) or an integer >= 1")
    if not isinstance(remat, bool) and (not isinstance(remat, int) or remat < 1):
        raise ValueError(f"remat={remat!r} must be a bool or a chunk length >= 1")
    if unroll is not None and (isinstance(unroll, bool) or not isinstance(unroll, int)
                               or unroll < 1):
        raise ValueError(f"unroll={unroll!r} must be None (automatic) or an integer >= 1")
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r}; allowed: {IMPLS}")


def _check_args(carry, xs, mask, resets) -> None:
    if xs.ndim < 2:
        raise ValueError(f"xs must be batch-major (B, T, *features); got shape {xs.shape}")
    # A time-major xs (T, B, ...) would otherwise fail deep in the cell, or run
    # silently wrong when T == B: the carry's leading dim must be xs's batch dim.
    for leaf in jax.tree.leaves(carry):
        if jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] != xs.shape[0]:
            raise ValueError(f"xs must be batch-major (B, T, *features) with B = the carry's "
                             f"batch dim {jnp.shape(leaf)[0]}; got xs shape {xs.shape}")
    for name, m in (("mask", mask), ("resets", resets)):
        if m is not None and tuple(m.shape) != tuple(xs.shape[:2]):
            raise ValueError(f"{name} must have shape (B, T)={tuple(xs.shape[:2])}; got {tuple(m.shape)}")


def truncate(carry: Carry, step: Array, truncation: int | None) -> Carry:
    """The carry entering processing step `step`, its gradient stopped at the start of
    every window of `truncation` steps (step % k == 0 and step > 0). Forward values are
    unchanged. The one definition of truncation every loop here uses."""
    if truncation is None:
        return carry
    cut = (step % truncation == 0) & (step > 0)
    # where() passes no gradient to the branch it does not select.
    return jax.tree.map(lambda c: jnp.where(cut, lax.stop_gradient(c), c), carry)


def _make_body(cell: Cell, params: Params, truncation, reset_carry):
    """The scan body over projected inputs: one step plus truncation/reset/mask."""

    def body(carry, inp):
        carry = truncate(carry, inp["s"], truncation)
        if "r" in inp:
            carry = _where_batch(inp["r"], reset_carry, carry)
        new_carry, y = cell.step_projected(params, carry, inp["px"])
        if "m" in inp:
            new_carry = _where_batch(inp["m"], new_carry, carry)
            y = _where_batch(inp["m"], y, jax.tree.map(jnp.zeros_like, y))
        return new_carry, y

    return body


def _processing_order(num_steps: int, reverse: bool, first_step: int = 0) -> Array:
    """The processing index s of each time step: 0 .. T-1 in time order, or reversed."""
    order = jnp.arange(num_steps, dtype=jnp.int32)
    return (order[::-1] if reverse else order) + first_step


def resolve_impl(cell: Cell, params: Params, carry: Carry, xs: Array, *, impl: str = "auto",
                 truncation: int | None = None, reverse: bool = False) -> str:
    """"fused" or "scan": the loop `unroll(cell, params, carry, xs, impl=impl, ...)` runs.

    Raises ValueError (saying why) for impl="fused" where the fast path does not apply.
    """
    _check_loop_options(truncation, False, None, impl)
    inputs = {"x": _swap01(xs), "s": _processing_order(xs.shape[1], reverse)}
    return "fused" if _fast_scan_fn(cell, params, carry, inputs, truncation, reverse, None,
                                    impl) else "scan"


def _fast_scan_fn(cell, params, carry, inputs, truncation, reverse, unroll, impl):
    """The fused replacement of the generic scan, or None (impl "scan", or "auto" where
    none applies); impl "fused" where none applies raises ValueError naming the reason."""
    if impl == "scan":
        return None
    why_not = fused.unsupported_reason(cell, params, carry, inputs)
    if why_not is not None:
        if impl == "fused":
            raise ValueError(f"impl='fused' does not apply to {type(cell).__name__}: {why_not}; "
                             "use impl='auto' or 'scan'")
        return None
    return fused.scan_fn(cell, params, carry, inputs, truncation=truncation, reverse=reverse,
                         unroll=unroll)


def unroll(cell: Cell, params: Params, carry: Carry, xs: Array, *,
           truncation: int | None = None, mask: Array | None = None,
           resets: Array | None = None, reverse: bool = False,
           remat: bool | int = False, unroll: int | None = None,
           impl: str = "auto") -> tuple[Carry, Array]:
    """Runs `cell` over `xs` (B, T, *F); returns (final carry, ys (B, T, *F_out)).

    See the module docstring for the options (`impl`: which loop runs). Pure;
    composes with jit, vmap, grad and pmap.
    """
    _check_loop_options(truncation, remat, unroll, impl)
    _check_args(carry, xs, mask, resets)
    num_steps = xs.shape[1]
    inputs = {"x": _swap01(xs), "s": _processing_order(num_steps, reverse)}
    if mask is not None:
        inputs["m"] = _swap01(mask.astype(bool))
    reset_carry = None
    if resets is not None:
        resets = resets.astype(bool)
        if reverse:  # episode t starts -> the backward pass resets after step t, i.e. before t-1
            resets = jnp.concatenate([resets[:, 1:], jnp.zeros_like(resets[:, :1])], axis=1)
        inputs["r"] = _swap01(resets)
        reset_carry = cell.initial_carry(params, xs[:, 0].shape)
    body = _make_body(cell, params, truncation, reset_carry)

    def project_and_scan(carry, inp):
        inp = dict(inp)
        inp["px"] = cell.project_inputs(params, inp.pop("x"))
        return lax.scan(body, carry, inp, reverse=reverse, unroll=unroll or 1)

    scan_fn = _fast_scan_fn(cell, params, carry, inputs, truncation, reverse, unroll,
                            impl) or project_and_scan
    carry, ys = _run_loop(scan_fn, carry, inputs, num_steps, remat, reverse, xs.shape[:1])
    return carry, _swap01(ys)


def scan(step_fn: Callable[[Carry, Any], tuple[Carry, Any]], carry: Carry, xs: Any, *,
         truncation: int | None = None, reverse: bool = False, remat: bool | int = False,
         unroll: int | None = None, first_step: int = 0) -> tuple[Carry, Any]:
    """The time loop of `unroll` for any step function: step_fn(carry, x_t) -> (carry, y_t).

    xs: a pytree of batch-major (B, T, ...) arrays; x_t holds their step-t slices
    (B, ...). Returns (final carry, ys: the y_t stacked batch-major (B, T, ...)).
    truncation, reverse, remat and unroll (None: 1) mean what they mean for
    `unroll`; the processing index of the first step is `first_step`, so a loop
    that continues another keeps its truncation windows (a cut before every
    step s > 0 with s % k == 0).
    """
    _check_loop_options(truncation, remat, unroll)
    leaves = jax.tree.leaves(xs)
    if not leaves or any(jnp.ndim(a) < 2 or jnp.shape(a)[:2] != jnp.shape(leaves[0])[:2]
                         for a in leaves):
        raise ValueError("xs must be a pytree of batch-major (B, T, ...) arrays with one (B, T); "
                         f"got shapes {[jnp.shape(a) for a in leaves]}")
    num_steps = leaves[0].shape[1]
    inputs = {"x": _swap01(xs), "s": _processing_order(num_steps, reverse, first_step)}

    def body(carry, inp):
        new_carry, y = step_fn(truncate(carry, inp["s"], truncation), inp["x"])
        if "m" in inp:  # a padding step of the remat chunks: the carry passes unchanged
            new_carry = jax.tree.map(lambda a, b: jnp.where(inp["m"], a, b), new_carry, carry)
        return new_carry, y

    def scan_fn(carry, inp):
        return lax.scan(body, carry, inp, reverse=reverse, unroll=unroll or 1)

    carry, ys = _run_loop(scan_fn, carry, inputs, num_steps, remat, reverse, ())
    return carry, _swap01(ys)


def _run_loop(scan_fn, carry, inputs: dict, num_steps: int, remat: bool | int, reverse: bool,
              mask_shape: tuple) -> tuple[Carry, Any]:
    """scan_fn over all steps, or chunk by chunk under jax.checkpoint with `remat`."""
    if not remat:
        return scan_fn(carry, inputs)
    return _chunked_remat(scan_fn, carry, inputs, num_steps, remat, reverse, mask_shape)


def _chunked_remat(scan_fn, carry, inputs, num_steps: int, remat: bool | int, reverse: bool,
                   mask_shape: tuple):
    """Runs `scan_fn` chunk by chunk under jax.checkpoint (sqrt(T) memory for sqrt(T) chunks).

    Padding steps (to a whole number of chunks) are masked out with "m" of shape
    (T, *mask_shape): they freeze the carry, and their outputs are dropped.
    """
    chunk = num_steps if remat is True and num_steps < 4 else (
        math.isqrt(num_steps - 1) + 1 if remat is True else int(remat))
    num_chunks = -(-num_steps // chunk)
    pad = num_chunks * chunk - num_steps
    if pad:
        valid = inputs.get("m", jnp.ones((num_steps, *mask_shape), bool))
        inputs = dict(inputs, m=valid)
        inputs = jax.tree.map(lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), inputs)
    chunked = jax.tree.map(lambda a: a.reshape((num_chunks, chunk) + a.shape[1:]), inputs)
    carry, ys = lax.scan(jax.checkpoint(scan_fn), carry, chunked, reverse=reverse)
    ys = jax.tree.map(lambda a: a.reshape((num_chunks * chunk,) + a.shape[2:])[:num_steps], ys)
    return carry, ys


@dataclasses.dataclass(frozen=True)
class TimeLoop:
    """How a model runs its time loops: truncation, remat, unroll factor and impl.

    One typed value for the options of `unroll` that are a property of a training
    run, not of a call site: the trainer builds it from `config.train` and a task
    hands it to its models, which run every loop through `run` (cells) or `scan`
    (other step functions), so no loop of an experiment ignores them.

        loop = TimeLoop(truncation=20, remat=True)
        carry, ys = loop.run(cell, params, carry, xs, mask=mask)
    """

    truncation: int | None = None   # TBPTT window k; None = full BPTT
    remat: bool | int = False       # gradient checkpointing (True: ~sqrt(T) chunks)
    unroll: int | None = None       # lax.scan unroll factor; None = automatic
    impl: str = "auto"              # "auto" | "fused" | "scan" (module docstring)

    def __post_init__(self):
        _check_loop_options(self.truncation, self.remat, self.unroll, self.impl)

    def options(self) -> dict[str, Any]:
        """The keyword arguments of `unroll`: truncation, remat, unroll, impl."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TimeLoop":
        return dataclasses.replace(self, **changes)

    def run(self, cell: Cell, params: Params, carry: Carry, xs: Array, *,
            mask: Array | None = None, resets: Array | None = None,
            reverse: bool = False) -> tuple[Carry, Array]:
        """`unroll(cell, params, carry, xs, ...)` with these options."""
        return unroll(cell, params, carry, xs, mask=mask, resets=resets, reverse=reverse,
                      **self.options())

    def scan(self, step_fn: Callable, carry: Carry, xs: Any, *, reverse: bool = False,
             first_step: int = 0) -> tuple[Carry, Any]:
        """`scan(step_fn, carry, xs, ...)` with these options. Such a loop has no fused
        form: impl="fused" raises ValueError (a task refuses it when it is built)."""
        self.require_scan("this loop's step function is not a cell")
        return scan(step_fn, carry, xs, truncation=self.truncation, reverse=reverse,
                    remat=self.remat, unroll=self.unroll, first_step=first_step)

    def require_scan(self, why: str) -> None:
        """Raises ValueError naming `impl` unless it is "auto" or "scan"."""
        if self.impl == "fused":
            raise ValueError(f"impl='fused' cannot run here ({why}); use impl='auto' or 'scan'")

    def check_cell(self, cell: Cell) -> None:
        """Raises ValueError naming `impl` if impl="fused" and `cell` has no fast path
        (checked from the cell alone, before any data: its class and compute dtype)."""
        why_not = fused.cell_unsupported_reason(cell)
        if self.impl == "fused" and why_not is not None:
            raise ValueError(f"impl='fused' does not apply to {type(cell).__name__}: {why_not}; "
                             "use impl='auto' or 'scan'")


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
