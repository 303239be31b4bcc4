"""First contact: progress in a log file is plain lines; `make run` installs only what
running needs (and running needs nothing more); the license field is the SPDX form."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tomllib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cli_runs import REPO, env, finish, start  # noqa: E402

from rnnvision.train.progress import Progress  # noqa: E402

TEST_ONLY = ("pytest", "hypothesis", "torch", "tensorflow", "skimage", "pycocoevalcap")


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_file_is_plain_periodic_lines():
    """One second per step, lines every 30 s: after the first step, steps 31, 61, 91, and
    the last; the rate excludes the first step (compiling)."""
    stream, clock = io.StringIO(), _Clock()
    with Progress(100, 0, True, stream=stream, interval=30.0, clock=clock) as bar:
        clock.now = 20.0  # the first step compiles
        bar.update(1, 2.0)
        for step in range(2, 101):
            clock.now += 1.0
            bar.update(step, 1.0 / step)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [int(re.match(r"step (\d+)/100 ", line).group(1)) for line in lines] == [
        1, 31, 61, 91, 100]
    assert lines[1] == "step 31/100 (31.0%)  1.00 steps/s  ETA 0:01:09  loss 0.0323"
    assert lines[-1].startswith("step 100/100 (100.0%)  1.00 steps/s  ETA 0:00:00")


def test_progress_on_a_terminal_is_a_bar_redrawn_in_place():
    stream = _Terminal()
    with Progress(50, 10, True, stream=stream) as bar:
        for step in range(11, 51):
            bar.update(step, 0.5)
    assert "\r" in stream.getvalue() and "50/50" in stream.getvalue()


def test_progress_disabled_prints_nothing():
    stream = io.StringIO()
    with Progress(5, 0, False, stream=stream) as bar:
        for step in range(1, 6):
            bar.update(step, 0.1)
    assert stream.getvalue() == ""


def test_the_cli_logs_progress_as_lines_when_stderr_is_a_pipe(tmp_path, jax_cache):
    code, err = finish(start(str(tmp_path / "run"), jax_cache, "--config.train.progress=True"))
    assert code == 0, err[-3000:]
    assert "\r" not in err
    assert re.search(r"^step 1/16 \(6\.2%\)  .* loss \d", err, re.MULTILINE), err[-3000:]
    assert re.search(r"^step 16/16 \(100\.0%\)  ", err, re.MULTILINE), err[-3000:]


# -- packaging ------------------------------------------------------------------------------

def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_running_dependencies_hold_nothing_only_the_tests_need():
    project = _pyproject()["project"]
    names = [re.split(r"[<>=\[ ;]", d)[0].lower() for d in project["dependencies"]]
    assert not [n for n in names if n in ("pytest", "hypothesis", "torch", "tensorflow",
                                          "tensorflow-cpu", "scikit-image", "pycocoevalcap")]
    test_extra = " ".join(project["optional-dependencies"]["test"])
    assert "pytest" in test_extra and "torch" in test_extra


def test_license_is_an_spdx_string_and_setuptools_knows_it():
    data = _pyproject()
    assert data["project"]["license"] == "Apache-2.0"
    (setuptools,) = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.search(r">=(\d+)", setuptools).group(1)) >= 77  # PEP 639 strings


def _make_dry_run(target: str, tmp_path) -> str:
    venv = str(tmp_path / "venv")  # absent: make shows every step it would take
    proc = subprocess.run(["make", "-n", "-C", REPO, target, f"VENV={venv}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(not os.path.exists("/usr/bin/make") and not os.path.exists("/bin/make"),
                    reason="make is not installed")
def test_make_run_installs_without_the_test_extra_and_make_test_with_it(tmp_path):
    run = _make_dry_run("run", tmp_path)
    assert re.search(r"pip install -q -e \.$", run, re.MULTILINE), run
    assert "[test]" not in run and "experiments.row_mnist" in run
    test = _make_dry_run("test", tmp_path)
    assert 'pip install -q -e ".[test]"' in test and "pytest" in test


@pytest.mark.slow
def test_the_quick_start_runs_without_the_test_only_packages(tmp_path):
    """The row-MNIST smoke run with every test-only package made unimportable."""
    code = (f"import runpy, sys\nfor m in {TEST_ONLY!r}: sys.modules[m] = None\n"
            f"sys.argv = ['row_mnist', '--config=configs/row_mnist.py:smoke', "
            f"'--workdir={tmp_path / 'run'}']\n"
            "runpy.run_module('experiments.row_mnist', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "results (" in proc.stdout
