"""A small ResNet (He et al., 2016) in Flax that returns a grid of feature vectors.

    encoder = ResNetEncoder(width=32, num_stages=2, blocks_per_stage=1, stem_stride=2)
    variables = encoder.init(key, images)           # images (B, H, W, C) float
    grid = encoder.apply(variables, images)         # (B, H / stride, W / stride, D)

Layout: a stem convolution (`stem_kernel`, stride `stem_stride`, optionally a 3x3
stride-2 max-pool), then `num_stages` stages of `blocks_per_stage` basic residual
blocks (two 3x3 convolutions); stage s has width * 2**s channels and every stage
after the first halves the resolution. Output stride:
stem_stride * (2 if stem_pool) * 2**(num_stages - 1); D = width * 2**(num_stages - 1).
Normalisation is GroupNorm or none (no batch statistics, so the model is a pure
function of its parameters, as the trainer expects). With GroupNorm the last norm of
each block starts at zero scale, so every block starts as the identity (Goyal et al.,
2017); without, convolutions use He initialisation and the residual branch is unscaled
(a few blocks stay well-conditioned; scaling the branch down slowed learning 2x here).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

NORMS = ("group", "none")


_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # keeps ReLU signals O(1)


def _norm(kind: str, zero_init: bool = False) -> Any:
    if kind == "none":
        return lambda x: x
    scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
    return nn.GroupNorm(num_groups=None, group_size=8, scale_init=scale_init)


class ResidualBlock(nn.Module):
    """relu(x' + norm(conv(relu(norm(conv(x)))))), x' a strided 1x1 projection when needed."""

    features: int
    strides: int = 1
    norm: str = "group"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        def conv(f, k, s, name):
            return nn.Conv(f, (k, k), (s, s), padding="SAME", use_bias=self.norm == "none",
                           kernel_init=_HE_NORMAL, dtype=self.dtype, name=name)
        y = nn.relu(_norm(self.norm)(conv(self.features, 3, self.strides, "conv1")(x)))
        y = _norm(self.norm, zero_init=True)(conv(self.features, 3, 1, "conv2")(y))
        if x.shape[-1] != self.features or self.strides != 1:
            x = _norm(self.norm)(conv(self.features, 1, self.strides, "project")(x))
        return nn.relu(x + y)


class ResNetEncoder(nn.Module):
    """Images (B, H, W, C) -> feature grid (B, h, w, D); see the module docstring."""

    width: int = 32
    num_stages: int = 2
    blocks_per_stage: int = 1
    stem_kernel: int = 3
    stem_stride: int = 2
    stem_pool: bool = False
    norm: str = "group"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images):
        x = nn.Conv(self.width, (self.stem_kernel,) * 2, (self.stem_stride,) * 2, padding="SAME",
                    use_bias=self.norm == "none", kernel_init=_HE_NORMAL, dtype=self.dtype,
                    name="stem")(images)
        x = nn.relu(_norm(self.norm)(x))
        if self.stem_pool:
            x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        for stage in range(self.num_stages):
            for block in range(self.blocks_per_stage):
                strides = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(self.width * 2**stage, strides, self.norm, self.dtype,
                                  name=f"stage{stage}_block{block}")(x)
        return x.astype(jnp.float32)

    @property
    def stride(self) -> int:
        return self.stem_stride * (2 if self.stem_pool else 1) * 2 ** (self.num_stages - 1)

    @property
    def features(self) -> int:
        return self.width * 2 ** (self.num_stages - 1)
