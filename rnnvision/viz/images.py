"""Image grids for generative models: samples, and completions next to their originals.

Images are integer levels (..., H, W, C) in 0..K-1 (K = `levels`: 2 for binary
pixels, 256 for 8-bit), C = 1 (drawn in grey) or 3 (RGB); they are shown scaled to
[0, 1] by K - 1.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_unit(images: np.ndarray, levels: int) -> np.ndarray:
    """Levels (..., H, W, C) in 0..K-1 -> float32 (..., H, W) for C = 1 or (..., H, W, 3)
    in [0, 1]."""
    x = np.asarray(images, np.float32) / (levels - 1)
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"images with {x.shape[-1]} channels; allowed: 1 (grey) or 3 (RGB)")
    return np.clip(x[..., 0] if x.shape[-1] == 1 else x, 0.0, 1.0)


def tile(images: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """(N, H, W[, 3]) in [0, 1] -> one mosaic of ceil(N / cols) rows, `gap` pixels of
    mid-grey between tiles (empty cells mid-grey too)."""
    n, h, w = images.shape[:3]
    rows = -(-n // cols)
    canvas = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *images.shape[3:]), 0.5,
                     np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = image
    return canvas


def _save(canvas: np.ndarray, path: str, title: str, scale: float) -> str:
    height, width = canvas.shape[:2]
    fig, ax = plt.subplots(figsize=(max(width * scale, 2.5), height * scale + 0.4))
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sample_grid(images: np.ndarray, levels: int, path: str, cols: int = 8,
                title: str = "samples") -> str:
    """images (N, H, W, C) levels -> a PNG grid of `cols` columns."""
    return _save(tile(to_unit(images, levels), cols), path, title, scale=0.04)


def completion_grid(originals: np.ndarray, completions: np.ndarray, given_rows: int,
                    levels: int, path: str, title: str = "completions") -> str:
    """One row per image: the original, what the model was given (rows >= given_rows
    blanked to mid-grey), then each completion.

    originals (N, H, W, C), completions (N, S, H, W, C), levels 0..K-1.
    """
    originals, completions = to_unit(originals, levels), to_unit(completions, levels)
    given = originals.copy()
    given[:, given_rows:] = 0.5
    n, s = completions.shape[:2]
    panels = np.concatenate([originals[:, None], given[:, None], completions], axis=1)
    canvas = tile(panels.reshape(n * (s + 2), *panels.shape[2:]), cols=s + 2)
    return _save(canvas, path, f"{title}: original | given | {s} samples", scale=0.04)
