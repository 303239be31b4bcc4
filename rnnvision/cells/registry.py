"""Cells by name: `get("lstm", hidden_size=256)`, `register("my_cell", MyCell)`."""

from __future__ import annotations

import dataclasses
from typing import Any

from rnnvision.cells.base import Cell

_REGISTRY: dict[str, type[Cell]] = {}


def register(name: str, cls: type[Cell]) -> type[Cell]:
    """Makes `cls` available as `get(name, ...)` and so by config string."""
    if not (isinstance(cls, type) and issubclass(cls, Cell)):
        raise TypeError(f"register({name!r}, {cls!r}): expected a subclass of rnnvision.cells.Cell")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"cell name {name!r} is already registered to {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def hparam_names(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(lookup(name))]


def lookup(name: str) -> type[Cell]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown cell {name!r}; registered cells: {names()}")
    return _REGISTRY[name]


def get(name: str, **hparams: Any) -> Cell:
    """Builds the cell registered as `name` with the given hyper-parameters.

    Raises:
      KeyError: unknown name (the message lists the registered cells).
      TypeError: a hyper-parameter the cell does not have (lists the valid ones).
      ValueError: a value out of range (names the field).
    """
    cls = lookup(name)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(hparams) - valid)
    if unknown:
        raise TypeError(f"cell {name!r} has no hyper-parameter(s) {unknown}; "
                        f"valid: {sorted(valid)}")
    return cls(**hparams)
