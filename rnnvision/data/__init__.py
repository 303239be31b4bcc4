"""Input pipelines: IDX files, synthetic digits, MNIST sources (grey or binarised),
samplers, Moving MNIST, video actions (digits doing actions, for video
classification), UCF101 and CIFAR-10.

Pure numpy; TensorFlow Datasets is imported only inside the functions that read TFDS.
"""

from rnnvision.data.binarized_mnist import BinarizedDigits, binarize, binarize_fixed
from rnnvision.data.cifar10 import load_cifar10
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
    "BinarizedDigits",
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
    "binarize",
    "binarize_fixed",
    "default_mnist_dir",
    "load_cifar10",
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
