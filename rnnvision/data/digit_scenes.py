r"""Digit scenes: an offline captioning data set of 1-3 MNIST digits on a canvas.

Any MNIST source gives the digits (real IDX files, TFDS, or the synthetic
stand-in); this module places them on a canvas and writes what is where.

Canvas: `canvas_size` x `canvas_size` (48 by default), a 3 x 3 grid of square cells
(16 px). A digit is "large" (`large_size`, 16 px: it fills its cell) or "small"
(`small_size`, 10 px, at a random offset inside its cell). Each digit image is cut
to the square around its ink and resized, so the sizes are those of the ink.

Layouts (what is where):
  1 digit   any of the 9 cells.
  2 digits  two cells of one row, or of one column (so "above" / "left of" is exact).
  3 digits  a whole row or a whole column.
  Classes in a scene are distinct, so a class word names exactly one digit.
  Sizes are independent, uniform over {small, large}.

Grammar of the captions (every phrasing listed is a reference of the scene):
  caption  := one | two | three
  one      := D "at the" P | "there is" D "at the" P | "at the" P "there is" D
  two      := D1 R D2 | D2 R' D1 | "there is" D1 R D2 | "there is" D2 R' D1
  three    := D1 "," D2 "and" D3 O | D3 "," D2 "and" D1 O'  (each also with "there is")
  D        := "a" SIZE CLASS          SIZE := "small" | "large"    CLASS := "0" | ... | "9"
  P        := "top left" | "top" | "top right" | "left" | "centre" | "right"
              | "bottom left" | "bottom" | "bottom right"
  R, R'    := "above", "below"                    (D1 is the upper digit), or
              "left of", "right of"               (D1 is the left digit)
  O, O'    := "from top to bottom", "from bottom to top", or
              "from left to right", "from right to left"
  D1, D2, D3 are the digits in reading order (top to bottom, left to right).
  Examples: "a small 7 above a large 2", "there is a large 2 below a small 7",
  "a small 3 , a large 8 and a small 1 from left to right", "at the top left there is a
  large 5". The tokenizer (`rnnvision.data.vocab.tokenize`) drops the comma.

Held-out combinations: a *combination* is an unordered pair of digit classes that
appear together in a scene. HELD_OUT_PAIRS holds the 10 pairs {a, b} with
(a + b) mod 10 in {3, 9} ({0,3} {1,2} {4,9} {5,8} {6,7} {0,9} {1,8} {2,7} {3,6}
{4,5}); every class is in exactly two of them. Splits:
  train      1-3 digits from the training pool; no held-out pair ever appears.
  eval       2-3 digits from the evaluation pool; at least one held-out pair appears,
             so every evaluation caption names two digits never seen together in
             training (its 4-grams around the pair never occur in training captions).
  eval_seen  like train (no held-out pair) but with evaluation-pool digits: the
             "seen combinations" control.

Determinism: scene `index` of a split is a pure function of (seed, split, index) and
the digit pool: its randomness is `np.random.default_rng([seed, stream, index])`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image

GRID = 3
NUM_CLASSES = 10
SIZE_WORDS = ("small", "large")
ROW_WORDS = ("top", "middle", "bottom")
COL_WORDS = ("left", "centre", "right")
HELD_OUT_PAIRS = frozenset(frozenset((a, b)) for a in range(NUM_CLASSES)
                           for b in range(a + 1, NUM_CLASSES) if (a + b) % 10 in (3, 9))
SPLITS = {"train": 0, "eval": 1, "eval_seen": 2}  # split -> random stream
MAX_DIGITS = 3


@dataclasses.dataclass(frozen=True)
class Layout:
    """What is where, without pixels. Digits are listed in reading order."""

    classes: tuple[int, ...]            # distinct digit classes
    sizes: tuple[int, ...]              # 0 small, 1 large
    cells: tuple[tuple[int, int], ...]  # (row, col) in the 3 x 3 grid


def held_out_pairs_in(classes: Sequence[int]) -> list[frozenset]:
    """The held-out pairs among `classes`."""
    classes = [int(c) for c in classes]
    return [frozenset((a, b)) for i, a in enumerate(classes) for b in classes[i + 1:]
            if frozenset((a, b)) in HELD_OUT_PAIRS]


def sample_layout(rng: np.random.Generator, held_out: bool,
                  max_digits: int = MAX_DIGITS) -> Layout:
    """A random layout; `held_out` ones contain a held-out pair, the others none."""
    num = int(rng.integers(2 if held_out else 1, max_digits + 1))
    if num == 1:
        cells = [divmod(int(rng.integers(GRID * GRID)), GRID)]
    else:
        line, horizontal = int(rng.integers(GRID)), bool(rng.integers(2))
        positions = sorted(int(p) for p in rng.choice(GRID, num, replace=False))
        cells = [(line, p) if horizontal else (p, line) for p in positions]
    while True:  # Rejection: about half of the 3-digit draws pass for train.
        classes = [int(c) for c in rng.choice(NUM_CLASSES, num, replace=False)]
        if bool(held_out_pairs_in(classes)) == held_out:
            break
    sizes = [int(s) for s in rng.integers(2, size=num)]
    return Layout(tuple(classes), tuple(sizes), tuple(cells))


def position_phrase(cell: tuple[int, int]) -> str:
    """(row, col) -> "top left", "top", "centre", "bottom right", ..."""
    row, col = cell
    if (row, col) == (1, 1):
        return "centre"
    words = ([ROW_WORDS[row]] if row != 1 else []) + ([COL_WORDS[col]] if col != 1 else [])
    return " ".join(words)


def captions(layout: Layout) -> list[str]:
    """Every phrasing of the grammar (module docstring) for `layout`; the first is canonical."""
    d = [f"a {SIZE_WORDS[s]} {c}" for c, s in zip(layout.classes, layout.sizes)]
    if len(d) == 1:
        where = position_phrase(layout.cells[0])
        return [f"{d[0]} at the {where}", f"there is {d[0]} at the {where}",
                f"at the {where} there is {d[0]}"]
    horizontal = layout.cells[0][0] == layout.cells[1][0]
    if len(d) == 2:
        forward, backward = ("left of", "right of") if horizontal else ("above", "below")
        plain = [f"{d[0]} {forward} {d[1]}", f"{d[1]} {backward} {d[0]}"]
    elif len(d) == 3:
        forward, backward = (("from left to right", "from right to left") if horizontal
                             else ("from top to bottom", "from bottom to top"))
        plain = [f"{d[0]} , {d[1]} and {d[2]} {forward}", f"{d[2]} , {d[1]} and {d[0]} {backward}"]
    else:
        raise ValueError(f"a layout has 1 to {MAX_DIGITS} digits, got {len(d)}")
    return plain + [f"there is {p}" for p in plain]


def digit_sprites(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) digits -> (N, size, size): the square around the ink, resized."""
    out = np.zeros((len(images), size, size), np.uint8)
    for n, image in enumerate(images):
        ys, xs = np.nonzero(image > 0)
        if len(ys) == 0:
            continue
        side = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        cy, cx = (ys.max() + ys.min() + 1) / 2, (xs.max() + xs.min() + 1) / 2
        y0, x0 = int(round(cy - side / 2)), int(round(cx - side / 2))
        padded = np.pad(image, side)  # Room for a square that leaves the frame.
        square = padded[y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side]
        out[n] = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))
    return out


@dataclasses.dataclass
class SceneBatch:
    """N scenes. Boxes are pixel squares (x0, y0, x1, y1), x1/y1 exclusive; -1 pads."""

    images: np.ndarray           # uint8 (N, S, S)
    captions: list[list[str]]    # every phrasing of each scene
    classes: np.ndarray          # int32 (N, MAX_DIGITS), -1 where no digit
    boxes: np.ndarray            # int32 (N, MAX_DIGITS, 4)
    layouts: list[Layout]


class DigitScenes:
    """The scenes of one split, drawn from a pool of digits (images, labels).

    Args:
      images: uint8 (N, 28, 28) digit pool; labels: int (N,) in 0..9.
      split: "train", "eval" or "eval_seen" (see the module docstring).
      seed: the scene seed (layouts, digit picks, offsets).
      canvas_size, small_size, large_size: pixels; the grid cell is canvas_size // 3.
      max_digits: 1..3 digits per scene (2..3 for eval, which needs a pair).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, split: str, seed: int = 0, *,
                 canvas_size: int = 48, small_size: int = 10, large_size: int = 16,
                 max_digits: int = MAX_DIGITS):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; allowed: {sorted(SPLITS)}")
        cell = canvas_size // GRID
        if not 4 <= small_size < large_size <= cell:
            raise ValueError(f"need 4 <= small_size ({small_size}) < large_size ({large_size}) "
                             f"<= canvas_size // 3 ({cell})")
        if not (2 if split == "eval" else 1) <= max_digits <= MAX_DIGITS:
            raise ValueError(f"max_digits={max_digits} must be in 1..{MAX_DIGITS} (2.. for eval)")
        labels = np.asarray(labels)
        self.by_class = [np.flatnonzero(labels == c) for c in range(NUM_CLASSES)]
        missing = [c for c in range(NUM_CLASSES) if len(self.by_class[c]) == 0]
        if missing:
            raise ValueError(f"the digit pool has no examples of classes {missing}")
        self.split, self.seed, self.stream = split, seed, SPLITS[split]
        self.canvas_size, self.cell, self.max_digits = canvas_size, cell, max_digits
        self.margin = (canvas_size - GRID * cell) // 2
        self.sizes = (small_size, large_size)
        self.sprites = (digit_sprites(images, small_size), digit_sprites(images, large_size))

    def layout(self, index: int) -> Layout:
        """The layout of scene `index` (no rendering: cheap, for vocabularies and tests)."""
        return self._draw(index)[0]

    def _draw(self, index: int):
        rng = np.random.default_rng([self.seed, self.stream, index])
        return sample_layout(rng, self.split == "eval", self.max_digits), rng

    def scene(self, index: int):
        """(uint8 (S, S) image, Layout, int32 (num_digits, 4) boxes)."""
        layout, rng = self._draw(index)
        image = np.zeros((self.canvas_size, self.canvas_size), np.uint8)
        boxes = []
        for label, size_id, (row, col) in zip(layout.classes, layout.sizes, layout.cells):
            pool = self.by_class[label]
            sprite = self.sprites[size_id][pool[rng.integers(len(pool))]]
            size = self.sizes[size_id]
            dy, dx = rng.integers(0, self.cell - size + 1, size=2)
            y0, x0 = self.margin + row * self.cell + dy, self.margin + col * self.cell + dx
            image[y0:y0 + size, x0:x0 + size] = np.maximum(image[y0:y0 + size, x0:x0 + size],
                                                           sprite)
            boxes.append((x0, y0, x0 + size, y0 + size))
        return image, layout, np.asarray(boxes, np.int32)

    def batch(self, indices: Sequence[int]) -> SceneBatch:
        n, k = len(indices), MAX_DIGITS
        images = np.zeros((n, self.canvas_size, self.canvas_size), np.uint8)
        classes = np.full((n, k), -1, np.int32)
        boxes = np.full((n, k, 4), -1, np.int32)
        layouts, refs = [], []
        for row, index in enumerate(indices):
            images[row], layout, scene_boxes = self.scene(int(index))
            classes[row, :len(layout.classes)] = layout.classes
            boxes[row, :len(scene_boxes)] = scene_boxes
            layouts.append(layout)
            refs.append(captions(layout))
        return SceneBatch(images, refs, classes, boxes, layouts)
