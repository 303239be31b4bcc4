"""The command line every experiment shares:

    python -m experiments.<name> --config=configs/<name>.py[:variant] --workdir=DIR \
        [--config.a.b=value ...] [--verbosity=1]

`experiments/<name>.py` is one line, `cli.main("<name>")`: it runs the config's task
and refuses a config of another task with a message naming both. Experiment-level
tools (the sweep, the ablation) use `run_command` with their own function.

Every user error is one line on stderr, `error: <what is wrong and what to do>`, before
any compute where it can be known then; `--verbosity=1` adds the traceback. Exit codes:
  2          a user error (`USER_ERRORS`): a bad config file, variant, field or value;
             a bad or busy workdir; data files that are missing or malformed; a
             workdir of another run; a checkpoint that does not fit the config, or
             none that verifies
  1          a non-finite loss, or a failed checkpoint save (e.g. disk full; the
             previous checkpoint is intact)
  128+signal stopped by SIGTERM/SIGINT (after saving a checkpoint)
No exit hangs: once the command has returned or failed, the process ends within
`EXIT_GRACE_SECONDS` even if a library thread (e.g. orbax's) would keep it alive.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import traceback
from typing import Any, Callable, NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from rnnvision.config_checks import ConfigError
from rnnvision.data.idx import IdxFileError
from rnnvision.data.mnist import DataSourceError
from rnnvision.train import checkpoint, loop, workdir as workdir_lib
from rnnvision.train.interrupt import Interrupted
from rnnvision.train.lock import WorkdirBusyError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")

# fn(config, workdir) -> a one-line summary printed on success
Command = Callable[[Any, str], str]

# Errors that are the user's to fix: one line and exit code 2.
USER_ERRORS = (ConfigError, IdxFileError, DataSourceError, workdir_lib.ConfigMismatchError,
               workdir_lib.WorkdirError, WorkdirBusyError, checkpoint.CheckpointMismatchError,
               checkpoint.NoVerifiedCheckpointError)
# Failures of the run itself, with the state on disk intact: one line and exit code 1.
RUN_ERRORS = (loop.NonFiniteError, checkpoint.CheckpointSaveError)

EXIT_GRACE_SECONDS = 10.0


def _exit_within_grace(code: int) -> None:
    """From now on, the process ends with `code` after EXIT_GRACE_SECONDS at the latest: a
    daemon timer calls os._exit if the interpreter's shutdown (which waits for every
    non-daemon thread) is still going on."""
    timer = threading.Timer(EXIT_GRACE_SECONDS, os._exit, (code,))
    timer.daemon = True
    timer.start()


def exit_now(code: int) -> NoReturn:
    """sys.exit(code) that cannot hang (`_exit_within_grace`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    _exit_within_grace(code)
    sys.exit(code)


def one_line(error: BaseException | str) -> str:
    """The message of `error` on one line (whitespace runs, newlines included, become one
    space)."""
    return " ".join(str(error).split())


def fail(error: BaseException | str, code: int, verbose: bool = False) -> NoReturn:
    """Prints `error: <message>` (with the traceback first when `verbose`) and exits."""
    if verbose and isinstance(error, BaseException):
        traceback.print_exception(error)
    print(f"error: {one_line(error)}", file=sys.stderr)
    exit_now(code)


def _verbose_in(argv: list[str]) -> bool:
    """--verbosity=N / -v=N / -v N / --verbosity N with N >= 1 (before flags are parsed)."""
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in ("--verbosity", "-v"):
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def _config_spec(argv: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)


def _load_config(argv: list[str]):
    """The config named by --config=path[:arg] in argv, without the overrides."""
    spec = _config_spec(argv)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_rnnvision_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def _unknown_field_message(argv: list[str]) -> str | None:
    """For --config.x.y=v overrides naming fields the config lacks, a readable message."""
    try:
        config = _load_config(argv)
    except Exception:  # noqa: BLE001 -- reported by _config_file_message instead
        return None
    for arg in (a for a in argv if a.startswith("--config.") and config is not None):
        parts = arg[len("--config."):].split("=", 1)[0].split(".")
        node = config
        for i, part in enumerate(parts):
            if not hasattr(node, "keys"):
                break
            if part not in node:
                here = ".".join(parts[:i]) or "<top level>"
                return (f"config field {'.'.join(parts)!r} does not exist; fields under {here}: "
                        f"{sorted(node.keys())}")
            node = node[part]
    return None


def _config_file_message(argv: list[str], verbose: bool) -> str | None:
    """Why --config cannot be loaded (no such file, or its get_config(arg) fails, e.g. an
    unknown variant), on one line naming --config; None if it loads."""
    spec = _config_spec(argv)
    if spec is None:
        return None
    path = spec.partition(":")[0]
    if not os.path.isfile(path):
        return (f"--config={spec}: no config file {path!r} (a path relative to the current "
                f"directory {os.getcwd()}, e.g. configs/row_mnist.py)")
    try:
        _load_config(argv)
    except Exception as e:  # noqa: BLE001 -- any error inside the user's config file
        if verbose:
            traceback.print_exception(e)
        return f"--config={spec}: {one_line(e)}"
    return None


def parse_flags(argv: list[str]) -> list[str]:
    verbose = _verbose_in(argv)
    spec = _config_spec(argv)
    if spec is not None and not os.path.isfile(spec.partition(":")[0]):
        fail(_config_file_message(argv, verbose), 2)
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        fail(_unknown_field_message(argv) or e, 2, verbose)
    except flags.Error as e:
        fail(_config_file_message(argv, verbose) or e, 2, verbose)


def _run_command(command: Command, accepts: Callable[[Any], str | None], verbose: bool) -> str:
    """command(config, workdir), each failure turned into one line and its exit code."""
    if _WORKDIR.value is None:
        fail("--workdir is required", 2)
    refusal = accepts(_CONFIG.value)
    if refusal:
        fail(refusal, 2)
    try:
        return command(_CONFIG.value, _WORKDIR.value)
    except USER_ERRORS as e:
        fail(e, 2, verbose)
    except RUN_ERRORS as e:
        fail(e, 1, verbose)
    except Interrupted as e:
        if verbose:
            traceback.print_exception(e)
        print(one_line(e), file=sys.stderr)
        exit_now(128 + e.signum)


def _run(command: Command, accepts: Callable[[Any], str | None]) -> None:
    """Runs command(config, workdir) with the exit codes of the module docstring."""
    verbose = flags.FLAGS.verbosity >= 1
    if not flags.FLAGS["verbosity"].present:  # orbax is chatty at INFO; -v 0 brings it back
        logging.set_verbosity(logging.WARNING)
    try:
        summary = _run_command(command, accepts, verbose)
    except SystemExit:
        raise
    except BaseException:
        _exit_within_grace(1)  # an unexpected error (a bug) keeps its traceback, no hang
        raise
    print(summary)
    exit_now(0)


def run_command(command: Command, accepts: Callable[[Any], str | None]) -> None:
    """Parses the flags and runs command(config, workdir); `accepts(config)` returns why
    the config is not one this command runs (exit 2), or None."""
    app.run(lambda argv: _run(command, accepts), flags_parser=parse_flags)


def _train(config, workdir: str) -> str:
    results = loop.run(config, workdir)
    summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in sorted(results.items()) if "/" not in k)
    return f"results ({workdir}/results.json): {summary}"


def main(task: str) -> None:
    """The entry point of `experiments/<task>.py`: trains and evaluates config.task == task."""
    def accepts(config) -> str | None:
        other = config.get("task") if config is not None else None
        if other == task:
            return None
        return (f"experiments.{task} runs task {task!r}, but the config is one of task "
                f"{other!r}: run it with `python -m experiments.{other}`" if other else
                f"experiments.{task} needs a config of task {task!r} (set `task` in it)")
    run_command(_train, accepts)
