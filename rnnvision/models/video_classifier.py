r"""Video classification: a CNN reads every frame, a recurrence reads the frames in order.

Shape legend: B batch, T frames (padded), (H, W, C) a frame, (h, w, F) a frame's CNN
feature grid, D frame features, R the recurrence's output features, K classes,
L = lengths[b] a video's own number of frames (frames L..T-1 are padding).

Every model maps frames (B, T, H, W, C) (float in [0, 1], or uint8 divided by 255)
and lengths (B,) to `Output(logits (B, K), per_frame (B, T, K))`:

    model = RecurrentVideoClassifier(SMALL_FRAME_CNN, cells.get("lstm", hidden_size=128),
                                     num_classes=10, time_loop=TimeLoop(truncation=8))
    params = model.init(key, frame_shape=(48, 48, 1))
    out = model(params, frames, lengths)      # out.logits (B, K), out.per_frame (B, T, K)

The models:

  LRCN (Donahue et al., 2015): `RecurrentVideoClassifier(frame_input="vector")`
    g_t = CNN(x_t)                                   (B, h, w, F), one CNN for all frames
    f_t = relu(W_f vec(g_t) + b_f)                   (B, D), keeps where things are
    carry_t, y_t = cell(carry_{t-1}, f_t)            any vector cell (lstm, gru, rnn,
                                                     stacked); frozen for t >= L
    logits = W_o y_{L-1} + b_o                       read at the video's own last frame
  bidirectional=True: a second copy of the cell reads f_{L-1} .. f_0 (padding skipped);
    logits = W_o [y^fw_{L-1}; y^bw_0] + b_o.
  ConvLSTM classifier: `RecurrentVideoClassifier(frame_input="grid")` with a conv cell
    carry_t, y_t = conv_lstm(carry_{t-1}, g_t)       y_t (B, h, w, R): the state keeps the
                                                     map, so local motion is seen as such
    logits = W_o mean_{i,j} y_{L-1}[i, j] + b_o      pooled over space at the last frame
  Order-blind baseline: `OrderBlindClassifier`
    m = (1/L) sum_{t<L} f_t;  logits = W_2 relu(W_1 m + b_1) + b_2
    Any permutation of the valid frames gives the same answer (a bag of frames).

Early recognition: per_frame[:, t] is the answer the model gives when the video stops
after frame t, i.e. the logits for lengths min(L, t + 1) (so it repeats the answer for
t >= L, and per_frame[:, T-1] = logits). For the unidirectional models that is the
recurrent state after frame t, classified (one pass); for the order-blind model the
running mean of the features up to t; a bidirectional model's backward half must
reread each prefix, so its per_frame reruns the backward cell on T prefixes (T times
its cost; under jit it is computed only when used).

Time loops run through the model's `time_loop` (`rnnvision.recurrence.TimeLoop`:
truncation, remat, unroll, impl) with `mask`, so padding frames change neither
outputs nor gradients. Parameters are pytrees; every method is a pure function of them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnvision.cells.base import Cell
from rnnvision.models.resnet import ResNetEncoder
from rnnvision.recurrence import TimeLoop

Array = jax.Array
FRAME_INPUTS = ("vector", "grid")

# A per-frame CNN sized for 48x48 frames on a CPU: 4x4 patches (stride 4) to 12x12x8,
# then residual stages of 8, 16 and 32 channels at 12x12, 6x6 and 3x3; 19k parameters.
# No normalisation: GroupNorm made a training step 1.4-2x slower here.
SMALL_FRAME_CNN = ResNetEncoder(width=8, num_stages=3, blocks_per_stage=1, stem_kernel=4,
                                stem_stride=4, norm="none")


class Output(NamedTuple):
    logits: Array     # (B, K): the answer at each video's last valid frame
    per_frame: Array  # (B, T, K): the answer had the video stopped after frame t


def valid_mask(lengths: Array, num_frames: int) -> Array:
    """bool (B, T): True for frames t < lengths[b]."""
    return jnp.arange(num_frames)[None, :] < lengths[:, None]


def hold_last_valid(ys: Array, lengths: Array) -> Array:
    """ys (B, T, ...) with every padding frame t >= L replaced by frame L - 1."""
    t = jnp.minimum(jnp.arange(ys.shape[1])[None, :], lengths[:, None] - 1)  # (B, T)
    return jnp.take_along_axis(ys, t.reshape(t.shape + (1,) * (ys.ndim - 2)), axis=1)


def _dense_init(key: Array, n_in: int, n_out: int) -> dict:
    return {"w": jax.nn.initializers.lecun_normal()(key, (n_in, n_out), jnp.float32),
            "b": jnp.zeros((n_out,), jnp.float32)}


def _dense(p: dict, x: Array) -> Array:
    return x @ p["w"] + p["b"]


def _check_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}; must be an integer >= 2.")


def _check_frames(frames: Array, lengths: Array) -> None:
    if frames.ndim != 5 or lengths.shape != frames.shape[:1]:
        raise ValueError(f"frames must be (B, T, H, W, C) and lengths (B,); got frames "
                         f"{frames.shape} and lengths {lengths.shape}.")


@dataclasses.dataclass(frozen=True)
class FrameEncoder:
    """The CNN applied to every frame with shared weights; optionally a dense projection.

    params: {"cnn": ResNetEncoder params} plus {"project": {"w": (h*w*F, D), "b": (D,)}}
    when `feature_size` is set (frames -> vectors f_t; None: frames -> grids g_t).
    """

    cnn: ResNetEncoder
    feature_size: int | None = 128

    def init(self, key: Array, frame_shape: tuple[int, int, int]) -> dict:
        k_cnn, k_proj = jax.random.split(key)
        params = {"cnn": self.cnn.init(k_cnn, jnp.zeros((1, *frame_shape)))["params"]}
        if self.feature_size is not None:
            grid = self.grid_shape(frame_shape)
            params["project"] = _dense_init(k_proj, math.prod(grid), self.feature_size)
        return params

    def grid_shape(self, frame_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(h, w, F) of one frame's feature grid."""
        shape = jax.eval_shape(lambda p, x: self.cnn.apply(p, x),
                               jax.eval_shape(self.cnn.init, jax.random.key(0),
                                              jnp.zeros((1, *frame_shape))),
                               jax.ShapeDtypeStruct((1, *frame_shape), jnp.float32))
        return tuple(shape.shape[1:])

    def step_shape(self, frame_shape: tuple[int, int, int]) -> tuple[int, ...]:
        """The shape of one frame's output: (D,) or (h, w, F)."""
        if self.feature_size is None:
            return self.grid_shape(frame_shape)
        return (self.feature_size,)

    def __call__(self, params: dict, frames: Array) -> Array:
        """frames (B, T, H, W, C) -> (B, T, D), or grids (B, T, h, w, F)."""
        b, t = frames.shape[:2]
        x = frames.astype(jnp.float32)
        if jnp.issubdtype(frames.dtype, jnp.integer):
            x = x / 255.0
        grids = self.cnn.apply({"params": params["cnn"]}, x.reshape((b * t,) + x.shape[2:]))
        if self.feature_size is None:
            return grids.reshape((b, t) + grids.shape[1:])
        return jax.nn.relu(_dense(params["project"], grids.reshape(b, t, -1)))


@dataclasses.dataclass(frozen=True)
class RecurrentVideoClassifier:
    """LRCN (frame_input="vector") or ConvLSTM classifier (frame_input="grid").

    params: {"frames": FrameEncoder params, "cell": cell params, "head": {"w": (R', K),
    "b": (K,)}} plus "cell_bw" when bidirectional (R' = R, or 2R when bidirectional).

    Attributes:
      cnn: the per-frame CNN.
      cell: any registered cell, e.g. `cells.stack("lstm", 2, hidden_size=128)`; a
        vector cell for "vector", a convolutional one (conv_lstm) for "grid".
      num_classes: K.
      frame_input: "vector" (f_t, D = feature_size features) or "grid" (g_t).
      feature_size: D, for "vector".
      bidirectional: add a backward copy of the cell (module docstring).
      time_loop: how the time loops run (truncation, remat, unroll, impl).
    """

    cnn: ResNetEncoder
    cell: Cell
    num_classes: int
    frame_input: str = "vector"
    feature_size: int = 128
    bidirectional: bool = False
    time_loop: TimeLoop = TimeLoop()

    def __post_init__(self):
        if self.frame_input not in FRAME_INPUTS:
            raise ValueError(f"frame_input={self.frame_input!r}; allowed: {FRAME_INPUTS}")
        _check_classes(self.num_classes)
        self.time_loop.check_cell(self.cell)

    @property
    def frames(self) -> FrameEncoder:
        return FrameEncoder(self.cnn, self.feature_size if self.frame_input == "vector" else None)

    def init(self, key: Array, frame_shape: tuple[int, int, int]) -> dict:
        """Parameters for frames of shape (H, W, C)."""
        k_frames, k_fw, k_bw, k_head = jax.random.split(key, 4)
        step_shape = self.frames.step_shape(frame_shape)
        try:
            out_shape = self.cell.output_shape(step_shape)
        except (ValueError, TypeError) as e:
            raise ValueError(f"frame_input={self.frame_input!r} gives the cell steps of shape "
                             f"{step_shape}, which {type(self.cell).__name__} cannot take "
                             f"({e}); use 'vector' for lstm/gru/rnn, 'grid' for conv_lstm."
                             ) from None
        size = out_shape[-1] * (2 if self.bidirectional else 1)
        params = {"frames": self.frames.init(k_frames, frame_shape),
                  "cell": self.cell.init(k_fw, step_shape),
                  "head": _dense_init(k_head, size, self.num_classes)}
        if self.bidirectional:
            params["cell_bw"] = self.cell.init(k_bw, step_shape)
        return params

    def _run(self, cell_params, features: Array, mask: Array, reverse: bool = False) -> Array:
        """The cell over features (B, T, *step) -> outputs pooled over space (B, T, R)."""
        carry = self.cell.initial_carry(cell_params, features[:, 0].shape)
        _, ys = self.time_loop.run(self.cell, cell_params, carry, features, mask=mask,
                                   reverse=reverse)
        return ys.mean(axis=tuple(range(2, ys.ndim - 1))) if ys.ndim > 3 else ys

    def __call__(self, params: dict, frames: Array, lengths: Array) -> Output:
        """frames (B, T, H, W, C), lengths (B,) in 1..T -> Output (module docstring)."""
        _check_frames(frames, lengths)
        features = self.frames(params["frames"], frames)
        mask = valid_mask(lengths, frames.shape[1])
        ys = hold_last_valid(self._run(params["cell"], features, mask), lengths)  # (B, T, R)
        if not self.bidirectional:
            per_frame = _dense(params["head"], ys)
            return Output(per_frame[:, -1], per_frame)
        whole = self._run(params["cell_bw"], features, mask, reverse=True)[:, 0]  # (B, R)
        logits = _dense(params["head"], jnp.concatenate([ys[:, -1], whole], axis=-1))
        backward = self._backward_prefixes(params["cell_bw"], features, lengths)
        per_frame = _dense(params["head"], jnp.concatenate([ys, backward], axis=-1))
        return Output(logits, per_frame)

    def _backward_prefixes(self, cell_params, features: Array, lengths: Array) -> Array:
        """(B, T, R): the backward cell's output at frame 0 after reading frames
        min(L, t+1)-1 .. 0, for every t. The T prefixes run as one batch of T * B."""
        b, t = features.shape[:2]
        prefix = jnp.minimum(lengths[None, :], jnp.arange(1, t + 1)[:, None])  # (T, B)
        tiled = jnp.broadcast_to(features[None], (t,) + features.shape)
        tiled = tiled.reshape((t * b,) + features.shape[1:])
        ys = self._run(cell_params, tiled, valid_mask(prefix.reshape(-1), t), reverse=True)
        return jnp.swapaxes(ys[:, 0].reshape(t, b, -1), 0, 1)


@dataclasses.dataclass(frozen=True)
class OrderBlindClassifier:
    """The order-blind baseline: frame features averaged over the valid frames, an MLP.

    params: {"frames": FrameEncoder params, "hidden": {"w": (D, M), "b": (M,)},
    "head": {"w": (M, K), "b": (K,)}}, M = hidden_size.
    """

    cnn: ResNetEncoder
    num_classes: int
    feature_size: int = 128
    hidden_size: int = 128

    def __post_init__(self):
        _check_classes(self.num_classes)

    @property
    def frames(self) -> FrameEncoder:
        return FrameEncoder(self.cnn, self.feature_size)

    def init(self, key: Array, frame_shape: tuple[int, int, int]) -> dict:
        k_frames, k_hidden, k_head = jax.random.split(key, 3)
        return {"frames": self.frames.init(k_frames, frame_shape),
                "hidden": _dense_init(k_hidden, self.feature_size, self.hidden_size),
                "head": _dense_init(k_head, self.hidden_size, self.num_classes)}

    def __call__(self, params: dict, frames: Array, lengths: Array) -> Output:
        """frames (B, T, H, W, C), lengths (B,) in 1..T -> Output (module docstring)."""
        _check_frames(frames, lengths)
        features = self.frames(params["frames"], frames)  # (B, T, D)
        mask = valid_mask(lengths, frames.shape[1])
        # Running sums over valid frames only; where() (not a product) keeps padding
        # features, even non-finite ones, out of values and gradients.
        total = jnp.cumsum(jnp.where(mask[..., None], features, 0.0), axis=1)
        seen = jnp.minimum(jnp.arange(1, frames.shape[1] + 1)[None, :], lengths[:, None])
        mean = total / seen[..., None].astype(total.dtype)  # (B, T, D)
        per_frame = _dense(params["head"], jax.nn.relu(_dense(params["hidden"], mean)))
        return Output(per_frame[:, -1], per_frame)
