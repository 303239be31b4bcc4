"""Where attention looks: the attention mass inside named objects' boxes (numpy).

Shape legend: N examples, T decoding steps, K objects per example, L = h * w grid
locations of the attention map, (H, W) the image size in pixels.

    cover = box_coverage(boxes, grid=(h, w), image_hw=(H, W))          # (N, K, L)
    result = attention_in_box(alphas, named, classes, boxes, (h, w), (H, W))

`attention_in_box`: for every decoding step whose output names an object of the
example (a word naming a digit of the scene, say), the attention mass of that step
inside that object's box, averaged over all such steps. A step's attention alpha
(L,) sums to 1 over the grid; it is assumed spread evenly over each grid cell's
pixels, so the mass inside a box is sum_cells alpha * (the fraction of the cell in
the box). `attention_in_box_uniform` is what uniform attention (alpha = 1 / L)
would score on the same steps: the mean fraction of the image the named boxes cover.
"""

from __future__ import annotations

import numpy as np


def box_coverage(boxes: np.ndarray, grid: tuple[int, int], image_hw) -> np.ndarray:
    """Fraction of each grid cell inside each box: (N, K, 4) pixel boxes -> (N, K, h * w).

    Grid cell (i, j) covers pixels [i * H / h, (i + 1) * H / h) x [j * W / w, ...); boxes
    (x0, y0, x1, y1) with x1, y1 exclusive; boxes with x0 < 0 (padding) cover nothing.
    """
    (h, w), (height, width) = grid, image_hw

    def overlap(lo, hi, cells, extent):  # (N, K) box edges -> (N, K, cells) fractions
        edges = np.arange(cells + 1) * extent / cells
        a = np.maximum(lo[..., None], edges[:-1])
        b = np.minimum(hi[..., None], edges[1:])
        return np.clip(b - a, 0, None) / (extent / cells)

    x0, y0, x1, y1 = (boxes[..., i].astype(np.float64) for i in range(4))
    cover = overlap(y0, y1, h, height)[..., :, None] * overlap(x0, x1, w, width)[..., None, :]
    cover = cover * (x0 >= 0)[..., None, None]
    return cover.reshape(*boxes.shape[:2], h * w)


def attention_in_box(alphas: np.ndarray, named: np.ndarray, classes: np.ndarray,
                     boxes: np.ndarray, grid: tuple[int, int], image_hw) -> dict[str, float]:
    """The mean attention mass inside the box of the object each step names.

    Args:
      alphas: (N, T, L) attention of each step (rows sum to 1).
      named: (N, T) int, the class the step's output names, or -1 for none.
      classes: (N, K) int, each object's class (-1 for padding objects).
      boxes: (N, K, 4) int pixel boxes (x0, y0, x1, y1), x0 < 0 for padding.
      grid: (h, w) of the attention map; h * w = L.
      image_hw: (H, W) of the image in pixels.
    Returns:
      attention_in_box, attention_in_box_uniform (module docstring) and
      attention_words: the number of (step, named object) pairs averaged over. A
      step naming a class that two objects of its example share counts once per object.
    """
    match = (named[:, :, None] == classes[:, None, :]) & (named[:, :, None] >= 0)  # (N, T, K)
    cover = box_coverage(boxes, grid, image_hw)                                    # (N, K, L)
    mass = np.einsum("ntl,nkl->ntk", alphas, cover)                                # (N, T, K)
    uniform = cover.sum(-1)[:, None, :] / cover.shape[-1]                          # (N, 1, K)
    count = int(match.sum())
    if count == 0:
        return {"attention_in_box": 0.0, "attention_in_box_uniform": 0.0, "attention_words": 0}
    return {"attention_in_box": float((mass * match).sum() / count),
            "attention_in_box_uniform": float((uniform * match).sum() / count),
            "attention_words": count}
