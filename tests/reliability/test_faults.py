"""Fault injection: non-finite gradients and updates, a full disk, corrupted data, a
changed config. Each fault must stop the run with a message naming the step, field or
file, and must never leave a non-finite or partial checkpoint behind."""

from __future__ import annotations

import errno
import gzip
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.path import atomicity

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "train"))
import toy_task  # noqa: E402

from rnnvision.data import idx  # noqa: E402
from rnnvision.train import checkpoint, loop, writer  # noqa: E402


def _steps(workdir) -> list[int]:
    return sorted(ocp.utils.checkpoint_steps(os.path.join(workdir, "checkpoints")))


def _checkpoint_params(workdir, step) -> list[np.ndarray]:
    """The parameters stored in a checkpoint, read without a target structure."""
    with ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints"))) as m:
        state = m.restore(step, args=ocp.args.StandardRestore())
    return jax.tree.leaves(state["params"])


def _all_finite(leaves) -> bool:
    return all(np.isfinite(x).all() for x in leaves)


# -- non-finite values -----------------------------------------------------------------

def _stop_at_inf_gradient(workdir):
    config = toy_task.get_config(**{"model.inf_grad_at_step": 5})  # batch 5 = step 6
    with pytest.raises(loop.NonFiniteError, match=r"step 6: non-finite gradient") as info:
        loop.run(config, workdir)
    assert "The last checkpoint (step 4) is intact" in str(info.value)
    assert _steps(workdir) == [4] and _all_finite(_checkpoint_params(workdir, 4))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        last = json.loads(f.readlines()[-1])
    assert last["step"] == 6 and np.isfinite(last["loss"]) and last["grad_norm"] == "nan"
    return config


def test_inf_gradient_with_finite_loss_stops_naming_the_step(tmp_path):
    _stop_at_inf_gradient(str(tmp_path / "run"))


@pytest.mark.slow
def test_inf_gradient_run_resumed_with_skip_skips_and_counts(tmp_path):
    workdir = str(tmp_path / "run")
    config = _stop_at_inf_gradient(workdir)
    config.train.nonfinite = "skip"  # a resume-safe field: the same run goes on
    state, results = loop.train_and_evaluate(config, workdir)
    assert results["skipped_updates"] == 1 and int(state.step) == 8
    assert _steps(workdir) == [4, 8] and _all_finite(_checkpoint_params(workdir, 8))
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8]  # the stop row was dropped
    assert [r["skipped"] for r in rows if "loss" in r] == [0, 0, 1, 0]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_overflowing_update_is_never_applied_nor_saved(tmp_path):
    """Finite loss and gradient, but lr=1e39 overflows float32: the update is inf."""
    workdir = str(tmp_path / "run")
    config = toy_task.get_config(**{"optim.optimizer": "sgd", "optim.learning_rate": 1e39,
                                    "optim.clip.method": "none", "train.checkpoint_every": 1})
    with pytest.raises(loop.NonFiniteError, match=r"step 1: non-finite update"):
        loop.run(config, workdir)
    assert _steps(workdir) == []  # before the fix: a checkpoint of step 1 full of NaN


# -- a crash while resuming ---------------------------------------------------------------

def test_a_crash_while_resuming_never_truncates_metrics(tmp_path, monkeypatch):
    """Resuming rewrites metrics.jsonl without the rows past the checkpoint; dying half-way
    through that rewrite must leave the old file, not a truncated one."""
    path = tmp_path / "metrics.jsonl"
    text = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (2, 4, 6))
    path.write_text(text)
    written = []

    def dumps_then_die(obj, *args, **kwargs):
        if written:
            raise KeyboardInterrupt  # stands for SIGKILL after the first row
        written.append(obj)
        return json.dumps(obj, *args, **kwargs)

    monkeypatch.setattr(writer, "json", type("Json", (), {"dumps": staticmethod(dumps_then_die),
                                                          "loads": staticmethod(json.loads)}))
    with pytest.raises(KeyboardInterrupt):
        writer.MetricWriter(str(tmp_path), resume_step=4)
    assert path.read_text() == text
    monkeypatch.undo()
    writer.MetricWriter(str(tmp_path), resume_step=4).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [2, 4]


# -- a full disk -------------------------------------------------------------------------

def _fail_commit_of(monkeypatch, step: int) -> None:
    """orbax's commit of checkpoint `step` fails with ENOSPC, after the arrays are written
    (as a real full disk fails: in orbax's background thread, leaving a partial directory)."""
    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        if self.get_final().name == str(step):
            raise OSError(errno.ENOSPC, "No space left on device")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)


def _fail_save(monkeypatch, step: int) -> None:
    """The error TensorStore gives on a full disk (seen on a 64 KiB tmpfs), raised by save."""
    original = ocp.CheckpointManager.save

    def save(self, s, *args, **kwargs):
        if s == step:
            raise ValueError('RESOURCE_EXHAUSTED: Error writing "p/0": Failed to write 127056 '
                             "bytes to file 11: No space left on device [os_error_code='28']")
        return original(self, s, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)


@pytest.mark.parametrize("inject", [_fail_commit_of, _fail_save])
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, inject):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1)  # keep=1: the old one must not go first
    ckpt.save(4, {"p": np.full((3,), 4.0, np.float32)})
    inject(monkeypatch, 8)
    with pytest.raises(checkpoint.CheckpointSaveError) as info:
        ckpt.save(8, {"p": np.full((3,), 8.0, np.float32)})
    message = str(info.value)
    assert "step 8" in message and "disk is full" in message and "step 4 is intact" in message
    assert info.value.errno == errno.ENOSPC
    ckpt.close()
    assert os.listdir(ckpt.directory) == ["4"]  # the partial directory was removed
    again = checkpoint.Checkpointer(str(tmp_path), keep=1)
    assert again.latest_step() == 4
    np.testing.assert_array_equal(again.restore(4, {"p": np.zeros(3, np.float32)})["p"], 4.0)
    again.close()


def test_disk_full_stops_the_trainer_with_a_clear_error(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    _fail_commit_of(monkeypatch, 8)
    with pytest.raises(checkpoint.CheckpointSaveError,
                       match=r"checkpoint of step 8 .* the disk is full .* step 4 is intact"):
        loop.run(toy_task.get_config(), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4"]


# -- corrupted data ------------------------------------------------------------------------

def _mnist_like(tmp_path, n=40, shape=(28, 28)):
    rng = np.random.default_rng(0)
    images, labels = tmp_path / "images.gz", tmp_path / "labels.gz"
    idx.write_idx(images, rng.integers(0, 256, (n, *shape), dtype=np.uint8))
    idx.write_idx(labels, rng.integers(0, 10, (n,), dtype=np.uint8))
    return images, labels


def _truncate_payload(path):
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))


def _truncate_gzip(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_gzip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _wrong_magic(path):
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[0] = 0x08
    path.write_bytes(gzip.compress(bytes(data)))


def _trailing_bytes(path):
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"\0" * 7))


def _short_header(path):
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")


@pytest.mark.parametrize("corrupt,expected", [
    (_truncate_payload, "truncated"), (_truncate_gzip, "corrupted gzip"),
    (_flip_gzip_byte, "corrupted gzip"), (_wrong_magic, "bad IDX magic"),
    (_trailing_bytes, "trailing bytes"), (_short_header, "truncated IDX header"),
])
def test_corrupted_idx_file_is_an_error_naming_the_file(tmp_path, corrupt, expected):
    images, labels = _mnist_like(tmp_path)
    corrupt(images)
    with pytest.raises(ValueError, match=expected) as info:
        idx.load_idx_pair(images, labels)
    assert str(images) in str(info.value)


@pytest.mark.parametrize("make,expected", [
    (lambda p: idx.write_idx(p, np.zeros((5, 784), np.uint8)), r"images must be uint8 of shape"),
    (lambda p: idx.write_idx(p, np.zeros((5, 28, 28), np.float32)), r"images must be uint8"),
])
def test_images_of_the_wrong_rank_or_type_are_an_error_naming_the_file(tmp_path, make, expected):
    _, labels = _mnist_like(tmp_path, n=5)
    make(tmp_path / "bad.idx")
    with pytest.raises(ValueError, match=expected) as info:
        idx.load_idx_pair(tmp_path / "bad.idx", labels)
    assert str(tmp_path / "bad.idx") in str(info.value)


def _idx_data(images, labels, train_slice="0:30", eval_slice="30:40"):
    from types import SimpleNamespace
    return SimpleNamespace(source="idx", idx_images=str(images), idx_labels=str(labels),
                           train_slice=train_slice, eval_slice=eval_slice)


def test_empty_split_is_an_error(tmp_path):
    from rnnvision.data.mnist import load_mnist
    data = _idx_data(*_mnist_like(tmp_path), train_slice="30:30")
    with pytest.raises(ValueError, match=r"'train' split is empty"):
        load_mnist(data, "train")


def test_images_of_the_wrong_size_are_an_error_naming_the_file(tmp_path):
    from rnnvision.data.mnist import load_mnist
    images, labels = _mnist_like(tmp_path, shape=(32, 32))
    with pytest.raises(ValueError, match=r"28") as info:
        load_mnist(_idx_data(images, labels), "train")
    assert str(images) in str(info.value)


def test_truncated_idx_file_stops_the_trainer_before_compute(tmp_path):
    """Through the real trainer path: row_mnist reading a truncated IDX file."""
    sys.path.insert(0, REPO)
    from configs import row_mnist

    images, labels = _mnist_like(tmp_path)
    _truncate_payload(labels)
    config = row_mnist.get_config("smoke").unlock()
    config.data.update(source="idx", idx_images=str(images), idx_labels=str(labels),
                       train_slice="0:30", eval_slice="30:40")
    with pytest.raises(ValueError, match="truncated") as info:
        loop.run(config, str(tmp_path / "run"))
    assert str(labels) in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- a changed config ----------------------------------------------------------------------

def test_changed_model_field_refused_by_the_cli_listing_the_fields(tmp_path):
    """The workdir's config.json has another model and seed: exit 2 and both fields listed."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    old = toy_task.get_config(**{"train.num_steps": 16, "model.hidden_size": 16, "seed": 3})
    (workdir / "config.json").write_text(json.dumps(old.to_dict()))
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "toy_cli.py"),
         f"--config={os.path.join(HERE, 'toy_config.py')}", f"--workdir={workdir}",
         "--config.train.log_every=4"],  # a resume-safe difference: not listed
        capture_output=True, text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "model.hidden_size: 16 -> 8" in proc.stderr and "seed: 3 -> 0" in proc.stderr
    assert "log_every" not in proc.stderr and "force_resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir / "checkpoints").exists()
    assert json.loads((workdir / "config.json").read_text())["model"]["hidden_size"] == 16


class _Accepted(Exception):
    pass


class _TaskWithSafeField(toy_task.ToySumTask):
    resume_safe_fields = ("model.nan_at_step",)

    def attach_workdir(self, workdir, is_main):  # called right after the config check
        raise _Accepted


@pytest.mark.parametrize("old,accepted", [({"model.nan_at_step": 3}, True),
                                          ({"model.hidden_size": 16}, False)])
def test_a_task_can_declare_more_resume_safe_fields(tmp_path, monkeypatch, old, accepted):
    (tmp_path / "config.json").write_text(json.dumps(toy_task.get_config(**old).to_dict()))
    monkeypatch.setattr(loop.tasks, "build", _TaskWithSafeField)
    expected = _Accepted if accepted else loop.workdir_lib.ConfigMismatchError
    with pytest.raises(expected):
        loop.run(toy_task.get_config(), str(tmp_path))
