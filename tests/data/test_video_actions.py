"""Video actions: each class does what its name says, measured on the rendered pixels.

Positions come from the ink's centre of mass, sizes from its mass and spread, and
orientations from its second moments, all computed here from the frames alone and
compared with the generator's own per-frame parameters.
"""

import numpy as np
import pytest

from rnnvision.data import idx
from rnnvision.data.synthetic_digits import make_digits
from rnnvision.data.video_actions import (CLASS_NAMES, MEMORY_PAIR, NUM_CLASSES,
                                          REVERSED_PAIRS, VideoActions, ink_centroids,
                                          padded_pool, reverse_valid, warp_digits)

PER_CLASS = 12


@pytest.fixture(scope="module")
def pool():
    return make_digits(60, seed=0)


@pytest.fixture(scope="module")
def generator(pool):
    return VideoActions(*pool, canvas=48, min_frames=8, max_frames=20, seed=0)


@pytest.fixture(scope="module")
def videos(generator):
    return generator.batch(np.arange(NUM_CLASSES * PER_CLASS))


def _moments(frames):
    """Ink mass (...,), centroid (..., 2) (y, x) and covariance (..., 2, 2) in (x, y) order."""
    f = frames[..., 0].astype(np.float64)
    grid = np.arange(f.shape[-1], dtype=np.float64)
    mass = f.sum(axis=(-1, -2))
    safe = np.where(mass > 0, mass, 1.0)
    y = (f.sum(-1) * grid).sum(-1) / safe
    x = (f.sum(-2) * grid).sum(-1) / safe
    dy, dx = grid[:, None] - y[..., None, None], grid[None, :] - x[..., None, None]
    sxx, syy, sxy = ((f * dx * dx).sum((-1, -2)) / safe, (f * dy * dy).sum((-1, -2)) / safe,
                     (f * dx * dy).sum((-1, -2)) / safe)
    cov = np.stack([np.stack([sxx, sxy], -1), np.stack([sxy, syy], -1)], -2)
    return mass, np.stack([y, x], -1), cov


def _orientation(cov):
    """Principal-axis angle in degrees, in (-90, 90], increasing clockwise on screen."""
    return 0.5 * np.degrees(np.arctan2(2 * cov[..., 0, 1], cov[..., 0, 0] - cov[..., 1, 1]))


def _wrap180(degrees):
    """Angles of axes (defined modulo 180) mapped to (-90, 90]."""
    return -((-np.asarray(degrees) + 90.0) % 180.0 - 90.0)


def _of_class(videos, label):
    rows = videos.labels == label
    return {name: getattr(videos, name)[rows] for name in videos._fields}


# ---------------------------------------------------------------- format


def test_shapes_lengths_padding_and_labels(videos):
    n = NUM_CLASSES * PER_CLASS
    assert videos.frames.shape == (n, 20, 48, 48, 1) and videos.frames.dtype == np.float32
    assert videos.centre.shape == (n, 20, 2) and videos.scale.shape == videos.angle.shape == (n, 20)
    assert videos.frames.min() == 0.0 and 0.9 < videos.frames.max() <= 1.0
    np.testing.assert_array_equal(videos.labels, np.arange(n) % NUM_CLASSES)
    assert videos.lengths.min() >= 8 and videos.lengths.max() <= 20
    assert len(np.unique(videos.lengths)) >= 8  # Lengths really vary.
    valid = np.arange(20)[None, :] < videos.lengths[:, None]
    mass = videos.frames.sum(axis=(2, 3, 4))
    assert (mass[~valid] == 0).all() and (mass[valid] > 5).all()
    assert np.isnan(videos.scale[~valid]).all() and np.isnan(videos.centre[~valid]).all()
    assert not np.isnan(videos.angle[valid]).any()


def test_deterministic_per_seed_and_index(pool, generator):
    again = VideoActions(*pool, canvas=48, seed=0).batch([7, 3, 11])
    alone = generator.batch([11])
    np.testing.assert_array_equal(again.frames[2], alone.frames[0])  # Batch mates don't matter.
    np.testing.assert_array_equal(again.angle[2], alone.angle[0])
    other_seed = VideoActions(*pool, canvas=48, seed=1).batch([11])
    assert not np.array_equal(other_seed.frames, alone.frames)
    assert not np.array_equal(generator.batch([12]).frames[0, :8], alone.frames[0, :8])


def test_draws_do_not_depend_on_the_class(generator):
    indices = np.arange(30)
    base = generator.batch(indices)
    for label in range(NUM_CLASSES):
        forced = generator.batch(indices, labels=np.full(30, label))
        np.testing.assert_array_equal(forced.digit_ids, base.digit_ids)
        np.testing.assert_array_equal(forced.lengths, base.lengths)
        assert (forced.labels == label).all()


def test_digit_labels_come_from_the_pool(pool, videos):
    np.testing.assert_array_equal(videos.digit_labels, pool[1][videos.digit_ids])
    unlabelled = VideoActions(pool[0]).batch([0, 1])
    assert (unlabelled.digit_labels == -1).all()


# ---------------------------------------------------------------- every class


def _check_drawn_where_and_how_large(videos, pool_images, tolerance_px=0.35):
    valid = np.arange(videos.frames.shape[1])[None, :] < videos.lengths[:, None]
    mass, centroid, _ = _moments(videos.frames)
    error = np.abs(centroid - videos.centre).max(axis=-1)
    assert error[valid].max() < tolerance_px, error[valid].max()
    # All the ink is drawn, at the stated scale (mass ~ scale**2 of the digit's).
    digit_mass = pool_images[videos.digit_ids].astype(np.float64).sum(axis=(1, 2)) / 255
    ratio = mass / (digit_mass[:, None] * videos.scale ** 2)
    assert 0.92 < ratio[valid].min() and ratio[valid].max() < 1.08, ratio[valid]


def test_ink_centroid_is_the_centre_and_mass_follows_the_scale(pool, videos):
    _check_drawn_where_and_how_large(videos, pool[0])


def test_real_mnist_digits_are_drawn_where_and_as_large_as_stated(real_mnist_files):
    images, labels = idx.load_idx_pair(*real_mnist_files)
    videos = VideoActions(images[:500], labels[:500], canvas=48, seed=3).batch(np.arange(100))
    _check_drawn_where_and_how_large(videos, images[:500])


@pytest.mark.parametrize("name, axis, sign", [("move_right", 1, 1), ("move_left", 1, -1),
                                              ("move_down", 0, 1), ("move_up", 0, -1)])
def test_moves_go_where_their_names_say(videos, name, axis, sign):
    v = _of_class(videos, CLASS_NAMES.index(name))
    _, centroid, _ = _moments(v["frames"])
    for length, ink, centre, scale, angle in zip(v["lengths"], centroid, v["centre"],
                                                 v["scale"], v["angle"]):
        step = np.diff(ink[:length, axis])
        assert (sign * step > 0.3).all(), step  # Every frame moves the named way ...
        assert np.ptp(step) < 0.5                # ... at a constant speed ...
        assert np.ptp(ink[:length, 1 - axis]) < 0.3  # ... and not across.
        assert sign * (ink[length - 1, axis] - ink[0, axis]) >= 9.0
        stated = np.diff(centre[:length, axis])
        np.testing.assert_allclose(stated, stated[0], rtol=1e-9)
        assert abs(stated[0] - step.mean()) < 0.02
        assert np.ptp(scale[:length]) == 0 and np.ptp(angle[:length]) == 0


@pytest.mark.parametrize("name, sign", [("grow", 1), ("shrink", -1)])
def test_grow_and_shrink_change_size_the_named_way(videos, name, sign):
    v = _of_class(videos, CLASS_NAMES.index(name))
    mass, centroid, cov = _moments(v["frames"])
    spread = np.sqrt(np.trace(cov, axis1=-2, axis2=-1))  # Ink extent, proportional to scale.
    for length, m, c, s, scale in zip(v["lengths"], mass, centroid, spread, v["scale"]):
        scale = scale[:length]
        assert (sign * np.diff(s[:length]) > 0).all() and (sign * np.diff(m[:length]) > 0).all()
        ratio = np.exp(np.diff(np.log(scale)))  # A constant ratio per frame.
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
        assert sign * (scale[-1] - scale[0]) > 0 and max(scale) / min(scale) >= 1.5
        np.testing.assert_allclose(s[:length] / scale, (s[:length] / scale).mean(), rtol=0.04)
        assert np.ptp(c[:length], axis=0).max() < 0.4  # The centre stays put.


@pytest.mark.parametrize("name, sign", [("rotate_cw", 1), ("rotate_ccw", -1)])
def test_rotations_turn_the_named_way(pool, videos, name, sign):
    v = _of_class(videos, CLASS_NAMES.index(name))
    _, _, cov = _moments(v["frames"])
    _, _, digit_cov = _moments(pool[0][v["digit_ids"], ..., None] / 255.0)
    for length, c, c0, angle, scale in zip(v["lengths"], cov, digit_cov, v["angle"], v["scale"]):
        turn = np.diff(angle[:length])
        assert (sign * turn > 0).all() and np.ptp(turn) < 1e-9
        assert 90.0 <= sign * (angle[length - 1] - angle[0]) <= 150.0
        assert abs(angle[0] + angle[length - 1]) / 2 <= 15.0  # Through upright, halfway.
        # The second moments turn with the digit: cov_t = s^2 R(a_t) cov_digit R(a_t)^T.
        a = np.radians(angle[:length])
        rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1),
                        np.stack([np.sin(a), np.cos(a)], -1)], -2)
        expected = scale[0] ** 2 * rot @ c0 @ np.swapaxes(rot, -1, -2)
        assert np.abs(c[:length] - expected).max() < 0.08 * np.abs(c0).max() * scale[0] ** 2
        elongation = np.linalg.eigvalsh(c0)
        if elongation[1] > 2 * elongation[0]:  # A clear principal axis: track it directly.
            seen = _wrap180(np.diff(_orientation(c[:length])))
            np.testing.assert_allclose(seen, turn, atol=4.0)


def test_spins_turn_once_then_rest(pool):
    generator = VideoActions(*pool, canvas=48, spin_frames=6, seed=2)
    k = generator.spin_frames
    for label, sign in zip(MEMORY_PAIR, (1, -1)):
        v = generator.batch(np.arange(20), labels=np.full(20, label))
        _, _, cov = _moments(v.frames)
        for length, c, angle in zip(v.lengths, cov, v.angle):
            np.testing.assert_allclose(np.diff(angle[:k]), sign * 360.0 / k)
            assert (angle[k:length] == angle[0]).all()
            elongation = np.linalg.eigvalsh(c[0])
            if elongation[1] > 2 * elongation[0]:
                seen = _wrap180(np.diff(_orientation(c[:k + 1])))
                np.testing.assert_allclose(seen, np.full(k, sign * 60.0), atol=5.0)
            np.testing.assert_array_equal(c[k:length], np.broadcast_to(c[k], c[k:length].shape))


# ---------------------------------------------------------------- pairs


@pytest.mark.parametrize("forward, backward", REVERSED_PAIRS)
def test_reversed_pairs_are_exact_time_reverses(generator, forward, backward):
    indices = np.arange(40)
    a = generator.batch(indices, labels=np.full(40, forward))
    b = generator.batch(indices, labels=np.full(40, backward))
    for name in ("centre", "scale", "angle"):
        np.testing.assert_array_equal(getattr(b, name), reverse_valid(getattr(a, name), a.lengths))
    np.testing.assert_array_equal(b.frames, reverse_valid(a.frames, a.lengths))
    assert not np.array_equal(a.frames, b.frames)


def test_spin_pair_differs_only_in_the_order_of_its_first_frames(generator):
    k, indices = generator.spin_frames, np.arange(40)
    cw = generator.batch(indices, labels=np.full(40, MEMORY_PAIR[0]))
    ccw = generator.batch(indices, labels=np.full(40, MEMORY_PAIR[1]))
    for name in ("frames", "centre", "scale", "angle"):  # Identical after the turn.
        np.testing.assert_array_equal(getattr(cw, name)[:, k:], getattr(ccw, name)[:, k:])
    # During the turn, ccw shows cw's frames 0, k-1, ..., 1: the same frames, other order.
    order = (k - np.arange(k)) % k
    np.testing.assert_allclose(ccw.frames[:, :k], cw.frames[:, order], atol=1e-5)
    assert np.abs(ccw.frames[:, 1] - cw.frames[:, 1]).max(axis=(1, 2, 3)).min() > 0.1


def test_reverse_valid_by_hand():
    x = np.array([[1, 2, 3, 0], [4, 5, 6, 7]])
    np.testing.assert_array_equal(reverse_valid(x, np.array([3, 4])), [[3, 2, 1, 0], [7, 6, 5, 4]])


# ---------------------------------------------------------------- rendering


def test_warp_is_an_exact_shift_for_integer_moves():
    digit = np.random.default_rng(0).uniform(size=(27, 27)).astype(np.float32)
    pool = np.pad(digit, 2)[None]
    pivot = np.array([[15.0, 15.0]])  # Pixel (13, 13) of the digit, in padded pixels.
    out = warp_digits(pool, np.array([0]), pivot, np.array([[20.0, 23.0]]), np.array([1.0]),
                      np.array([0.0]), np.array([[0, 0]]), 48)[0]
    np.testing.assert_array_equal(out[7:34, 10:37], digit)
    assert out.sum() == pytest.approx(digit.sum(), rel=1e-6)  # Nothing else drawn.


def test_warp_quarter_turn_is_clockwise_on_screen():
    digit = np.random.default_rng(1).uniform(size=(27, 27)).astype(np.float32)
    pool = np.pad(digit, 2)[None]
    out = warp_digits(pool, np.array([0]), np.array([[15.0, 15.0]]), np.array([[20.0, 20.0]]),
                      np.array([1.0]), np.array([90.0]), np.array([[0, 0]]), 40)[0]
    np.testing.assert_allclose(out[7:34, 7:34], np.rot90(digit, k=-1), atol=1e-4)
    half = warp_digits(pool, np.array([0]), np.array([[15.0, 15.0]]), np.array([[20.0, 20.0]]),
                       np.array([0.5]), np.array([0.0]), np.array([[0, 0]]), 40)[0]
    np.testing.assert_allclose(half[14:27, 14:27], digit[1:27:2, 1:27:2], atol=1e-6)


def test_windows_draw_the_same_pixels_as_whole_frames(generator, videos):
    valid = np.arange(20)[None, :] < videos.lengths[:, None]
    video, frame = np.nonzero(valid)
    ids = videos.digit_ids[video]
    pool = padded_pool(generator.digits[ids])
    whole = warp_digits(pool, np.arange(len(ids)), ink_centroids(generator.digits[ids]) + 2.0,
                        videos.centre[video, frame], videos.scale[video, frame],
                        videos.angle[video, frame], np.zeros((len(ids), 2), np.intp), 48)
    np.testing.assert_allclose(videos.frames[video, frame, ..., 0], whole, atol=1e-5)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, message", [
    (dict(canvas=32), "canvas=32"),
    (dict(min_frames=9, max_frames=8), "min_frames=9, max_frames=8"),
    (dict(spin_frames=8), "spin_frames=8"),
    (dict(spin_frames=2), "spin_frames=2"),
    (dict(seed=-1), "seed=-1"),
])
def test_bad_settings_are_named(pool, kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoActions(*pool, **kwargs)


def test_bad_pools_indices_and_labels_are_named(pool, generator):
    with pytest.raises(ValueError, match="uint8 array"):
        VideoActions(pool[0].astype(np.float32))
    with pytest.raises(ValueError, match="digit_labels"):
        VideoActions(pool[0], pool[1][:3])
    with pytest.raises(ValueError, match="index=-1"):
        generator.batch([-1])
    with pytest.raises(ValueError, match="labels="):
        generator.batch([0, 1], labels=[0, 10])
