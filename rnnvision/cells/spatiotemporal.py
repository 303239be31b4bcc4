"""Shared pieces of the PredRNN family (`st_lstm`, `causal_lstm`): whole stacks as one cell.

Both cells hold every layer of a spatiotemporal stack behind the cell contract,
because their memory M does not stay in one layer: it flows up the layers within
a time step and from the top layer at t-1 to the bottom layer at t (the zigzag),
which a `StackedCell` of independent layers cannot express.

Shape legend: B batch (any leading dims), H x W the frame (kept by every
convolution: "SAME" padding, stride 1), C input channels, F_l layer l's
features, L layers, k x k the kernel.

This module also holds the PredRNN-V2 memory decoupling term (Wang et al. 2022,
"PredRNN: A Recurrent Neural Network for Spatiotemporal Predictive Learning"),
which both cells offer through `step_with_decoupling`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Array, Carry, Cell, Params, check_positive_int, initializer
from rnnvision.cells.conv import conv, kernel_pair

# Increments (ΔC, ΔM) of one layer, each (*B, H, W, F).
Increments = tuple[Array, Array]

# F.normalize's floor on a norm: a zero increment gives a zero unit vector (and a
# zero, not NaN, gradient) instead of 0/0.
_NORM_EPS = 1e-12


def spatial_cosine(a: Array, b: Array) -> Array:
    """cos(a[..., ch], b[..., ch]) over the spatial positions, per channel.

    a, b: (*B, H, W, F). Returns (*B, F). Each side is first scaled to unit norm
    over (H, W) with the norm floored at 1e-12 (as torch's F.normalize does), so
    a channel that is zero everywhere has cosine 0.
    """
    def unit(v):
        norm = jnp.sqrt(jnp.maximum(jnp.sum(v * v, axis=(-3, -2)), _NORM_EPS ** 2))
        return v / norm[..., None, None, :]
    return jnp.sum(unit(a) * unit(b), axis=(-3, -2))


def decoupling_term(increments: Sequence[Increments], adapter: Array,
                    matmul: Callable[[Array, Array], Array]) -> Array:
    """PredRNN-V2's memory decoupling term of one time step, per example.

      term = mean_l mean_ch | cos_{H,W}( W_a ΔC^l [ch], W_a ΔM^l [ch] ) |

    increments: one (ΔC^l, ΔM^l) pair per layer, each (*B, H, W, F).
    adapter: W_a (F, F), the 1x1 convolution shared by all layers and by both
      memories (PredRNN-V2's "adapter"), applied as a matmul on the channels.
    matmul: the cell's compute-dtype matmul (float32 accumulation).
    Returns (*B,) float32. A training loss adds beta * (mean over steps and batch).
    """
    per_layer = []
    for delta_c, delta_m in increments:
        cos = spatial_cosine(matmul(delta_c, adapter), matmul(delta_m, adapter))
        per_layer.append(jnp.mean(jnp.abs(cos), axis=-1))
    return jnp.mean(jnp.stack(per_layer), axis=0)


@dataclasses.dataclass(frozen=True)
class SpatiotemporalStack(Cell):
    """Hyper-parameters and the step plumbing shared by `st_lstm` and `causal_lstm`.

    Attributes:
      features: F_l, an int (every layer) or a tuple with one entry per layer.
      num_layers: L, the number of stacked layers.
      kernel_size: k of every k x k convolution (int or (kh, kw)); 1x1 maps stay 1x1.
      forget_bias: initial bias of the forget gates f and f' (PredRNN uses 1.0).
      kernel_init: initializer of every convolution kernel ("lecun_normal", ...).
      decoupling: also create the PredRNN-V2 adapter W_a (params["adapter"],
        (F, F)) so that `step_with_decoupling` can compute the decoupling term;
        needs every layer to have the same features.

    Subclasses implement `init`, `initial_carry` and `_forward`.
    """

    features: int | tuple[int, ...] = 64
    num_layers: int = 4
    kernel_size: int | tuple[int, int] = 5
    forget_bias: float = 1.0
    kernel_init: str = "lecun_normal"
    decoupling: bool = False

    min_layers = 1  # class constant: causal_lstm needs 2 (its GHU sits between layers 1 and 2)

    def validate(self) -> None:
        check_positive_int(self.num_layers, "num_layers")
        if self.num_layers < self.min_layers:
            raise ValueError(f"num_layers={self.num_layers!r}: {type(self).__name__} needs "
                             f">= {self.min_layers} layers")
        if isinstance(self.features, tuple):
            if len(self.features) != self.num_layers:
                raise ValueError(f"features={self.features!r} must have one entry per layer "
                                 f"(num_layers={self.num_layers})")
            for f in self.features:
                check_positive_int(f, "features")
        elif isinstance(self.features, list):
            raise ValueError(f"features={self.features!r} must be an int or a tuple (a cell "
                             "is hashable: no lists)")
        else:
            check_positive_int(self.features, "features")
        kernel_pair(self.kernel_size)
        initializer(self.kernel_init, field="kernel_init")
        if not isinstance(self.decoupling, bool):
            raise ValueError(f"decoupling={self.decoupling!r} must be True or False")
        if self.decoupling and len(set(self.widths)) != 1:
            raise ValueError(f"decoupling=True needs equal features in every layer (the "
                             f"adapter is shared); got features={self.features!r}")

    @property
    def widths(self) -> tuple[int, ...]:
        """F_l of every layer, bottom first."""
        if isinstance(self.features, int):
            return (self.features,) * self.num_layers
        return tuple(self.features)

    # -- helpers of the subclasses ----------------------------------------------
    def _check_input_shape(self, input_shape) -> int:
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} takes (H, W, C) frames; got "
                             f"input_shape={tuple(input_shape)}")
        return int(input_shape[-1])

    def _kernels(self, key: Array, shapes: dict[str, tuple[int, ...]]) -> dict[str, Array]:
        """{name: shape} -> {name: a float32 kernel of that shape}, each from its own key."""
        init = initializer(self.kernel_init, field="kernel_init")
        keys = jax.random.split(key, len(shapes))
        return {name: init(k, shape, jnp.float32) for k, (name, shape) in zip(keys, shapes.items())}

    def _kernel_shape(self, c_in: int, c_out: int) -> tuple[int, int, int, int]:
        return (*kernel_pair(self.kernel_size), c_in, c_out)

    def _conv(self, x: Array, w: Array) -> Array:
        """A "SAME" convolution in compute dtype, float32 result (the frame keeps its size)."""
        return conv(x, w, "SAME", self.dtype)

    def _adapter(self, key: Array) -> dict[str, Array]:
        if not self.decoupling:
            return {}
        f = self.widths[0]
        return {"adapter": self._kernels(key, {"adapter": (f, f)})["adapter"]}

    # -- the contract -------------------------------------------------------------
    def project_inputs(self, params: Params, x: Array) -> Array:
        """The bottom layer's input convolution W_x^1 * x_t + b^1, for any leading dims."""
        bottom = params["layers"][0]
        return self._conv(x, bottom["w_x"]) + bottom["b"]

    def step_projected(self, params: Params, carry: Carry, px: Array) -> tuple[Carry, Array]:
        carry, y, _ = self._forward(params, carry, px)  # increments: dead code under jit
        return carry, y

    def step_with_decoupling(self, params: Params, carry: Carry,
                             px: Array) -> tuple[Carry, Array, Array]:
        """`step_projected` plus the step's PredRNN-V2 decoupling term (*B,) (needs
        decoupling=True; see `decoupling_term`)."""
        if not self.decoupling:
            raise ValueError(f"{type(self).__name__}.step_with_decoupling needs decoupling=True "
                             "(the adapter is created only then); got decoupling=False")
        carry, y, increments = self._forward(params, carry, px)
        return carry, y, decoupling_term(increments, params["adapter"], self.matmul)

    def _forward(self, params: Params, carry: Carry,
                 px: Array) -> tuple[Carry, Array, list[Increments]]:
        """One step of the whole stack: (new carry, the top layer's H, [(ΔC, ΔM)] per layer)."""
        raise NotImplementedError

    def _zeros(self, lead: tuple, spatial: tuple, width: int) -> Array:
        return jnp.zeros((*lead, *spatial, width), jnp.float32)

    def _lead_and_spatial(self, x_shape) -> tuple[tuple, tuple]:
        x_shape = tuple(x_shape)
        if len(x_shape) < 4:
            raise ValueError(f"{type(self).__name__} takes x_shape (*B, H, W, C); got {x_shape}")
        return x_shape[:-3], x_shape[-3:-1]
