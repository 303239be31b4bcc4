"""Video actions: short videos of one real digit doing one of ten actions, made on the fly.

Shape legend: B videos, T = max_frames (every video padded to it), L a video's own
length (min_frames..max_frames), H = W = canvas, K = 10 classes.

Each video shows one 28x28 digit from a pool (e.g. MNIST) on a black `canvas` x `canvas`
frame, moved, scaled and rotated about its ink centroid frame by frame. The class is
what the digit does:

  id  name                 what the digit does                          order-blind view
  --  -------------------  -------------------------------------------  -----------------
  0   move_right           slides right in a straight line              = reverse of 1
  1   move_left            slides left (0 played backwards)             = reverse of 0
  2   move_down            slides down                                  = reverse of 3
  3   move_up              slides up (2 played backwards)               = reverse of 2
  4   grow                 scales up, about a fixed centre              = reverse of 5
  5   shrink               scales down (4 played backwards)             = reverse of 4
  6   rotate_cw            turns clockwise by 90-150 degrees            = reverse of 7
  7   rotate_ccw           turns anticlockwise (6 played backwards)     = reverse of 6
  8   spin_cw_then_rest    one full clockwise turn in the first         same frames as 9
                           `spin_frames` frames, then rests              in other order
  9   spin_ccw_then_rest   the same turn anticlockwise, then rests      same frames as 8

Why an order-blind model is at chance inside each pair: every video draws the same
random numbers whatever its class (digit, length, position, scale, speed, angles), and
pair members are built from one "forward" trajectory of those draws. Classes 1, 3, 5
and 7 are exactly the frames of 0, 2, 4 and 6 in reverse order over the valid frames,
so the two classes of a pair have the same distribution of frame *sets*. In the spin
pair, the turn visits the angles phi + j * 360/k (j = 0..k-1, k = spin_frames) in one
order or the other, which is the same set of angles, and both videos then rest at phi
for the remaining L - k frames, identically. A model that sees a video as a bag of
frames (any function of the multiset of frames, e.g. mean-pooled frame features) thus
gets the same input distribution for both classes of a pair and can do no better than
chance between them: at most 50% accuracy on this data set (it can tell the five
pairs apart, not the classes within one). The spin pair also needs memory: after frame
k its two classes are identical, so a recurrent model must carry the direction of the
turn from the first frames to the last. (Entering from the left vs from the right and
then resting would differ in *where* the entry frames are, which a bag of frames sees.)

Draws (uniform, per video, the same for every class):
  digit      any pool digit; length L uniform in min_frames..max_frames.
  scale      0.8-1.0 of the pool size (moves, rotations, spins); grow goes from
             0.5-0.65 to 1.0-1.2, geometrically (a constant ratio per frame).
  angle      a tilt phi of -15..15 degrees: moves and grow keep it, spins start and
             end at it, rotations pass through it halfway while turning 90-150
             degrees at a constant speed (so they stay within 90 degrees of upright).
  position   moves cover 50-100% of the free range of the centre (the range that
             keeps the digit's 28x28 box inside the canvas) at a constant speed
             (about 0.5-3.7 px/frame on a 48 canvas), starting anywhere that fits;
             the other classes stay at one random centre within the free range.
So no frame, and no set of frames, tells the two classes of a pair apart: that needs
the order. Given the order, the ends of a video are hints too (a grow video starts
small, rotate_cw starts tilted anticlockwise, a move starts nearer the side it leaves).
Rotations starting at any angle (0-360) would remove that hint but were much harder
to learn: on the rotate and spin classes alone, a small LRCN (4x4-patch ResNet of
width 8, LSTM 128) stayed at chance on the rotate pair after ~560 steps of batch 32,
and reached 99% on all four classes after ~620 steps with turns through upright.

Ground truth per frame (float64, NaN on padding frames): `centre` (y, x) in canvas
pixels of where the digit's ink centroid is drawn, `scale`, and `angle` in degrees,
positive clockwise on screen (y points down), not wrapped (a spin's rest frames are at
phi, its turn frames at phi +- j * 360/k). Pixel (i, j) has its centre at (y, x) = (i, j).

Rendering: every frame pixel p is mapped back into the digit, q = q_c + R(-angle)
(p - centre) / scale (q_c the digit's ink centroid), and sampled bilinearly from the
zero-padded digit (so ink mapped outside the canvas is simply not drawn). Pure
translation keeps the ink's mass and centroid exactly; scaling multiplies the mass by
about scale**2. Only valid frames are rendered; padding frames are zeros.

Video i is a pure function of (seed, i): its draws come from
`np.random.default_rng([seed, i])` and its class is i mod 10 (so any ten consecutive
indices hold every class once), unless `batch(indices, labels=...)` asks for other
classes: the draws stay the same, which is how the tests compare pair members.

Speed (numpy only; measured 2026-12-01 on a 2-core CPU that other jobs loaded to a
load average of 6-10): a batch of 64 videos of 8-20 frames takes 12-17 ms of CPU time
on a 48 canvas (30-57 ms wall while the cores were shared) and 23-32 ms on a 64
canvas. Each digit is drawn only in a window around it (see `VideoActions._render`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CLASS_NAMES = ("move_right", "move_left", "move_down", "move_up", "grow", "shrink",
               "rotate_cw", "rotate_ccw", "spin_cw_then_rest", "spin_ccw_then_rest")
NUM_CLASSES = len(CLASS_NAMES)
# (forward, backward): the backward class is the forward class's frames reversed.
REVERSED_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7))
MEMORY_PAIR = (8, 9)  # Identical after the first `spin_frames` frames.

_HALF_BOX = 14.0                  # Half the 28x28 digit box, in pool pixels.
_SCALE = (0.8, 1.0)               # Scale of moving, rotating and spinning digits.
_GROW_FROM, _GROW_TO = (0.5, 0.65), (1.0, 1.2)
_TILT = 15.0                      # Tilt range (+-degrees) of digits that do not rotate.
_TURN = (90.0, 150.0)             # Degrees turned by rotate_cw / rotate_ccw.
_MOVE_COVER = (0.5, 1.0)          # Fraction of the free range a move covers.
_NUM_DRAWS = 6                    # Uniforms drawn per video (the same for every class).


class VideoBatch(NamedTuple):
    """A batch of videos. Padding frames (t >= lengths[b]) are zeros / NaN."""

    frames: np.ndarray        # float32 (B, T, H, W, 1) in [0, 1]
    lengths: np.ndarray       # int32 (B,) in min_frames..max_frames
    labels: np.ndarray        # int32 (B,) class ids, see CLASS_NAMES
    centre: np.ndarray        # float64 (B, T, 2): (y, x) of the ink centroid
    scale: np.ndarray         # float64 (B, T)
    angle: np.ndarray         # float64 (B, T): degrees, clockwise on screen
    digit_ids: np.ndarray     # int64 (B,): index of the digit in the pool
    digit_labels: np.ndarray  # int32 (B,): the pool label of that digit (-1 if none)


def _lerp(bounds: tuple[float, float], u: np.ndarray) -> np.ndarray:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def reverse_valid(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """x (B, T, ...) with each row's first lengths[b] entries in reverse order; the rest kept."""
    t = np.arange(x.shape[1])[None, :]
    source = np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return np.take_along_axis(x, source.reshape(source.shape + (1,) * (x.ndim - 2)), axis=1)


class VideoActions:
    """A deterministic generator of action videos; see the module docstring.

    Attributes:
      digits: uint8 (N, 28, 28) pool of digit images, white ink on black.
      digit_labels: int (N,) labels of the pool (e.g. MNIST's 0..9), or None.
      canvas: frame height and width in pixels, >= 40 (48 or 64 are typical).
      min_frames, max_frames: the range of video lengths L; T = max_frames.
      spin_frames: k, the frames a spin takes (one full turn, 360/k degrees per
        frame); 3 <= k < min_frames so every spin ends with rest frames. Not 4:
        a quarter turn either way looks the same for digits that are nearly
        symmetric under a half turn (0, 1, 8), so cw and ccw would be ambiguous.
      seed: integer >= 0.

    Example:
      va = VideoActions(images, labels, canvas=48, min_frames=8, max_frames=20)
      batch = va.batch(np.arange(64))   # batch.frames float32 (64, 20, 48, 48, 1)
    """

    def __init__(self, digits: np.ndarray, digit_labels: np.ndarray | None = None, *,
                 canvas: int = 48, min_frames: int = 8, max_frames: int = 20,
                 spin_frames: int = 6, seed: int = 0):
        digits = np.asarray(digits)
        if digits.ndim != 3 or digits.shape[1:] != (28, 28) or digits.dtype != np.uint8 \
                or len(digits) == 0:
            raise ValueError(f"VideoActions: digits must be a non-empty uint8 array (N, 28, 28); "
                             f"got {digits.dtype} of shape {digits.shape}.")
        if digit_labels is not None and np.shape(digit_labels) != (len(digits),):
            raise ValueError(f"VideoActions: digit_labels has shape {np.shape(digit_labels)}; "
                             f"need ({len(digits)},), one label per digit, or None.")
        _check_sizes(canvas, min_frames, max_frames, spin_frames, seed)
        self.digits, self.canvas, self.seed = digits, int(canvas), int(seed)
        self.min_frames, self.max_frames = int(min_frames), int(max_frames)
        self.spin_frames = int(spin_frames)
        self.digit_labels = (np.full(len(digits), -1, np.int32) if digit_labels is None
                             else np.asarray(digit_labels, np.int32))
        self.centroids = ink_centroids(digits)  # (N, 2) (y, x) in pool pixels
        self.ink_radii = ink_radii(digits, self.centroids)  # (N,) in pool pixels

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    def _draw(self, index: int) -> tuple[int, int, np.ndarray]:
        """(digit id, length, uniforms (_NUM_DRAWS,)) of video `index`, whatever its class."""
        if index < 0:
            raise ValueError(f"VideoActions: video index={index}; must be >= 0.")
        rng = np.random.default_rng([self.seed, index])
        digit = int(rng.integers(len(self.digits)))
        length = int(rng.integers(self.min_frames, self.max_frames + 1))
        return digit, length, rng.uniform(size=_NUM_DRAWS)

    def batch(self, indices, labels=None) -> VideoBatch:
        """The videos of the given indices (each >= 0), as a VideoBatch.

        labels: None (video i has class i mod 10), or int (B,) classes to draw
        instead; a video's digit, length, positions, scales and angles do not
        depend on its class, so pair members can be compared index by index.
        """
        indices = np.asarray(indices).reshape(-1)
        if indices.size == 0:
            raise ValueError("VideoActions.batch: indices is empty.")
        if labels is None:
            labels = indices % NUM_CLASSES
        labels = np.asarray(labels).reshape(-1).astype(np.int32)
        if labels.shape != indices.shape or labels.min() < 0 or labels.max() >= NUM_CLASSES:
            raise ValueError(f"VideoActions.batch: labels={labels!r}; need one class in "
                             f"0..{NUM_CLASSES - 1} per index ({indices.size}).")
        draws = [self._draw(int(i)) for i in indices]
        ids = np.array([d[0] for d in draws])
        lengths = np.array([d[1] for d in draws], np.int32)
        u = np.stack([d[2] for d in draws])
        centre, scale, angle = self.trajectories(labels, lengths, u)
        frames = self._render(ids, lengths, centre, scale, angle)
        return VideoBatch(frames, lengths, labels, centre, scale, angle, ids,
                          self.digit_labels[ids])

    def trajectories(self, labels: np.ndarray, lengths: np.ndarray, u: np.ndarray):
        """Per-frame (centre (B, T, 2), scale (B, T), angle (B, T)); NaN after each length.

        Args:
          labels: int (B,) classes; lengths: int (B,); u: (B, _NUM_DRAWS) uniforms.
        """
        t = np.arange(self.max_frames)[None, :]
        valid = t < lengths[:, None]
        tau = np.minimum(t / (lengths[:, None] - 1), 1.0)  # 0 -> 1 over the valid frames
        options = {0: _move(u, tau, self.canvas, axis=1), 2: _move(u, tau, self.canvas, axis=0),
                   4: _grow(u, tau, self.canvas), 6: _rotate(u, tau, self.canvas),
                   8: _spin(u, t, self.canvas, self.spin_frames, +1.0),
                   9: _spin(u, t, self.canvas, self.spin_frames, -1.0)}
        forward = np.where(labels % 2 == 1, labels - 1, labels)
        forward[labels >= 8] = labels[labels >= 8]  # The spins are built directly.
        centre, scale, angle = (np.empty((len(labels), self.max_frames) + s) for s in
                                ((2,), (), ()))
        for label, (c, s, a) in options.items():
            rows = forward == label
            centre[rows], scale[rows], angle[rows] = c[rows], s[rows], a[rows]
        backward = (labels % 2 == 1) & (labels < 8)
        for x in (centre, scale, angle):
            x[backward] = reverse_valid(x[backward], lengths[backward])
            x[~valid] = np.nan
        return centre, scale, angle

    def _render(self, ids, lengths, centre, scale, angle) -> np.ndarray:
        """float32 (B, T, H, W, 1): the valid frames drawn, padding frames zero.

        Only a square window around each digit is computed, just large enough for its
        scaled ink (sides rounded up to a multiple of 8 so that frames of similar
        size are drawn together): about half the pixels of whole frames on a 48
        canvas, a quarter on a 64 canvas.
        """
        b, t = centre.shape[:2]
        video, frame = np.nonzero(np.arange(t)[None, :] < lengths[:, None])
        centre, scale, angle = centre[video, frame], scale[video, frame], angle[video, frame]
        reach = scale * (self.ink_radii[ids][video] + 1.0)  # bilinear support: +1 pool px
        sizes = np.minimum(-(-(np.ceil(2 * reach).astype(np.intp) + 2) // 8) * 8, self.canvas)
        pool = padded_pool(self.digits[ids])
        pivot = self.centroids[ids][video] + 2.0
        frames = np.zeros((b, t, self.canvas, self.canvas), np.float32)
        for size in np.unique(sizes):
            rows = sizes == size
            corner = np.clip(np.floor(centre[rows] - size / 2 + 0.5).astype(np.intp), 0,
                             self.canvas - size)
            drawn = warp_digits(pool, video[rows], pivot[rows], centre[rows], scale[rows],
                                angle[rows], corner, int(size))
            # windows[b, t, y, x] is a writable view of the size x size square at (y, x).
            windows = np.lib.stride_tricks.sliding_window_view(frames, (size, size), axis=(2, 3),
                                                               writeable=True)
            windows[video[rows], frame[rows], corner[:, 0], corner[:, 1]] = drawn
        return frames[..., None]


def _check_sizes(canvas, min_frames, max_frames, spin_frames, seed) -> None:
    if not isinstance(canvas, (int, np.integer)) or canvas < 40:
        raise ValueError(f"VideoActions: canvas={canvas!r}; need an integer >= 40 so a "
                         "grown digit (up to 1.2 x 28 px) has room.")
    if not 2 <= min_frames <= max_frames:
        raise ValueError(f"VideoActions: min_frames={min_frames}, max_frames={max_frames}; "
                         "need 2 <= min_frames <= max_frames.")
    if not 3 <= spin_frames < min_frames:
        raise ValueError(f"VideoActions: spin_frames={spin_frames}; need 3 <= spin_frames < "
                         f"min_frames={min_frames} so every spin ends with rest frames.")
    if seed < 0:
        raise ValueError(f"VideoActions: seed={seed}; must be >= 0.")


def ink_centroids(digits: np.ndarray) -> np.ndarray:
    """float64 (N, 2): the (y, x) centre of ink mass of (N, h, w) images (box centre if blank)."""
    mass = digits.astype(np.float64)
    total = mass.sum(axis=(1, 2))
    h, w = digits.shape[1:]
    y = (mass.sum(axis=2) @ np.arange(h)) / np.maximum(total, 1e-9)
    x = (mass.sum(axis=1) @ np.arange(w)) / np.maximum(total, 1e-9)
    blank = total == 0
    y[blank], x[blank] = (h - 1) / 2, (w - 1) / 2
    return np.stack([y, x], axis=-1)


def ink_radii(digits: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """float64 (N,): the largest distance from each centroid (N, 2) to an inked pixel's centre."""
    rows, cols = np.arange(digits.shape[1]), np.arange(digits.shape[2])
    dist2 = ((rows[None, :, None] - centroids[:, :1, None]) ** 2
             + (cols[None, None, :] - centroids[:, 1:, None]) ** 2)  # (N, h, w)
    return np.sqrt(np.where(digits > 0, dist2, 0.0).max(axis=(1, 2)))


# -- trajectories: each returns centre (B, T, 2), scale (B, T), angle (B, T) --------


def _free_range(canvas: int, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a centre coordinate that keeps the scaled 28x28 box inside."""
    margin = _HALF_BOX * scale - 0.5
    return margin, canvas - 1 - margin


def _still_centre(u: np.ndarray, canvas: int, scale: np.ndarray, t: int) -> np.ndarray:
    low, high = _free_range(canvas, scale)
    centre = low[:, None] + (high - low)[:, None] * u[:, 2:4]  # (B, 2)
    return np.repeat(centre[:, None], t, axis=1)


def _move(u, tau, canvas, axis):
    """A straight move along +axis (0: down, 1: right), constant speed, over tau 0 -> 1."""
    b, t = tau.shape
    scale = _lerp(_SCALE, u[:, 0])
    low, high = _free_range(canvas, scale)
    distance = _lerp(_MOVE_COVER, u[:, 4]) * (high - low)
    start = low + u[:, 3] * (high - low - distance)
    centre = np.empty((b, t, 2))
    centre[..., axis] = start[:, None] + distance[:, None] * tau
    centre[..., 1 - axis] = (low + u[:, 2] * (high - low))[:, None]
    tilt = _lerp((-_TILT, _TILT), u[:, 1])
    return centre, np.repeat(scale[:, None], t, 1), np.repeat(tilt[:, None], t, 1)


def _grow(u, tau, canvas):
    small, large = _lerp(_GROW_FROM, u[:, 4]), _lerp(_GROW_TO, u[:, 5])
    scale = small[:, None] * (large / small)[:, None] ** tau
    tilt = _lerp((-_TILT, _TILT), u[:, 1])
    return (_still_centre(u, canvas, large, tau.shape[1]), scale,
            np.repeat(tilt[:, None], tau.shape[1], 1))


def _rotate(u, tau, canvas):
    """A turn at a constant speed through the upright (tilt) pose, halfway through."""
    scale = _lerp(_SCALE, u[:, 0])
    tilt = _lerp((-_TILT, _TILT), u[:, 1])
    angle = tilt[:, None] + _lerp(_TURN, u[:, 4])[:, None] * (tau - 0.5)
    return (_still_centre(u, canvas, scale, tau.shape[1]),
            np.repeat(scale[:, None], tau.shape[1], 1), angle)


def _spin(u, t, canvas, spin_frames, direction):
    """A full turn in `spin_frames` frames (direction +1: clockwise), then rest at the tilt."""
    num_frames = t.shape[1]
    scale = _lerp(_SCALE, u[:, 0])
    tilt = _lerp((-_TILT, _TILT), u[:, 1])[:, None]
    turn = np.where(t < spin_frames, direction * 360.0 * t / spin_frames, 0.0)
    angle = np.broadcast_to(tilt + turn, (len(u), num_frames)).copy()
    return (_still_centre(u, canvas, scale, num_frames),
            np.repeat(scale[:, None], num_frames, 1), angle)


# -- rendering ----------------------------------------------------------------------


def padded_pool(digits: np.ndarray) -> np.ndarray:
    """uint8 (M, h, w) -> float32 (M, h + 4, w + 4) in [0, 1]: `warp_digits`'s pool."""
    # Division, not multiplication by 1/255: 255 must map to exactly 1.0.
    return np.pad(digits.astype(np.float32) / np.float32(255), ((0, 0), (2, 2), (2, 2)))


def warp_digits(pool: np.ndarray, which: np.ndarray, pivot: np.ndarray, centre: np.ndarray,
                scale: np.ndarray, angle: np.ndarray, corner: np.ndarray,
                size: int) -> np.ndarray:
    """Draws F square windows of frames: pool[which[f]] scaled and rotated about `pivot`,
    placed with the pivot at `centre`.

    Frame pixel p maps back to q = pivot + R(-angle) (p - centre) / scale in the
    padded image, sampled bilinearly (coordinates clipped to the zero border).

    Args:
      pool: float32 (M, h, w) images with a zero border of 2 pixels.
      which: int (F,) the image of each frame.
      pivot: (F, 2) (y, x) in pool pixels; centre: (F, 2) (y, x) in frame pixels.
      scale: (F,) > 0; angle: (F,) degrees, clockwise on screen.
      corner: int (F, 2) the frame pixel (y, x) of each window's top-left pixel.
      size: the windows' side in pixels.

    Returns:
      float32 (F, size, size): window f's pixel (i, j) is frame pixel corner[f] + (i, j).
    """
    f32 = np.float32
    h, w = pool.shape[1:]
    radians = np.deg2rad(angle)
    cos, sin = (np.cos(radians) / scale).astype(f32), (np.sin(radians) / scale).astype(f32)
    grid = np.arange(size, dtype=f32)
    dy = grid[None, :] + (corner[:, :1] - centre[:, :1]).astype(f32)  # (F, size)
    dx = grid[None, :] + (corner[:, 1:] - centre[:, 1:]).astype(f32)
    pivot = pivot.astype(f32)
    # Screen-clockwise rotation by a: x' = cos a x - sin a y, y' = sin a x + cos a y; undone
    # here. Everything stays float32 and full-size (F, size, size) arrays are reused in place:
    # this function is most of the generator's time.
    qy = (pivot[:, :1] + cos[:, None] * dy)[:, :, None] - (sin[:, None] * dx)[:, None, :]
    qx = (pivot[:, 1:] + cos[:, None] * dx)[:, None, :] + (sin[:, None] * dy)[:, :, None]
    np.clip(qy, 0.0, h - 1.001, out=qy)
    np.clip(qx, 0.0, w - 1.001, out=qx)
    y0, x0 = np.floor(qy), np.floor(qx)
    qy -= y0  # now the fractional parts
    qx -= x0
    y0 *= w
    y0 += x0
    y0 += (which * (h * w)).astype(f32)[:, None, None]  # exact: indices < 2**24
    top_left = y0.astype(np.intp)
    flat = pool.reshape(-1)
    a, b = flat.take(top_left), flat.take(top_left + 1)
    top_left += w
    c, d = flat.take(top_left), flat.take(top_left + 1)
    b -= a
    b *= qx
    a += b      # top row
    d -= c
    d *= qx
    c += d      # bottom row
    c -= a
    c *= qy
    a += c
    return a
