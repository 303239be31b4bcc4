"""UCF101 (Soomro et al., 2012) through TFDS `ucf101`: fixed-length clips of action videos.

Shape legend: N videos, K = num_frames, S = image_size, n a source video's frames.

UCF101 has 13,320 YouTube videos of 101 human actions (25 fps, 320x240, a few seconds
each), in three official train/test splits (TFDS configs `ucf101_1_256` = split 1
with frames resized to 256x256, the default here, `ucf101_1`, `ucf101_2`,
`ucf101_3` at full size). TFDS downloads and prepares it on first use (about 6.5 GB).

Each video becomes K frames spread evenly over its whole length (the middle frame of
each of K equal segments, `evenly_spaced`; a video shorter than K repeats frames),
resized to S x S (bilinear with antialiasing; the 4:3 frames are squashed, not cropped),
as uint8 RGB. Only the K chosen frames are decoded: the video's encoded frames are
read undecoded (`tfds.decode.SkipDecoding`) and the chosen ones decoded one by one,
which is n / K times less decoding than reading whole videos.

    dataset = ucf101_dataset("train", num_frames=16, image_size=64)   # tf.data
    videos, labels = load_ucf101("test[:500]", num_frames=16, image_size=64)

TensorFlow and TFDS are imported inside the functions that read TFDS, never at import.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

NUM_CLASSES = 101
DEFAULT_CONFIG = "ucf101_1_256"


def evenly_spaced(num_available: Any, num_frames: int,
                  arange: Callable[[int], Any] = np.arange) -> Any:
    """Indices of `num_frames` frames spread evenly over `num_available` frames.

    The middle frame of each of `num_frames` equal segments: floor((2i + 1) n / 2K)
    for i = 0..K-1, always in 0..n-1 (repeating frames when n < K). Works on numpy
    integers (the default `arange`) and on TensorFlow tensors (arange=tf.range).

    Example: evenly_spaced(10, 5) -> [1, 3, 5, 7, 9]; evenly_spaced(3, 6) -> [0, 0, 1, 1, 2, 2].
    """
    return (2 * arange(num_frames) + 1) * num_available // (2 * num_frames)


def _check(num_frames: int, image_size: int) -> None:
    for name, value in (("num_frames", num_frames), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"ucf101: {name}={value!r}; must be an integer >= 1.")


def ucf101_dataset(split: str = "train", *, num_frames: int = 16, image_size: int = 64,
                   config: str = DEFAULT_CONFIG, data_dir: str | None = None,
                   shuffle_files: bool = False):
    """A tf.data.Dataset of {"video": uint8 (K, S, S, 3), "label": int32 ()} (module docstring).

    Args:
      split: a TFDS split of `ucf101`, "train" or "test", with slicing, e.g. "test[:10%]".
      num_frames: K >= 1 frames per clip, evenly spaced over the video.
      image_size: S >= 1, the side of the square output frames.
      config: the TFDS builder config, e.g. "ucf101_1_256" (split 1, 256x256 frames).
      data_dir: TFDS data directory; None for TFDS's default.
      shuffle_files: passed to `tfds.load` (True for training).
    """
    _check(num_frames, image_size)
    import tensorflow as tf  # Lazy: TensorFlow is heavy and often absent.
    import tensorflow_datasets as tfds

    dataset = tfds.load(f"ucf101/{config}", split=split, data_dir=data_dir,
                        shuffle_files=shuffle_files,
                        decoders={"video": tfds.decode.SkipDecoding()})

    def decode(encoded):
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)

    def prepare(example):
        encoded = example["video"]  # (n,) encoded frames
        chosen = tf.gather(encoded, evenly_spaced(tf.shape(encoded)[0], num_frames, tf.range))
        frames = tf.map_fn(decode, chosen, fn_output_signature=tf.uint8)  # (K, h, w, 3)
        frames = tf.image.resize(frames, (image_size, image_size), antialias=True)
        frames = tf.cast(tf.clip_by_value(tf.round(frames), 0.0, 255.0), tf.uint8)
        return {"video": frames, "label": tf.cast(example["label"], tf.int32)}

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)


def load_ucf101(split: str = "test", *, num_frames: int = 16, image_size: int = 64,
                config: str = DEFAULT_CONFIG, data_dir: str | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory: videos uint8 (N, K, S, S, 3) and labels int32 (N,) in 0..100.

    See `ucf101_dataset` for the arguments. Mind the size: the 3,783 test videos of
    split 1 at K=16, S=64 take 0.7 GB; slice the split ("test[:500]") to take less.
    """
    import tensorflow_datasets as tfds  # Lazy: see ucf101_dataset.

    dataset = ucf101_dataset(split, num_frames=num_frames, image_size=image_size,
                             config=config, data_dir=data_dir)
    # Batches, not batch_size=-1: see `rnnvision.data.mnist._load_tfds`.
    batches = list(tfds.as_numpy(dataset.batch(64)))
    if not batches:
        raise ValueError(f"load_ucf101: split={split!r} of ucf101/{config} is empty.")
    return (np.concatenate([b["video"] for b in batches]),
            np.concatenate([b["label"] for b in batches]))
