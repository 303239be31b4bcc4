"""PixelRNN on 28x28 binary digits: parameters, one training step, sampling 16 digits.

    python -m benchmarks.pixel_rnn_speed                       # Row LSTM and Diagonal BiLSTM,
                                                               # 1 and 7 layers (~4 min, 2 cores)
    python -m benchmarks.pixel_rnn_speed --layers=1 --batch=32

For each layer type and depth L (h = --features, the residual stream 2h, head
--head): the number of parameters (stored, masked entries included), the
compile time and the median wall time of one jitted training step (the mean NLL,
its gradient and an Adam update) on a batch of random binary images, and the
time to sample 16 digits with the incremental sampler (first call, compile
included, and a second call).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
import optax

from rnnvision.models.pixel_rnn import PixelRNN, num_parameters
from rnnvision.models.pixel_rnn_sampling import sample


def _timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def measure(layer: str, num_layers: int, features: int, head: int, batch: int,
            repeats: int, num_samples: int) -> dict:
    model = PixelRNN(image_shape=(28, 28, 1), layer=layer, num_layers=num_layers,
                     features=features, head_features=head)
    params = jax.jit(model.init)(jax.random.key(0))
    optimizer = optax.adam(1e-3)
    images = np.random.default_rng(0).integers(0, 2, (batch, 28, 28, 1))

    @jax.jit
    def train_step(params, opt_state, images):
        loss, grads = jax.value_and_grad(lambda p: model.nll(p, images).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    state = (params, optimizer.init(params))
    state_and_loss, compile_s = _timed(train_step, *state, images)
    times = []
    for _ in range(repeats):
        state_and_loss, seconds = _timed(train_step, *state_and_loss[:2], images)
        times.append(seconds)
    _, sample_first = _timed(sample, model, params, jax.random.key(1), num_samples)
    _, sample_second = _timed(sample, model, params, jax.random.key(2), num_samples)
    return {"layer": layer, "L": num_layers, "params": num_parameters(params),
            "step compile s": compile_s, "step ms": 1e3 * statistics.median(times),
            f"sample {num_samples} first s": sample_first,
            f"sample {num_samples} s": sample_second}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", default="1,7", help="comma-separated depths L")
    p.add_argument("--features", type=int, default=16, help="h, the state size of a layer")
    p.add_argument("--head", type=int, default=32, help="hidden 1x1 width of the head")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5, help="timed training steps")
    p.add_argument("--samples", type=int, default=16)
    args = p.parse_args(argv)
    rows = []
    for layer in ("row_lstm", "diagonal_bilstm"):
        for depth in (int(d) for d in args.layers.split(",")):
            row = measure(layer, depth, args.features, args.head, args.batch, args.repeats,
                          args.samples)
            print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in row.items()), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
