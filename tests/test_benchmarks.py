"""The benchmarks run (tiny sizes) and measure what they say they measure."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import memory, moving_mnist_cells, moving_mnist_throughput, roofline, rnn_speed, steps


def test_train_gflop_counts_forward_and_parameter_gradients():
    t, b, i, h = 100, 64, 128, 256
    forward = 2 * t * b * (i + h) * 4 * h
    backward = 2 * t * b * 4 * h * h + 2 * t * b * (i + h) * 4 * h  # dh, dW_x + dW_h
    assert rnn_speed.train_gflop("lstm", t, b, i, h) == pytest.approx((forward + backward) / 1e9)
    assert rnn_speed.infer_gflop("lstm", t, b, i, h) == pytest.approx(forward / 1e9)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["train", "infer"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_implementation_runs_one_step(cell, mode, dtype):
    x, g = steps.problem(5, 2, 3, 4)
    impls = {"ours": steps.ours(cell, x, g, mode, hidden_size=4, compute_dtype=dtype),
             "ours_generic": steps.ours(cell, x, g, mode, generic=True, hidden_size=4,
                                        compute_dtype=dtype),
             "flax": steps.flax_rnn(cell, x, g, mode, 4, dtype=dtype)}
    try:
        import torch  # noqa: F401 - an optional extra
        impls["torch"] = steps.torch_rnn(cell, x, g, mode, 4, dtype=dtype)
    except ImportError:
        pass
    times = rnn_speed.time_interleaved(impls, repeats=2, warmup=0)
    assert set(times) == set(impls)
    assert all(wall > 0 and np.isfinite(wall) for wall, _ in times.values())


def test_memory_analysis_orders_the_variants():
    rows = {r["variant"]: r for r in memory.measure(shape=(64, 4, 8, 16), window=8)}
    full = rows["full"]["temp_bytes"]
    assert rows["truncation=8"]["temp_bytes"] == pytest.approx(full, rel=0.05)  # in-graph cut saves nothing
    assert rows["remat"]["temp_bytes"] < full
    assert rows["stream k1=k2=8"]["temp_bytes"] < rows["remat"]["temp_bytes"]


def test_moving_mnist_throughput_reports_both_sides_and_the_data_rate():
    out = moving_mnist_throughput.main(["--variant=smoke", "--batch=2", "--repeats=1"])
    sps = out["sequences_per_second"]
    assert {"ours", "flax"} <= set(sps) and all(v > 0 for v in sps.values())
    assert out["ratio_ours_to_flax"] == pytest.approx(sps["ours"] / sps["flax"])
    assert out["generator_sequences_per_second"] > 0


@pytest.mark.slow  # three compilations of a scheduled-sampling rollout: ~1-2 min on 2 cores
def test_moving_mnist_cells_times_every_model_and_counts_its_parameters():
    from configs import moving_mnist as mm_config
    from rnnvision.sweep.runner import parameter_count

    out = moving_mnist_cells.main(["--variant=smoke", "--repeats=1", "--set", "train.batch_size=2"])
    models = ["conv_lstm", "predrnn", "predrnn_pp"]
    assert list(out["step_seconds"]) == models and all(v > 0 for v in out["step_seconds"].values())
    for name in models:  # the --set batch of 2 (smoke's own is 4)
        assert out["sequences_per_second"][name] == pytest.approx(2 / out["step_seconds"][name])
    assert out["ratio_to_first"]["predrnn"] == pytest.approx(
        out["step_seconds"]["predrnn"] / out["step_seconds"]["conv_lstm"])
    for name, variant in [("conv_lstm", "smoke"), ("predrnn", "predrnn,smoke"),
                          ("predrnn_pp", "predrnn_pp,smoke")]:
        assert out["parameters"][name] == parameter_count(mm_config.get_config(variant))


@pytest.mark.parametrize("argv, match", [(["--models=conv_lstm,pixelcnn"], "--models"),
                                         (["--repeats=0"], "--repeats"),
                                         (["--variant=huge"], "--variant"),
                                         (["--set", "train.batch=8"], "train.batch=8"),
                                         (["--set", "train.batch_size=eight"], "not a int")])
def test_moving_mnist_cells_refuses_bad_arguments_before_compiling(argv, match):
    with pytest.raises(moving_mnist_cells.UsageError, match=match):
        moving_mnist_cells.main(argv)


def test_roofline_reports_every_rate(monkeypatch):
    monkeypatch.setattr(roofline, "MATMULS", {"step tiny": (4, 8, 16), "big": (32, 32, 32)})
    rates = roofline.measure(loop_steps=3)
    assert set(rates) == {"matmul step tiny GFLOP/s", "matmul big GFLOP/s",
                          "matmul step tiny, 3-step loop, float32 GFLOP/s",
                          "matmul step tiny, 3-step loop, bfloat16 GFLOP/s",
                          "copy 64 MB (read + write) GB/s"}
    assert all(np.isfinite(r) and r > 0 for r in rates.values())
