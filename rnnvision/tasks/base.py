"""What the trainer needs from an experiment: the typed `Task` interface.

A task owns its model, loss, data and evaluation, and knows nothing of devices:
the trainer jits/pmaps its pure functions and hands it an `apply` function that
runs a pure function data-parallel and returns numpy. It receives the run's
`TimeLoop` (truncation, remat, unroll, impl, built by the trainer from
`config.train`) and hands it to its models; an option it cannot honour is refused
when the task is built (`check_time_loop`), never ignored.

Every task implements `init_params`, `loss`, `train_batch` and `evaluate` (and may
override `attach_workdir` and `figures`). Optional capabilities are declared in
`capabilities`, not probed: a class that declares one must define its methods
(checked when the class is defined), and callers ask `task.has(...)`:

  Capability.STREAMING       state carried across optimizer steps (TBPTT over long
                             sequences): `init_stream(batch_size)` and
                             `stream_loss(params, batch, rng, stream)`, used by the
                             trainer instead of `loss`.
  Capability.RECURRENT_LOSS  `recurrent_loss(batch) -> RecurrentLoss`: the loss as a cell
                             unrolled from its initial carry plus a loss per step, which
                             the truncated-BPTT ablation differentiates by time lag.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Any, Callable, ClassVar, Iterable, Mapping

import jax
import numpy as np

from rnnvision.cells import Cell
from rnnvision.config_checks import ConfigError, get_field
from rnnvision.recurrence import TimeLoop

# apply(fn, params, batch) -> fn(params, batch) as numpy, run on the local devices.
Apply = Callable[[Callable, Any, dict], Any]
Params = Any

# The config field behind each TimeLoop option (the trainer builds the TimeLoop from them).
TIME_LOOP_FIELDS = {"truncation": "train.truncation", "remat": "train.remat",
                    "unroll": "train.unroll", "impl": "train.loop_impl"}


class Capability(enum.Enum):
    STREAMING = "streaming"
    RECURRENT_LOSS = "recurrent_loss"


_CAPABILITY_METHODS = {Capability.STREAMING: ("init_stream", "stream_loss"),
                       Capability.RECURRENT_LOSS: ("recurrent_loss",)}


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a cache key
class RecurrentLoss:
    """A loss of the form: unroll `cell` over `xs` from its initial carry, then `step_losses`.

    cell, xs (B, T, *F); step_losses(params, ys (B, T, *F_out)) -> (T,) the loss on each
    output step (their sum is the loss; `params` is the whole parameter tree, whose
    "cell" entry is the cell's). loss_steps: the steps with a nonzero loss term, when
    only a few have one (e.g. the last); None = every step.
    """

    cell: Cell
    xs: jax.Array
    step_losses: Callable[[Params, jax.Array], jax.Array]
    loss_steps: tuple[int, ...] | None = None

    @property
    def num_steps(self) -> int:
        return int(self.xs.shape[1])


class Task(abc.ABC):
    """Base class of the experiments' tasks (see the module docstring).

    Construction validates the task's own config fields (raising
    `rnnvision.config_checks.ConfigError`) and loads the data.
    """

    # The optional capabilities this task provides.
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    # Config fields (dotted prefixes) that may change between a run and its resumption.
    resume_safe_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for capability in cls.capabilities:
            missing = [m for m in _CAPABILITY_METHODS[capability]
                       if getattr(cls, m, None) is getattr(Task, m, None)]
            if missing:
                raise TypeError(f"{cls.__name__} declares {capability} but does not define "
                                f"{missing}")

    def __init__(self, config, time_loop: TimeLoop):
        self.config = config
        self.time_loop = time_loop

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def check_time_loop(self, cells: Iterable[Cell] = (), *, custom_loop: str | None = None,
                        unsupported: Mapping[str, str] | None = None) -> None:
        """Refuses the time-loop options this task cannot honour, naming the config field.

        cells: the cells the task's models unroll (impl "fused" needs a fast path for
        each); custom_loop: why a loop of the task runs a step function that is not a
        cell (then impl "fused" cannot apply); unsupported: {option: why} for options
        that must keep their default.
        """
        default = TimeLoop()
        for option, why in (unsupported or {}).items():
            if getattr(self.time_loop, option) != getattr(default, option):
                field = TIME_LOOP_FIELDS[option]
                raise ConfigError(field, get_field(self.config, field),
                                  f"its default for task {self.config.task!r}: {why}")
        try:
            for cell in cells:
                self.time_loop.check_cell(cell)
            if custom_loop is not None:
                self.time_loop.require_scan(custom_loop)
        except ValueError as e:
            raise ConfigError(TIME_LOOP_FIELDS["impl"], self.time_loop.impl,
                              f"a loop this task can run: {e}") from None

    # -- every task ---------------------------------------------------------------------
    def attach_workdir(self, workdir: str, is_main: bool) -> None:
        """Called once before training with the run directory (e.g. to save or load a
        vocabulary there); `is_main` is True on the process that writes files."""

    @abc.abstractmethod
    def init_params(self, rng: jax.Array) -> Params:
        """The initial parameters (a pytree)."""

    @abc.abstractmethod
    def loss(self, params: Params, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        """Pure: (mean loss over the (per-device) batch, dict of scalar metrics)."""

    @abc.abstractmethod
    def train_batch(self, step: int, rows: slice) -> dict[str, np.ndarray]:
        """Rows `rows` of the global training batch number `step` (deterministic).

        Called from the trainer's prefetch thread, in step order, ahead of use: it must
        not share mutable state with the other methods (a cache of its own is fine)."""

    @abc.abstractmethod
    def evaluate(self, params: Params, apply: Apply) -> dict[str, float]:
        """Final/periodic evaluation: a flat {name: number} dict."""

    def figures(self, params: Params, apply: Apply, outdir: str,
                history: list[Mapping[str, Any]]) -> list[str]:
        """Writes figures into `outdir`; returns their paths. Default: none."""
        return []

    # -- Capability.STREAMING -------------------------------------------------------------
    def init_stream(self, batch_size: int) -> Any:
        """The initial state carried across optimizer steps for a per-device batch of
        `batch_size` (host numpy pytree); the trainer keeps it in `TrainState.stream`,
        one per device, and checkpoints it, so a resumed run continues the stream."""
        raise NotImplementedError

    def stream_loss(self, params: Params, batch: dict, rng: jax.Array,
                    stream: Any) -> tuple[jax.Array, tuple[dict, Any]]:
        """Pure: (loss, (metrics, the new stream))."""
        raise NotImplementedError

    # -- Capability.RECURRENT_LOSS ----------------------------------------------------------
    def recurrent_loss(self, batch: dict) -> RecurrentLoss:
        """This task's loss on `batch` as a RecurrentLoss."""
        raise NotImplementedError
