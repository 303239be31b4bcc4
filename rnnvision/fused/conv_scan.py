"""The ConvLSTM time loop with a hand-written backward pass.

Shape legend: T time, B batch, Hx x Wx the input's and H x W the state's
spatial size, C input channels, F features, G = 4F gate channels, k_h x k_w the
kernel, P = C + F. All sequences are time-major here.

    carry, ys = conv_lstm_scan(spec, w, xs, carry, seq)     # ys (T, B, H, W, F)

The maths is `rnnvision.cells.ConvLSTMCell`'s (no peepholes, gate order i, f, g, o):
  z_t = W_x * x_t + W_h * h_{t-1} + b;  c_t = s(f) c_{t-1} + s(i) tanh(g);
  h_t = s(o) tanh(c_t).

The convolutions run one of two ways (`spec.fourier`, chosen by
`rnnvision.fused._convolve_through_fft`):
  direct   in space: W_x * x on all T*B images at once before the loop, W_h * h
           per step; in the backward loop dh_{t-1} by the convolution with the
           flipped kernel and the kernel gradients of BOTH convolutions as one
           convolution per step in XLA:CPU's fast canonical form ([x_t, h_{t-1}]
           with its channels as the batch and its batch as the features, du_t as
           the kernel: `_kernel_grad`). Autodiff of the generic loop
           (rnnvision/cells/conv_grad.py) instead writes the (B*H*W, k_h*k_w*F)
           patch matrix of h_{t-1} every step and multiplies it, and the hoisted
           input convolution's kernel gradient is a patch matrix of all T*B images.
  fourier  through the 2-D real FFT over the padded frame (H + k_h - 1, W + k_w - 1)
           (see "convolutions through the FFT" below): per step one complex
           (B x P) @ (P x G) product per frequency instead of a k_h k_w-tap
           convolution (7.3x fewer multiplications for 16x16 states and 5x5
           kernels), and the kernel gradient as one product per frequency over all
           T*B steps' spectra after the loop. Exact up to float32 rounding, but the
           rounding error of an FFT is spread over the whole frame: it is small
           against the largest |z| of an image (~3e-7 of it), not against each z.
Both: the forward pass stores only what the backward pass reads (the gate
activations, the carries entering each step, fourier: the spectra of h_{t-1})
and computes the four gate nonlinearities in one pass; each step's slices of the
sequences are copied into the loop carry one step ahead
(`dense_scan._pipelined_scan`: XLA:CPU compiles a fusion that reads a dynamic
slice into scalar code). Numbers: benchmarks/NOTES.md, "ConvLSTM against PyTorch".

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
    fourier: bool = False     # convolutions through the FFT (else in space)
    frame: tuple = ()         # fourier: (H + k_h - 1, W + k_w - 1), the FFT size


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


# -- convolutions through the FFT ----------------------------------------------------
# In the frame n = (H + k_h - 1, W + k_w - 1) of the padded inputs, with ^ the
# 2-D real FFT over n (Fq = n_0 (n_1 // 2 + 1) frequencies) and each product a
# matrix product over channels, one per frequency:
#   z      = corr(pad(p), w)     ^z  = ^pad(p) conj(^w)      p = [x_t, h_{t-1}]
#   d pad(h) = conv(du, w_h)     ^.  = ^du ^w_h^T            (then crop the padding)
#   dw     = corr(pad(p), du)    ^dw = sum over t, b of ^pad(p)^T conj(^du)
# All three are exact for the first H x W outputs (resp. k_h x k_w taps): the
# zero padding up to n keeps the circular products from wrapping around.

def _spectrum(a: Array, pads, frame) -> Array:
    """(N, h, w, C) zero-padded by `pads`, then at the end up to `frame` -> (Fq, N, C)."""
    a = _pad(a, pads)
    a = _pad(a, [(0, n - size) for n, size in zip(frame, a.shape[1:3])])
    spectrum = jnp.fft.rfft2(a, axes=(1, 2))  # (N, n_0, n_1 // 2 + 1, C)
    return jnp.transpose(spectrum, (1, 2, 0, 3)).reshape(-1, a.shape[0], a.shape[-1])


def _from_spectrum(spectrum: Array, frame) -> Array:
    """(Fq, N, C) -> (N, n_0, n_1, C), the inverse of `_spectrum` before its padding."""
    _, num, chans = spectrum.shape
    spectrum = spectrum.reshape(frame[0], frame[1] // 2 + 1, num, chans)
    return jnp.fft.irfft2(jnp.transpose(spectrum, (2, 0, 1, 3)), s=frame, axes=(1, 2))


def _kernel_spectrum(w: Array, frame) -> Array:
    """(k_h, k_w, P, G) -> (Fq, P, G): the kernel zero-padded to the frame, transformed."""
    kernel = w.shape[:2]
    w = jnp.pad(w, [(0, n - k) for n, k in zip(frame, kernel)] + [(0, 0), (0, 0)])
    return jnp.fft.rfft2(w, axes=(0, 1)).reshape(-1, *w.shape[2:])


def _crop(a: Array, pads) -> Array:
    """The inverse of `_pad(., pads)` for cotangents: drop what padding added."""
    return _pad(a, [(-lo, -hi) for lo, hi in pads])


# -- the convolutions of one step, in space ("direct") or through the FFT ("fourier") --

def _prepare(spec: ConvScanSpec, w: dict, xs: Array) -> tuple[dict, dict]:
    """(w plus the derived weights the loops use, the per-step inputs of the forward loop).

    direct: the input convolution W_x * x of all T*B images at once ("px"), and W_h
    flipped for dh. fourier: the spectra of the padded x_t ("xf", (T, Fq, B, C)), of
    the kernels (conjugated for the forward products) and of W_h^T for dh.
    """
    t, b = xs.shape[:2]
    images = xs.reshape(t * b, *xs.shape[2:])
    if not spec.fourier:
        px = conv_nd(images, w["w_x"], spec.pads_x, _F32)
        flip = jnp.swapaxes(w["w_h"][::-1, ::-1], -1, -2)
        return dict(w, w_h_flip=flip), {"px": px.reshape(t, b, *px.shape[1:])}
    frame = spec.frame
    num_in = xs.shape[-1]
    w_f = _kernel_spectrum(jnp.concatenate([w["w_x"], w["w_h"]], axis=2), frame)
    xf = _spectrum(images, spec.pads_x, frame)
    xf = jnp.swapaxes(xf.reshape(xf.shape[0], t, b, num_in), 0, 1)
    return (dict(w, w_f_conj=jnp.conj(w_f), w_h_f_t=jnp.swapaxes(w_f[:, num_in:], 1, 2),
                 w_x_f_t=jnp.swapaxes(w_f[:, :num_in], 1, 2)), {"xf": xf})


def _preactivation(spec: ConvScanSpec, w: dict, h: Array, inp: dict):
    """z_t = W_x * x_t + W_h * h_{t-1} + b (B, H, W, G), and what the backward pass keeps
    of the step (fourier: the spectrum of h_{t-1}, for the kernel gradient)."""
    if not spec.fourier:
        return inp["px"] + conv_nd(h, w["w_h"], spec.pads_h, _F32) + w["b"], {}
    hf = _spectrum(h, spec.pads_h, spec.frame)
    zf = jnp.matmul(jnp.concatenate([inp["xf"], hf], axis=-1), w["w_f_conj"])
    z = _from_spectrum(zf, spec.frame)[:, :h.shape[1], :h.shape[2]]
    return z + w["b"], {"hf": hf}


def _state_cotangent(spec: ConvScanSpec, w: dict, du: Array):
    """dh_{t-1} from du_t (both (B, H, W, .)), and what the kernel gradient keeps
    (fourier: the spectrum of du_t; direct: du_t itself)."""
    if not spec.fourier:
        return _conv_transpose(du, w["w_h_flip"], spec.pads_h), {"du": du}
    duf = _spectrum(du, ((0, 0), (0, 0)), spec.frame)  # du zero-padded at the end to the frame
    d_padded = _from_spectrum(jnp.matmul(duf, w["w_h_f_t"]), spec.frame)
    return _crop(d_padded, spec.pads_h), {"duf": duf}


def _fourier_grads(spec: ConvScanSpec, w: dict, xf, hf, duf, x_shape):
    """After the loop: the kernel gradient (k_h, k_w, P, G) from all T*B spectra at once
    (one product per frequency), and dx (T, B, Hx, Wx, C)."""
    kernel = w["w_h"].shape[:2]
    pf = jnp.concatenate([xf, hf], axis=-1)                  # (T, Fq, B, P)
    dwf = jnp.einsum("tfbp,tfbg->fpg", pf, jnp.conj(duf))    # (Fq, P, G)
    dwf = dwf.reshape(spec.frame[0], spec.frame[1] // 2 + 1, *dwf.shape[1:])
    d_kernel = jnp.fft.irfft2(dwf, s=spec.frame, axes=(0, 1))[:kernel[0], :kernel[1]]
    t, fq, b, g = duf.shape
    dxf = jnp.matmul(jnp.swapaxes(duf, 0, 1).reshape(fq, t * b, g), w["w_x_f_t"])
    d_xs = _crop(_from_spectrum(dxf, spec.frame), spec.pads_x)
    return d_kernel, d_xs.reshape(x_shape)


# -- one step of the cell --------------------------------------------------------------

def _step(spec: ConvScanSpec, w: dict, carry: tuple, inp: dict):
    """(c, h), the step's inputs -> ((c_t, h_t), h_t, the gate activations (B, H, W, G),
    what the backward pass keeps of the convolutions)."""
    c, h = carry
    features = c.shape[-1]
    # sigmoid(u) = 0.5 tanh(0.5 u) + 0.5 for i, f, o and tanh(u) for g: all four
    # nonlinearities in one pass over the (B, H, W, G) block.
    scale = _gate_columns(features, (0.5, 0.5, 1.0, 0.5))
    shift = _gate_columns(features, (0.5, 0.5, 0.0, 0.5))
    z, keep = _preactivation(spec, w, h, inp)
    acts = jnp.tanh(z * scale) * scale + shift
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return (c_new, h_new), h_new, acts, keep


def _gates_bwd(acts, c_prev, c_new, d_new):
    """(du (B, H, W, G), dc_{t-1}) from the cotangent d_new of (c_t, h_t); du is the
    cotangent of the pre-activations z_t."""
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
    return upstream * other * slope, dc * f


# -- the loops -------------------------------------------------------------------------

def _forward(spec: ConvScanSpec, w: dict, per_step: dict, carry: tuple, seq: dict,
             save: bool):
    """The forward loop; with `save`, also the residuals of the backward pass."""

    def body(carry, inp):
        entering = carry
        if "r" in inp:
            carry = tuple(jnp.where(_per_example(inp["r"]), 0.0, a) for a in carry)
        new, y, acts, keep = _step(spec, w, carry, inp)
        if "m" in inp:
            m = _per_example(inp["m"])
            new = tuple(jnp.where(m, a, b) for a, b in zip(new, carry))
            y = jnp.where(m, y, 0.0)
        if not save:
            return new, y
        # The carries entering the step (before its reset); the backward pass
        # re-applies the reset.
        return new, (y, {"acts": acts, "c": entering[0], "h": entering[1], **keep})

    inputs = {k: v for k, v in seq.items() if k != "s"}
    inputs.update(per_step)
    return _pipelined_scan(body, carry, inputs, reverse=spec.reverse, unroll=spec.unroll or 1)


def _backward(spec: ConvScanSpec, w: dict, xs: Array, res: dict, seq: dict, final_carry,
              d_carry, d_ys):
    """The backward loop: (d initial carry, its per-step outputs ("du" or "duf"), its
    sums: "kernel" (direct: dW (P, k_h, k_w, G)) and "bias" (G,))."""
    conv_pads, pre_x, pre_h = _kernel_grad_padding(spec)

    def body(state, inp):
        d_carry, c_new, sums = state  # c_new: the c leaving this step
        d_new, dy = d_carry, inp["dy"]
        if "m" in inp:
            m = _per_example(inp["m"])
            d_new = tuple(jnp.where(m, d, 0.0) for d in d_carry)
            dy = jnp.where(m, dy, 0.0)
        reset = _per_example(inp["r"]) if "r" in inp else False
        c_prev = jnp.where(reset, 0.0, inp["c"])
        du, dc_prev = _gates_bwd(inp["acts"], c_prev, c_new, (d_new[0], d_new[1] + dy))
        dh_prev, keep = _state_cotangent(spec, w, du)
        sums = dict(sums, bias=sums["bias"] + du.sum(axis=(0, 1, 2)))
        if not spec.fourier:
            # x_t and h_{t-1} padded to one frame, so both kernels' gradients are one
            # convolution (which pads them the rest of the way)
            h_prev = jnp.where(reset, 0.0, inp["h"])
            inputs = jnp.concatenate([_pad(inp["x"], pre_x), _pad(h_prev, pre_h)], axis=-1)
            sums["kernel"] = sums["kernel"] + _kernel_grad(inputs, du, conv_pads)
        d_prev = (dc_prev, dh_prev)
        if "m" in inp:
            d_prev = tuple(p + jnp.where(m, 0.0, d) for p, d in zip(d_prev, d_carry))
        d_prev = tuple(jnp.where(reset, 0.0, d) for d in d_prev)
        if spec.truncation is not None:
            cut = (inp["s"] % spec.truncation == 0) & (inp["s"] > 0)
            d_prev = tuple(jnp.where(cut, 0.0, d) for d in d_prev)
        # the c entering this step is the c leaving the step processed next
        return (d_prev, inp["c"], sums), keep

    inputs = dict(seq, dy=d_ys, acts=res["acts"], c=res["c"])
    if spec.truncation is None:
        inputs.pop("s")
    gates = w["w_h"].shape[-1]
    sums = {"bias": jnp.zeros((gates,), _F32)}
    if not spec.fourier:
        inputs.update(x=xs, h=res["h"])
        sums["kernel"] = jnp.zeros((xs.shape[-1] + gates // 4, *w["w_h"].shape[:2], gates),
                                   _F32)
    (d_carry0, _, sums), outs = _pipelined_scan(
        body, (d_carry, final_carry[0], sums), inputs, reverse=not spec.reverse,
        unroll=spec.unroll or 1)
    return d_carry0, outs, sums


# -- the differentiable function -------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def conv_lstm_scan(spec: ConvScanSpec, w: dict, xs: Array, carry: tuple, seq: dict):
    """Runs the ConvLSTM over xs; returns (final carry (c, h), ys (T, B, H, W, F)).

    w: {"w_x": (k_h, k_w, C, G), "w_h": (k_h, k_w, F, G), "b": (G,)}, float32.
    xs: (T, B, Hx, Wx, C). carry: (c, h), each (B, H, W, F). seq: {"s": (T,) int32
    processing index, optional "m": (T, B) bool mask, "r": (T, B) bool resets}.
    """
    wp, per_step = _prepare(spec, w, xs)
    return _forward(spec, wp, per_step, carry, seq, save=False)


def _conv_lstm_scan_fwd(spec, w, xs, carry, seq):
    wp, per_step = _prepare(spec, w, xs)
    final, (ys, res) = _forward(spec, wp, per_step, carry, seq, save=True)
    if spec.fourier:
        res = dict(res, xf=per_step["xf"])
        del res["h"]  # the kernel gradient reads the spectra instead
    return (final, ys), (wp, xs, res, seq, final)


def _conv_lstm_scan_bwd(spec, saved, cotangents):
    wp, xs, res, seq, final = saved
    d_final, d_ys = cotangents
    d_carry0, outs, sums = _backward(spec, wp, xs, res, seq, final, d_final, d_ys)
    num_in = xs.shape[-1]
    if spec.fourier:
        d_kernel, d_xs = _fourier_grads(spec, wp, res["xf"], res["hf"], outs["duf"], xs.shape)
    else:
        d_kernel = jnp.transpose(sums["kernel"], (1, 2, 0, 3))  # (k_h, k_w, P, G)
        # The input cotangent, one convolution over all T*B images (XLA drops it
        # when nobody asks for it).
        du = outs["du"]
        t, b = du.shape[:2]
        w_x_flip = jnp.swapaxes(wp["w_x"][::-1, ::-1], -1, -2)
        d_xs = _conv_transpose(du.reshape(t * b, *du.shape[2:]), w_x_flip, spec.pads_x)
        d_xs = d_xs.reshape(xs.shape)
    d_w = {"w_x": d_kernel[:, :, :num_in], "w_h": d_kernel[:, :, num_in:], "b": sums["bias"]}
    return d_w, d_xs, d_carry0, None


conv_lstm_scan.defvjp(_conv_lstm_scan_fwd, _conv_lstm_scan_bwd)
