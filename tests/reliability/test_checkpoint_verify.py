"""Verified checkpoints: a damaged newest checkpoint (bit flip, truncation, overwrite, a
swapped-in other checkpoint, a damaged checksum record) is reported in one line, moved
aside and the run resumes from the previous one, ending bit-identical to an
uninterrupted run; with none that verifies the run stops (exit 2) until told to start
over; rotation never deletes the last verified checkpoint; a config whose parameters
do not fit the checkpoint is refused before anything is written."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "train")]
import toy_config  # noqa: E402
from cli_runs import (assert_same_as_reference, checkpoints, error_lines, finish,  # noqa: E402
                      rows, stable, start)

from rnnvision.train import checkpoint, loop  # noqa: E402


def _config():
    return toy_config.get_config()  # 16 steps, checkpoints 4 8 12 16, the last 3 kept


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An uninterrupted in-process run: (workdir, final parameters, results, rows)."""
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    state, results = loop.train_and_evaluate(_config(), workdir)
    assert checkpoints(workdir) == ["8", "12", "16"]
    return workdir, jax.tree.leaves(jax.device_get(state.params)), results, rows(workdir)


def _largest_file(workdir: str, step: int) -> str:
    files = [f for f in glob.glob(os.path.join(workdir, "checkpoints", str(step), "**"),
                                  recursive=True) if os.path.isfile(f)]
    return max(files, key=os.path.getsize)


def _flip_bits(workdir, step):
    path = _largest_file(workdir, step)
    data = bytearray(open(path, "rb").read())
    for i in range(8):
        data[len(data) // 2 + i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _truncate(workdir, step):
    path = _largest_file(workdir, step)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _overwrite(workdir, step):
    path = _largest_file(workdir, step)
    open(path, "wb").write(bytes(os.path.getsize(path)))


def _swap_in_the_previous(workdir, step):
    """A complete, readable checkpoint, but not the one saved at `step`."""
    target = os.path.join(workdir, "checkpoints", str(step), "default")
    shutil.rmtree(target)
    shutil.copytree(os.path.join(workdir, "checkpoints", str(step - 4), "default"), target)


def _swap_after_a_kill_before_the_file_checksums(workdir, step):
    """As `_swap_in_the_previous`, in a checkpoint whose record has only the arrays'
    checksums (the run was killed after the commit, before the files' were added): only
    the arrays read back can tell."""
    path = os.path.join(workdir, checkpoint.CHECKSUM_DIR, f"{step}.json")
    record = json.load(open(path))
    del record["files"]
    json.dump(checkpoint._sealed(record), open(path, "w"))
    _swap_in_the_previous(workdir, step)


def _damage_record(workdir, step):
    path = os.path.join(workdir, checkpoint.CHECKSUM_DIR, f"{step}.json")
    record = json.load(open(path))
    record["leaves"]["params/w"]["sha256"] = "0" * 64
    json.dump(record, open(path, "w"))


def _warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and text in r.getMessage()]


@pytest.mark.parametrize("damage,reason", [
    (_flip_bits, "differs from what was saved (sha256 mismatch)"),
    (_truncate, "differs from what was saved (sha256 mismatch)"),
    (_overwrite, "differs from what was saved (sha256 mismatch)"),
    (_swap_in_the_previous, "differs from what was saved (sha256 mismatch)"),
    (_swap_after_a_kill_before_the_file_checksums, "checksum mismatch in params/cell/b"),
    (_damage_record, "is damaged"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, trained, caplog,
                                                                   damage, reason):
    source, params, results, ref_rows = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(source, workdir)
    damage(workdir, 16)
    with caplog.at_level(logging.WARNING):
        state, again = loop.train_and_evaluate(_config(), workdir)
    (report,) = _warnings(caplog, "failed verification")  # one line, naming the step
    assert "the checkpoint of step 16 " in report and "\n" not in report
    assert reason in report, report
    assert _warnings(caplog, "resuming from the checkpoint at step 12")
    for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), params, strict=True):
        np.testing.assert_array_equal(a, b)  # as if never damaged
    assert again["mse"] == results["mse"]
    assert [stable(r) for r in rows(workdir)] == [stable(r) for r in ref_rows]
    (moved,) = glob.glob(os.path.join(workdir, checkpoint.REJECTED_DIR, "16-*"))
    assert moved in report  # kept, not deleted
    assert os.path.isdir(os.path.join(moved, "checkpoint"))
    assert "step 16" in open(os.path.join(moved, "reason.txt")).read()
    assert checkpoints(workdir) == ["8", "12", "16"]  # 16 saved again, verified


# -- rotation -------------------------------------------------------------------------------

def _state(value: float) -> dict:
    return {"p": np.full((3,), value, np.float32), "step": np.zeros((), np.int32)}


def test_rotation_keeps_the_newest_and_their_records(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
    for step in (4, 8, 12):
        ckpt.save(step, _state(step))
    ckpt.close()
    assert checkpoints(str(tmp_path)) == ["8", "12"]
    assert sorted(os.listdir(tmp_path / checkpoint.CHECKSUM_DIR)) == ["12.json", "8.json"]


def test_rotation_never_deletes_the_last_verified_checkpoint(tmp_path, monkeypatch):
    """keep=1: checkpoint 4 may go only once 8 has been read back and verified; 8 reads
    back wrong here, so 4 stays and 8 is moved aside."""
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1)
    ckpt.save(4, _state(4.0))
    original = ocp.CheckpointManager.restore

    def restore_wrong(self, step, *args, **kwargs):
        state = original(self, step, *args, **kwargs)
        return {**state, "p": state["p"] + 1} if step == 8 else state

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore_wrong)
    with pytest.raises(checkpoint.CheckpointSaveError,
                       match=r"step 8 .* does not read back as saved \(checksum mismatch in p .*"
                             r"the checkpoint of step 4 is intact"):
        ckpt.save(8, _state(8.0))
    monkeypatch.undo()
    ckpt.close()
    assert checkpoints(str(tmp_path)) == ["4"]
    assert glob.glob(str(tmp_path / checkpoint.REJECTED_DIR / "8-*" / "checkpoint"))
    again = checkpoint.Checkpointer(str(tmp_path), keep=1)
    step, state = again.restore_latest(_state(0.0))
    assert step == 4 and (state["p"] == 4.0).all()
    again.close()


# -- checkpoints without a checksum record --------------------------------------------------

def test_a_workdir_from_before_checksums_resumes_unverified_with_a_warning(tmp_path, trained,
                                                                           caplog):
    source, params, _, _ = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(source, workdir)
    shutil.rmtree(os.path.join(workdir, checkpoint.CHECKSUM_DIR))
    with caplog.at_level(logging.WARNING):
        state, _ = loop.train_and_evaluate(_config(), workdir)  # at the end: evaluates only
    assert _warnings(caplog, "step 16") and _warnings(caplog, "restored unverified")
    for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_newest_checkpoint_without_its_record_is_not_trusted(tmp_path, trained, caplog):
    source, params, _, _ = trained
    workdir = str(tmp_path / "run")
    shutil.copytree(source, workdir)
    os.remove(os.path.join(workdir, checkpoint.CHECKSUM_DIR, "16.json"))
    with caplog.at_level(logging.WARNING):
        state, _ = loop.train_and_evaluate(_config(), workdir)
    (report,) = _warnings(caplog, "failed verification")
    assert "step 16" in report and "no checksum record" in report
    for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), params, strict=True):
        np.testing.assert_array_equal(a, b)


# -- through the command line -----------------------------------------------------------------

def _copy(reference, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[2], workdir)
    return workdir


def test_cli_reports_the_fallback_in_one_line_and_ends_as_uninterrupted(tmp_path, jax_cache,
                                                                         reference):
    workdir = _copy(reference, tmp_path)
    _flip_bits(workdir, 16)
    code, err = finish(start(workdir, jax_cache))
    assert code == 0, err[-3000:]
    (line,) = [x for x in err.splitlines() if "failed verification" in x]
    assert "the checkpoint of step 16" in line and "differs from what was saved" in line
    assert "moved to" in line and "(kept, not deleted)" in line
    assert_same_as_reference(workdir, reference)


def test_cli_with_no_verified_checkpoint_stops_until_told_to_start_over(tmp_path, jax_cache,
                                                                       reference):
    workdir = _copy(reference, tmp_path)
    for step in (8, 12, 16):
        _overwrite(workdir, step)
    for _ in range(2):  # every re-run refuses: nothing was moved
        code, err = finish(start(workdir, jax_cache))
        assert code == 2, err[-3000:]
        (line,) = error_lines(err)
        assert "no checkpoint in" in line and "verifies (steps 16, 12, 8" in line
        assert "restart_if_corrupt=True" in line and "Traceback" not in err
        reports = [x for x in err.splitlines() if "failed verification" in x]
        assert len(reports) == 3 and len(err.strip().splitlines()) == 4  # nothing else
        assert checkpoints(workdir) == ["8", "12", "16"]
    code, err = finish(start(workdir, jax_cache, "--config.train.restart_if_corrupt=True"))
    assert code == 0, err[-3000:]
    assert len(glob.glob(os.path.join(workdir, checkpoint.REJECTED_DIR, "*", "checkpoint"))) == 3
    assert_same_as_reference(workdir, reference)  # started over: the same run again


def test_cli_force_resume_with_other_parameter_shapes_is_refused_before_writing(
        tmp_path, jax_cache, reference):
    workdir = _copy(reference, tmp_path)
    before = {name: open(os.path.join(workdir, name), "rb").read()
              for name in ("config.json", "metrics.jsonl", "results.json")}
    code, err = finish(start(workdir, jax_cache, "--config.model.hidden_size=16",
                             "--config.train.force_resume=True"))
    assert code == 2, err[-3000:]
    assert err.strip().splitlines() == error_lines(err)  # one line, nothing else
    (line,) = error_lines(err)
    assert "the config's parameters differ from the checkpoint of step 16" in line
    assert "params/cell/w_h: checkpoint (8, 32) float32, config (16, 64) float32" in line
    for name, content in before.items():  # nothing written
        assert open(os.path.join(workdir, name), "rb").read() == content
    assert checkpoints(workdir) == ["8", "12", "16"]
    assert not os.path.exists(os.path.join(workdir, checkpoint.REJECTED_DIR))


def test_structure_differences_name_parameters_first():
    stored = {"params/w": ((8,), "float32"), "opt_state/0/mu/w": ((8,), "float32"),
              "params/b": ((2,), "float32")}
    wanted = {"params/w": ((16,), "float32"), "opt_state/0/mu/w": ((16,), "float32"),
              "params/b": ((2,), "bfloat16"), "params/new": ((1,), "float32")}
    assert checkpoint.structure_differences(stored, wanted) == [
        "params/b: checkpoint (2,) float32, config (2,) bfloat16",
        "params/new: checkpoint absent, config (1,) float32",
        "params/w: checkpoint (8,) float32, config (16,) float32",
        "opt_state/0/mu/w: checkpoint (8,) float32, config (16,) float32",
    ]
