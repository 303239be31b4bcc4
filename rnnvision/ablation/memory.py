r"""Peak memory of one training step vs sequence length: what truncation and remat buy.

Measured from XLA's compiled memory analysis of `jit(value_and_grad(loss))`
(arguments + outputs + temporaries - aliased), so it is exact for the compiled
program, needs no accelerator and runs nothing. Modes, for a cell over T steps
with a loss at every step (a readout and squared error, as in next-frame
prediction):

  full       full BPTT over T steps: activations of all T steps are kept.
  truncated  `unroll(truncation=k)` over T steps in one graph. The gradient is
             cut, but the forward pass still keeps all T steps' activations for
             the backward pass: it saves no memory (shown to make that point).
  stream     one streaming TBPTT(k, k) update (`recurrence.stream_unroll`): the
             graph holds k steps whatever T is; the sequence is consumed over
             T / k updates with the carry handed on between them.
  remat      full BPTT with `unroll(remat=True)`: only the carries of ~sqrt(T)
             chunk boundaries are kept and the rest recomputed (~sqrt(T) memory,
             one extra forward pass).

    rows = memory.sweep_lengths("lstm", hidden=128, batch=32, features=64,
                                lengths=[128, 512, 2048], truncation=32)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from rnnvision import cells, recurrence

MODES = ("full", "truncated", "stream", "remat")


def compiled_bytes(fn: Callable, *args) -> dict[str, int]:
    """XLA's memory analysis of jit(fn)(*args): argument, output, temp, alias and peak bytes."""
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    if analysis is None:  # a backend without memory analysis
        return {"peak_bytes": -1}
    out = {name: int(getattr(analysis, f"{name}_size_in_bytes", 0))
           for name in ("argument", "output", "temp", "alias")}
    out["peak_bytes"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def _step_loss(cell, mode: str, truncation: int):
    """loss(params, xs) for one training step in `mode` (see the module docstring)."""

    def readout_loss(params, ys, xs):
        pred = ys @ params["head"]
        return jnp.mean((pred - xs) ** 2)

    def loss(params, xs):
        carry = cell.initial_carry(params["cell"], xs[:, 0].shape)
        if mode == "stream":
            state = recurrence.stream_init(cell, params["cell"], carry, xs[:, 0].shape,
                                           truncation, truncation)
            ys, _ = recurrence.stream_unroll(cell, params["cell"], state, xs)
        else:
            _, ys = recurrence.unroll(cell, params["cell"], carry, xs,
                                      truncation=truncation if mode == "truncated" else None,
                                      remat=mode == "remat")
        return readout_loss(params, ys, xs)

    return loss


def step_memory(cell_name: str, mode: str, length: int, *, hidden: int, batch: int,
                features: int, truncation: int, cell_options: dict | None = None) -> dict[str, Any]:
    """Compiled memory of one training step of `cell_name` over `length` steps in `mode`."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; allowed: {MODES}")
    cell = cells.get(cell_name, hidden_size=hidden, **(cell_options or {}))
    params = jax.eval_shape(lambda k: {"cell": cell.init(k, (features,)),
                                       "head": jnp.zeros((hidden, features))}, jax.random.key(0))
    steps = min(truncation, length) if mode == "stream" else length
    xs = jax.ShapeDtypeStruct((batch, steps, features), jnp.float32)
    grad_fn = jax.value_and_grad(_step_loss(cell, mode, min(truncation, length)))
    out = compiled_bytes(grad_fn, params, xs)
    return {"mode": mode, "length": length, "truncation": truncation, **out}


def sweep_lengths(cell_name: str, *, hidden: int, batch: int, features: int,
                  lengths: Sequence[int], truncation: int,
                  modes: Sequence[str] = MODES) -> list[dict[str, Any]]:
    """`step_memory` for every (mode, length)."""
    return [step_memory(cell_name, mode, length, hidden=hidden, batch=batch,
                        features=features, truncation=truncation)
            for length in lengths for mode in modes]


def task_step_memory(task, params, batch: dict, stream: Any = None) -> dict[str, int]:
    """Compiled memory of the gradient of a task's loss on one (host) batch.

    The trainer's step adds the optimizer update (a few parameter-sized buffers)
    on top; this is the part that depends on truncation and sequence length.
    """
    rng = jax.random.key(0)
    if stream is None:
        fn = jax.value_and_grad(lambda p, b: task.loss(p, b, rng), has_aux=True)
        return compiled_bytes(fn, params, batch)
    fn = jax.value_and_grad(lambda p, b, s: task.stream_loss(p, b, rng, s), has_aux=True)
    return compiled_bytes(fn, params, batch, stream)


def analyze(config, root: str) -> list[dict[str, Any]]:
    """The sweep's memory analysis (config.memory); writes DIR/memory.csv."""
    import os

    from absl import logging

    from rnnvision.ablation.summary import write_csv

    m = config.memory
    if not m.lengths:
        return []
    lengths = [int(v) for v in m.lengths.split(",")]
    modes = [v.strip() for v in m.modes.split(",")]
    rows = sweep_lengths(m.cell, hidden=m.hidden_size, batch=m.batch_size, features=m.features,
                         lengths=lengths, truncation=m.truncation, modes=modes)
    for r in rows:
        r["peak_mib"] = r["peak_bytes"] / 2**20
        logging.info("memory %s T=%d: %.1f MiB", r["mode"], r["length"], r["peak_mib"])
    write_csv(os.path.join(root, "memory.csv"), rows)
    return rows
