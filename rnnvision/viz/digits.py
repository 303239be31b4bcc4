"""Digit figures: a grid of images with predicted labels, a confusion matrix."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def prediction_grid(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                    path: str, cols: int = 8) -> str:
    """images (N, 28, 28); titles "pred (true)", red where wrong."""
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, pred in zip(axes.flat, images, labels, predictions):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(f"{pred} ({label})", fontsize=8, color="black" if pred == label else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, path: str,
                     num_classes: int = 10) -> str:
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(counts, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        if n:
            ax.text(j, i, n, ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
