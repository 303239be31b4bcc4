"""Offline, deterministic, handwriting-like digits: an MNIST stand-in that needs no download.

Each class 0-9 is a hand-designed pen skeleton (polylines, arcs and Bezier curves in a
unit box, x to the right and y downwards), with a few variants per class (a 1 with or
without its flag, an open or closed 4, a 7 with a crossbar, ...). A sample is drawn by

1. jittering the skeleton's control points (each class function draws its own jitter),
2. a random affine map: rotation +-15 degrees, shear (mostly right-slanting), and a
   narrowing x-scale,
3. normalising like MNIST: the ink's bounding box scaled so its longer side is about
   18-20 px, then shifted so the ink's centre of mass is within half a pixel of the
   centre of pixel (14, 14), as MNIST did,
4. stroking with a random pen width (2.2-3.6 px) and edge softness (1-1.8 px): each
   pixel's ink is a linear ramp of its distance to the pen path, which anti-aliases
   analytically (no 4x render and downsample needed) and gives round joints and caps.
   No fonts or image libraries are involved, so the output is the same on any machine.

Ink statistics match MNIST's: mean pixel about 0.14 (MNIST 0.13), about 20% of pixels
non-zero (MNIST 19%). A nearest-class-mean classifier on raw pixels scores about 90%
on held-out synthetic digits (81% on MNIST t10k[0:8000] subset), and class means fitted
on synthetic digits alone classify about 58% of real MNIST digits correctly.

Sample i of a stream is a pure function of (seed, stream, i): its randomness comes from
`np.random.default_rng([seed, stream, i])` and its label from a shuffle of 0..9 shared
by the block of ten indices it belongs to, so labels are exactly balanced in every
aligned block of ten and any subset can be regenerated alone. Streams keep the train and
evaluation digits of one seed apart (`rnnvision.data.mnist` uses stream 0 and 1).

Speed (measured 2026-11-22 on a 2-core CPU that other jobs were loading heavily):
0.4-0.7 ms of CPU time per digit on one core, so 10k digits take 4-7 s; the distance
field (about 0.2 ms) is most of it.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

IMAGE_SIZE = 28  # Output images are (28, 28), like MNIST.
NUM_CLASSES = 10
_BOX = 20.0  # MNIST fits each digit's longer side to 20 px inside the 28x28 frame.

Strokes = list[np.ndarray]  # Each stroke: float (n, 2) points (x, y) in the unit box.


# ---------------------------------------------------------------- stroke primitives


def _arc(cx, cy, rx, ry, start_deg, end_deg, n=16) -> np.ndarray:
    """Points on an elliptical arc; angle 0 is +x, 90 is +y (down, clockwise on screen)."""
    t = np.deg2rad(np.linspace(start_deg, end_deg, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=-1)


def _bezier(*ctrl, n=12) -> np.ndarray:
    """Points on the Bezier curve of any degree with the given (x, y) control points."""
    p = np.asarray(ctrl, np.float64)  # (k + 1, 2)
    k = len(p) - 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    i = np.arange(k + 1)[None, :]
    bernstein = np.array([math.comb(k, m) for m in range(k + 1)]) * t**i * (1 - t) ** (k - i)
    return bernstein @ p


def _poly(*points) -> np.ndarray:
    return np.asarray(points, np.float64)


# ---------------------------------------------------------------- class skeletons
# Each takes the sample's generator, draws its own variant and control-point jitter,
# and returns the strokes in the unit box. `j(s)` is a fresh N(0, s) offset.


def _zero(rng, j) -> Strokes:
    start = rng.uniform(-120, -60)  # Pen starts near the top and overshoots a little.
    rx, ry = 0.3 + j(0.04), 0.45 + j(0.02)
    return [_arc(0.5 + j(0.02), 0.5, rx, ry, start, start - 360 - rng.uniform(0, 25), 28)]


def _one(rng, j) -> Strokes:
    top, bottom = (0.52 + j(0.03), 0.03), (0.48 + j(0.03), 0.97)
    strokes = [_poly(top, bottom)]
    if rng.random() < 0.45:  # Flag at the top.
        strokes = [_poly((0.3 + j(0.04), 0.22 + j(0.04)), top, bottom)]
    if rng.random() < 0.12:  # Foot serif.
        strokes.append(_poly((0.3, 0.97 + j(0.01)), (0.7, 0.97 + j(0.01))))
    return strokes


def _two(rng, j) -> Strokes:
    left_x, foot_y = 0.12 + j(0.03), 0.95 + j(0.02)
    body = _bezier((0.18 + j(0.03), 0.25 + j(0.04)), (0.35, -0.08 + j(0.04)),
                   (0.95 + j(0.05), 0.05), (0.78 + j(0.04), 0.42 + j(0.04)),
                   (left_x, foot_y), n=20)
    if rng.random() < 0.3:  # Loop at the bottom-left before the base.
        loop = _arc(left_x + 0.1, foot_y - 0.06, 0.1, 0.06, 180, 450, 8)
        return [np.concatenate([body, loop, _poly((0.9 + j(0.04), foot_y + j(0.02)))])]
    return [np.concatenate([body, _poly((0.9 + j(0.04), foot_y + j(0.03)))])]


def _three(rng, j) -> Strokes:
    mid = (0.45 + j(0.04), 0.5 + j(0.03))
    ry_top = mid[1] - 0.05
    top = _arc(0.5, 0.05 + ry_top / 2, 0.28 + j(0.03), ry_top / 2 + 0.02, 200 + j(15), 450, 14)
    top[-1] = mid
    bottom = _arc(0.48, mid[1] + (0.97 - mid[1]) / 2, 0.33 + j(0.03),
                  (0.97 - mid[1]) / 2, 270, 510 + j(15), 16)
    bottom[0] = mid
    return [np.concatenate([top, bottom[1:]])]


def _four(rng, j) -> Strokes:
    bar_y = 0.65 + j(0.04)
    if rng.random() < 0.6:  # Closed top: one stroke down-left, then across.
        apex = (0.62 + j(0.04), 0.02)
        stem_x = 0.66 + j(0.03)
        return [_poly(apex, (0.08 + j(0.04), bar_y), (0.92 + j(0.04), bar_y + j(0.02))),
                _poly((stem_x + j(0.03), 0.3 + j(0.05)), (stem_x, 0.98))]
    stem_x = 0.7 + j(0.03)  # Open top: an L, then a separate stem.
    return [_poly((0.2 + j(0.04), 0.02), (0.13 + j(0.04), bar_y), (0.9 + j(0.04), bar_y)),
            _poly((stem_x + j(0.03), 0.02), (stem_x, 0.98))]


def _five(rng, j) -> Strokes:
    corner = (0.26 + j(0.03), 0.06 + j(0.02))
    neck = (0.23 + j(0.03), 0.45 + j(0.03))
    bowl = _arc(0.5, 0.69, 0.31 + j(0.03), 0.27 + j(0.02), 225, 505 + j(12), 16)
    bowl[0] = neck
    top = _poly((0.82 + j(0.04), 0.05 + j(0.03)), corner)
    if rng.random() < 0.5:  # One stroke: the bar, down, around the bowl.
        return [np.concatenate([top, _poly(neck), bowl[1:]])]
    return [np.concatenate([_poly(corner, neck), bowl[1:]]), top]


def _six(rng, j) -> Strokes:
    cy, ry = 0.7 + j(0.02), 0.26 + j(0.02)
    cx, rx = 0.5 + j(0.02), 0.29 + j(0.03)
    stem = _bezier((0.72 + j(0.05), 0.02), (0.3 + j(0.05), 0.1 + j(0.05)),
                   (cx - rx, cy - 0.25 + j(0.04)), (cx - rx, cy), n=10)
    loop = _arc(cx, cy, rx, ry, 180, -150 + j(20), 18)
    return [np.concatenate([stem, loop[1:]])]


def _seven(rng, j) -> Strokes:
    top_y = 0.05 + j(0.02)
    corner = (0.86 + j(0.04), top_y + j(0.02))
    foot = (0.4 + j(0.07), 0.97)
    if rng.random() < 0.5:
        down = _poly(corner, foot)
    else:  # A gently curved down-stroke.
        down = _bezier(corner, (0.55 + j(0.04), 0.45 + j(0.05)), foot, n=8)
    strokes = [np.concatenate([_poly((0.14 + j(0.03), top_y + j(0.03))), down])]
    if rng.random() < 0.2:  # Continental crossbar.
        strokes.append(_poly((0.42 + j(0.03), 0.52), (0.8 + j(0.03), 0.5 + j(0.03))))
    return strokes


def _eight(rng, j) -> Strokes:
    waist = (0.5 + j(0.03), 0.45 + j(0.03))
    top_r = (0.22 + j(0.03), waist[1] / 2 - 0.01)
    bot_r = (0.28 + j(0.03), (0.97 - waist[1]) / 2)
    top = _arc(waist[0] + j(0.02), waist[1] - top_r[1], *top_r, 90, 90 - 360, 18)
    bot = _arc(waist[0] + j(0.02), waist[1] + bot_r[1], *bot_r, -90, 270, 20)
    return [np.concatenate([top, bot])]


def _nine(rng, j) -> Strokes:
    cx, cy = 0.48 + j(0.02), 0.28 + j(0.02)
    rx, ry = 0.3 + j(0.03), 0.26 + j(0.02)
    loop = _arc(cx, cy, rx, ry, 10, -350 + j(10), 18)  # Counter-clockwise, from the right.
    tail_top = (cx + rx, cy + j(0.03))
    if rng.random() < 0.5:
        tail = _poly(tail_top, (0.72 + j(0.06), 0.98))
    else:  # Curved tail.
        tail = _bezier(tail_top, (0.78 + j(0.04), 0.8), (0.5 + j(0.08), 0.98), n=8)
    return [np.concatenate([loop, tail])]


_SKELETONS: tuple[Callable[..., Strokes], ...] = (
    _zero, _one, _two, _three, _four, _five, _six, _seven, _eight, _nine)


# ---------------------------------------------------------------- sampling and rendering


def _bend(strokes: Strokes, rng: np.random.Generator) -> Strokes:
    """Smooth random deformation in the unit box: real strokes are never straight.

    A quadratic displacement field over the whole box (loops change shape, lines bow)
    plus a slow wobble along each stroke (two random sinusoids of its parameter).
    """
    quadratic = rng.normal(0.0, 0.12, size=(3, 2))  # Coefficients of x^2, y^2, xy.
    bent = []
    for stroke in strokes:
        x, y = stroke[:, :1] - 0.5, stroke[:, 1:] - 0.5
        field = np.concatenate([x * x, y * y, x * y], axis=1) @ quadratic
        u = np.linspace(0.0, 1.0, len(stroke))[:, None]
        amplitude, frequency = rng.normal(0.0, 0.012, size=(2, 2)), rng.uniform(0.5, 2.0, 2)
        phase = rng.uniform(0.0, 2 * np.pi, 2)
        wobble = (amplitude[None] * np.sin(2 * np.pi * frequency[:, None] * u[:, None]
                                           + phase[:, None])).sum(1)
        bent.append(stroke + field + wobble)
    return bent


def _random_affine(rng: np.random.Generator) -> np.ndarray:
    """A 2x2 map: rotation +-15 deg after shear and a narrowing x-scale (digits are tall)."""
    angle = np.deg2rad(rng.uniform(-15.0, 15.0))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    # x += k * y with y down: k < 0 slants the top right, as most handwriting does.
    shear = np.array([[1.0, rng.uniform(-0.4, 0.15)], [0.0, 1.0]])
    scale = np.diag([rng.uniform(0.7, 1.05), 1.0])
    return rotation @ shear @ scale


def _ink_centre(strokes: Strokes) -> np.ndarray:
    """Centre of mass of the pen path: segment midpoints weighted by segment length."""
    segments = [(s[1:] + s[:-1]) / 2 for s in strokes if len(s) > 1]
    lengths = [np.linalg.norm(s[1:] - s[:-1], axis=-1) for s in strokes if len(s) > 1]
    mids, weights = np.concatenate(segments), np.concatenate(lengths)
    return (mids * weights[:, None]).sum(0) / max(weights.sum(), 1e-9)


def _place(strokes: Strokes, ink_margin: float, rng: np.random.Generator) -> Strokes:
    """Maps unit-box strokes to 28x28 pixel coordinates the way MNIST was normalised.

    The longer side of the ink's bounding box (the pen path plus `ink_margin`, the width
    the pen adds) becomes 18-20 px, and the ink's centre of mass lands within half a
    pixel of (14.5, 14.5): the centre of pixel (14, 14), where MNIST puts it.
    """
    linear = _random_affine(rng)
    strokes = [s @ linear.T for s in _bend(strokes, rng)]
    points = np.concatenate(strokes)
    extent = (points.max(0) - points.min(0)).max()
    scale = (_BOX * rng.uniform(0.9, 1.0) - ink_margin) / max(extent, 1e-6)
    centre = _ink_centre(strokes)
    offset = IMAGE_SIZE / 2 + 0.5 + rng.uniform(-0.5, 0.5, size=2)
    return [(s - centre) * scale + offset for s in strokes]


def _render(strokes: Strokes, pen_width: float, softness: float) -> np.ndarray:
    """Strokes in pixel coordinates -> uint8 (28, 28) ink, anti-aliased analytically.

    Ink at a pixel centre falls off linearly with the centre's distance to the pen path,
    over `softness` px around the pen's edge. The distance field gives round joints and
    caps for free and is one numpy expression over (pixels, segments).
    """
    starts = np.concatenate([s[:-1] if len(s) > 1 else s for s in strokes])  # (S, 2)
    ends = np.concatenate([s[1:] if len(s) > 1 else s for s in strokes])
    reach = pen_width / 2 + softness / 2  # Beyond this distance a pixel gets no ink.
    lo = np.clip(np.floor(np.minimum(starts, ends).min(0) - reach), 0, IMAGE_SIZE)
    hi = np.clip(np.ceil(np.maximum(starts, ends).max(0) + reach), 0, IMAGE_SIZE)
    (x0, y0), (x1, y1) = lo.astype(int), hi.astype(int)
    # Only pixels in the ink's bounding box: about a third of the image, a third the work.
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    # x and y kept apart: numpy reductions over a trailing axis of size 2 are slow.
    ax, ay = starts[:, 0].astype(np.float32), starts[:, 1].astype(np.float32)
    dx, dy = ends[:, 0].astype(np.float32) - ax, ends[:, 1].astype(np.float32) - ay
    inv_length2 = 1.0 / np.maximum(dx * dx + dy * dy, 1e-12)
    px, py = px.reshape(-1, 1) - ax, py.reshape(-1, 1) - ay  # (P, S)
    t = np.clip((px * dx + py * dy) * inv_length2, 0.0, 1.0)
    px -= t * dx
    py -= t * dy
    dist = np.sqrt((px * px + py * py).min(axis=1))  # (P,)
    ink = np.clip((pen_width / 2 - dist) / softness + 0.5, 0.0, 1.0)
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    image[y0:y1, x0:x1] = np.round(ink * 255).reshape(y1 - y0, x1 - x0)
    return image


def block_labels(seed: int, stream: int, block: int) -> np.ndarray:
    """int32 (10,): the labels of indices 10*block .. 10*block+9, a shuffle of 0..9."""
    # The trailing 1 keeps this seed apart from the per-sample seeds [seed, stream, i].
    rng = np.random.default_rng([seed, stream, block, 1])
    return rng.permutation(NUM_CLASSES).astype(np.int32)


def _draw(label: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (28, 28): one random rendition of class `label`."""
    jitter = lambda scale: rng.normal(0.0, scale)  # noqa: E731 - closes over rng.
    strokes = _SKELETONS[label](rng, jitter)
    pen_width = rng.uniform(2.0, 4.0)
    softness = rng.uniform(1.0, 1.8)
    return _render(_place(strokes, pen_width + softness, rng), pen_width, softness)


def _check_index_args(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"synthetic digits: {name}={value!r}; must be an integer >= 0.")


def make_digit(seed: int, index: int, *, stream: int = 0) -> tuple[np.ndarray, int]:
    """Digit `index` of (seed, stream) alone: (uint8 (28, 28) image, int label)."""
    _check_index_args(seed=seed, index=index, stream=stream)
    label = int(block_labels(seed, stream, index // NUM_CLASSES)[index % NUM_CLASSES])
    return _draw(label, np.random.default_rng([seed, stream, index])), label


def make_digits(
    num: int, seed: int, *, start: int = 0, stream: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generates digits start .. start+num-1 of (seed, stream); equal to `make_digit`'s.

    Args:
      num: how many digits, >= 0.
      seed: integer seed, >= 0.
      start: index of the first digit; any slice of a stream can be made alone.
      stream: integer >= 0 naming an independent stream of the same seed (the MNIST
        loader uses 0 for training and 1 for evaluation, so they never coincide).

    Returns:
      images: uint8 (num, 28, 28), white (255) ink on black (0), like MNIST.
      labels: int32 (num,) in 0..9, exactly balanced over aligned blocks of ten.
    """
    _check_index_args(num=num, seed=seed, start=start, stream=stream)
    indices = np.arange(start, start + num)
    labels = np.zeros((num,), np.int32)
    for block in np.unique(indices // NUM_CLASSES):  # One label shuffle per block.
        in_block = indices // NUM_CLASSES == block
        labels[in_block] = block_labels(seed, stream, int(block))[indices[in_block] % 10]
    images = np.zeros((num, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for n, (index, label) in enumerate(zip(indices.tolist(), labels.tolist())):
        images[n] = _draw(label, np.random.default_rng([seed, stream, index]))
    return images, labels
