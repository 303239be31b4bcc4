"""The machine's roofline for the RNN benchmarks: measured matmul and copy rates.

    python -m benchmarks.roofline

Prints the float32 matmul rate (GFLOP/s) of XLA on this machine for the matmul
shapes an LSTM step and its hoisted input projection run, and the memory copy
rate (GB/s), both median of repeated runs after warm-up. benchmarks/NOTES.md
reads a training step's FLOP count against these rates.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

# (M, K, N): a recurrent step (B x H @ H x 4H), the hoisted input projection over
# all steps (T*B x I @ I x 4H), a large square reference.
MATMULS = {
    "step B=64 H=256 (64x256 @ 256x1024)": (64, 256, 1024),
    "step B=64 I+H=384 (64x384 @ 384x1024)": (64, 384, 1024),
    "step B=64 I+H=129 (64x129 @ 129x512)": (64, 129, 512),
    "hoisted T*B=6400 I=128 (6400x128 @ 128x1024)": (6400, 128, 1024),
    "square 2048": (2048, 2048, 2048),
}


def _median_seconds(fn, *args, repeats: int = 20) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _step_loop(steps: int):
    """`steps` dependent (M, K) @ (K, N) matmuls in one lax.scan, as a recurrence runs them."""
    def run(a, b):
        def body(a, _):
            z = jnp.matmul(a, b, preferred_element_type=jnp.float32)  # as the cells do
            # the next step depends on every column of z: nothing can be skipped
            return (a + 1e-6 * z.sum(axis=1, keepdims=True)).astype(a.dtype), None
        return jax.lax.scan(body, a, None, length=steps)[0]
    return jax.jit(run)


def measure(loop_steps: int = 100) -> dict[str, float]:
    """{name: rate}: GFLOP/s per matmul shape, GB/s for a 64 MB copy.

    Each matmul is timed as one call, and the step shapes also inside a
    `loop_steps`-step scan: a single call of a small matmul is dominated by
    dispatch (~0.1 ms), so only the loop shows the rate a recurrence gets.
    """
    rng = np.random.default_rng(0)
    rates = {}
    matmul = jax.jit(jnp.dot)
    for name, (m, k, n) in MATMULS.items():
        a = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
        b = jnp.asarray(rng.standard_normal((k, n)) / np.sqrt(k), jnp.float32)
        flop = 2 * m * k * n
        rates[f"matmul {name} GFLOP/s"] = flop / _median_seconds(matmul, a, b) / 1e9
        if name.startswith("step") and k <= n:
            for dtype in ("float32", "bfloat16"):
                loop = _step_loop(loop_steps)
                seconds = _median_seconds(loop, a.astype(dtype), b.astype(dtype), repeats=10)
                rates[f"matmul {name}, {loop_steps}-step loop, {dtype} GFLOP/s"] = (
                    loop_steps * flop / seconds / 1e9)
    x = jnp.asarray(rng.standard_normal(16 * 2**20), jnp.float32)  # 64 MB
    copy = jax.jit(lambda x: x * 1.0001)
    rates["copy 64 MB (read + write) GB/s"] = 2 * x.nbytes / _median_seconds(copy, x) / 1e9
    return rates


def main() -> None:
    print(f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s), JAX {jax.__version__}")
    for name, rate in measure().items():
        print(f"{name:55s} {rate:8.1f}")


if __name__ == "__main__":
    main()
