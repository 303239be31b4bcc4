"""The benchmarks' command lines: every user error on one line, exit code 2.

    parser = ArgumentParser(description=...)   # argparse; its own errors are one line too
    ...
    if __name__ == "__main__":
        run(main, sys.argv[1:])

A user error is a `UsageError` raised by a benchmark for an argument it cannot use (an
unknown cell, a config field that does not exist, no GPU for --device=gpu, ...), or a
config/data error from rnnvision (`ConfigError`, `DataSourceError`, `IdxFileError`).
It prints `error: <what is wrong and what to do>` and exits with code 2; `--verbosity=1`
(every parser has it) prints the traceback first. Other exceptions are bugs and keep
their traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, NoReturn


class UsageError(ValueError):
    """An argument the benchmark cannot use; the message names it and what is allowed."""


def _user_errors() -> tuple[type[BaseException], ...]:
    # Imported here, not at the top: rnn_speed must set JAX's environment before anything
    # imports jax (rnnvision does).
    from rnnvision.config_checks import ConfigError
    from rnnvision.data.idx import IdxFileError
    from rnnvision.data.mnist import DataSourceError

    return (UsageError, ConfigError, DataSourceError, IdxFileError)


def _fail(message: str) -> NoReturn:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a --verbosity flag and one-line errors (no usage block)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--verbosity", "-v", type=int, default=0,
                          help="1: print the traceback of an error")

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} --help)")


def _verbose(argv: list[str]) -> bool:
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in ("--verbosity", "-v"):
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "0")
            return value.lstrip("-").isdigit() and int(value) >= 1
    return False


def _parse_like(current, text: str):
    """`text` as a value of the type of `current` (bools: true/false/1/0)."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    return type(current)(text)


def apply_sets(config, items: list[str], source: str) -> None:
    """Apply `--set FIELD=VALUE` overrides to an unlocked config, each value parsed as the
    type of the field it replaces; a UsageError names the item when one cannot be used."""
    from rnnvision.config_checks import get_field, set_field

    for item in items:
        field, eq, value = item.partition("=")
        try:
            current = get_field(config, field)
        except (KeyError, AttributeError):
            current = None
        if not eq or current is None or hasattr(current, "keys"):
            raise UsageError(f"--set {item!r}: give FIELD=VALUE with an existing config field, "
                             f"e.g. --set model.patch=4 (see {source})")
        try:
            parsed = _parse_like(current, value)
        except ValueError:
            raise UsageError(f"--set {item!r}: {value!r} is not a {type(current).__name__}, "
                             f"the type of {field} (now {current!r})") from None
        set_field(config, field, parsed)


def run(main: Callable[[list[str]], object], argv: list[str]) -> None:
    """main(argv), a user error turned into one line and exit code 2."""
    try:
        main(argv)
    except Exception as e:  # noqa: BLE001 -- sorted below: user errors vs bugs
        if not isinstance(e, _user_errors()):
            raise
        if _verbose(argv):
            traceback.print_exception(e)
        _fail(str(e))
