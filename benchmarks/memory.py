"""Compiled peak memory of one LSTM training step over a long sequence (T = 1000).

Measured with XLA's own accounting, `jax.jit(f).lower(...).compile().memory_analysis()`
(no run needed): `temp` is the scratch the step allocates (activations saved for the
backward pass, loop buffers), `total` adds the arguments and outputs.

Variants:
  full          full BPTT, one unroll over all T steps (the baseline)
  truncation=50 the same single unroll call with truncation=50: gradients are cut
                every 50 steps, but the forward pass still runs (and saves
                residuals for) all T steps, so memory does not drop
  remat         full BPTT, carries kept every ~sqrt(T) steps, the rest recomputed
  remat=50      the same with chunks of 50 steps
  stream k=50   TBPTT(50, 50) as the streaming form: one `stream_unroll` update
                over 50 new steps (the state between updates is tiny); a T-step
                sequence is T/50 such steps, each holding one window's memory
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnvision import cells
from rnnvision.ablation.memory import compiled_bytes
from rnnvision.recurrence import stream_init, stream_unroll, unroll

SHAPE = (1000, 64, 128, 256)  # T, B, I, H
WINDOW = 50


def _stats(fn, *args) -> dict:
    """temp and total (argument + output + temp - alias) bytes of jit(fn)(*args)."""
    out = compiled_bytes(fn, *args)
    if out["peak_bytes"] < 0:  # a backend without memory analysis
        return {"temp_bytes": float("nan"), "total_bytes": float("nan")}
    return {"temp_bytes": out["temp"], "total_bytes": out["peak_bytes"]}


def measure(shape=SHAPE, window: int = WINDOW) -> list[dict]:
    """One dict per variant: name, temp_bytes, total_bytes, and ratios to `full`."""
    t, b, i, h = shape
    cell = cells.get("lstm", hidden_size=h)
    params = cell.init(jax.random.key(0), (i,))
    xs = jax.ShapeDtypeStruct((b, t, i), jnp.float32)

    def full_step(c, **opts):
        def loss(p, x):
            return jnp.sum(unroll(c, p, c.initial_carry(p, (b, i)), x, **opts)[1] ** 2)
        return jax.grad(loss)

    def stream_step(p, state, x_new):
        def loss(p):
            ys, new_state = stream_unroll(cell, p, state, x_new)
            return jnp.sum(ys ** 2), new_state
        return jax.grad(loss, has_aux=True)(p)

    rows = [("full", _stats(full_step(cell), params, xs)),
            ("full (generic scan)", _stats(full_step(cell, impl="scan"), params, xs)),
            (f"truncation={window}", _stats(full_step(cell, truncation=window), params, xs)),
            ("remat", _stats(full_step(cell, remat=True), params, xs)),
            (f"remat={window}", _stats(full_step(cell, remat=window), params, xs))]
    state = stream_init(cell, params, cell.initial_carry(params, (b, i)), (b, i), window, window)
    x_new = jax.ShapeDtypeStruct((b, window, i), jnp.float32)
    rows.append((f"stream k1=k2={window}", _stats(stream_step, params, state, x_new)))
    base = rows[0][1]
    return [{"variant": name, **s, "temp_ratio": s["temp_bytes"] / base["temp_bytes"],
             "total_ratio": s["total_bytes"] / base["total_bytes"]} for name, s in rows]
