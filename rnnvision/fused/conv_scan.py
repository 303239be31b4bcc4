"""The ConvLSTM time loop with a hand-written backward pass.

Shape legend: T time, B batch, Hx x Wx the input's and H x W the state's
spatial size, C input channels, F features, G = 4F gate channels, k_h x k_w the
kernel, P = C + F. All sequences are time-major here.

    carry, ys = conv_lstm_scan(spec, w, xs, carry, seq)     # ys (T, B, H, W, F)

The maths is `rnnvision.cells.ConvLSTMCell`'s (no peepholes, gate order i, f, g, o):
  z_t = W_x * x_t + W_h * h_{t-1} + b;  c_t = s(f) c_{t-1} + s(i) tanh(g);
  h_t = s(o) tanh(c_t).
The input convolution W_x * x runs on all T*B images at once before the loop.

Why it is faster than differentiating the generic loop (numbers in
benchmarks/NOTES.md, "ConvLSTM"):
  * the kernel gradients of BOTH convolutions are one convolution per step in
    XLA:CPU's fast canonical form: [x_t, h_{t-1}] with its channels as the batch
    and its batch as the features, against du_t as the kernel
    (`_kernel_grad`), accumulated in the loop. Autodiff of the generic loop
    (rnnvision/cells/conv_grad.py) writes the (B*H*W, k_h*k_w*F) patch matrix of
    h_{t-1} every step and multiplies it (half the convolution's rate), and the
    hoisted input convolution's kernel gradient over all T*B images at once is
    a patch matrix of T*B images (or, as XLA's own convolution, a kernel of
    H x W x T*B taps, 8x slower again);
  * the forward pass stores only what the backward pass reads (the gate
    activations and the carries entering each step) and computes the four
    gate nonlinearities in one pass;
  * each step's slices of the sequences are copied into the loop carry one step
    ahead (`dense_scan._pipelined_scan`), so the elementwise fusions read
    carried buffers (XLA:CPU compiles a fusion that reads a dynamic slice into
    scalar code).

Semantics are those of `rnnvision.recurrence.unroll` (the same `seq` dict: "s"
processing index, optional "m" mask and "r" resets, all time-major): truncation
k zeroes the carry's cotangent before processing step s when s % k == 0 and
s > 0; a masked step freezes the carry and outputs 0; a reset replaces the
carry with zeros (the cell's initial carry) before the step.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnvision.cells.conv_grad import conv_nd
from rnnvision.fused.dense_scan import _gate_columns, _pipelined_scan

Array = jax.Array
_F32 = jnp.dtype(jnp.float32)
_NHWC = ("NHWC", "HWIO", "NHWC")


class ConvScanSpec(NamedTuple):
    """Static (hashable) description of one fused ConvLSTM scan."""

    truncation: int | None    # TBPTT window in processing steps, None = full BPTT
    reverse: bool             # process from the end of the time axis
    unroll: int | None        # lax.scan unroll factor of both loops; None: 1
    pads_x: tuple             # ((lo, hi), (lo, hi)) of the input convolution
    pads_h: tuple             # ((lo, hi), (lo, hi)) of the state convolution


def _per_example(pred: Array) -> Array:
    """(B,) -> (B, 1, 1, 1), to select whole images."""
    return pred[:, None, None, None]


def _pad(x: Array, pads) -> Array:
    """Zero padding of the two spatial dims of (B, H, W, C) (negative pads crop: only
    where the convolution's own padding was negative)."""
    return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads),
                                               (0, 0, 0)])


def _conv_transpose(dy: Array, w_flip: Array, pads) -> Array:
    """The input cotangent of conv(x, w, pads): dy (B, H, W, O) -> (B, Hx, Wx, I).

    w_flip is w (k_h, k_w, I, O) flipped in space with I and O swapped, so this
    is XLA:CPU's canonical convolution (fast inside loops); the padding is the
    complement (k - 1 - lo, k - 1 - hi) of the forward one.
    """
    kernel = w_flip.shape[:2]
    back = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel, pads)]
    return lax.conv_general_dilated(dy, w_flip, (1, 1), back, dimension_numbers=_NHWC)


def _kernel_grad(inputs: Array, du: Array, pads) -> Array:
    """sum over b, y, x of pad(inputs)[b, y + i, x + j, p] du[b, y, x, g] as (P, k_h, k_w, G).

    inputs (B, H, W, P) are the inputs of the step's convolutions (zero padding
    `pads` gives the kernel offsets), du (B, H, W, G) its output cotangent.
    Written as a canonical convolution (b01f_01io->b01f): the channels P act as
    the batch, the batch B as the input features, du as a kernel of H x W taps.
    (Padding inside the convolution ran 1.3-1.5x faster than on a pre-padded
    input, benchmarks/NOTES.md.)
    """
    return lax.conv_general_dilated(jnp.transpose(inputs, (3, 1, 2, 0)),
                                    jnp.transpose(du, (1, 2, 0, 3)), (1, 1), pads,
                                    dimension_numbers=_NHWC)


def _kernel_grad_padding(spec: ConvScanSpec):
    """(padding inside the kernel-gradient convolution, padding of x_t and of h_{t-1}
    before it): the two add up to each convolution's own padding. Inside when the
    input convolution pads at least as much as the state's ("SAME" both: all of
    it), else all before (a "VALID" input convolution: x_t is larger than h)."""
    inside = spec.pads_h
    if any(px < ph for pair_x, pair_h in zip(spec.pads_x, spec.pads_h)
           for px, ph in zip(pair_x, pair_h)):
        inside = ((0, 0), (0, 0))
    before = lambda pads: [(lo - a, hi - b) for (lo, hi), (a, b) in zip(pads, inside)]
    return inside, before(spec.pads_x), before(spec.pads_h)


# -- one step --------------------------------------------------------------------------

def _step(spec: ConvScanSpec, w: dict, carry: tuple, px_t: Array):
    """(c, h), W_x * x_t -> ((c_t, h_t), h_t, the gate activations (B, H, W, G))."""
    c, h = carry
    features = c.shape[-1]
    # sigmoid(u) = 0.5 tanh(0.5 u) + 0.5 for i, f, o and tanh(u) for g: all four
    # nonlinearities in one pass over the (B, H, W, G) block.
    scale = _gate_columns(features, (0.5, 0.5, 1.0, 0.5))
    shift = _gate_columns(features, (0.5, 0.5, 0.0, 0.5))
    z = px_t + conv_nd(h, w["w_h"], spec.pads_h, _F32) + w["b"]
    acts = jnp.tanh(z * scale) * scale + shift
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return (c_new, h_new), h_new, acts


def _step_bwd(spec: ConvScanSpec, w: dict, acts, c_prev, c_new, d_new):
    """Cotangents of one step: (du (B, H, W, G), (dc_{t-1}, dh_{t-1})).

    du is the cotangent of the pre-activations z_t; d_new that of (c_t, h_t).
    """
    features = c_prev.shape[-1]
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    tc = jnp.tanh(c_new)
    dc, dh = d_new
    dc = dc + dh * o * (1.0 - tc * tc)
    # du = (upstream) * (the other factor of the gate's product) * (the gate's
    # derivative), over the whole (B, H, W, G) block as one fusion.
    is_g = _gate_columns(features, (0.0, 0.0, 1.0, 0.0)) > 0
    slope = jnp.where(is_g, 1.0 - acts * acts, acts * (1.0 - acts))
    other = jnp.concatenate([g, c_prev, i, tc], axis=-1)
    upstream = jnp.concatenate([dc, dc, dc, dh], axis=-1)
    du = upstream * other * slope
    return du, (dc * f, _conv_transpose(du, w["w_h_flip"], spec.pads_h))


# -- the loops -------------------------------------------------------------------------

def _input_projection(spec: ConvScanSpec, w_x: Array, xs: Array) -> Array:
    """W_x * x for all T*B images at once: (T, B, Hx, Wx, C) -> (T, B, H, W, G)."""
    t, b = xs.shape[:2]
    px = conv_nd(xs.reshape(t * b, *xs.shape[2:]), w_x, spec.pads_x, _F32)
    return px.reshape(t, b, *px.shape[1:])


def _forward(spec: ConvScanSpec, w: dict, px: Array, carry: tuple, seq: dict, save: bool):
    """The forward loop; with `save`, also the residuals of the backward pass."""

    def body(carry, inp):
        entering = carry
        if "r" in inp:
            carry = tuple(jnp.where(_per_example(inp["r"]), 0.0, a) for a in carry)
        new, y, acts = _step(spec, w, carry, inp["px"])
        if "m" in inp:
            m = _per_example(inp["m"])
            new = tuple(jnp.where(m, a, b) for a, b in zip(new, carry))
            y = jnp.where(m, y, 0.0)
        if not save:
            return new, y
        # The carries entering the step (before its reset); the backward pass
        # re-applies the reset.
        return new, (y, {"acts": acts, "entering": entering})

    inputs = {k: v for k, v in seq.items() if k != "s"}
    inputs["px"] = px
    return _pipelined_scan(body, carry, inputs, reverse=spec.reverse, unroll=spec.unroll or 1)


def _backward(spec: ConvScanSpec, w: dict, xs: Array, res: dict, seq: dict, final_carry,
              d_carry, d_ys):
    """The backward loop: (d initial carry, du (T, B, H, W, G), dW (P, k_h, k_w, G), db)."""
    num_in = xs.shape[-1]
    conv_pads, pre_x, pre_h = _kernel_grad_padding(spec)

    def body(state, inp):
        d_carry, c_new, d_kernel, d_bias = state  # c_new: the c leaving this step
        d_new, dy = d_carry, inp["dy"]
        if "m" in inp:
            m = _per_example(inp["m"])
            d_new = tuple(jnp.where(m, d, 0.0) for d in d_carry)
            dy = jnp.where(m, dy, 0.0)
        c_prev, h_prev = inp["c"], inp["h"]
        if "r" in inp:
            reset = _per_example(inp["r"])
            c_prev, h_prev = jnp.where(reset, 0.0, c_prev), jnp.where(reset, 0.0, h_prev)
        du, d_prev = _step_bwd(spec, w, inp["acts"], c_prev, c_new, (d_new[0], d_new[1] + dy))
        # x_t and h_{t-1} padded to one frame, so both kernels' gradients are one
        # convolution (which pads them the rest of the way)
        inputs = jnp.concatenate([_pad(inp["x"], pre_x), _pad(h_prev, pre_h)], axis=-1)
        d_kernel = d_kernel + _kernel_grad(inputs, du, conv_pads)
        d_bias = d_bias + du.sum(axis=(0, 1, 2))
        if "m" in inp:
            d_prev = tuple(p + jnp.where(m, 0.0, d) for p, d in zip(d_prev, d_carry))
        if "r" in inp:
            d_prev = tuple(jnp.where(reset, 0.0, d) for d in d_prev)
        if spec.truncation is not None:
            cut = (inp["s"] % spec.truncation == 0) & (inp["s"] > 0)
            d_prev = tuple(jnp.where(cut, 0.0, d) for d in d_prev)
        # the c entering this step is the c leaving the step processed next
        return (d_prev, inp["c"], d_kernel, d_bias), du

    inputs = dict(seq, dy=d_ys, x=xs, acts=res["acts"], c=res["entering"][0],
                  h=res["entering"][1])
    if spec.truncation is None:
        inputs.pop("s")
    kernel = w["w_h"].shape[:2]
    gates = w["w_h"].shape[-1]
    state = (d_carry, final_carry[0], jnp.zeros((num_in + gates // 4, *kernel, gates), _F32),
             jnp.zeros((gates,), _F32))
    (d_carry0, _, d_kernel, d_bias), du = _pipelined_scan(
        body, state, inputs, reverse=not spec.reverse, unroll=spec.unroll or 1)
    return d_carry0, du, d_kernel, d_bias


# -- the differentiable function -------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def conv_lstm_scan(spec: ConvScanSpec, w: dict, xs: Array, carry: tuple, seq: dict):
    """Runs the ConvLSTM over xs; returns (final carry (c, h), ys (T, B, H, W, F)).

    w: {"w_x": (k_h, k_w, C, G), "w_h": (k_h, k_w, F, G), "b": (G,)}, float32.
    xs: (T, B, Hx, Wx, C). carry: (c, h), each (B, H, W, F). seq: {"s": (T,) int32
    processing index, optional "m": (T, B) bool mask, "r": (T, B) bool resets}.
    """
    px = _input_projection(spec, w["w_x"], xs)
    return _forward(spec, w, px, carry, seq, save=False)


def _prepare(w: dict) -> dict:
    """Adds W_h flipped in space with in/out channels swapped (for dh_{t-1})."""
    return dict(w, w_h_flip=jnp.swapaxes(w["w_h"][::-1, ::-1], -1, -2))


def _conv_lstm_scan_fwd(spec, w, xs, carry, seq):
    px = _input_projection(spec, w["w_x"], xs)
    final, (ys, res) = _forward(spec, w, px, carry, seq, save=True)
    return (final, ys), (w, xs, res, seq, final)


def _conv_lstm_scan_bwd(spec, saved, cotangents):
    w, xs, res, seq, final = saved
    d_final, d_ys = cotangents
    d_carry0, du, d_kernel, d_bias = _backward(spec, _prepare(w), xs, res, seq, final, d_final,
                                               d_ys)
    num_in = xs.shape[-1]
    d_kernel = jnp.transpose(d_kernel, (1, 2, 0, 3))  # (k_h, k_w, P, G)
    d_w = {"w_x": d_kernel[:, :, :num_in], "w_h": d_kernel[:, :, num_in:], "b": d_bias}
    # The input cotangent, one convolution over all T*B images (XLA drops it when
    # nobody asks for it).
    t, b = du.shape[:2]
    w_x_flip = jnp.swapaxes(w["w_x"][::-1, ::-1], -1, -2)
    d_xs = _conv_transpose(du.reshape(t * b, *du.shape[2:]), w_x_flip, spec.pads_x)
    return d_w, d_xs.reshape(xs.shape), d_carry0, None


conv_lstm_scan.defvjp(_conv_lstm_scan_fwd, _conv_lstm_scan_bwd)
