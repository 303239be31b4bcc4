"""One training step (forward + backward) or one inference pass, per implementation.

Every builder returns a no-argument callable that runs one step and waits for
its result, so the timer in `rnn_speed.py` measures the same thing for all:
  train: gradients of sum(ys * g) with respect to the parameters (not the
         inputs; nobody computes dx), g a fixed random cotangent;
  infer: the outputs ys (B, T, H) of the forward pass, no gradient state.
Inputs are batch-major (B, T, I) everywhere; every implementation sees the same
numbers.

Implementations:
  ours         rnnvision.recurrence.unroll (it dispatches to a fused fast path)
  ours_generic the same cell through the generic lax.scan (unroll(..., impl="scan"))
  flax         flax.linen.RNN(OptimizedLSTMCell | GRUCell | ConvLSTMCell)
  torch        torch.nn.LSTM / torch.nn.GRU (CPU build, or CUDA with --device=gpu);
               for conv_lstm a plain PyTorch ConvLSTM (`torch_conv_lstm_module`)
  jax_cudnn    jax.experimental.rnn.lstm, JAX's cuDNN LSTM (GPU only, lstm only)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Step = Callable[[], object]


def problem(t: int, b: int, i: int, h: int, seed: int = 0):
    """Inputs x (B, T, *I) and output cotangent g (B, T, *H) as float32 numpy arrays."""
    rng = np.random.default_rng(seed)
    i, h = (i,) if isinstance(i, int) else tuple(i), (h,) if isinstance(h, int) else tuple(h)
    return (rng.standard_normal((b, t, *i)).astype(np.float32),
            rng.standard_normal((b, t, *h)).astype(np.float32))


def _jax_step(apply: Callable, params, x, g, mode: str) -> Step:
    """jit(grad) or jit(forward) of `apply(params, x) -> ys`, bound to device arrays."""
    x, g = jnp.asarray(x), jnp.asarray(g)
    if mode == "train":
        fn = jax.jit(jax.grad(lambda p, x, g: jnp.sum(apply(p, x) * g)))
        return lambda: jax.block_until_ready(fn(params, x, g))
    fn = jax.jit(apply)
    return lambda: jax.block_until_ready(fn(params, x))


def ours(cell_name: str, x, g, mode: str, generic: bool = False, **hparams) -> Step:
    from rnnvision import cells
    from rnnvision.recurrence import unroll
    cell = cells.get(cell_name, **hparams)
    impl = "scan" if generic else "auto"
    params = cell.init(jax.random.key(0), x.shape[2:])

    def apply(p, xs):
        carry = cell.initial_carry(p, (xs.shape[0], *xs.shape[2:]))
        return unroll(cell, p, carry, xs, impl=impl)[1]

    return _jax_step(apply, params, x, g, mode)


def flax_rnn(cell_name: str, x, g, mode: str, hidden: int, kernel_size: int = 5,
             dtype: str = "float32") -> Step:
    """dtype: the cell's computation dtype (parameters stay float32)."""
    import flax.linen as nn
    make = {"lstm": lambda: nn.OptimizedLSTMCell(hidden, dtype=dtype),
            "gru": lambda: nn.GRUCell(hidden, dtype=dtype),
            "conv_lstm": lambda: nn.ConvLSTMCell(hidden, (kernel_size, kernel_size),
                                                 dtype=dtype)}[cell_name]
    model = nn.RNN(make())
    params = model.init(jax.random.key(0), jnp.asarray(x))
    return _jax_step(model.apply, params, x, g, mode)


def torch_rnn(cell_name: str, x, g, mode: str, hidden: int, device: str = "cpu",
              dtype: str = "float32") -> Step:
    """dtype: parameters, inputs and compute (torch's bfloat16 RNNs keep no float32 copy)."""
    import torch
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell_name]
    tdtype = getattr(torch, dtype)
    model = cls(x.shape[-1], hidden, batch_first=True).to(device, tdtype)
    tx = torch.from_numpy(x).to(device, tdtype)
    tg = torch.from_numpy(g).to(device, tdtype)
    return _torch_step(lambda: model(tx)[0], model, tg, mode, device)


def _torch_step(forward, model, tg, mode: str, device: str) -> Step:
    """One timed PyTorch step: gradients of sum(forward() * tg), or forward() alone."""
    import torch
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)

    def train():
        model.zero_grad(set_to_none=True)
        forward().backward(tg)
        sync()

    def infer():
        with torch.no_grad():
            forward()
        sync()

    return train if mode == "train" else infer


def jax_cudnn_lstm(x, g, mode: str, hidden: int) -> Step:
    """JAX's cuDNN LSTM (jax.experimental.rnn). GPU only; not yet run on a GPU."""
    from jax.experimental import rnn
    b, t, i = x.shape
    weights = rnn.init_lstm_weight(jax.random.key(0), i, hidden, 1, False)
    zeros = jnp.zeros((1, b, hidden), jnp.float32)
    lengths = jnp.full((b,), t, jnp.int32)

    def apply(w, xs):
        ys, _, _ = rnn.lstm(xs, zeros, zeros, w, lengths, input_size=i, hidden_size=hidden,
                            num_layers=1, dropout=0.0, bidirectional=False)
        return ys

    return _jax_step(apply, weights, x, g, mode)


def torch_conv_lstm(x, g, mode: str, features: int, kernel_size: int,
                    device: str = "cpu") -> Step:
    """A plain PyTorch ConvLSTM over x (B, T, H, W, C), as a PyTorch user writes one.

    Data and cotangent are moved to torch's NCHW layout before timing (a PyTorch
    pipeline has them there); the step is the same as ours: gradients of
    sum(ys * g) with respect to the parameters, or the outputs ys.
    """
    import torch
    b, t, hh, ww, c = x.shape
    torch.manual_seed(0)
    model = torch_conv_lstm_module(c, features, kernel_size).to(device)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3))).to(device)
    tg = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 1, 4, 2, 3))).to(device)
    return _torch_step(lambda: model(tx), model, tg, mode, device)


def torch_conv_lstm_module(in_channels: int, features: int, kernel_size: int):
    """The PyTorch ConvLSTM module below (torch is imported here: it is optional)."""
    import torch

    class TorchConvLSTM(torch.nn.Module):
        r"""ConvLSTM (Shi et al. 2015) without peepholes, NCHW, one convolution per step.

        Shape legend: B batch, T time, C input channels, F features, H x W image.
          z_t = W * [x_t, h_{t-1}] + b        (* : 2-D convolution, "same" padding)
          i, f, g, o = split(z_t, 4, channels)
          c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
          h_t = sigmoid(o) * tanh(c_t)
        forward: x (B, T, C, H, W) -> hs (B, T, F, H, W), from h_0 = c_0 = 0.
        """

        def __init__(self, in_channels: int, features: int, kernel_size: int):
            super().__init__()
            self.features = features
            self.conv = torch.nn.Conv2d(in_channels + features, 4 * features, kernel_size,
                                        padding=kernel_size // 2)

        def forward(self, xs):
            b, t, _, hh, ww = xs.shape
            h = xs.new_zeros((b, self.features, hh, ww))
            c = torch.zeros_like(h)
            hs = []
            for step in range(t):
                z = self.conv(torch.cat([xs[:, step], h], dim=1))
                i, f, gg, o = torch.split(z, self.features, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                h = torch.sigmoid(o) * torch.tanh(c)
                hs.append(h)
            return torch.stack(hs, dim=1)

    return TorchConvLSTM(in_channels, features, kernel_size)
