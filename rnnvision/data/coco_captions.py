"""COCO Captions through TFDS (`coco_captions`): resized images and their reference captions.

    data = load_coco_captions(data_cfg, "val")      # a CaptionSet
    data.images[i]     uint8 (S, S, 3): shorter side resized to S, centre crop S x S
    data.captions[i]   the raw reference strings of image i (about 5)
    data.ids[i]        the COCO image id

TFDS's `coco_captions` holds the Karpathy splits of COCO 2014: "train" (82,783
images), "restval" (30,504), "val" (5,000) and "test" (5,000); the usual training set
is "train+restval" and results are reported on "test". Any TFDS split expression works,
e.g. "val[:500]".

Config fields (`data_cfg`, any object with these attributes):
  coco_name        TFDS name, "coco_captions" (its default config is the 2014 one).
  tfds_data_dir    TFDS data directory; "" for TFDS's default.
  image_size       S.
  coco_max_images  keep at most this many images of a split (0 = all).
  cache_dir        "" keeps the images in memory (fine for a few thousand);
                   otherwise a folder where each split's resized images are written
                   once as a raw uint8 file and then memory-mapped, so the whole training
                   set (113k x 224 x 224 x 3 = 17 GB) need not fit in memory.

Captions are kept as written; tokenization (`rnnvision.data.vocab.tokenize`) happens in
the task. Tests run this code under `tfds.testing.mock_data`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import numpy as np


@dataclasses.dataclass
class CaptionSet:
    images: np.ndarray            # uint8 (N, S, S, 3), an array or a read-only memmap
    captions: list[list[str]]     # the references of each image
    ids: np.ndarray               # int64 (N,) COCO image ids


def _preprocess(example: dict, size: int) -> dict:
    """Shorter side -> size (bilinear, antialiased), centre crop size x size (as Xu et al.)."""
    import tensorflow as tf

    image = example["image"]
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = float(size) / tf.reduce_min(shape)
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = tf.image.resize(image, new, antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, size, size)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return {"image": image, "text": example["captions"]["text"], "id": example["image/id"]}


def _examples(data_cfg: Any, split: str):
    """Yields (image, [caption, ...], id) of one split, in TFDS order."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    dataset = tfds.load(data_cfg.coco_name, split=split, data_dir=data_cfg.tfds_data_dir or None,
                        shuffle_files=False)
    if data_cfg.coco_max_images:
        dataset = dataset.take(data_cfg.coco_max_images)
    dataset = dataset.map(lambda e: _preprocess(e, data_cfg.image_size),
                          num_parallel_calls=tf.data.AUTOTUNE)
    for example in tfds.as_numpy(dataset):
        captions = [t.decode("utf-8") for t in example["text"]]
        yield example["image"], captions, int(example["id"])


def _cache_paths(data_cfg: Any, split: str) -> tuple[str, str]:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{data_cfg.coco_name}-{split}-{data_cfg.image_size}"
                  f"-{data_cfg.coco_max_images or 'all'}")
    base = os.path.join(data_cfg.cache_dir, name)
    return base + ".uint8", base + ".json"


def load_coco_captions(data_cfg: Any, split: str) -> CaptionSet:
    """One split as a CaptionSet (module docstring); cached under data_cfg.cache_dir if set."""
    if not data_cfg.cache_dir:
        images, captions, ids = [], [], []
        for image, refs, image_id in _examples(data_cfg, split):
            images.append(image)
            captions.append(refs)
            ids.append(image_id)
        if not images:
            raise ValueError(f"{data_cfg.coco_name} split {split!r} is empty")
        return CaptionSet(np.stack(images), captions, np.asarray(ids, np.int64))
    raw_path, meta_path = _cache_paths(data_cfg, split)
    if not os.path.exists(meta_path):  # The meta file is written last: its presence = done.
        os.makedirs(data_cfg.cache_dir, exist_ok=True)
        captions, ids = [], []
        with open(raw_path + ".tmp", "wb") as f:
            for image, refs, image_id in _examples(data_cfg, split):
                f.write(np.ascontiguousarray(image).tobytes())
                captions.append(refs)
                ids.append(image_id)
        if not ids:
            raise ValueError(f"{data_cfg.coco_name} split {split!r} is empty")
        os.replace(raw_path + ".tmp", raw_path)
        with open(meta_path + ".tmp", "w") as f:
            json.dump({"captions": captions, "ids": ids, "size": data_cfg.image_size}, f)
        os.replace(meta_path + ".tmp", meta_path)
    with open(meta_path) as f:
        meta = json.load(f)
    size = meta["size"]
    images = np.memmap(raw_path, np.uint8, mode="r", shape=(len(meta["ids"]), size, size, 3))
    return CaptionSet(images, meta["captions"], np.asarray(meta["ids"], np.int64))
