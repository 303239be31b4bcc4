"""Captioning figures: images with their generated captions, per-word attention maps."""

from __future__ import annotations

import textwrap
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def _show(ax, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def caption_grid(images: np.ndarray, captions: Sequence[str], path: str,
                 correct: Sequence[bool] | None = None, references: Sequence[str] | None = None,
                 cols: int = 4) -> str:
    """images (N, H, W[, C]) uint8, each with its caption below (red where not `correct`)
    and, if given, a reference in grey."""
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image, caption) in enumerate(zip(axes.flat, images, captions)):
        _show(ax, image)
        ax.axis("on")
        ok = True if correct is None else bool(correct[i])
        text = textwrap.fill(caption or "(empty)", 28)
        if references is not None:
            text += "\n" + textwrap.fill(f"ref: {references[i]}", 30)
        ax.set_xlabel(text, fontsize=7, color="black" if ok else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def upsample(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) attention -> (height, width) by repeating each cell over its pixels.

    Each pixel gets its cell's weight divided by the cell's area, so the map still sums
    to 1 and the mass inside a pixel box is read off directly (what the localisation
    metric measures). Pixel y belongs to cell row y * h // height (likewise for x).
    """
    h, w = alpha.shape
    rows, cols = np.arange(height) * h // height, np.arange(width) * w // width
    area = np.outer(np.bincount(rows, minlength=h), np.bincount(cols, minlength=w))
    return (alpha / np.maximum(area, 1))[rows][:, cols]


def attention_maps(images: np.ndarray, words: Sequence[Sequence[str]], alphas: np.ndarray,
                   path: str, boxes: np.ndarray | None = None, max_words: int = 16) -> str:
    """One row per image: the image, then one panel per generated word with its attention.

    Args:
      images: (N, H, W[, C]) uint8.
      words: the generated words of each image (the attention of step t is words[n][t],
        then "<eos>").
      alphas: (N, T, h, w) attention weights per step.
      boxes: optional (N, K, 4) pixel boxes (x0, y0, x1, y1), -1 for none, drawn on
        the first panel.
    """
    n = len(images)
    cols = 1 + min(max_words, max(len(w) + 1 for w in words))
    fig, axes = plt.subplots(n, cols, figsize=(cols * 1.3, n * 1.45), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row in range(n):
        image = np.asarray(images[row])
        height, width = image.shape[:2]
        _show(axes[row, 0], image)
        axes[row, 0].axis("on")
        if boxes is not None:
            for x0, y0, x1, y1 in boxes[row]:
                if x0 >= 0:
                    axes[row, 0].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0,
                                                     fill=False, color="lime", lw=0.8))
        for t, word in enumerate((list(words[row]) + ["<eos>"])[:cols - 1]):
            ax = axes[row, t + 1]
            _show(ax, image)
            ax.axis("on")
            heat = upsample(alphas[row, t], height, width)
            ax.imshow(heat, cmap="inferno", alpha=0.6, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                      vmin=0, vmax=max(heat.max(), 1e-12))
            ax.set_title(word, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
