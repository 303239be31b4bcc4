"""Frame metrics against scikit-image and numpy references."""

import jax
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rnnvision import metrics

# The Wang et al. (2004) settings our `ssim` promises to reproduce.
SKIMAGE_SSIM = dict(data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                    use_sample_covariance=False)


def _per_frame(fn, a, b):
    """Applies a per-frame numpy reference fn over the (B, T) axes."""
    return np.array([[fn(a[i, t], b[i, t]) for t in range(a.shape[1])]
                     for i in range(a.shape[0])])


def _skimage_ssim(pred, true):
    return _per_frame(lambda p, t: structural_similarity(t, p, **SKIMAGE_SSIM), pred, true)


def _skimage_psnr(pred, true):
    return _per_frame(lambda p, t: peak_signal_noise_ratio(t, p, data_range=1.0), pred, true)


def _random_pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.random(shape)
    pred = np.clip(true + 0.2 * rng.standard_normal(shape), 0.0, 1.0)
    return pred, true


def _structured_pair(shape, seed=0):
    """A smooth random frame vs a blurred + noisy version of it (SSIM well inside (0, 1))."""
    rng = np.random.default_rng(seed)
    true = ndimage.gaussian_filter(rng.random(shape), sigma=(0, 0, 2, 2, 0))
    true = (true - true.min()) / (true.max() - true.min())
    blurred = ndimage.gaussian_filter(true, sigma=(0, 0, 1, 1, 0))
    pred = np.clip(blurred + 0.05 * rng.standard_normal(shape), 0.0, 1.0)
    return pred, true


SHAPES = [(2, 3, 64, 64, 1), (2, 2, 16, 16, 3), (1, 2, 11, 23, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("make_pair", [_random_pair, _structured_pair])
def test_ssim_and_psnr_match_skimage(shape, make_pair):
    pred, true = make_pair(shape)
    got_ssim = np.asarray(metrics.ssim(pred.astype(np.float32), true.astype(np.float32)))
    got_psnr = np.asarray(metrics.psnr(pred.astype(np.float32), true.astype(np.float32)))
    assert got_ssim.shape == got_psnr.shape == shape[:2]
    np.testing.assert_allclose(got_ssim, _skimage_ssim(pred, true), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_psnr, _skimage_psnr(pred, true), atol=1e-4, rtol=0)


def test_ssim_map_matches_skimage_full_map_including_borders():
    # The border of the map is where the "reflect" padding matters; the mean
    # crops it, so only the full map tests the boundary handling. 12 rows: the
    # 5-pixel pad reflects almost the whole image.
    pred, true = _random_pair((1, 1, 12, 30, 3), seed=1)
    _, want = structural_similarity(true[0, 0], pred[0, 0], full=True, **SKIMAGE_SSIM)
    got = metrics.ssim_map(pred[0, 0].astype(np.float32), true[0, 0].astype(np.float32))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_ssim_of_identical_frames_is_one_and_psnr_inf():
    _, true = _random_pair((2, 2, 16, 16, 3))
    np.testing.assert_allclose(np.asarray(metrics.ssim(true, true)), 1.0, atol=1e-6)
    assert np.all(np.isposinf(np.asarray(metrics.psnr(true, true))))


def test_ssim_rejects_frames_smaller_than_the_window():
    with pytest.raises(ValueError, match="H, W >= 11"):
        metrics.ssim(np.zeros((1, 1, 10, 16, 1)), np.zeros((1, 1, 10, 16, 1)))


def test_frame_mse_and_mae_match_numpy_reference():
    pred, true = _random_pair((3, 4, 8, 8, 2))
    want_mse = ((pred - true) ** 2).sum(axis=(2, 3, 4)).mean(axis=0)
    want_mae = np.abs(pred - true).sum(axis=(2, 3, 4)).mean(axis=0)
    np.testing.assert_allclose(metrics.frame_mse(pred, true), want_mse, rtol=1e-5)
    np.testing.assert_allclose(metrics.frame_mae(pred, true), want_mae, rtol=1e-5)


def test_frame_mse_hand_computed():
    # Two sequences, one step, 2x2x1 frames: a SUM over pixels, a MEAN over sequences.
    true = np.zeros((2, 1, 2, 2, 1), np.float32)
    pred = np.array([[0.5, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]],
                    np.float32).reshape(2, 1, 2, 2, 1)
    # Sequence 1: 0.25; sequence 2: 1 + 1 = 2; mean 1.125 (a per-pixel mean would give 0.28125).
    np.testing.assert_allclose(metrics.frame_mse(pred, true), [1.125], rtol=1e-6)
    # |.|: 0.5 and 2.0 -> 1.25.
    np.testing.assert_allclose(metrics.frame_mae(pred, true), [1.25], rtol=1e-6)


def _static_video(b=2, t=3, seed=0):
    """Each sequence is one random frame (values in [0, 0.8]) repeated t times."""
    frames = 0.8 * np.random.default_rng(seed).random((b, 1, 16, 16, 1)).astype(np.float32)
    return np.repeat(frames, t, axis=1)


def test_video_prediction_metrics_keys_and_values_on_static_video():
    true = _static_video()
    pred = true + np.float32(0.1)  # a constant error of 0.1 on every pixel
    mean_frame = np.full((16, 16, 1), 0.5, np.float32)
    out = metrics.video_prediction_metrics(pred, true, context_last=true[:, -1],
                                           mean_frame=mean_frame)

    names = ["mse", "mae", "ssim", "psnr"]
    want_keys = {p + n + s for p in ["", "copy_last/", "mean_frame/"] for n in names
                 for s in ["", "/step_01", "/step_02", "/step_03"]}
    assert set(out) == want_keys
    assert all(type(v) is float for v in out.values())

    # Model: 256 pixels * 0.1^2 and 256 * 0.1; psnr = 10 log10(1 / 0.01) = 20 dB.
    assert out["mse"] == pytest.approx(2.56, rel=1e-5)
    assert out["mse/step_02"] == pytest.approx(2.56, rel=1e-5)
    assert out["mae"] == pytest.approx(25.6, rel=1e-5)
    assert out["psnr"] == pytest.approx(20.0, abs=1e-4)
    assert out["ssim"] == pytest.approx(_skimage_ssim(pred, true).mean(), abs=1e-4)
    # Copying the last context frame is exact on a static video.
    assert out["copy_last/mse"] == 0.0 and out["copy_last/mae"] == 0.0
    assert out["copy_last/ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["copy_last/psnr/step_03"] == float("inf")
    # Mean frame: the squared distance of each frame to 0.5, summed over pixels.
    want = ((true - 0.5) ** 2).sum(axis=(2, 3, 4)).mean()
    assert out["mean_frame/mse"] == pytest.approx(want, rel=1e-5)
    want_ssim = _skimage_ssim(np.broadcast_to(mean_frame, true.shape), true).mean()
    assert out["mean_frame/ssim"] == pytest.approx(want_ssim, abs=1e-4)


def test_video_prediction_metrics_per_step_and_optional_baselines():
    pred, true = _random_pair((2, 3, 16, 16, 1), seed=3)
    out = metrics.video_prediction_metrics(pred, true)
    assert not any(k.startswith(("copy_last/", "mean_frame/")) for k in out)
    want_mse = ((pred - true) ** 2).sum(axis=(2, 3, 4)).mean(axis=0)
    got_mse = [out[f"mse/step_{t:02d}"] for t in (1, 2, 3)]
    np.testing.assert_allclose(got_mse, want_mse, rtol=1e-5)
    assert out["mse"] == pytest.approx(want_mse.mean(), rel=1e-5)
    want_ssim = _skimage_ssim(pred, true).mean(axis=0)
    np.testing.assert_allclose([out[f"ssim/step_{t:02d}"] for t in (1, 2, 3)], want_ssim,
                               atol=1e-4)
    with pytest.raises(ValueError, match="context_last"):
        metrics.video_prediction_metrics(pred, true, context_last=true[:, 0, :8])


def test_step_keys_sort_in_step_order_for_long_horizons():
    true = np.zeros((1, 100, 11, 11, 1), np.float32)
    out = metrics.video_prediction_metrics(true + 0.5, true)
    steps = sorted(k for k in out if k.startswith("mae/step_"))
    assert steps[0] == "mae/step_001" and steps[-1] == "mae/step_100" and len(steps) == 100


def test_bad_shapes_raise_errors_that_name_the_shapes():
    with pytest.raises(ValueError, match=r"^pred and true shapes differ: "
                                         r"\(1, 11, 12, 1\) vs \(1, 11, 11, 1\)"):
        metrics.psnr(np.zeros((1, 11, 12, 1)), np.zeros((1, 11, 11, 1)))
    with pytest.raises(ValueError, match=r"^expected \(\.\.\., H, W, C\) frames, "
                                         r"got shape \(11, 11\)"):
        metrics.ssim(np.zeros((11, 11)), np.zeros((11, 11)))
    with pytest.raises(ValueError, match=r"^expected \(B, T, H, W, C\) videos, "
                                         r"got shape \(2, 11, 11, 1\)$"):
        metrics.video_prediction_metrics(np.zeros((2, 11, 11, 1)), np.zeros((2, 11, 11, 1)))


def test_video_prediction_metrics_uint8_with_data_range_255():
    # 8-bit frames: every metric must promote before subtracting (uint8 arithmetic
    # wraps around) and pass data_range to the model AND both baselines.
    rng = np.random.default_rng(5)
    true = rng.integers(0, 256, (2, 3, 12, 12, 1), dtype=np.uint8)
    pred = np.clip(true.astype(np.int64) + rng.integers(-40, 41, true.shape), 0, 255)
    pred = pred.astype(np.uint8)
    context_last = rng.integers(0, 256, (2, 12, 12, 1), dtype=np.uint8)
    mean_frame = rng.integers(0, 256, (12, 12, 1), dtype=np.uint8)
    out = metrics.video_prediction_metrics(pred, true, context_last=context_last,
                                           mean_frame=mean_frame, data_range=255.0)
    with pytest.raises(ValueError, match=r"^mean_frame shape \(12, 12\) != \(12, 12, 1\)$"):
        metrics.video_prediction_metrics(pred, true, mean_frame=mean_frame[..., 0],
                                         data_range=255.0)

    ssim255 = lambda p, t: structural_similarity(t, p, **dict(SKIMAGE_SSIM, data_range=255.0))
    psnr255 = lambda p, t: peak_signal_noise_ratio(t, p, data_range=255.0)
    baselines = {"": pred, "copy_last/": np.broadcast_to(context_last[:, None], true.shape),
                 "mean_frame/": np.broadcast_to(mean_frame, true.shape)}
    for prefix, guess in baselines.items():
        diff = guess.astype(np.int64) - true.astype(np.int64)
        want = {"mse": (diff**2).sum(axis=(2, 3, 4)).mean(axis=0),
                "mae": np.abs(diff).sum(axis=(2, 3, 4)).mean(axis=0),
                "ssim": _per_frame(ssim255, guess, true).mean(axis=0),
                "psnr": _per_frame(psnr255, guess, true).mean(axis=0)}
        for name, values in want.items():
            got = [out[f"{prefix}{name}/step_{t:02d}"] for t in (1, 2, 3)]
            np.testing.assert_allclose(got, values, rtol=1e-5, atol=1e-4, err_msg=prefix + name)
            # The average over steps is taken in float64 from the reported per-step values.
            assert out[prefix + name] == float(np.mean(np.array(got, np.float64)))


def test_float32_frames_stay_float32_and_float64_run_in_float64_under_x64():
    # With jax_enable_x64 on, a float64 constant or a dtype left to the default
    # would silently turn float32 metrics into float64 ones.
    pred, true = _random_pair((1, 2, 11, 13, 2), seed=4)
    fns = {"ssim": metrics.ssim, "ssim_map": metrics.ssim_map, "psnr": metrics.psnr,
           "frame_mse": metrics.frame_mse, "frame_mae": metrics.frame_mae}
    with jax.enable_x64(True):
        for in_dtype, out_dtype in [(np.float32, np.float32), (np.uint8, np.float32),
                                    (np.float16, np.float32), (np.float64, np.float64)]:
            args = [jax.ShapeDtypeStruct(pred.shape, in_dtype)] * 2
            for name, fn in fns.items():
                assert jax.eval_shape(fn, *args).dtype == out_dtype, (name, in_dtype)
        # float64 frames are computed in float64: skimage to ~1e-12.
        got_ssim = np.asarray(metrics.ssim(pred, true))
        got_psnr = np.asarray(metrics.psnr(pred, true))
    np.testing.assert_allclose(got_ssim, _skimage_ssim(pred, true), atol=1e-12, rtol=0)
    np.testing.assert_allclose(got_psnr, _skimage_psnr(pred, true), atol=1e-10, rtol=0)
