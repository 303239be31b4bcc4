"""Fast paths of the time loop, chosen by `rnnvision.recurrence.unroll(impl=...)`.

A user never calls these: `unroll` (impl "auto" or "fused") asks
`unsupported_reason(...)` whether a fast path applies and `scan_fn(...)` for the
replacement of its generic "project inputs, then lax.scan over
cell.step_projected"; impl="scan" pins the generic loop. The replacement has
the same signature and semantics (truncation, mask, resets, reverse, remat
chunking and `unroll` are all honoured), and gives the same values and gradients
to float32 rounding (tests/test_fast_paths.py).

Applies to: exactly the built-in `lstm`, `gru` and `rnn` cells (not subclasses:
they may change the maths), float32 or bfloat16 compute, float32
params/carry/inputs, one batch dim (dense_scan.py); and exactly the built-in
`conv_lstm` cell with float32 compute, params, carry and inputs, one batch dim
(conv_scan.py). `unsupported_reason` says which condition fails. Everything
else runs the generic scan under impl="auto".

With compute_dtype="bfloat16" the matmuls of both loops and the weight gradients
take bfloat16 operands with float32 accumulation, as the cell's own `matmul`
does; the carry, gates and all elementwise maths stay float32. The generic
scan's autodiff rounds each matmul's cotangent result to bfloat16, the fast
path keeps it in float32, so the two agree to bfloat16 precision, not float32
(tests/test_fast_paths.py bounds both against a float32 reference).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Cell
from rnnvision.cells.conv_grad import explicit_padding
from rnnvision.cells.conv_lstm import ConvLSTMCell
from rnnvision.cells.gru import GRUCell
from rnnvision.cells.lstm import LSTMCarry, LSTMCell
from rnnvision.cells.rnn import SimpleRNNCell
from rnnvision.fused.conv_scan import ConvScanSpec, conv_lstm_scan
from rnnvision.fused.dense_scan import ScanSpec, dense_scan

_KINDS = {LSTMCell: "lstm", GRUCell: "gru", SimpleRNNCell: "rnn", ConvLSTMCell: "conv_lstm"}
# compute dtypes each fast path implements
_COMPUTE = {"lstm": ("float32", "bfloat16"), "gru": ("float32", "bfloat16"),
            "rnn": ("float32", "bfloat16"), "conv_lstm": ("float32",)}

ScanFn = Callable[[Any, dict], tuple[Any, jax.Array]]


def scan_fn(cell: Cell, params, carry, inputs: dict, *, truncation: int | None,
            reverse: bool, unroll: int | None) -> ScanFn:
    """The fused `(carry, inputs) -> (carry, ys time-major)` for this call.

    `inputs` is unroll's time-major dict: "x" (T, B, *F), "s" (T,) processing
    index, optional "m" / "r" (T, B) bool mask / resets. Call only where
    `unsupported_reason(...)` is None.
    """
    kind = _KINDS[type(cell)]
    if kind == "conv_lstm":
        return _conv_lstm_scan_fn(cell, params, carry, inputs, truncation, reverse, unroll)
    in_loop = _input_matmul_in_loop(params)
    spec = ScanSpec(kind=kind, truncation=truncation, reverse=bool(reverse), unroll=unroll,
                    in_loop=in_loop, compute=cell.compute_dtype)
    # The input bias always enters inside the loop, where it is free in the step's
    # elementwise fusion; adding it to the hoisted (T, B, G*H) projection would cost
    # one more pass over that array.
    names = ("w_h", "b_h", "b_x") if kind == "gru" else ("w_h", "b")
    if in_loop:
        names += ("w_x",)
    w = {name: params[name] for name in names}

    def fused(carry, inp):
        inp = dict(inp)
        x = inp.pop("x")
        xs = x if in_loop else _rows_times(cell, x, params["w_x"])
        leaves = (carry.c, carry.h) if kind == "lstm" else (carry,)
        final, ys = dense_scan(spec, w, xs, leaves, inp)
        return (LSTMCarry(*final) if kind == "lstm" else final[0]), ys

    return fused


def _conv_lstm_scan_fn(cell: ConvLSTMCell, params, carry, inputs: dict, truncation, reverse,
                       unroll) -> ScanFn:
    """The fused ConvLSTM loop (conv_scan.py) with the cell's two paddings made explicit."""
    kernel = params["w_x"].shape[:2]
    state_hw = carry.h.shape[1:3]
    pads_h = explicit_padding("SAME", state_hw, kernel)
    frame = tuple(size + lo + hi for size, (lo, hi) in zip(state_hw, pads_h))
    spec = ConvScanSpec(truncation=truncation, reverse=bool(reverse), unroll=unroll,
                        pads_x=explicit_padding(cell.padding, inputs["x"].shape[2:4], kernel),
                        pads_h=pads_h, fourier=_convolve_through_fft(state_hw, kernel),
                        frame=frame)
    w = {name: params[name] for name in ("w_x", "w_h", "b")}

    def fused(carry, inp):
        inp = dict(inp)
        final, ys = conv_lstm_scan(spec, w, inp.pop("x"), (carry.c, carry.h), inp)
        return LSTMCarry(*final), ys

    return fused


# The FFT path's products (one complex matrix product per frequency, only B rows
# each) ran 4-5x below the direct convolution's rate per FLOP on the benchmark
# CPU: it pays where it does at least this many times fewer multiplications.
_FFT_MIN_SAVING = 4.0


def _convolve_through_fft(state_hw, kernel) -> bool:
    """CPU only: convolutions through the FFT where that saves enough multiplications.

    Direct: H W k_h k_w per channel pair and image; FFT: 4 per frequency of the
    real FFT over the padded frame (H + k_h - 1, W + k_w - 1). The benchmark's
    16x16 state with a 5x5 kernel saves 7.3x (FFT 1.7-1.8x faster per step), 8x8
    with 3x3 2.4x (FFT 2.6x slower); benchmarks/NOTES.md. Accelerators: not measured.
    """
    if jax.default_backend() != "cpu":
        return False
    (h, w), (kh, kw) = state_hw, kernel
    frequencies = (h + kh - 1) * ((w + kw - 1) // 2 + 1)
    return h * w * kh * kw >= _FFT_MIN_SAVING * 4 * frequencies


# Weights up to this size stay in a core's L2 cache across steps (4 MiB per core on
# the benchmark machine), so the input matmul can run inside the loop, x_t at a time.
_IN_LOOP_WEIGHT_BYTES = 2 * 1024 * 1024


def _input_matmul_in_loop(params) -> bool:
    """CPU only: fuse x_t W_x into the loop when [W_x; W_h] fits in cache.

    On CPU the hoisted projection px (T, B, G*H) is written once and read once,
    which costs more than it saves while the weights stay in cache; on
    accelerators and for large weights the hoisted big matmul is better.
    """
    if jax.default_backend() != "cpu":
        return False
    size = (params["w_x"].shape[0] + params["w_h"].shape[0]) * params["w_h"].shape[1]
    return size * 4 <= _IN_LOOP_WEIGHT_BYTES


def _rows_times(cell: Cell, x, w):
    """x (T, B, I) @ w (I, N) as one 2-D matmul over the T*B rows (XLA:CPU runs the
    2-D form up to 2x faster than the batched 3-D one), in the cell's compute dtype."""
    t, b, i = x.shape
    return cell.matmul(x.reshape(t * b, i), w).reshape(t, b, w.shape[1])


def cell_unsupported_reason(cell: Cell) -> str | None:
    """Why no fast path can run `cell`, judged from the cell alone; None if one can."""
    if type(cell) not in _KINDS:
        return (f"fast paths exist for exactly the classes {sorted(c.__name__ for c in _KINDS)} "
                "(a subclass may change the maths)")
    allowed = _COMPUTE[_KINDS[type(cell)]]
    if cell.compute_dtype not in allowed:
        return f"compute_dtype={cell.compute_dtype!r} ({' or '.join(allowed)} only)"
    return None


def unsupported_reason(cell: Cell, params, carry, inputs: dict) -> str | None:
    """Why no fast path can run this call of unroll (see `scan_fn`); None if one can."""
    why = cell_unsupported_reason(cell)
    if why is not None:
        return why
    f32 = jnp.dtype(jnp.float32)
    x = inputs["x"]
    conv = isinstance(cell, ConvLSTMCell)
    in_ndim, in_shape, state = (5, "(T, B, H, W, C)", "(B, H, W, F)") if conv else (
        3, "(T, B, I)", "(B, H)")
    if x.ndim != in_ndim or x.dtype != f32:
        return f"inputs must be float32 {in_shape} with one batch dim; got {x.dtype} {x.shape}"
    carry_type = LSTMCarry if isinstance(cell, (LSTMCell, ConvLSTMCell)) else jax.Array
    leaves = jax.tree.leaves(carry) + jax.tree.leaves(params)
    if (not isinstance(carry, carry_type)
            or any(a.ndim != in_ndim - 1 for a in jax.tree.leaves(carry))
            or any(jnp.dtype(a.dtype) != f32 for a in leaves)):
        return (f"params and carry must be float32, the carry a {state} state of the cell's "
                "own type")
    return None
