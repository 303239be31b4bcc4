"""Compiled memory: remat and streaming windows need less than full BPTT at long T."""

from __future__ import annotations

from rnnvision.ablation import memory


def test_remat_and_stream_use_less_memory_than_full_bptt_at_long_T():
    kw = dict(hidden=32, batch=4, features=8, truncation=16)
    peak = {(mode, length): memory.step_memory("lstm", mode, length, **kw)["peak_bytes"]
            for mode, length in [("full", 64), ("full", 512), ("stream", 512), ("remat", 512)]}
    assert all(v > 0 for v in peak.values())
    assert peak["remat", 512] < 0.5 * peak["full", 512]
    assert peak["stream", 512] < 0.2 * peak["full", 512]
    assert peak["full", 512] > 4 * peak["full", 64]            # grows with T


def test_the_readme_memory_figures_hold_within_15_percent():
    """README "Truncated BPTT and gradient clipping" / docs/results_ablation.md: an LSTM(128)
    training step, batch 32, 64 features, T = 1024: full BPTT 225 MiB, truncation inside one
    graph 225, a streaming TBPTT(32, 32) window 7.9, remat 73.8 (XLA's compiled accounting,
    which depends on the XLA version: the tolerance is 15%)."""
    stated = {"full": 225.0, "truncated": 225.0, "stream": 7.9, "remat": 73.8}
    kw = dict(hidden=128, batch=32, features=64, truncation=32)
    for mode, mib in stated.items():
        measured = memory.step_memory("lstm", mode, 1024, **kw)["peak_bytes"] / 2 ** 20
        assert abs(measured - mib) <= 0.15 * mib, (mode, measured, mib)
