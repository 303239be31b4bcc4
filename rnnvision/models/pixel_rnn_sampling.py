r"""Sampling and completion for PixelRNN, compiled with `jax.jit`.

Shape legend: B images, (H, W, C) an image, K levels, h the state size of a
layer, 2h the residual stream, k the Row LSTM's kernel taps.

Pixels are drawn in raster order, the channels of a pixel in order R, G, B. Two
samplers draw the same images from the same noise:

  "rows"     (default) exact and incremental: the network is evaluated at one
             position per draw, with each layer's state carried, and the pixels
             of a row drawn left to right. Per layer it keeps the state of the
             row above and the inputs of the row so far:
               Row LSTM          the step of the cell on the k positions around
                                 the pixel (its kernels see no further), from the
                                 carried row above;
               Diagonal BiLSTM   direction 0 (left to right) advances one pixel
                                 from its left and upper neighbours; direction 1
                                 (right to left, shifted down a row) needs only
                                 the row above, so it runs over a row once the
                                 row is complete.
             Work per image: H*W*C position evaluations of a network of L layers.
  "generic"  re-evaluates the whole causal model (`PixelRNN.logits`) for every
             channel of every pixel: H*W*C full passes; the reference the "rows"
             sampler is tested against.

The state at pixel i never depends on the last channel of pixel i (masks "A"
then "B": a group sees only earlier colours of its own pixel), so the state
computed for drawing that channel is already the final one.

A draw is the inverse CDF of the model's distribution at one uniform number
u ~ U[0, 1): x = [u < sigmoid(logit)] for K = 2, x = #{k : cdf_k <= u} for
K > 2. Pixels given in advance (completion) are kept as they are.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from rnnvision import recurrence
from rnnvision.cells.lstm import LSTMCarry
from rnnvision.models.pixel_rnn import PixelRNN

Array = jax.Array
METHODS = ("rows", "generic")


def draw(logits: Array, u: Array, levels: int) -> Array:
    """One value per image by the inverse CDF: logits (B,) for K = 2 or (B, K), u (B,)
    -> int32 (B,) in 0..K-1."""
    if levels == 2:
        return (u < jax.nn.sigmoid(logits)).astype(jnp.int32)
    cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
    return jnp.minimum(jnp.sum(cdf <= u[:, None], axis=-1), levels - 1).astype(jnp.int32)


def sample(model: PixelRNN, params: dict, key: Array, num_images: int,
           method: str = "rows") -> Array:
    """num_images new images, int32 (num_images, H, W, C) in 0..K-1."""
    noise = jax.random.uniform(key, (num_images, *model.image_shape))
    given = jnp.zeros(noise.shape, jnp.int32)
    return _sample(model, params, noise, given, jnp.zeros(noise.shape, bool), method)


def complete(model: PixelRNN, params: dict, key: Array, images: Array, num_samples: int,
             given_rows: int | None = None, method: str = "rows") -> Array:
    """Completions of images (N, H, W, C): their first `given_rows` rows (default H // 2)
    kept exactly, the rest sampled; int32 (N, num_samples, H, W, C)."""
    height = model.image_shape[0]
    given_rows = height // 2 if given_rows is None else given_rows
    if not 0 <= given_rows <= height:
        raise ValueError(f"given_rows={given_rows} must lie in 0..{height}")
    given = jnp.repeat(jnp.asarray(images, jnp.int32), num_samples, axis=0)
    mask = jnp.broadcast_to((jnp.arange(height) < given_rows)[None, :, None, None], given.shape)
    noise = jax.random.uniform(key, given.shape)
    out = _sample(model, params, noise, given, mask, method)
    return out.reshape(len(images), num_samples, *model.image_shape)


@functools.partial(jax.jit, static_argnames=("model", "method"))
def _sample(model: PixelRNN, params, noise, given, given_mask, method):
    """noise (B, H, W, C) uniforms; given (B, H, W, C) int values kept where given_mask."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {METHODS}")
    if method == "generic":
        return _sample_generic(model, params, noise, given, given_mask)
    return _sample_rows(model, params, noise, given, given_mask)


def _choose(model, logits, noise, given, given_mask, r, c, ch):
    """The value of channel ch of pixel (r, c): the given one or a fresh draw. (B,)"""
    value = draw(logits, noise[:, r, c, ch], model.levels)
    return jnp.where(given_mask[:, r, c, ch], given[:, r, c, ch], value)


def _sample_generic(model, params, noise, given, given_mask):
    height, width, channels = model.image_shape

    def body(i, image):
        r, c, ch = i // (width * channels), (i // channels) % width, i % channels
        logits = model.logits(params, image)[:, r, c, ch]
        return image.at[:, r, c, ch].set(_choose(model, logits, noise, given, given_mask,
                                                 r, c, ch))

    return lax.fori_loop(0, height * width * channels, body, jnp.zeros(noise.shape, jnp.int32))


# -- the incremental sampler ------------------------------------------------------

def _sample_rows(model, params, noise, given, given_mask):
    height, width, channels = model.image_shape
    half = model.input_kernel // 2
    layer = _ROW_LAYERS[model.layer](model)
    # The canvas is padded by the first convolution's reach, so a position's
    # receptive field is one fixed-size slice of it.
    canvas = jnp.zeros((noise.shape[0], height + 2 * half, width + 2 * half, channels), jnp.int32)
    states = [layer.init_state(noise.shape[0]) for _ in params["layers"]]

    def pixel(c, loop, r):
        canvas, states = loop
        for ch in range(channels):  # the pixel's channels in order, R, G, B
            logits, new_states = _at_position(model, layer, params, canvas, states, r, c)
            value = _choose(model, logits[:, ch], noise, given, given_mask, r, c, ch)
            canvas = canvas.at[:, r + half, c + half, ch].set(value)
        return canvas, new_states

    def row(r, loop):
        canvas, states = lax.fori_loop(0, width, functools.partial(pixel, r=r), loop)
        states = [layer.end_row(p["rnn"], s) for p, s in zip(params["layers"], states)]
        return canvas, states

    canvas, _ = lax.fori_loop(0, height, row, (canvas, states))
    return canvas[:, half:half + height, half:half + width]


def _at_position(model, layer, params, canvas, states, r, c):
    """Logits at pixel (r, c) ((B, C) or (B, C, K)) and the layers' states after it."""
    k = model.input_kernel
    patch = lax.dynamic_slice_in_dim(lax.dynamic_slice_in_dim(canvas, r, k, 1), c, k, 2)
    w = params["input"]["w"] * model.input_mask()
    # The first convolution at one position: its (k, k) window, the rows below shut by the mask.
    x = jnp.einsum("bijc,ijcd->bd", model.encode(patch), w) + params["input"]["b"]
    new_states = []
    for p, state in zip(params["layers"], states):
        y, state = layer.at_pixel(p["rnn"], state, x, c)
        x = x + model.pointwise(p["out"], y)
        new_states.append(state)
    return model.head(params["head"], x), new_states


class _RowLSTMRows:
    """A Row LSTM layer, one pixel at a time. State (arrays padded by k//2 columns):
    c_up, h_up (B, W+2p, h) the row above; c_row, h_row the row so far;
    x_row (B, W+2p, 2h) the layer's inputs of the row so far."""

    def __init__(self, model: PixelRNN):
        self.cell, self.taps = model.cell, model.row_kernel
        self.width, self.features = model.image_shape[1], model.features

    def init_state(self, batch: int) -> dict:
        padded = self.width + self.taps - 1
        zeros = jnp.zeros((batch, padded, self.features), jnp.float32)
        return {"c_up": zeros, "h_up": zeros, "c_row": zeros, "h_row": zeros,
                "x_row": jnp.zeros((batch, padded, 2 * self.features), jnp.float32)}

    def at_pixel(self, params, state, x, c):
        """x (B, 2h) the layer's input at pixel c of the row -> (h at the pixel (B, h), state)."""
        half = self.taps // 2
        state = dict(state, x_row=state["x_row"].at[:, c + half].set(x))

        def window(name):  # the k positions whose state or input reach pixel c
            return lax.dynamic_slice_in_dim(state[name], c, self.taps, 1)

        carry = LSTMCarry(c=window("c_up"), h=window("h_up"))
        new, y = self.cell.step(params, carry, window("x_row"))  # (B, k, h); valid at the centre
        state["c_row"] = state["c_row"].at[:, c + half].set(new.c[:, half])
        state["h_row"] = state["h_row"].at[:, c + half].set(new.h[:, half])
        return y[:, half], state

    def end_row(self, params, state):
        return dict(state, c_up=state["c_row"], h_up=state["h_row"],
                    x_row=jnp.zeros_like(state["x_row"]))


class _DiagonalRows:
    """A Diagonal BiLSTM layer, one pixel at a time. State: h_up (B, W, h) direction 0
    of the row above; c_left, h_left (B, h) direction 0 at the pixel to the left;
    h_row (B, W, h) direction 0 of the row so far; back (B, W, h) direction 1 of the
    row above (what the shift adds to this row); x_row (B, W, 2h) the row's inputs."""

    def __init__(self, model: PixelRNN):
        self.cell = model.cell
        self.width, self.features = model.image_shape[1], model.features

    def init_state(self, batch: int) -> dict:
        row = jnp.zeros((batch, self.width, self.features), jnp.float32)
        left = jnp.zeros((batch, self.features), jnp.float32)
        return {"h_up": row, "h_row": row, "back": row, "c_left": left, "h_left": left,
                "x_row": jnp.zeros((batch, self.width, 2 * self.features), jnp.float32)}

    def at_pixel(self, params, state, x, c):
        """x (B, 2h) the layer's input at pixel c of the row -> (output (B, h), state)."""
        px = self.cell.project_direction(params, x, 0)
        new = self.cell.update(params, 0, px, state["h_up"][:, c], state["h_left"],
                               state["c_left"])
        state = dict(state, x_row=state["x_row"].at[:, c].set(x), c_left=new.c, h_left=new.h,
                     h_row=state["h_row"].at[:, c].set(new.h))
        return new.h + state["back"][:, c], state

    def end_row(self, params, state):
        """Direction 1 over the finished row, right to left, from the row above."""
        px = self.cell.project_direction(params, state["x_row"], 1)  # (B, W, 4h)

        def step(right: LSTMCarry, inputs):
            px_c, h_above = inputs
            new = self.cell.update(params, 1, px_c, h_above, right.h, right.c)
            return new, new.h

        zeros = jnp.zeros_like(state["c_left"])
        _, back = recurrence.scan(step, LSTMCarry(c=zeros, h=zeros), (px, state["back"]),
                                  reverse=True)
        return dict(state, h_up=state["h_row"], back=back, c_left=zeros, h_left=zeros)


_ROW_LAYERS = {"row_lstm": _RowLSTMRows, "diagonal_bilstm": _DiagonalRows}
