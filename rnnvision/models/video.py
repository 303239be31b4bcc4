"""Next-frame video prediction with any recurrent cell (ConvLSTM, FC-LSTM, Row LSTM, ...).

Shape legend: B batch, T frames, (H, W, C) a frame (64, 64, 1 for Moving MNIST),
p the patch size, (h, w) = (H/p, W/p) the patch grid, P = p*p*C the pixels of a
patch, S cell steps per frame, F a cell step's output features.

The predictor reads frame t and outputs (logits of) frame t+1, PredRNN / OpenSTL
style. Over a sequence of T frames with N context frames:

    step  0            (encoder)     input: the true frame 0
    steps 1 .. N-1     (encoder)     input: the true frame t; or, with
                                     `context_true_prob` (reverse scheduled sampling,
                                     PredRNN-V2, Wang et al. 2022), per example and
                                     step the true frame with that probability, else
                                     the previous prediction
    steps N .. T-2     (forecaster)  input: the true frame t (teacher forcing), the
                                     previous prediction (free running), or per
                                     example and step one of the two, the true frame
                                     with probability `true_prob` (scheduled sampling,
                                     Bengio et al. 2015)

so it returns T-1 predictions, of frames 1 .. T-1; frames N .. T-1 are the forecast.
With `decoupling` (cells offering `step_with_decoupling`: st_lstm, causal_lstm)
every step also yields PredRNN-V2's memory decoupling term, (B, T-1) per frame
step, for a loss to add (`rollout_with_decoupling`).
With `separate_forecaster` the forecast steps use their own cell parameters and the
encoder's final state, as in the encoder-forecaster of Shi et al. (2015) and the
encoder-predictor of Srivastava et al. (2015); by default one network does both, as
in PredRNN and OpenSTL's ConvLSTM.

How a frame becomes cell steps is `FrameCodec.frame_input`:

  "patches"    one step per frame: the frame patch-reshaped to (h, w, P), e.g.
               64x64x1 -> 16x16x16 with p=4 (PredRNN/OpenSTL). For conv cells
               (ConvLSTM, Shi et al. 2015). Readout: a 1x1 convolution F -> P.
  "flat"       one step per frame: the frame as a vector of H*W*C pixels. For fully
               connected cells (the FC-LSTM of Srivastava et al. 2015). Readout:
               a dense layer F -> H*W*C.
  "rows"       h steps per frame: the frame read row by row; step r sees patch rows
               r-b .. r+b (b = `row_band`) stacked on channels, (w, (2b+1)P), and
               predicts patch row r of the next frame. The state (a row of feature
               vectors for the Row LSTM of PixelRNN) runs on across frames. Readout:
               a 1x1 convolution F -> P per position of the row.
  "flat_rows"  like "rows" with each row flattened to a vector (the plain "rows as
               time steps" reading, for lstm/gru/rnn). Readout: dense F -> w*P.

Every time loop runs through `time_loop` (truncation in frames, remat, unroll).
Everything is functional: params are pytrees, `rollout` is pure and jit-able.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rnnvision.cells import Cell
from rnnvision.recurrence import TimeLoop

FRAME_INPUTS = ("patches", "flat", "rows", "flat_rows")
Array = jax.Array


def patchify(x: Array, p: int) -> Array:
    """(..., H, W, C) -> (..., H/p, W/p, p*p*C): each p x p patch becomes channels."""
    *lead, hh, ww, c = x.shape
    x = x.reshape(*lead, hh // p, p, ww // p, p, c)
    return jnp.swapaxes(x, -4, -3).reshape(*lead, hh // p, ww // p, p * p * c)


def unpatchify(x: Array, p: int, channels: int) -> Array:
    """(..., h, w, p*p*C) -> (..., h*p, w*p, C), the inverse of `patchify`."""
    *lead, h, w, _ = x.shape
    x = x.reshape(*lead, h, w, p, p, channels)
    return jnp.swapaxes(x, -4, -3).reshape(*lead, h * p, w * p, channels)


@dataclasses.dataclass(frozen=True)
class FrameCodec:
    """Frames <-> cell steps and readout outputs, for one `frame_input` layout."""

    frame_shape: tuple[int, int, int]  # (H, W, C)
    patch: int = 4
    frame_input: str = "patches"
    row_band: int = 1

    def __post_init__(self):
        hh, ww, _ = self.frame_shape
        if self.frame_input not in FRAME_INPUTS:
            raise ValueError(f"frame_input={self.frame_input!r}; allowed: {FRAME_INPUTS}")
        if self.patch < 1 or hh % self.patch or ww % self.patch:
            raise ValueError(f"patch={self.patch} must divide the frame size {hh}x{ww}")
        if self.row_band < 0:
            raise ValueError(f"row_band={self.row_band} must be >= 0")

    @property
    def grid(self) -> tuple[int, int, int]:
        """(h, w, P): the patch grid."""
        hh, ww, c = self.frame_shape
        return hh // self.patch, ww // self.patch, self.patch * self.patch * c

    @property
    def steps_per_frame(self) -> int:
        return self.grid[0] if self.frame_input in ("rows", "flat_rows") else 1

    @property
    def step_shape(self) -> tuple[int, ...]:
        """One cell step's input features."""
        h, w, pc = self.grid
        band = (2 * self.row_band + 1) * pc
        return {"patches": (h, w, pc), "flat": (h * w * pc,),
                "rows": (w, band), "flat_rows": (w * band,)}[self.frame_input]

    @property
    def readout_size(self) -> int:
        """Outputs of the readout (a dense map on the last axis of the cell's output)."""
        h, w, pc = self.grid
        return {"patches": pc, "flat": h * w * pc, "rows": pc, "flat_rows": w * pc}[self.frame_input]

    def to_steps(self, frames: Array) -> Array:
        """(B, T, H, W, C) -> (B, T*S, *step_shape)."""
        b, t = frames.shape[:2]
        g = patchify(frames, self.patch)  # (B, T, h, w, P)
        if self.frame_input in ("rows", "flat_rows"):
            k, h = self.row_band, g.shape[2]
            padded = jnp.pad(g, [(0, 0), (0, 0), (k, k), (0, 0), (0, 0)])
            g = jnp.concatenate([padded[:, :, i:i + h] for i in range(2 * k + 1)], axis=-1)
        return g.reshape(b, t * self.steps_per_frame, *self.step_shape)

    def from_outputs(self, z: Array) -> Array:
        """Readout outputs (B, T*S, ..., readout_size) -> frames (B, T, H, W, C)."""
        b = z.shape[0]
        h, w, pc = self.grid
        g = z.reshape(b, -1, h, w, pc)
        return unpatchify(g, self.patch, self.frame_shape[-1])


@dataclasses.dataclass(frozen=True)
class DecouplingOutputs(Cell):
    """A cell with `step_with_decoupling` whose step output is (y, decoupling term).

    y: the wrapped cell's output (*B, ...F); term: (*B,) PredRNN-V2's memory
    decoupling term of the step. It is a cell like any other, so the time loop
    (`TimeLoop.run`: truncation, remat, unroll) runs it unchanged and stacks the
    terms next to the outputs. Parameters and carry are the wrapped cell's.
    """

    stack: Any = None  # the wrapped cell (e.g. an STLSTMCell with decoupling=True)

    def validate(self) -> None:
        if not callable(getattr(self.stack, "step_with_decoupling", None)):
            raise ValueError(f"stack={self.stack!r} has no step_with_decoupling (cells with "
                             "PredRNN-V2's memory decoupling: st_lstm, causal_lstm)")

    def init(self, key, input_shape):
        return self.stack.init(key, input_shape)

    def initial_carry(self, params, x_shape):
        return self.stack.initial_carry(params, x_shape)

    def project_inputs(self, params, x):
        return self.stack.project_inputs(params, x)

    def step_projected(self, params, carry, px):
        carry, y, term = self.stack.step_with_decoupling(params, carry, px)
        return carry, (y, term)


@dataclasses.dataclass(frozen=True)
class VideoPredictor:
    """A recurrent next-frame predictor; see the module docstring.

    params: {"cell": ..., "readout": {"w": (F, R), "b": (R,)}} plus "forecaster"
    (a second set of cell params) with `separate_forecaster`; R = codec.readout_size.
    The readout gives logits: sigmoid(logits) are the predicted pixels in [0, 1].

    Attributes:
      time_loop: the loops' options. Its truncation is a window in FRAMES (None =
        full BPTT): gradients cross at most this many frames (the carry, and the
        prediction fed back, pass through stop_gradient at every multiple of it,
        counted from the first frame). remat checkpoints the loops; the forecast
        loop feeds predictions back, so impl "fused" cannot run it.
      readout_bias: initial readout bias; -3 makes the first predictions a dark
        background (sigmoid(-3) ~ 0.05), as most Moving MNIST pixels are.
      decoupling: run the cell through `step_with_decoupling` (wrapped as
        `DecouplingOutputs`) so `rollout_with_decoupling` returns the terms.
    """

    cell: Cell
    codec: FrameCodec
    separate_forecaster: bool = False
    time_loop: TimeLoop = TimeLoop()
    readout_bias: float = -3.0
    decoupling: bool = False

    def __post_init__(self):
        if self.decoupling:
            DecouplingOutputs(stack=self.cell)  # raises ValueError for cells without it

    @property
    def loop_cell(self) -> Cell:
        """The cell the loops run: `cell`, or it wrapped to also output the decoupling term."""
        return DecouplingOutputs(stack=self.cell) if self.decoupling else self.cell

    def init(self, key: Array) -> dict:
        k_cell, k_fc, k_out = jax.random.split(key, 3)
        step_shape = self.codec.step_shape
        features = self.cell.output_shape(step_shape)[-1]
        r = self.codec.readout_size
        params = {"cell": self.cell.init(k_cell, step_shape),
                  "readout": {"w": jax.nn.initializers.lecun_normal()(k_out, (features, r)),
                              "b": jnp.full((r,), self.readout_bias, jnp.float32)}}
        if self.separate_forecaster:
            params["forecaster"] = self.cell.init(k_fc, step_shape)
        return params

    def initial_carry(self, params: dict, batch_size: int):
        return self.cell.initial_carry(params["cell"], (batch_size, *self.codec.step_shape))

    def _readout(self, params: dict, ys: Array) -> Array:
        """Cell outputs (B, T*S, ..., F) -> logits (B, T, H, W, C)."""
        z = jnp.einsum("...f,fr->...r", ys, params["readout"]["w"]) + params["readout"]["b"]
        return self.codec.from_outputs(z)

    def _split_outputs(self, params: dict, outs, num_frames: int):
        """The loop cell's outputs over T*S steps -> (logits (B, T, H, W, C), terms (B, T)
        the decoupling term averaged over each frame's S steps, or None)."""
        if not self.decoupling:
            return self._readout(params, outs), None
        ys, terms = outs
        terms = terms.reshape(terms.shape[0], num_frames, -1).mean(axis=-1)
        return self._readout(params, ys), terms

    def _run_frames(self, params: dict, cell_params, carry, frames: Array):
        """`unroll_frames` plus the decoupling terms (B, T) (None without `decoupling`)."""
        s, k = self.codec.steps_per_frame, self.time_loop.truncation
        loop = self.time_loop.replace(truncation=k and k * s)
        carry, outs = loop.run(self.loop_cell, cell_params, carry, self.codec.to_steps(frames))
        return (carry, *self._split_outputs(params, outs, frames.shape[1]))

    def unroll_frames(self, params: dict, cell_params, carry, frames: Array):
        """All-input-known run: frames (B, T, H, W, C) -> (carry, logits of frames 1..T).

        One unroll over T*S cell steps (input projections hoisted out of the time
        loop); the truncation window of `time_loop` is in frames, counted from
        frames[:, 0].
        """
        return self._run_frames(params, cell_params, carry, frames)[:2]

    def _frame_step(self, params: dict, cell_params, carry, frame: Array):
        """`frame_step` plus the frame's decoupling term (B,) (None without `decoupling`)."""
        steps = self.codec.to_steps(frame[:, None])
        if self.codec.steps_per_frame == 1:
            carry, out = self.loop_cell.step(cell_params, carry, steps[:, 0])
            outs = jax.tree.map(lambda a: a[:, None], out)
        else:
            carry, outs = self.time_loop.replace(truncation=None, remat=False).run(
                self.loop_cell, cell_params, carry, steps)
        logits, terms = self._split_outputs(params, outs, 1)
        return carry, logits[:, 0], None if terms is None else terms[:, 0]

    def frame_step(self, params: dict, cell_params, carry, frame: Array):
        """One frame: (B, H, W, C) -> (carry, logits of the next frame (B, H, W, C)).

        Called inside the forecast loop, whose windows are whole frames: the S steps
        of one frame run without truncation or remat of their own.
        """
        return self._frame_step(params, cell_params, carry, frame)[:2]

    def rollout(self, params: dict, frames: Array, num_context: int, true_prob: Array,
                rng: Array, *, teacher_forcing: bool = False,
                context_true_prob: Array | None = None) -> Array:
        """Logits of frames 1..T-1 (B, T-1, H, W, C) given frames (B, T, H, W, C).

        Args:
          num_context: N, the frames read from `frames` (frame 0 always; frames
            1..N-1 too unless `context_true_prob` says otherwise); 1 <= N < T.
          true_prob: (B,) probability that a forecast step reads the true frame
            rather than the previous prediction: 0 = free running, 1 = teacher
            forcing, in between = scheduled sampling (coins drawn from `rng`).
          teacher_forcing: static fast path equal to true_prob = 1 (one hoisted
            unroll over all frames when the forecaster shares the encoder's params).
          context_true_prob: None (the context steps read the true frames), or (B,)
            the probability that context step 1..N-1 reads the true frame rather
            than the previous prediction (reverse scheduled sampling; coins drawn
            from fold_in(rng, 1), independent of the forecast's).
        """
        return self._rollout(params, frames, num_context, true_prob, rng, teacher_forcing,
                             context_true_prob)[0]

    def rollout_with_decoupling(self, params: dict, frames: Array, num_context: int,
                                true_prob: Array, rng: Array, *, teacher_forcing: bool = False,
                                context_true_prob: Array | None = None) -> tuple[Array, Array]:
        """`rollout` plus PredRNN-V2's decoupling term of every frame step, (B, T-1);
        needs `decoupling=True`. A loss adds beta * its mean (Wang et al. 2022)."""
        if not self.decoupling:
            raise ValueError("rollout_with_decoupling needs a VideoPredictor with decoupling=True")
        return self._rollout(params, frames, num_context, true_prob, rng, teacher_forcing,
                             context_true_prob)

    def _rollout(self, params, frames, num_context, true_prob, rng, teacher_forcing,
                 context_true_prob):
        """(logits (B, T-1, H, W, C), decoupling terms (B, T-1) or None); see `rollout`."""
        t_total = frames.shape[1]
        if not 1 <= num_context < t_total:
            raise ValueError(f"num_context={num_context} must be in [1, {t_total - 1}]")
        carry = self.initial_carry(params, frames.shape[0])
        if teacher_forcing and not self.separate_forecaster and context_true_prob is None:
            return self._run_frames(params, params["cell"], carry, frames[:, :-1])[1:]
        # The frames read as given, hoisted in one unroll: all N, or only frame 0 when
        # the context steps are sampled too.
        num_read = num_context if context_true_prob is None else 1
        carry, logits, terms = self._run_frames(params, params["cell"], carry, frames[:, :num_read])
        parts = [(logits, terms)]
        if num_read < num_context:
            carry, part = self._sampled_steps(params, params["cell"], carry, logits[:, -1],
                                              frames[:, 1:num_context], context_true_prob,
                                              jax.random.fold_in(rng, 1), first_step=1)
            parts.append(part)
        if num_context < t_total - 1:
            true_prob = jnp.ones_like(true_prob) if teacher_forcing else true_prob
            _, part = self._sampled_steps(params, params.get("forecaster", params["cell"]), carry,
                                          parts[-1][0][:, -1], frames[:, num_context:-1],
                                          true_prob, rng, first_step=num_context)
            parts.append(part)
        logits = jnp.concatenate([p[0] for p in parts], axis=1)
        return logits, None if terms is None else jnp.concatenate([p[1] for p in parts], axis=1)

    def _sampled_steps(self, params, cell_params, carry, prev_logits, true_frames, true_prob, rng,
                       *, first_step: int):
        """Steps whose input is, per example and step, the true frame (probability
        `true_prob` (B,)) or sigmoid of the previous logits, through `time_loop.scan`.

        true_frames: (B, K, H, W, C) the true inputs of the K steps; prev_logits
        (B, H, W, C) the logits before the first. The loop's state is (carry, the
        previous logits): at a truncation boundary the fed-back prediction is cut
        too, so no gradient path spans more than k frames. Its processing index
        starts at `first_step`, continuing the windows of the steps before.
        Returns (carry, (logits (B, K, H, W, C), terms (B, K) or None)).
        """
        coins = jax.random.bernoulli(rng, true_prob[:, None], true_frames.shape[:2])

        def step(state, inp):
            carry, prev_logits = state
            true_frame, coin = inp
            frame = jnp.where(coin[:, None, None, None], true_frame, jax.nn.sigmoid(prev_logits))
            carry, logits, term = self._frame_step(params, cell_params, carry, frame)
            return (carry, logits), (logits, term)

        (carry, _), outs = self.time_loop.scan(step, (carry, prev_logits), (true_frames, coins),
                                               first_step=first_step)
        return carry, outs

    def predict(self, params: dict, context: Array, num_future: int) -> Array:
        """Free-running forecast: context (B, N, H, W, C) -> pixels (B, num_future, H, W, C).

        Only the N context frames are given, so nothing of the future can leak in.
        """
        b, n = context.shape[:2]
        frames = jnp.concatenate([context, jnp.zeros((b, num_future, *context.shape[2:]),
                                                     context.dtype)], axis=1)
        plain = dataclasses.replace(self, decoupling=False)  # no terms to compute
        logits = plain.rollout(params, frames, n, jnp.zeros((b,)), jax.random.key(0))
        return jax.nn.sigmoid(logits[:, n - 1:])
