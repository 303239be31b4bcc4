"""Every user error of the command lines is one line, `error: ...`, with exit code 2 and no
traceback (unless --verbosity=1): checked on the real output of the real commands (the
experiments, the ablation, the benchmarks), started all at once to save time."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cli_runs import REPO, TOY, env, error_lines  # noqa: E402

from rnnvision.data import idx  # noqa: E402

ROW_MNIST = [sys.executable, "-m", "experiments.row_mnist"]
SMOKE = "--config=configs/row_mnist.py:smoke"
ABLATION = [sys.executable, "-m", "experiments.tbptt_ablation"]
SWEEP = [sys.executable, "-m", "experiments.sweep", SMOKE]


def _idx_files(root: str) -> dict[str, str]:
    """MNIST-like IDX files: good ones, a truncated copy and a file that is not IDX."""
    rng = np.random.default_rng(0)
    paths = {name: os.path.join(root, f"{name}.gz")
             for name in ("images", "labels", "truncated", "not_idx")}
    idx.write_idx(paths["images"], rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    idx.write_idx(paths["labels"], rng.integers(0, 10, (40,), dtype=np.uint8))
    data = open(paths["images"], "rb").read()
    open(paths["truncated"], "wb").write(data[: len(data) // 2])  # a cut-off download
    open(paths["not_idx"], "wb").write(gzip.compress(b"<html>Not Found</html>"))
    return paths


def _idx_flags(images: str, labels: str) -> list[str]:
    return ["--config.data.source=idx", f"--config.data.idx_images={images}",
            f"--config.data.idx_labels={labels}", "--config.data.train_slice=0:30",
            "--config.data.eval_slice=30:40"]


def _make_read_only(path: str) -> bool:
    """Makes `path` unwritable: mode 555, and for root (who ignores modes) the immutable
    attribute. False if that is not possible here."""
    os.chmod(path, 0o555)
    if os.geteuid() != 0:
        return True
    return shutil.which("chattr") is not None and subprocess.run(
        ["chattr", "+i", path], capture_output=True).returncode == 0


def _make_writable(path: str) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", path], capture_output=True)
    os.chmod(path, 0o755)


ONE_LINE_CASES = [
    "unknown variant", "missing config file", "idx path unset", "idx path missing",
    "idx truncated", "not idx", "workdir is a file", "workdir not writable",
    "workdir under a read-only dir", "bad config value", "unknown config field",
    "ablation unknown variant", "ablation bad shard", "benchmark unknown variant",
    "benchmark unknown field", "benchmark unknown flag", "speed benchmark unknown cell",
    "sweep unknown grid field", "sweep workdir is a file", "sweep bad grid value"]


def _cases(tmp: str, ro: str) -> dict[str, tuple[list[str], tuple[str, ...], dict]]:
    """name -> (command, words the error line must hold, Popen extras); `ro`: a directory
    the commands may not write."""
    files = _idx_files(tmp)
    a_file = os.path.join(tmp, "a_file")
    open(a_file, "w").close()
    run = os.path.join(tmp, "run")  # + a number: each command its own workdir (they run at
    # once, and a run holds its workdir's lock)
    return {
        "unknown variant": (
            ROW_MNIST + ["--config=configs/row_mnist.py:smok", f"--workdir={run}1"],
            ("--config=configs/row_mnist.py:smok", "unknown config variant 'smok'", "smoke"), {}),
        "missing config file": (
            ROW_MNIST + ["--config=configs/no_such.py", f"--workdir={run}2"],
            ("--config=configs/no_such.py", "no config file"), {}),
        "idx path unset": (
            ROW_MNIST + [SMOKE, f"--workdir={run}3", "--config.data.source=idx"],
            ("data.idx_images is required for data.source='idx'",), {}),
        "idx path missing": (
            ROW_MNIST + [SMOKE, f"--workdir={run}4"] + _idx_flags("/no/such.gz", files["labels"]),
            ("data.idx_images='/no/such.gz' does not exist",), {}),
        "idx truncated": (
            ROW_MNIST + [SMOKE, f"--workdir={run}5"] + _idx_flags(files["truncated"],
                                                                 files["labels"]),
            (files["truncated"], "corrupted gzip stream", "copy or download it again"), {}),
        "not idx": (
            ROW_MNIST + [SMOKE, f"--workdir={run}6"] + _idx_flags(files["not_idx"],
                                                                 files["labels"]),
            (files["not_idx"], "bad IDX magic number", "not an IDX file"), {}),
        "workdir is a file": (
            TOY + [f"--workdir={a_file}"], (f"--workdir={a_file} is a regular file",), {}),
        "workdir not writable": (
            TOY + [f"--workdir={ro}"], (f"--workdir={ro} is not writable",), {}),
        "workdir under a read-only dir": (
            TOY + [f"--workdir={ro}/run"], (f"--workdir={ro}/run is not writable",), {}),
        "bad config value": (
            TOY + [f"--workdir={run}7", "--config.train.batch_size=0"],
            ("config field train.batch_size=0 is not allowed",), {}),
        "unknown config field": (
            TOY + [f"--workdir={run}8", "--config.train.num_stepz=3"],
            ("config field 'train.num_stepz' does not exist",), {}),
        "ablation unknown variant": (
            ABLATION + ["--config=configs/tbptt_ablation.py:smok", f"--workdir={run}9"],
            ("unknown config variant 'smok'",), {}),
        "ablation bad shard": (
            ABLATION + ["--config=configs/tbptt_ablation.py:smoke", f"--workdir={run}10",
                        "--config.sweep.shard=3/2"], ("sweep.shard",), {}),
        "benchmark unknown variant": (
            [sys.executable, "-m", "benchmarks.moving_mnist_throughput", "--variant=smok"],
            ("--variant='smok'", "unknown config variant 'smok'"), {}),
        "benchmark unknown field": (
            [sys.executable, "-m", "benchmarks.moving_mnist_throughput", "--set", "model.nope=1"],
            ("--set 'model.nope=1'", "existing config field"), {}),
        "benchmark unknown flag": (
            [sys.executable, "-m", "benchmarks.moving_mnist_throughput", "--batchsize=2"],
            ("unrecognized arguments: --batchsize=2",), {}),
        "speed benchmark unknown cell": (
            [sys.executable, "-m", "benchmarks.rnn_speed", "--cells=lstm,lsmt",
             f"--out={os.path.join(tmp, 'bench')}"], ("--cells='lstm,lsmt'", "conv_lstm"), {}),
        "sweep unknown grid field": (
            SWEEP + [f"--workdir={run}11", "--grid=model.nope=1,2"], ("model.nope",), {}),
        "sweep workdir is a file": (
            SWEEP + [f"--workdir={a_file}", "--grid=model.cell=lstm,gru"],
            (f"--workdir={a_file} is a regular file",), {}),
        "sweep bad grid value": (
            SWEEP + [f"--workdir={run}12", "--grid=model.hidden_size=8,eight"],
            ("model.hidden_size", "eight"), {}),
        "verbose": (
            TOY + [f"--workdir={a_file}", "--verbosity=1"], ("is a regular file",), {}),
    }


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """name -> (exit code, stderr, words, Popen extras) of every case, run in parallel."""
    tmp = str(tmp_path_factory.mktemp("user_errors"))
    ro = os.path.join(tmp, "read_only")
    os.mkdir(ro)
    cases = _cases(tmp, ro)
    assert set(ONE_LINE_CASES) == set(cases) - {"verbose"}
    if not _make_read_only(ro):
        cases = {k: v for k, v in cases.items() if ro not in " ".join(v[0])}
    procs = {name: subprocess.Popen(command, cwd=REPO, env=env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, **extra)
             for name, (command, _, extra) in cases.items()}
    out = {}
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        out[name] = (proc.returncode, err, cases[name][1])
    yield out
    _make_writable(ro)


@pytest.mark.parametrize("name", ONE_LINE_CASES)
def test_a_user_error_is_one_line_with_exit_code_2(outputs, name):
    if name not in outputs:
        pytest.skip("no way to make a directory read-only here (root without chattr +i)")
    code, err, words = outputs[name]
    assert code == 2, err[-3000:]
    assert err.strip().splitlines() == error_lines(err), err[-3000:]  # one line, nothing else
    (line,) = error_lines(err)
    for word in words:
        assert word in line, line


def test_verbosity_1_adds_the_traceback(outputs):
    code, err, words = outputs["verbose"]
    assert code == 2
    (line,) = error_lines(err)
    assert words[0] in line
    assert "WorkdirError" in err and 0 <= err.find("Traceback (most recent call last)") < err.find(line)
