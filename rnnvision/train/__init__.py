"""The generic trainer: config, optimizer, train step, data parallelism, checkpoints, metrics."""

from rnnvision.train.loop import NonFiniteError, run

__all__ = ["NonFiniteError", "run"]
