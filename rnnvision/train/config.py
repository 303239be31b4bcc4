"""The config fields every experiment shares, and their validation.

An experiment config (`configs/<name>.py`) starts from `base_config()` and adds
its own `data` and `model` sections. `validate(config, num_devices)` checks
every shared field before any compute; a task adds its own checks. Errors name
the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import ml_collections

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop")
SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine")
CLIP_METHODS = ("none", "global_norm", "value", "adaptive")
NONFINITE_POLICIES = ("stop", "skip")


class ConfigError(ValueError):
    """A config field holds a value that is not allowed."""

    def __init__(self, field: str, value: Any, allowed: str):
        super().__init__(f"config field {field}={value!r} is not allowed: {allowed}")
        self.field = field


def base_config() -> ml_collections.ConfigDict:
    """Shared fields; every experiment config starts from this."""
    c = ml_collections.ConfigDict()
    c.task = ""               # name of the task in rnnvision.tasks (set by the experiment config)
    c.seed = 0                # seeds parameter init, data order and every step's RNG
    c.extra_imports = ""      # comma-separated modules to import first (e.g. your own cells)

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000          # optimizer steps in the whole run
    c.train.batch_size = 128          # GLOBAL batch, split over all devices of all hosts
    c.train.truncation = 0            # truncated BPTT window k; 0 = full BPTT
    c.train.remat = False             # gradient checkpointing in the time loop
    c.train.log_every = 50            # steps between metrics.jsonl / TensorBoard rows
    c.train.eval_every = 0            # steps between evaluations; 0 = only at the end
    c.train.checkpoint_every = 500    # steps between checkpoints (one is always saved at the end)
    c.train.keep_checkpoints = 3      # how many recent checkpoints orbax keeps
    c.train.nonfinite = "stop"        # on a NaN/Inf loss or gradient: "stop" or "skip" the update
    c.train.progress = True           # progress bar (steps/s, ETA, loss) on stderr
    c.train.force_resume = False      # resume even if model/data fields differ from the workdir's

    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adam"        # one of OPTIMIZERS
    c.optim.learning_rate = 1e-3      # peak learning rate
    c.optim.schedule = "constant"     # one of SCHEDULES
    c.optim.warmup_steps = 0          # linear warm-up steps (warmup_cosine)
    c.optim.weight_decay = 0.0        # decoupled weight decay (adamw)
    c.optim.momentum = 0.9            # for sgd/momentum/rmsprop
    c.optim.clip = ml_collections.ConfigDict()
    c.optim.clip.method = "global_norm"  # one of CLIP_METHODS ("adaptive" = optax AGC)
    c.optim.clip.threshold = 1.0      # norm (global_norm), value (value) or ratio (adaptive)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 500           # evaluation batch (split over local devices)

    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False  # call jax.distributed.initialize (multi-host)
    c.distributed.coordinator_address = ""  # "host:port"; "" = from the environment
    c.distributed.num_processes = 0   # 0 = from the environment
    c.distributed.process_id = -1     # -1 = from the environment
    c.distributed.cpu_collectives = ""  # "gloo" for multi-process runs on CPU; "" = JAX's default
    return c


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _num(lo: float, strict: bool = True) -> Callable[[Any], bool]:
    """A finite int/float > lo (>= lo when not strict): NaN and +-inf are never allowed."""
    def ok(v):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not _finite(v):
            return False
        return v > lo if strict else v >= lo
    return ok


def _one_of(options) -> Callable[[Any], bool]:
    return lambda v: v in options


# Public predicates for the rules of tasks: check(config, [(field, predicate, allowed)]).
int_at_least = _int
finite_number = _num
one_of = _one_of

# (field, predicate, what is allowed)
_RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", lambda v: _int(0)(v) and v < 2**63, "an integer in [0, 2**63)"),
    ("train.num_steps", _int(1), "an integer >= 1"),
    ("train.batch_size", _int(1), "an integer >= 1"),
    ("train.truncation", _int(0), "0 (full BPTT) or a window length >= 1"),
    ("train.log_every", _int(1), "an integer >= 1"),
    ("train.eval_every", _int(0), "0 (only at the end) or an integer >= 1"),
    ("train.checkpoint_every", _int(1), "an integer >= 1"),
    ("train.keep_checkpoints", _int(1), "an integer >= 1"),
    ("train.nonfinite", _one_of(NONFINITE_POLICIES), f"one of {NONFINITE_POLICIES}"),
    ("optim.optimizer", _one_of(OPTIMIZERS), f"one of {OPTIMIZERS}"),
    ("optim.learning_rate", _num(0.0), "a finite number > 0"),
    ("optim.schedule", _one_of(SCHEDULES), f"one of {SCHEDULES}"),
    ("optim.warmup_steps", _int(0), "an integer >= 0"),
    ("optim.weight_decay", _num(0.0, strict=False), "a finite number >= 0"),
    ("optim.clip.method", _one_of(CLIP_METHODS), f"one of {CLIP_METHODS}"),
    ("eval.batch_size", _int(1), "an integer >= 1"),
]


def get_field(config: ml_collections.ConfigDict, path: str) -> Any:
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


def override(config: ml_collections.ConfigDict, **values: Any) -> ml_collections.ConfigDict:
    """Unlocks `config` and sets dotted fields: override(c, **{"train.num_steps": 10})."""
    config.unlock()
    for path, value in values.items():
        set_field(config, path, value)
    return config


def check(config, rules) -> None:
    """Applies (field, predicate, allowed) rules; raises ConfigError on the first failure."""
    for field, ok, allowed in rules:
        try:
            value = get_field(config, field)
        except (KeyError, AttributeError):
            raise ConfigError(field, "<missing>", f"the config must define it ({allowed})") from None
        if not ok(value):
            raise ConfigError(field, value, allowed)


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Checks the shared fields; `num_devices` is the global device count."""
    check(config, _RULES)
    if config.optim.clip.method != "none":
        check(config, [("optim.clip.threshold", _num(0.0), "a finite number > 0 when clipping")])
    if config.train.batch_size % num_devices:
        raise ConfigError("train.batch_size", config.train.batch_size,
                          f"a multiple of the device count ({num_devices})")
    if config.optim.warmup_steps >= config.train.num_steps and config.optim.schedule == "warmup_cosine":
        raise ConfigError("optim.warmup_steps", config.optim.warmup_steps,
                          f"fewer than train.num_steps ({config.train.num_steps})")
