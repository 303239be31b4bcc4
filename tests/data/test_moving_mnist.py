"""Moving MNIST: digits stay inside, bounce off walls, and sequences are reproducible."""

import numpy as np
import pytest

from rnnvision.data.moving_mnist import MovingMnist, load_moving_mnist_tfds
from rnnvision.data.synthetic_digits import make_digits


@pytest.fixture(scope="module")
def digits():
    return make_digits(30, seed=0)[0]


def test_shapes_dtype_and_range(digits):
    mm = MovingMnist(digits, num_frames=20, num_digits=2, canvas=64, seed=0)
    video = mm.sequence(0)
    assert video.shape == (20, 64, 64, 1) and video.dtype == np.float32
    assert video.min() == 0.0 and video.max() == 1.0  # Ink 255 maps to exactly 1.
    batch = mm.batch(np.arange(4))
    assert batch.shape == (4, 20, 64, 64, 1) and batch.dtype == np.float32
    assert MovingMnist(digits, num_frames=100, canvas=48).sequence(1).shape == (100, 48, 48, 1)


def test_deterministic_per_seed_and_index(digits):
    a = MovingMnist(digits, seed=4)
    b = MovingMnist(digits, seed=4)
    np.testing.assert_array_equal(a.sequence(11), b.sequence(11))
    batch = a.batch([3, 11, 5])
    np.testing.assert_array_equal(batch[1], b.sequence(11))  # Independent of batch mates.
    assert not np.array_equal(a.sequence(11), a.sequence(12))
    assert not np.array_equal(a.sequence(11), MovingMnist(digits, seed=5).sequence(11))


@pytest.mark.parametrize("seed", range(8))
def test_single_digit_always_fully_inside_for_100_frames(digits, seed):
    # With one digit, each frame is that digit pasted whole: a box cut at an edge would
    # lose ink, and a box placed anywhere else would not match the pixels.
    mm = MovingMnist(digits, num_frames=100, num_digits=1, seed=seed)
    for index in range(4):
        frames = np.rint(mm.sequence(index)[..., 0] * 255).astype(np.uint8)
        corners = np.rint(mm.trajectories(index)[0][:, 0]).astype(int)  # (T, 2)
        ink = [digit for digit in digits if digit.sum() == frames[0].astype(int).sum()]
        assert ink, "frame 0 does not hold one whole digit"
        for frame, (y, x) in zip(frames, corners):
            assert 0 <= y <= 36 and 0 <= x <= 36
            box = frame[y:y + 28, x:x + 28]
            assert any(np.array_equal(box, digit) for digit in ink)
            assert frame.astype(int).sum() == box.astype(int).sum()  # Nothing outside.


@pytest.mark.parametrize("seed", range(20))
def test_positions_within_bounds_for_many_seeds(digits, seed):
    mm = MovingMnist(digits, num_frames=100, num_digits=3, seed=seed)
    for index in range(5):
        position, _ = mm.trajectories(index)
        assert position.shape == (100, 3, 2)
        assert position.min() >= 0.0 and position.max() <= 36.0


def test_digits_bounce_off_the_walls(digits):
    mm = MovingMnist(digits, num_frames=100, num_digits=2, seed=0)
    flips = 0
    for index in range(30):
        position, velocity = mm.trajectories(index)
        speed = np.linalg.norm(velocity, axis=-1)
        assert np.allclose(speed, speed[0]) and 2.0 <= speed.min() <= speed.max() <= 5.0
        step = np.diff(position, axis=0)
        same = velocity[1:] == velocity[:-1]
        # Between bounces a digit moves in a straight line at its velocity ...
        np.testing.assert_allclose(step[same], velocity[:-1][same], atol=1e-9)
        # ... and a velocity component flips sign only at a wall: the digit is within
        # one frame's travel of the wall, on both sides of the flip.
        flipped = velocity[1:] == -velocity[:-1]
        assert np.all(same | flipped)
        reach = np.abs(velocity[:-1])[flipped] + 1e-9
        before, after = position[:-1][flipped], position[1:][flipped]
        near_low = (before <= reach) & (after <= reach)
        near_high = (before >= 36 - reach) & (after >= 36 - reach)
        assert np.all(near_low | near_high)
        flips += flipped.sum()
    assert flips > 100  # 2-5 px/frame over 100 frames in a 36 px range: many bounces.


def test_rendering_follows_the_trajectory_with_pixelwise_max(digits):
    mm = MovingMnist(digits, num_frames=5, num_digits=2, seed=1)
    ids, _, _ = mm._draw_motion(2)
    corners = np.rint(mm.trajectories(2)[0]).astype(int)
    expected = np.zeros((5, 64, 64), np.uint8)
    for t in range(5):
        for slot in range(2):
            y, x = corners[t, slot]
            box = expected[t, y:y + 28, x:x + 28]
            np.maximum(box, digits[ids[slot]], out=box)
    np.testing.assert_array_equal(np.rint(mm.sequence(2)[..., 0] * 255), expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_digits=0), "num_digits=0"),
    (dict(num_digits=4), "num_digits=4"),
    (dict(canvas=28), "canvas=28 must exceed"),
    (dict(num_frames=0), "num_frames=0"),
    (dict(speed_range=(3.0, 1.0)), "speed_range"),
])
def test_rejects_bad_arguments(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MovingMnist(digits, **kwargs)


def test_rejects_bad_digits():
    with pytest.raises(ValueError, match="uint8 array"):
        MovingMnist(np.zeros((3, 28, 28), np.float32))


def test_tfds_loader_on_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    with tfds.testing.mock_data(num_examples=3):
        videos = load_moving_mnist_tfds(split="test")
    assert videos.shape == (3, 20, 64, 64, 1) and videos.dtype == np.float32
    assert 0.0 <= videos.min() and videos.max() <= 1.0
