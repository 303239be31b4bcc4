"""Time loops with a hand-written backward pass for the dense cells (lstm, gru, rnn).

Shape legend: T time, B batch, I input size, H hidden size, G gate blocks
(lstm 4, gru 3, rnn 1). All sequences are time-major here.

    carry, ys = dense_scan(spec, w, xs, carry, seq)      # ys (T, B, H)

`xs` is either the raw input x (T, B, I) with the input matmul done inside the
loop (`spec.in_loop`), or the hoisted projection x W_x (T, B, G*H); the input
bias is added inside the loop in both cases.

Why it is faster than differentiating `lax.scan` (numbers in benchmarks/NOTES.md):
  * the backward loop keeps only the sequential work: the gate derivatives and
    dh_{t-1} = du_t W_h^T. It writes du_t (T, B, G*H); after the loop the
    weight gradients are ONE matmul each over all T*B rows (dW_h = H_prev^T du,
    dW_x = X^T du). Autodiff of the scan instead runs a small (H, B) x (B, G*H)
    matmul per step and adds it into a dW_h carried through the loop;
  * the forward pass stores only what the backward pass reads: the gate
    activations (T, B, G*H or 4H for gru), the carries entering each step, ys;
  * every per-step slice of a sequence is copied into the loop carry one step
    ahead (`_pipelined_scan`): XLA:CPU compiles an elementwise fusion that reads
    a dynamic slice into a scalar loop, a pure slice copy into vector code;
  * on CPU, when the weights fit in cache, the input matmul runs inside the loop
    as one [x_t, h] @ [W_x; W_h] matmul (`in_loop`): that avoids writing and
    re-reading the (T, B, G*H) projection, which costs more than it saves there.

Semantics are those of `rnnvision.recurrence.unroll` (same `seq` dict: "s"
processing index, optional "m" mask and "r" resets, all time-major):
truncation k zeroes the carry's cotangent before processing step s when
s % k == 0 and s > 0; a masked step freezes the carry and outputs 0; a reset
replaces the carry with zeros (the initial carry of these cells) before the step.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


class ScanSpec(NamedTuple):
    """Static (hashable) description of one fused scan."""

    kind: str                 # "lstm", "gru" or "rnn"
    truncation: int | None    # TBPTT window in processing steps, None = full BPTT
    reverse: bool             # process from the end of the time axis
    unroll: int | None        # lax.scan unroll factor of both loops; None: auto_unroll
    in_loop: bool             # xs is x (input matmul in the loop), else px
    compute: str = "float32"  # matmul operand dtype ("float32" or "bfloat16");
                              # accumulation, state and elementwise maths stay float32


def _rows(pred: Array) -> Array:
    return pred[:, None]


def _split(a: Array, n: int) -> list[Array]:
    return jnp.split(a, n, axis=-1)


# -- one step of each cell ----------------------------------------------------------
# step(spec, w, carry, xt) -> (new carry, y, per-step residuals); carries are tuples
# of (B, H) arrays with h last. step_bwd(w, res, d_new) -> (du, d_carry_prev) where
# du (B, G*H) is the cotangent of the step's pre-activations (for gru: of x W_x + b_x,
# see _gru_du) and d_new the cotangent of the step's new carry.

def _preact(spec, w, h, xt):
    """x_t W_x + h W_h + b (lstm, rnn); xt is x_t W_x when the projection is hoisted."""
    if spec.in_loop:
        return _mm(jnp.concatenate([xt, h], axis=-1), w["w_xh"]) + w["b"]
    return xt + _mm(h, w["w_h"]) + w["b"]


def _gate_columns(hidden: int, values) -> Array:
    """A (4 H,) row holding values[k] in the columns of lstm gate block k (i, f, g, o)."""
    values = jnp.asarray(values, jnp.float32)
    return jnp.broadcast_to(values[:, None], (4, hidden)).reshape(4 * hidden)


def _lstm_step(spec, w, carry, xt):
    # All four gate nonlinearities in one pass over the (B, 4H) block:
    # sigmoid(u) = 0.5 tanh(0.5 u) + 0.5 for i, f, o and tanh(u) for g. One
    # elementwise fusion instead of four slices + concatenate: fewer, larger kernels
    # per step (benchmarks/NOTES.md, item 8).
    c, h = carry
    scale = _gate_columns(c.shape[-1], (0.5, 0.5, 1.0, 0.5))
    shift = _gate_columns(c.shape[-1], (0.5, 0.5, 0.0, 0.5))
    acts = jnp.tanh(_preact(spec, w, h, xt) * scale) * scale + shift
    i, f, g, o = _split(acts, 4)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return (c_new, h_new), h_new, acts


def _lstm_step_bwd(w, res, d_new):
    acts = res["acts"]
    hidden = acts.shape[-1] // 4
    i, f, g, o = _split(acts, 4)
    c_prev, tc = res["c_prev"], jnp.tanh(res["c_new"])
    dc, dh = d_new
    dc = dc + dh * o * (1.0 - tc * tc)
    # du = (upstream) * (the other factor of the gate's product) * (the gate's
    # derivative), written over the whole (B, 4H) block as one fusion.
    is_g = _gate_columns(hidden, (0.0, 0.0, 1.0, 0.0)) > 0
    slope = jnp.where(is_g, 1.0 - acts * acts, acts * (1.0 - acts))
    other = jnp.concatenate([g, c_prev, i, tc], axis=-1)
    upstream = jnp.concatenate([dc, dc, dc, dh], axis=-1)
    du = upstream * other * slope
    return du, (dc * f, _mm(du, w["w_h_t"]))


def _gru_step(spec, w, carry, xt):
    (h,) = carry
    a = (_mm(xt, w["w_x"]) if spec.in_loop else xt) + w["b_x"]
    u = _mm(h, w["w_h"]) + w["b_h"]
    a_r, a_z, a_n = _split(a, 3)
    u_r, u_z, u_n = _split(u, 3)
    r = jax.nn.sigmoid(a_r + u_r)
    z = jax.nn.sigmoid(a_z + u_z)
    n = jnp.tanh(a_n + r * u_n)
    h_new = (1.0 - z) * n + z * h
    return (h_new,), h_new, jnp.concatenate([r, z, n, u_n], axis=-1)


def _gru_step_bwd(w, res, d_new):
    r, z, n, u_n = _split(res["acts"], 4)
    (dh,) = d_new
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dr = dn * u_n * r * (1.0 - r)
    dz = dh * (res["h_prev"] - n) * z * (1.0 - z)
    da = jnp.concatenate([dr, dz, dn], axis=-1)   # d(x W_x + b_x)
    du_h = jnp.concatenate([dr, dz, dn * r], axis=-1)  # d(h W_h + b_h)
    return da, (dh * z + _mm(du_h, w["w_h_t"]),)


def _rnn_step(spec, w, carry, xt):
    (h,) = carry
    h_new = jnp.tanh(_preact(spec, w, h, xt))
    return (h_new,), h_new, None


def _rnn_step_bwd(w, res, d_new):
    (dh,) = d_new
    y = res["y"]  # y == h_new where the step is valid; elsewhere dh is 0 anyway
    du = dh * (1.0 - y * y)
    return du, (_mm(du, w["w_h_t"]),)


class _CellOps(NamedTuple):
    step: Callable
    step_bwd: Callable


_OPS = {"lstm": _CellOps(_lstm_step, _lstm_step_bwd),
        "gru": _CellOps(_gru_step, _gru_step_bwd),
        "rnn": _CellOps(_rnn_step, _rnn_step_bwd)}


# -- the loops ---------------------------------------------------------------------

def auto_unroll(kind: str, training: bool) -> int:
    """The loop-unrolling factor when the caller leaves it to us (unroll=None).

    CPU, the loops of an lstm training step: 4. Unrolling lets XLA:CPU overlap
    the small kernels of consecutive steps on its threads: the LSTM training
    step at T=100 B=64 I=128 H=256 took 126 / 119 / 110 ms at unroll 1 / 2 / 4
    in one interleaved run (torch 105), at T=28 B=128 I=28 H=128 25 / 19 / 17
    ms (torch 14). Everything else: 1. LSTM inference gained nothing, and the
    GRU lost at T=784 I=1 (training 306 / 343 / 439 ms, inference 78 / 105 /
    126 ms; benchmarks/NOTES.md, item 6). Other backends: not measured.
    """
    return 4 if kind == "lstm" and training and jax.default_backend() == "cpu" else 1


def _pipelined_scan(body, carry, xs: dict, *, reverse: bool, unroll: int):
    """`lax.scan(body, carry, xs)`, but step t's slices of xs are cut during step t-1.

    Why: XLA:CPU compiles an elementwise fusion that reads a dynamic slice of a
    loop input into a scalar (non-vectorized) loop, several times slower than
    the vector code of a fusion that only copies a dynamic slice. So each step
    copies the NEXT step's inputs into the loop carry and its arithmetic reads
    only carried buffers. (Overwriting a residual buffer in place with the
    backward's du instead of allocating a new one made XLA copy the whole
    buffer every step; not done.)
    """
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    first, delta = (num_steps - 1, -1) if reverse else (0, 1)

    def fetch(t):
        return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, t, keepdims=False), xs)

    def wrapped(state, t):
        carry, current = state
        upcoming = fetch(jnp.clip(t + delta, 0, num_steps - 1))
        carry, out = body(carry, current)
        return (carry, upcoming), out

    steps = jnp.arange(num_steps, dtype=jnp.int32)
    (carry, _), outs = lax.scan(wrapped, (carry, fetch(first)), steps, reverse=reverse,
                                unroll=unroll)
    return carry, outs


def _forward(spec: ScanSpec, w, xs, carry, seq, save: bool):
    """The forward loop; with `save`, also the residuals of the backward pass."""
    step = _OPS[spec.kind].step

    def body(carry, inp):
        entering = carry
        if "r" in inp:
            carry = tuple(jnp.where(_rows(inp["r"]), 0.0, c) for c in carry)
        new, y, acts = step(spec, w, carry, inp["x"])
        if "m" in inp:
            m = _rows(inp["m"])
            new = tuple(jnp.where(m, a, b) for a, b in zip(new, carry))
            y = jnp.where(m, y, 0.0)
        if not save:
            return new, y
        # The carries entering the step (before its reset): h for dW_h, c for the
        # lstm's forget-gate derivative. The backward pass re-applies the reset.
        return new, (y, {"acts": acts, "entering": entering})

    inputs = {k: v for k, v in seq.items() if k != "s"}
    inputs["x"] = xs
    return _pipelined_scan(body, carry, inputs, reverse=spec.reverse,
                           unroll=spec.unroll or auto_unroll(spec.kind, training=save))


def _backward(spec: ScanSpec, w, res, seq, final_carry, d_carry, d_ys):
    """The backward loop: (cotangent of the initial carry, du (T, B, G*H))."""
    step_bwd = _OPS[spec.kind].step_bwd
    lstm = spec.kind == "lstm"

    def body(state, inp):
        d_carry, c_new = state  # c_new: the lstm's c leaving this step (else unused)
        d_new, dy = d_carry, inp["dy"]
        if "m" in inp:
            m = _rows(inp["m"])
            d_new = tuple(jnp.where(m, d, 0.0) for d in d_carry)
            dy = jnp.where(m, dy, 0.0)
        d_new = d_new[:-1] + (d_new[-1] + dy,)
        step_res = {"acts": inp.get("acts"), "y": inp.get("y")}
        if "entering" in inp:  # c (lstm) or h (gru) before the step, after its reset
            entering = inp["entering"]
            if "r" in inp:
                entering = jnp.where(_rows(inp["r"]), 0.0, entering)
            if lstm:
                step_res.update(c_prev=entering, c_new=c_new)
            else:
                step_res["h_prev"] = entering
        du, d_prev = step_bwd(w, step_res, d_new)
        if "m" in inp:
            d_prev = tuple(p + jnp.where(m, 0.0, d) for p, d in zip(d_prev, d_carry))
        if "r" in inp:
            d_prev = tuple(jnp.where(_rows(inp["r"]), 0.0, d) for d in d_prev)
        if spec.truncation is not None:
            cut = (inp["s"] % spec.truncation == 0) & (inp["s"] > 0)
            d_prev = tuple(jnp.where(cut, 0.0, d) for d in d_prev)
        # the c entering this step is the c leaving the step processed next
        return (d_prev, inp["entering"] if lstm else c_new), du

    inputs = dict(seq, dy=d_ys)
    if spec.truncation is None:
        inputs.pop("s")
    if spec.kind == "rnn":
        inputs["y"] = res["y"]
    else:
        inputs["acts"] = res["acts"]
        inputs["entering"] = res["entering"][0]  # c (lstm) or h (gru)
    state = (d_carry, final_carry[0] if lstm else None)
    unroll = spec.unroll or auto_unroll(spec.kind, training=True)
    (d_carry0, _), du = _pipelined_scan(body, state, inputs, reverse=not spec.reverse,
                                        unroll=unroll)
    return d_carry0, du


# -- the differentiable function ------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def dense_scan(spec: ScanSpec, w: dict, xs: Array, carry: tuple, seq: dict):
    """Runs the cell `spec.kind` over xs; returns (final carry, ys (T, B, H)).

    w: {"w_h": (H, G*H), input bias "b" (gru: "b_x" and "b_h")} plus, if
    spec.in_loop, {"w_x": (I, G*H)}. xs: x (T, B, I) if spec.in_loop, else the
    hoisted projection x W_x (T, B, G*H) without bias. carry: (c, h) for lstm,
    (h,) otherwise, each (B, H). seq: {"s": (T,) int32 processing index, optional "m": (T, B)
    bool mask, "r": (T, B) bool resets}.
    """
    return _forward(spec, _prepare(spec, w), xs, carry, seq, save=False)


def _prepare(spec, w):
    """Adds the derived weights the loops use: W_h^T, and [W_x; W_h] for in-loop.

    The matmul weights are cast to `spec.compute` once here, not once per step.
    """
    w = dict(w, w_h_t=w["w_h"].T)
    if spec.in_loop and spec.kind != "gru":
        w["w_xh"] = jnp.concatenate([w["w_x"], w["w_h"]], axis=0)
    for name in ("w_h", "w_h_t", "w_x", "w_xh"):
        if name in w:
            w[name] = w[name].astype(spec.compute)
    return w


def _dense_scan_fwd(spec, w, xs, carry, seq):
    wp = _prepare(spec, w)
    final, (ys, res) = _forward(spec, wp, xs, carry, seq, save=True)
    res["y"] = ys
    return (final, ys), (wp, xs, res, seq, final)


def _dense_scan_bwd(spec, saved, cotangents):
    wp, xs, res, seq, final = saved
    d_final, d_ys = cotangents
    d_carry0, du = _backward(spec, wp, res, seq, final, d_final, d_ys)
    h_prev = res["entering"][-1]
    if "r" in seq:
        h_prev = jnp.where(seq["r"][..., None], 0.0, h_prev)
    du_h = _gru_du(du, res["acts"]) if spec.kind == "gru" else du
    d_w = {"w_h": _rows_matmul(h_prev, du_h, spec.compute)}
    d_w["b_x" if spec.kind == "gru" else "b"] = du.sum(axis=(0, 1))
    if spec.kind == "gru":
        d_w["b_h"] = du_h.sum(axis=(0, 1))
    if not spec.in_loop:
        return d_w, du, d_carry0, None
    d_w["w_x"] = _rows_matmul(xs, du, spec.compute)
    return d_w, _mm(du, wp["w_x"].T), d_carry0, None


def _gru_du(da, acts):
    """d(h W_h + b_h) from d(x W_x + b_x): the n block is scaled by the reset gate r."""
    hidden = acts.shape[-1] // 4
    return jnp.concatenate([da[..., :2 * hidden], da[..., 2 * hidden:] * acts[..., :hidden]],
                           axis=-1)


def _rows_matmul(a, b, compute):
    """a^T b over all T*B rows: (T, B, K), (T, B, N) -> (K, N), one matmul, b cast to
    `compute` (a is cast to it by `_mm`)."""
    rows = a.shape[0] * a.shape[1]
    return _mm(a.reshape(rows, -1).T, b.reshape(rows, -1).astype(compute))


def _mm(a, w):
    """a @ w with a cast to w's dtype, float32 accumulation and result."""
    return jnp.matmul(a.astype(w.dtype), w, preferred_element_type=jnp.float32)


dense_scan.defvjp(_dense_scan_fwd, _dense_scan_bwd)
