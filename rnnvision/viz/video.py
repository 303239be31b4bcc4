"""Video-classification figures: a confusion matrix with class names, the
early-recognition curve, a strip of frames with the true and predicted classes.

Frames are float arrays (..., H, W, C) with pixels in [0, 1], or uint8 (C = 1 or 3).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402


def _image(frame: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 or float in [0, 1] -> (H, W) or (H, W, 3) floats for imshow."""
    frame = np.asarray(frame)
    frame = frame / 255.0 if np.issubdtype(frame.dtype, np.integer) else frame
    frame = np.clip(frame.astype(np.float32), 0.0, 1.0)
    return frame[..., 0] if frame.shape[-1] == 1 else frame


def labelled_confusion_matrix(labels: np.ndarray, predictions: np.ndarray,
                              class_names: Sequence[str], path: str) -> str:
    """Counts of (true, predicted) classes, rows normalised to colours; counts written
    in the cells and class names on the axes when there are at most 20 classes."""
    k = len(class_names)
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    named = k <= 20
    side = 5.5 if named else 8.0
    fig, ax = plt.subplots(figsize=(side + 0.5, side))
    shown = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if named:
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, n, ha="center", va="center", fontsize=6,
                        color="white" if rates[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def early_recognition_curve(curves: Mapping[str, Sequence[float]], path: str,
                            chance: float | None = None) -> str:
    """Accuracy against frames seen (1..T), one line per name; the first name bold.

    curves: name -> (T,) accuracies after 1..T frames (e.g. "all classes" and one per
    class); chance: a dotted horizontal line at this accuracy, if given.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (name, values) in enumerate(curves.items()):
        frames = np.arange(1, len(values) + 1)
        style = dict(lw=2.5, color="black", zorder=3) if i == 0 else dict(lw=1, alpha=0.8)
        ax.plot(frames, values, label=name, **style)
    if chance is not None:
        ax.axhline(chance, ls=":", color="gray", label="chance")
    ax.set_xlabel("frames seen")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def frame_strip(frames: np.ndarray, lengths: np.ndarray, true_names: Sequence[str],
                predicted_names: Sequence[str], path: str,
                early: Sequence[Sequence[str]] | None = None, max_frames: int = 20) -> str:
    """One row per video: its valid frames left to right, titled "true / predicted"
    (red where wrong); with `early`, each frame is captioned with the answer after it.

    Args:
      frames: (B, T, H, W, C); lengths (B,); true_names, predicted_names: B names.
      early: B sequences of T names (the answer had the video stopped at each frame).
      max_frames: frames shown per video at most (evenly spaced over its length).
    """
    b, t = frames.shape[:2]
    cols = min(t, max_frames)
    fig, axes = plt.subplots(b, cols, figsize=(cols * 0.75, b * 1.05), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(b):
        shown = np.unique(np.linspace(0, lengths[i] - 1, min(cols, lengths[i])).round().astype(int))
        for j, f in enumerate(shown):
            axes[i, j].imshow(_image(frames[i, f]), cmap="gray", vmin=0, vmax=1)
            if early is not None:
                right = early[i][f] == true_names[i]
                axes[i, j].set_title(early[i][f][:10], fontsize=4, pad=1,
                                     color="green" if right else "red")
        wrong = predicted_names[i] != true_names[i]
        axes[i, 0].text(0.0, 1.35, f"true: {true_names[i]}  predicted: {predicted_names[i]}  "
                        f"({lengths[i]} frames)", transform=axes[i, 0].transAxes, fontsize=7,
                        color="red" if wrong else "black", ha="left", va="bottom")
    fig.subplots_adjust(wspace=0.05, hspace=0.65, left=0.01, right=0.99, top=0.93, bottom=0.01)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
