r"""PixelRNN (van den Oord et al., 2016): an exact likelihood model of images, pixel by pixel.

The image is generated in raster order, and each pixel channel by channel:
    p(x) = prod_i p(x_i,R | x_<i) p(x_i,G | x_<i, x_i,R) p(x_i,B | x_<i, x_i,R, x_i,G)
Every layer is masked so that what the network says about x_i depends only on
what came before (rnnvision.cells.masks: mask "A" in the first layer, "B" after).

Shape legend: B batch, (H, W, C) an image (C = 1 binary or grey, 3 RGB), K the
levels of a channel (2: binary, 256: 8-bit), h = `features`, the state size of
every recurrent layer, 2h the width of the residual stream, G = C channel groups.

    x_0     = Conv7x7_A(encode(image))                       (B, H, W, 2h)
    x_{l+1} = x_l + Conv1x1_B(RNN_l(x_l))       l < L         (B, H, W, 2h)
    logits  = Conv1x1_B(ReLU(Conv1x1_B(ReLU(x_L))))

RNN_l is a Row LSTM layer (rnnvision.cells.row_lstm, mask "B", the image rows
as time steps) or a Diagonal BiLSTM layer (rnnvision.cells.diagonal_bilstm,
`diagonal_bilstm_layer` below), by the field `layer`. Each maps the 2h-wide
stream to h features, and a 1x1 convolution brings them back to 2h for the
residual connection (the paper's section 3.3). Every recurrence runs through
the model's `rnnvision.recurrence.TimeLoop` (truncation, remat), over rows or
over skewed columns.

Output, K = 2: one Bernoulli logit per pixel and channel, logits (B, H, W, C),
p(x = 1) = sigmoid(logit). K > 2: a K-way softmax per channel, logits
(B, H, W, C, K). With C = 3 the head's features and outputs are split into the
groups R, G, B and masked as every other layer, so the logits of G at pixel i see
R of pixel i, and those of B see R and G.

Everything is a pure function of `params`; `PixelRNN` holds only
hyper-parameters. Sampling and completion: rnnvision.models.pixel_rnn_sampling.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnvision import cells
from rnnvision.cells.base import Cell, check_positive_int
from rnnvision.cells.conv import conv
from rnnvision.cells.diagonal_bilstm import skew, unskew
from rnnvision.cells.masks import channel_mask, contiguous_groups, image_kernel_mask
from rnnvision.recurrence import TimeLoop

Array = jax.Array
LAYERS = ("row_lstm", "diagonal_bilstm")


def _initial_carry(cell: Cell, params, x: Array, step_shape: tuple[int, ...]):
    """The cell's initial carry, float64 where x is (float32 otherwise, as cells make it)."""
    dtype = jnp.promote_types(jnp.float32, x.dtype)
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                        cell.initial_carry(params, step_shape))


def row_lstm_layer(cell: Cell, params, x: Array, time_loop: TimeLoop) -> Array:
    """A Row LSTM over a feature map: x (B, H, W, C) -> (B, H, W, F), the rows as steps."""
    carry = _initial_carry(cell, params, x, x[:, 0].shape)
    return time_loop.run(cell, params, carry, x)[1]


def diagonal_bilstm_layer(cell: Cell, params, x: Array, time_loop: TimeLoop) -> Array:
    """A Diagonal BiLSTM over a feature map: x (B, H, W, C) -> (B, H, W, F).

    Skew the map and its mirror image, run the cell over the W + H - 1 skewed
    columns (both directions in one step), unskew, mirror direction 1 back and
    shift it down one row so that no position sees a later pixel, and sum:
        out(i, j) = h^0(i, j) + h^1(i - 1, j)
    """
    both = jnp.stack([skew(x), skew(x[:, :, ::-1])], axis=1)  # (B, 2, H, S, C)
    xs = jnp.moveaxis(both, 3, 1)                              # (B, S, 2, H, C): S steps
    carry = _initial_carry(cell, params, xs, xs[:, 0].shape)
    ys = time_loop.run(cell, params, carry, xs)[1]             # (B, S, 2, H, F)
    ys = unskew(jnp.moveaxis(ys, 1, 3))                        # (B, 2, H, W, F)
    forward, backward = ys[:, 0], ys[:, 1, :, ::-1]
    backward = jnp.pad(backward, [(0, 0), (1, 0), (0, 0), (0, 0)])[:, :-1]
    return forward + backward


_LAYER_FUNCTIONS = {"row_lstm": row_lstm_layer, "diagonal_bilstm": diagonal_bilstm_layer}


def _dense_init(key: Array, shape: tuple[int, ...]) -> dict:
    """{"w": lecun_normal(shape), "b": zeros(shape[-1])}: a convolution or a 1x1 map."""
    return {"w": jax.nn.initializers.lecun_normal()(key, shape),
            "b": jnp.zeros((shape[-1],), jnp.float32)}


@dataclasses.dataclass(frozen=True)
class PixelRNN:
    """PixelRNN hyper-parameters and its pure functions; see the module docstring.

    Attributes:
      image_shape: (H, W, C) of the images; C channels are C channel groups.
      levels: K, the values a channel takes: 2 (binary, a Bernoulli per channel)
        or more (a K-way softmax per channel; 256 for 8-bit images).
      layer: "row_lstm" or "diagonal_bilstm", the recurrent layer.
      num_layers: L, recurrent layers, each with a residual connection.
      features: h, the state size of each recurrent layer (the stream is 2h).
      head_features: width of the hidden 1x1 convolution of the output head.
      input_kernel: size of the first, mask-A convolution (7 in the paper).
      row_kernel: taps of the Row LSTM's input- and state-to-state kernels.
      time_loop: how the recurrences run (truncation, remat, ...).
      compute_dtype: of the matmuls and convolutions ("float32", "bfloat16", ...).

    params: {"input": {"w": (k, k, C, 2h), "b"}, "layers": [{"rnn": cell params,
    "out": {"w": (h, 2h), "b"}}] * L, "head": {"hidden": {"w": (2h, D), "b"},
    "logits": {"w": (D, C*K'), "b"}}} with D = head_features, K' = 1 if K = 2
    else K. Masks are applied at every use, so masked weights never act.
    """

    image_shape: tuple[int, int, int] = (28, 28, 1)
    levels: int = 2
    layer: str = "row_lstm"
    num_layers: int = 1
    features: int = 16
    head_features: int = 32
    input_kernel: int = 7
    row_kernel: int = 3
    time_loop: TimeLoop = TimeLoop()
    compute_dtype: str = "float32"

    def __post_init__(self):
        shape = self.image_shape
        if not (isinstance(shape, tuple) and len(shape) == 3 and
                all(isinstance(d, int) and d >= 1 for d in shape)):
            raise ValueError(f"image_shape={shape!r} must be a tuple (H, W, C) of positive ints")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2:
            raise ValueError(f"levels={self.levels!r} must be an integer >= 2")
        if self.layer not in LAYERS:
            raise ValueError(f"layer={self.layer!r}; allowed: {LAYERS}")
        for name in ("num_layers", "features", "head_features", "input_kernel", "row_kernel"):
            check_positive_int(getattr(self, name), name)
        for name in ("features", "head_features"):
            if getattr(self, name) % self.channels:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of the "
                                 f"image's channels C={self.channels} (one group per colour)")
        for name in ("input_kernel", "row_kernel"):
            if getattr(self, name) % 2 != 1:
                raise ValueError(f"{name}={getattr(self, name)} must be odd (a centred kernel)")
        _ = self.cell  # building the cell checks its hyper-parameters too

    # -- shapes and pieces ------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.image_shape[-1]

    @property
    def outputs_per_channel(self) -> int:
        """K': one Bernoulli logit (K = 2) or K softmax logits per channel."""
        return 1 if self.levels == 2 else self.levels

    @property
    def cell(self) -> Cell:
        """The recurrent cell of every layer (mask "B", one channel group per colour)."""
        hparams = dict(features=self.features, mask="B", channel_groups=self.channels,
                       compute_dtype=self.compute_dtype)
        if self.layer == "row_lstm":
            hparams["kernel_size"] = self.row_kernel
        return cells.get(self.layer, **hparams)

    @property
    def cell_input_shape(self) -> tuple[int, ...]:
        """One step's input of the cell: a row (W, 2h) or two skewed columns (2, H, 2h)."""
        h, w, _ = self.image_shape
        return (w, 2 * self.features) if self.layer == "row_lstm" else (2, h, 2 * self.features)

    def _groups(self, size: int) -> np.ndarray:
        return contiguous_groups(size, self.channels)

    def encode(self, images: Array) -> Array:
        """Integer levels (B, H, W, C) in 0..K-1 -> float32 network input in [0, 1]."""
        return images.astype(jnp.float32) / (self.levels - 1)

    def input_mask(self) -> Array:
        """(k, k, C, 2h) mask "A" of the first convolution."""
        return image_kernel_mask(self.input_kernel, self._groups(self.channels),
                                 self._groups(2 * self.features), "A")

    def pointwise(self, p: dict, x: Array) -> Array:
        """A 1x1 convolution with mask "B" (channel groups only): x (..., I) -> (..., O)."""
        w = p["w"] * channel_mask(self._groups(p["w"].shape[0]), self._groups(p["w"].shape[1]),
                                  "B")
        dtype = jnp.dtype(self.compute_dtype)
        return jnp.matmul(x.astype(dtype), w.astype(dtype),
                          preferred_element_type=jnp.promote_types(dtype, jnp.float32)) + p["b"]

    def head(self, p: dict, x: Array) -> Array:
        """Stream (..., 2h) -> logits (..., C) for K = 2, or (..., C, K)."""
        hidden = jax.nn.relu(self.pointwise(p["hidden"], jax.nn.relu(x)))
        logits = self.pointwise(p["logits"], hidden)
        logits = logits.reshape(*logits.shape[:-1], self.channels, self.outputs_per_channel)
        return logits[..., 0] if self.levels == 2 else logits

    # -- the model ---------------------------------------------------------------
    def init(self, key: Array) -> dict:
        k_in, k_head, k_logits, *k_layers = jax.random.split(key, 3 + self.num_layers)
        h, c, k = self.features, self.channels, self.input_kernel
        cell = self.cell
        first = _dense_init(k_in, (k, k, c, 2 * h))
        first["w"] = first["w"] * self.input_mask()
        layers = []
        for key_l in k_layers:
            k_rnn, k_out = jax.random.split(key_l)
            layers.append({"rnn": cell.init(k_rnn, self.cell_input_shape),
                           "out": _dense_init(k_out, (h, 2 * h))})
        head = {"hidden": _dense_init(k_head, (2 * h, self.head_features)),
                "logits": _dense_init(k_logits, (self.head_features,
                                                 c * self.outputs_per_channel))}
        return {"input": first, "layers": layers, "head": head}

    def logits(self, params: dict, images: Array) -> Array:
        """images int (B, H, W, C) in 0..K-1 -> logits (B, H, W, C) or (B, H, W, C, K)."""
        self._check_images(images)
        x = conv(self.encode(images), params["input"]["w"] * self.input_mask(), "SAME",
                 self.compute_dtype) + params["input"]["b"]
        layer_fn, cell = _LAYER_FUNCTIONS[self.layer], self.cell
        for p in params["layers"]:
            x = x + self.pointwise(p["out"], layer_fn(cell, p["rnn"], x, self.time_loop))
        return self.head(params["head"], x)

    def nll(self, params: dict, images: Array) -> Array:
        """Negative log-likelihood of each image in nats: images (B, H, W, C) -> (B,)."""
        logits = self.logits(params, images)
        if self.levels == 2:
            per_channel = optax.sigmoid_binary_cross_entropy(logits, images.astype(logits.dtype))
        else:
            per_channel = optax.softmax_cross_entropy_with_integer_labels(logits, images)
        return jnp.sum(per_channel, axis=(1, 2, 3))

    def bits_per_dim(self, nll_nats: Array) -> Array:
        """Nats per image -> bits per dimension (per channel of a pixel)."""
        return nll_nats / (math.prod(self.image_shape) * math.log(2.0))

    def _check_images(self, images: Array) -> None:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images of shape {tuple(images.shape)}; PixelRNN with "
                             f"image_shape={self.image_shape} needs (B, *image_shape)")


def num_parameters(params) -> int:
    """Stored parameters, masked entries included."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
