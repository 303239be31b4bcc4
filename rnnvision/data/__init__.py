"""Input pipelines: IDX files, synthetic digits, MNIST sources, samplers, Moving MNIST,
video actions (digits doing actions, for video classification) and UCF101.

Pure numpy; TensorFlow Datasets is imported only inside the functions that read TFDS.
"""

from rnnvision.data.idx import load_idx_pair, read_idx, write_idx
from rnnvision.data.mnist import (
    MNIST_DIR_ENV,
    MNIST_SUBSET_EVAL_SLICE,
    MNIST_SUBSET_IMAGES,
    MNIST_SUBSET_LABELS,
    MNIST_SUBSET_NAME,
    MNIST_SUBSET_TRAIN_SLICE,
    default_mnist_dir,
    load_mnist,
)
from rnnvision.data.moving_mnist import MovingMnist, load_moving_mnist_tfds
from rnnvision.data.sampler import EpochSampler
from rnnvision.data.synthetic_digits import make_digit, make_digits
from rnnvision.data.ucf101 import load_ucf101, ucf101_dataset
from rnnvision.data.video_actions import VideoActions, VideoBatch

__all__ = [
    "EpochSampler",
    "MNIST_DIR_ENV",
    "MNIST_SUBSET_EVAL_SLICE",
    "MNIST_SUBSET_IMAGES",
    "MNIST_SUBSET_LABELS",
    "MNIST_SUBSET_NAME",
    "MNIST_SUBSET_TRAIN_SLICE",
    "MovingMnist",
    "VideoActions",
    "VideoBatch",
    "default_mnist_dir",
    "load_idx_pair",
    "load_mnist",
    "load_moving_mnist_tfds",
    "load_ucf101",
    "make_digit",
    "make_digits",
    "read_idx",
    "ucf101_dataset",
    "write_idx",
]
