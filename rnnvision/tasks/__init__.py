"""Experiment tasks by name. Modules are imported on first use (some are heavy).

    task = rnnvision.tasks.build(config, time_loop)     # config.task names the task

The trainer builds the `TimeLoop` from config.train (`rnnvision.train.build_task`
does both). A new experiment's task is one module here plus one `register` line
below (docs/adding_an_experiment.md).
"""

from __future__ import annotations

import importlib

from rnnvision.config_checks import ConfigError
from rnnvision.recurrence import TimeLoop
from rnnvision.tasks.base import Apply, Capability, RecurrentLoss, Task

_TASKS: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Registers a task as "module.path:ClassName" (imported when first built)."""
    _TASKS[name] = target


def names() -> list[str]:
    return sorted(_TASKS)


def lookup(name: str) -> type[Task]:
    """The Task class registered as `name` (ConfigError naming `task` if none)."""
    if name not in _TASKS:
        raise ConfigError("task", name, f"one of {names()}")
    module, cls = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build(config, time_loop: TimeLoop) -> Task:
    """Builds the task named by `config.task`, its models running through `time_loop`."""
    return lookup(config.task)(config, time_loop)


register("row_mnist", "rnnvision.tasks.row_mnist:RowMnistTask")
register("moving_mnist", "rnnvision.tasks.moving_mnist:MovingMnistTask")
register("captioning", "rnnvision.tasks.captioning:CaptioningTask")
register("copy", "rnnvision.tasks.probes:CopyTask")
register("adding", "rnnvision.tasks.probes:AddingTask")
register("stream_frames", "rnnvision.tasks.stream_frames:StreamFramesTask")
register("pixel_rnn", "rnnvision.tasks.pixel_rnn:PixelRNNTask")
register("video_classification", "rnnvision.tasks.video_classification:VideoClassificationTask")

__all__ = ["Apply", "Capability", "RecurrentLoss", "Task", "build", "lookup", "names",
           "register"]
