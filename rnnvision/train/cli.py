"""The command line every experiment shares:

    python -m experiments.<name> --config=configs/<name>.py[:variant] --workdir=DIR \
        [--config.a.b=value ...]

`experiments/<name>.py` is one line, `cli.main("<name>")`: it runs the config's task
and refuses a config of another task with a message naming both. Experiment-level
tools (the sweep, the ablation) use `run_command` with their own function.

Bad configs stop before any compute with a message naming the field, the value
and what is allowed; exit codes: 2 bad config/workdir, 1 non-finite loss or a
failed checkpoint save (e.g. disk full; the previous checkpoint is intact),
128+signal when stopped by SIGTERM/SIGINT (after saving a checkpoint).
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Callable

from absl import app, flags, logging
from ml_collections import config_flags

from rnnvision.config_checks import ConfigError
from rnnvision.train import checkpoint, loop, workdir as workdir_lib
from rnnvision.train.interrupt import Interrupted

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")

# fn(config, workdir) -> a one-line summary printed on success
Command = Callable[[Any, str], str]


def _load_config(argv: list[str]):
    """The config named by --config=path[:arg] in argv, without the overrides."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_rnnvision_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def _unknown_field_message(argv: list[str]) -> str | None:
    """For --config.x.y=v overrides naming fields the config lacks, a readable message."""
    config = _load_config(argv)
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


def parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        print(f"error: {_unknown_field_message(argv) or e}", file=sys.stderr)
        sys.exit(2)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _fail(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def _run(command: Command, accepts: Callable[[Any], str | None]) -> None:
    """Runs command(config, workdir) with the exit codes of the module docstring."""
    if _WORKDIR.value is None:
        _fail("error: --workdir is required", 2)
    if not flags.FLAGS["verbosity"].present:  # orbax is chatty at INFO; -v 0 brings it back
        logging.set_verbosity(logging.WARNING)
    refusal = accepts(_CONFIG.value)
    if refusal:
        _fail(f"error: {refusal}", 2)
    try:
        summary = command(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, workdir_lib.ConfigMismatchError) as e:
        _fail(f"error: {e}", 2)
    except (loop.NonFiniteError, checkpoint.CheckpointSaveError) as e:
        _fail(f"error: {e}", 1)
    except Interrupted as e:
        _fail(str(e), 128 + e.signum)
    print(summary)


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
