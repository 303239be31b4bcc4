"""Config checks: `ConfigError` and the rule helpers every layer uses (the bottom layer).

A rule is (dotted field, predicate, what is allowed); `check(config, rules)` applies
them in order and raises `ConfigError` naming the field, the value and what is
allowed on the first failure:

    check(config, [("train.num_steps", int_at_least(1), "an integer >= 1"),
                   ("model.cell", one_of(("lstm", "gru")), "one of ('lstm', 'gru')")])

This module imports nothing from rnnvision, so cells, data, models, tasks and the
trainer can all raise the same error.
"""

from __future__ import annotations

import math
from typing import Any, Callable

Predicate = Callable[[Any], bool]
Rule = tuple[str, Predicate, str]


class ConfigError(ValueError):
    """A config field holds a value that is not allowed."""

    def __init__(self, field: str, value: Any, allowed: str):
        super().__init__(f"config field {field}={value!r} is not allowed: {allowed}")
        self.field = field


def int_at_least(lo: int) -> Predicate:
    """An int (not a bool) >= lo."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def finite_number(lo: float, strict: bool = True) -> Predicate:
    """A finite int/float > lo (>= lo when not strict): NaN and +-inf are never allowed."""
    def ok(v):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not _finite(v):
            return False
        return v > lo if strict else v >= lo
    return ok


def one_of(options) -> Predicate:
    return lambda v: v in options


def get_field(config, path: str) -> Any:
    """The value at a dotted path, e.g. get_field(config, "optim.clip.method")."""
    node = config
    for part in path.split("."):
        node = node[part]
    return node


def set_field(config, path: str, value: Any) -> None:
    """Sets the value at a dotted path (a ConfigDict, or a plain nested dict)."""
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


def override(config, **values: Any):
    """Unlocks `config` and sets dotted fields: override(c, **{"train.num_steps": 10})."""
    config.unlock()
    for path, value in values.items():
        set_field(config, path, value)
    return config


def check(config, rules: list[Rule]) -> None:
    """Applies (field, predicate, allowed) rules; raises ConfigError on the first failure."""
    for field, ok, allowed in rules:
        try:
            value = get_field(config, field)
        except (KeyError, AttributeError):
            raise ConfigError(field, "<missing>", f"the config must define it ({allowed})") from None
        if not ok(value):
            raise ConfigError(field, value, allowed)
