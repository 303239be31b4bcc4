"""Video-prediction figures: a frame grid, an animated GIF, the per-step error curve.

Frames are float arrays (..., H, W, C) with pixels in [0, 1] (C = 1 or 3).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import imageio.v2 as imageio
import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402


def _gray(frame: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] -> (H, W) or (H, W, 3) for imshow."""
    frame = np.clip(np.asarray(frame, np.float32), 0.0, 1.0)
    return frame[..., 0] if frame.shape[-1] == 1 else frame


def prediction_grid(context: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                    path: str, max_context: int = 10) -> str:
    """Per sequence two rows: [context | truth] and [context (blank) | prediction].

    Args:
      context: (B, N, H, W, C) observed frames (the last `max_context` are shown).
      truth, prediction: (B, T, H, W, C) the future frames and the model's forecast.
      path: the PNG to write.
    """
    context = np.asarray(context)[:, -max_context:]
    b, n, t = len(truth), context.shape[1], truth.shape[1]
    fig, axes = plt.subplots(2 * b, n + t, figsize=((n + t) * 0.7, 2 * b * 0.75), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(b):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        for j in range(n):
            top[j].imshow(_gray(context[i, j]), cmap="gray", vmin=0, vmax=1)
        for j in range(t):
            top[n + j].imshow(_gray(truth[i, j]), cmap="gray", vmin=0, vmax=1)
            bottom[n + j].imshow(_gray(prediction[i, j]), cmap="gray", vmin=0, vmax=1)
        top[0].set_title(f"seq {i}: context", fontsize=7, loc="left")
        top[n].set_title("truth", fontsize=7, loc="left")
        bottom[n].set_title("prediction", fontsize=7, loc="left")
    fig.subplots_adjust(wspace=0.05, hspace=0.3, left=0.01, right=0.99, top=0.97, bottom=0.01)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def prediction_gif(context: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                   path: str, fps: float = 4.0, scale: int = 2) -> str:
    """An animated GIF: per sequence a column pair (truth | prediction) over time.

    During the context frames both columns show the observed frame; a thin bar
    under the prediction column is white while the model is forecasting.
    Args as `prediction_grid` (B sequences side by side).
    """
    context, truth, prediction = (np.clip(np.asarray(a, np.float32), 0, 1)
                                  for a in (context, truth, prediction))
    left = np.concatenate([context, truth], axis=1)        # (B, N+T, H, W, C)
    right = np.concatenate([context, prediction], axis=1)
    b, steps, h, w, _ = left.shape
    frames = []
    for s in range(steps):
        bar = np.full((3, w), 1.0 if s >= context.shape[1] else 0.0, np.float32)
        tiles = []
        for i in range(b):
            pair = np.concatenate([left[i, s, ..., 0], np.ones((h, 2)), right[i, s, ..., 0]], axis=1)
            under = np.concatenate([np.zeros((3, w + 2)), bar], axis=1)
            tiles += [np.concatenate([pair, under], axis=0), np.ones((h + 3, 4))]
        image = np.concatenate(tiles[:-1], axis=1)
        image = np.kron(image, np.ones((scale, scale)))
        frames.append((image * 255).astype(np.uint8))
    imageio.mimsave(path, frames, duration=1.0 / fps, loop=0)
    return path


def per_step_curve(curves: Mapping[str, Sequence[float]], path: str,
                   ylabel: str = "per-frame MSE (sum over pixels)") -> str:
    """Error per predicted step, one line per name (e.g. model vs copy-last frame)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    ax.set_xlabel("predicted step")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
