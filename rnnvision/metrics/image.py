"""Frame-level metrics for video prediction, in jax.numpy.

All functions take videos shaped (B, T, H, W, C) with pixel values in [0, 1]
(any leading dims work for the per-frame functions; H, W, C are the last three)
and are jit-able. Definitions follow the conventions of the video prediction
literature so numbers are comparable with published tables:

* `frame_mse` / `frame_mae`: PredRNN (Wang et al., 2017) and OpenSTL
  (Tan et al., 2023) report the error SUMMED over the pixels of a frame
  (H * W * C values) and averaged over sequences, per predicted step.
* `psnr`: `skimage.metrics.peak_signal_noise_ratio` on one frame.
* `ssim`: `skimage.metrics.structural_similarity` with the settings of
  Wang et al. (2004): gaussian_weights=True, sigma=1.5 (11 taps),
  use_sample_covariance=False, K1=0.01, K2=0.03, channel_axis=-1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Wang et al. (2004) constants, as skimage uses them.
_K1, _K2 = 0.01, 0.03
_SIGMA = 1.5
# skimage sets truncate=3.5 so that sigma=1.5 gives an 11-tap filter.
_TRUNCATE = 3.5


def _as_float(x) -> Array:
    """Casts to a float dtype of at least float32 precision.

    SSIM subtracts nearly equal second moments (E[x^2] - E[x]^2), so bf16 or
    integer inputs are promoted before any arithmetic.
    """
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_same_shape(pred, true) -> None:
    if pred.shape != true.shape:
        raise ValueError(f"pred and true shapes differ: {pred.shape} vs {true.shape}")
    if pred.ndim < 3:
        raise ValueError(f"expected (..., H, W, C) frames, got shape {pred.shape}")


@jax.jit
def frame_mse(pred, true) -> Array:
    """Per-step frame MSE as PredRNN / OpenSTL define it.

    mse[t] = mean_b sum_{h,w,c} (pred[b,t,h,w,c] - true[b,t,h,w,c])^2

    Args:
      pred, true: (B, T, H, W, C).
    Returns:
      (T,) float array: squared error summed over the pixels of a frame and
      averaged over the B sequences.
    """
    pred, true = _as_float(pred), _as_float(true)
    _check_same_shape(pred, true)
    return jnp.sum(jnp.square(pred - true), axis=(-3, -2, -1)).mean(axis=0)


@jax.jit
def frame_mae(pred, true) -> Array:
    """Per-step frame MAE: like `frame_mse` with |pred - true|. (B,T,H,W,C) -> (T,)."""
    pred, true = _as_float(pred), _as_float(true)
    _check_same_shape(pred, true)
    return jnp.sum(jnp.abs(pred - true), axis=(-3, -2, -1)).mean(axis=0)


@jax.jit
def psnr(pred, true, data_range: float = 1.0) -> Array:
    """Peak signal-to-noise ratio of each frame, in dB.

    psnr = 10 log10(data_range^2 / mean_{h,w,c} (pred - true)^2), exactly
    `skimage.metrics.peak_signal_noise_ratio(true, pred, data_range=...)` on one
    frame. An exact reconstruction gives +inf, as in skimage.

    Args:
      pred, true: (..., H, W, C), e.g. (B, T, H, W, C).
      data_range: max - min of the pixel range (1.0 for [0, 1] images).
    Returns:
      (...) float array, e.g. (B, T).
    """
    pred, true = _as_float(pred), _as_float(true)
    _check_same_shape(pred, true)
    mse = jnp.mean(jnp.square(pred - true), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(data_range**2 / mse)


@functools.lru_cache(maxsize=None)
def _gaussian_kernel(sigma: float, truncate: float) -> tuple[float, ...]:
    """The normalized 1-D kernel of `scipy.ndimage.gaussian_filter`.

    radius = int(truncate * sigma + 0.5); w[i] ∝ exp(-i^2 / (2 sigma^2)) for
    i in [-radius, radius], normalized to sum to 1 (computed in float64).
    """
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return tuple(float(v) for v in w / w.sum())


def _filter_matrix(n: int, kernel: tuple[float, ...]) -> np.ndarray:
    """The (n, n) matrix of 1-D correlation with `kernel` and scipy's "reflect" boundary.

    Row i holds the weights of output sample i: tap j in [-r, r] reads input
    i + j, reflected at the borders. scipy.ndimage's "reflect" (d c b a | a b c
    d | d c b a) repeats the edge sample and is periodic with period 2n, so
    index m maps to m mod 2n, mirrored if >= n. Taps landing on the same input
    add up.
    """
    radius = len(kernel) // 2
    rows = np.repeat(np.arange(n), len(kernel))
    src = (rows + np.tile(np.arange(-radius, radius + 1), n)) % (2 * n)
    src = np.where(src >= n, 2 * n - 1 - src, src)
    matrix = np.zeros((n, n), np.float64)
    np.add.at(matrix, (rows, src), np.tile(kernel, n))
    return matrix


def _gaussian_blur(x: Array) -> Array:
    """Separable gaussian (sigma=1.5, 11 taps) over the H, W axes of (..., H, W, C).

    Each 1-D pass is a product with a banded (n, n) matrix that has the
    boundary reflection folded in. That is n instead of 11 multiply-adds per
    pixel, negligible for frames of a few hundred pixels, and one matmul per
    axis compiles in a fraction of a second where 11 unrolled shifted slices
    took seconds in XLA. HIGHEST precision because GPUs run float32 matmuls in
    TF32 by default (~1e-3 relative precision), too coarse to match skimage.
    """
    kernel = _gaussian_kernel(_SIGMA, _TRUNCATE)
    h, w = x.shape[-3:-1]
    mh = jnp.asarray(_filter_matrix(h, kernel), x.dtype)
    mw = jnp.asarray(_filter_matrix(w, kernel), x.dtype)
    hp = jax.lax.Precision.HIGHEST
    x = jnp.einsum("ij,...jwc->...iwc", mh, x, precision=hp)
    return jnp.einsum("ij,...hjc->...hic", mw, x, precision=hp)


@jax.jit
def ssim_map(pred, true, data_range: float = 1.0) -> Array:
    """The local SSIM map of each frame and channel, before averaging.

    S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)) with
    gaussian-weighted local means u, population (co)variances v
    (e.g. vx = G*(x^2) - (G*x)^2), C1 = (0.01 R)^2, C2 = (0.03 R)^2, R =
    data_range, and G the separable gaussian (sigma=1.5, 11 taps) applied with
    scipy's "reflect" boundary: the `full=True` map of
    `skimage.metrics.structural_similarity` (Wang et al., 2004 settings).

    Args:
      pred, true: (..., H, W, C) with H, W >= 11 (skimage's minimum as well).
      data_range: max - min of the pixel range.
    Returns:
      (..., H, W, C) float array.
    """
    pred, true = _as_float(pred), _as_float(true)
    _check_same_shape(pred, true)
    win = len(_gaussian_kernel(_SIGMA, _TRUNCATE))
    if min(pred.shape[-3:-1]) < win:
        raise ValueError(f"SSIM needs H, W >= {win}, got frames of shape {pred.shape[-3:]}")
    # The five moment maps share one blur call: two matmuls in total.
    ux, uy, uxx, uyy, uxy = _gaussian_blur(
        jnp.stack([pred, true, pred * pred, true * true, pred * true]))
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / (
        (ux * ux + uy * uy + c1) * (vx + vy + c2))


@jax.jit
def ssim(pred, true, data_range: float = 1.0) -> Array:
    """Mean SSIM of each frame, as `skimage.metrics.structural_similarity`.

    Same value as `structural_similarity(true, pred, data_range=data_range,
    channel_axis=-1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`: `ssim_map` with a border of width 5 (the
    filter radius) cropped from H and W, averaged over pixels and channels.
    Because the crop equals the filter radius, the averaged value never sees
    the padded samples.

    Args:
      pred, true: (..., H, W, C), e.g. (B, T, H, W, C); H, W >= 11.
      data_range: max - min of the pixel range.
    Returns:
      (...) float array, e.g. (B, T).
    """
    s = ssim_map(pred, true, data_range)
    r = len(_gaussian_kernel(_SIGMA, _TRUNCATE)) // 2
    # skimage averages each channel then the channel means; all channels have
    # the same number of pixels, so this is one mean over (H, W, C).
    return jnp.mean(s[..., r:-r, r:-r, :], axis=(-3, -2, -1))


@jax.jit
def per_step_metrics(pred, true, data_range: float = 1.0) -> dict[str, Array]:
    """Per-step mse, mae, ssim and psnr, each averaged over the batch.

    Args:
      pred, true: (B, T, H, W, C).
      data_range: max - min of the pixel range.
    Returns:
      {"mse", "mae", "ssim", "psnr"} -> (T,) arrays; mse/mae as in `frame_mse`,
      ssim/psnr the per-frame values of `ssim`/`psnr` averaged over B. Each is a
      mean over B, so results of equal-size batches can be averaged.
    """
    return {
        "mse": frame_mse(pred, true),
        "mae": frame_mae(pred, true),
        "ssim": ssim(pred, true, data_range).mean(axis=0),
        "psnr": psnr(pred, true, data_range).mean(axis=0),
    }


def _flatten(per_step: dict[str, Array], prefix: str) -> dict[str, float]:
    """{"mse": (T,)} -> {prefix+"mse": mean, prefix+"mse/step_01": ..., ...}."""
    out = {}
    for name, values in per_step.items():
        values = np.asarray(values, dtype=np.float64)
        # Zero-padded so that lexicographic order is step order (T >= 100 too).
        width = max(2, len(str(len(values))))
        out[prefix + name] = float(values.mean())
        for t, v in enumerate(values, start=1):
            out[f"{prefix}{name}/step_{t:0{width}d}"] = float(v)
    return out


def video_prediction_metrics(pred, true, context_last=None, mean_frame=None,
                             data_range: float = 1.0) -> dict[str, float]:
    """Model metrics and trivial baselines on the same target frames.

    Key naming scheme (a flat dict of python floats, ready for results.json):

      "<metric>"                 the model, averaged over all B*T frames
      "<metric>/step_<t>"        the model at predicted step t (1-based,
                                 zero-padded to 2 digits, more if T >= 100),
                                 averaged over B
      "copy_last/<metric>[/step_<t>]"   baseline repeating `context_last`
      "mean_frame/<metric>[/step_<t>]"  baseline predicting `mean_frame`

    with <metric> in {"mse", "mae", "ssim", "psnr"}: mse/mae are per-frame
    sums over pixels (`frame_mse`, PredRNN/OpenSTL convention), ssim/psnr the
    per-frame `ssim`/`psnr`. Averages over steps equal averages over all
    frames (B is the same at every step). A baseline's keys are present only
    when its input is given. psnr is +inf (json: `Infinity`) when a prediction
    is exact, e.g. copy-last on a static video.

    Args:
      pred, true: (B, T, H, W, C) predicted and ground-truth future frames.
      context_last: optional (B, H, W, C), the last observed (context) frame.
      mean_frame: optional (H, W, C), e.g. the training-set mean frame.
      data_range: max - min of the pixel range.
    Returns:
      dict[str, float] as above.
    """
    pred, true = jnp.asarray(pred), jnp.asarray(true)
    if true.ndim != 5:
        raise ValueError(f"expected (B, T, H, W, C) videos, got shape {true.shape}")
    b, _, h, w, c = true.shape
    out = _flatten(per_step_metrics(pred, true, data_range), "")
    if context_last is not None:
        context_last = jnp.asarray(context_last)
        if context_last.shape != (b, h, w, c):
            raise ValueError(f"context_last shape {context_last.shape} != {(b, h, w, c)}")
        copy = jnp.broadcast_to(context_last[:, None], true.shape)
        out |= _flatten(per_step_metrics(copy, true, data_range), "copy_last/")
    if mean_frame is not None:
        mean_frame = jnp.asarray(mean_frame)
        if mean_frame.shape != (h, w, c):
            raise ValueError(f"mean_frame shape {mean_frame.shape} != {(h, w, c)}")
        mean = jnp.broadcast_to(mean_frame, true.shape)
        out |= _flatten(per_step_metrics(mean, true, data_range), "mean_frame/")
    return out
