"""The generic trainer: config, optimizer, train step, data parallelism, checkpoints, metrics."""

from rnnvision.train.loop import NonFiniteError, build_task, initial_stream, run

__all__ = ["NonFiniteError", "build_task", "initial_stream", "run"]
