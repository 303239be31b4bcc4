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
