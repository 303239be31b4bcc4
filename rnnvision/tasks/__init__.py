"""Experiment tasks by name. Modules are imported on first use (some are heavy)."""

from __future__ import annotations

import importlib

from rnnvision.tasks.base import Apply, Task

_TASKS: dict[str, str] = {
    "row_mnist": "rnnvision.tasks.row_mnist:RowMnistTask",
    "moving_mnist": "rnnvision.tasks.moving_mnist:MovingMnistTask",
    "copy": "rnnvision.tasks.probes:CopyTask",
    "adding": "rnnvision.tasks.probes:AddingTask",
    "stream_frames": "rnnvision.tasks.stream_frames:StreamFramesTask",
    "captioning": "rnnvision.tasks.captioning:CaptioningTask",
}


def register(name: str, target: str) -> None:
    """Registers a task as "module.path:ClassName" (imported when first built)."""
    _TASKS[name] = target


def names() -> list[str]:
    return sorted(_TASKS)


def build(config) -> Task:
    """Builds the task named by `config.task`."""
    from rnnvision.train.config import ConfigError

    if config.task not in _TASKS:
        raise ConfigError("task", config.task, f"one of {names()}")
    module, cls = _TASKS[config.task].split(":")
    return getattr(importlib.import_module(module), cls)(config)


__all__ = ["Apply", "Task", "build", "names", "register"]
