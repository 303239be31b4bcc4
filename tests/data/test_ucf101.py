"""UCF101 through TFDS, on TFDS's mock data: clip shapes, the chosen frames, lazy imports."""

import io
import subprocess
import sys

import numpy as np
import pytest

from rnnvision.data.ucf101 import NUM_CLASSES, evenly_spaced, load_ucf101, ucf101_dataset


def test_evenly_spaced_by_hand():
    np.testing.assert_array_equal(evenly_spaced(10, 5), [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(evenly_spaced(3, 6), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(evenly_spaced(16, 16), np.arange(16))
    np.testing.assert_array_equal(evenly_spaced(100, 1), [50])
    for n in range(1, 40):
        for k in range(1, 20):
            chosen = evenly_spaced(n, k)
            assert chosen.min() >= 0 and chosen.max() < n and (np.diff(chosen) >= 0).all()


def test_evenly_spaced_is_the_same_in_tensorflow():
    tf = pytest.importorskip("tensorflow")
    for n, k in [(1, 4), (7, 3), (33, 16), (250, 16), (16, 16)]:
        np.testing.assert_array_equal(evenly_spaced(tf.constant(n), k, tf.range).numpy(),
                                      evenly_spaced(n, k))


@pytest.fixture(scope="module")
def tfds():
    pytest.importorskip("tensorflow")
    return pytest.importorskip("tensorflow_datasets")


def test_clips_on_mock_data(tfds):
    with tfds.testing.mock_data(num_examples=3):
        videos, labels = load_ucf101("train", num_frames=5, image_size=32)
    assert videos.shape == (3, 5, 32, 32, 3) and videos.dtype == np.uint8
    assert labels.shape == (3,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES
    assert len(np.unique(videos)) > 50  # Decoded pixels, not a constant fill.


def test_clip_frames_are_the_evenly_spaced_source_frames(tfds):
    """At the source's own size the resize is the identity: the clip must be the source
    frames at evenly_spaced indices, in order, here decoded independently with Pillow."""
    image = pytest.importorskip("PIL.Image")
    with tfds.testing.mock_data(num_examples=2):
        # Mock data differs with and without decoding, so the source is read undecoded,
        # as the loader reads it.
        sources = list(tfds.as_numpy(tfds.load("ucf101/ucf101_1_256", split="test",
                                               decoders={"video": tfds.decode.SkipDecoding()})))
        clips = list(tfds.as_numpy(ucf101_dataset("test", num_frames=6, image_size=256)))
        small = list(tfds.as_numpy(ucf101_dataset("test", num_frames=6, image_size=16)))
    assert len(clips) == len(sources) == 2
    for source, clip, tiny in zip(sources, clips, small):
        assert clip["label"] == source["label"]
        encoded = source["video"][evenly_spaced(len(source["video"]), 6)]
        expected = np.stack([np.asarray(image.open(io.BytesIO(e)).convert("RGB")) for e in encoded])
        assert clip["video"].shape == expected.shape == (6, 256, 256, 3)
        # JPEG decoders upsample colour differently (a few grey levels on these noise
        # images); a wrong frame differs by ~70 on average.
        error = np.abs(clip["video"].astype(int) - expected).mean(axis=(1, 2, 3))
        assert error.max() < 3.0, error
        # Shrinking 16x keeps each frame's mean colour (antialiased, area-like filter).
        np.testing.assert_allclose(tiny["video"].mean(axis=(1, 2)),
                                   clip["video"].mean(axis=(1, 2)), atol=2.0)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="num_frames=0"):
        ucf101_dataset(num_frames=0)
    with pytest.raises(ValueError, match="image_size=2.5"):
        load_ucf101(image_size=2.5)


def test_importing_the_module_does_not_import_tensorflow():
    code = ("import sys, rnnvision.data.ucf101, rnnvision.data.video_actions; "
            "sys.exit(int(any(m.split('.')[0] in ('tensorflow', 'tensorflow_datasets') "
            "for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
