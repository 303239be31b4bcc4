"""The config fields every experiment shares, and their validation.

An experiment config (`configs/<name>.py`) starts from `base_config()` and adds
its own `data` and `model` sections. `validate(config, num_devices)` checks
every shared field before any compute; a task adds its own checks. Errors name
the field, the value and what is allowed. `time_loop(config)` is the one place
where the time-loop options of config.train become the `TimeLoop` every task's
models run with.
"""

from __future__ import annotations

import ml_collections

from rnnvision.config_checks import ConfigError, Rule, check, finite_number, int_at_least, one_of
from rnnvision.recurrence import IMPLS, TimeLoop
from rnnvision.train.parallel import MODES

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop")
SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine")
CLIP_METHODS = ("none", "global_norm", "value", "adaptive")
NONFINITE_POLICIES = ("stop", "skip")
PARALLEL_MODES = MODES
# Trainer fields that may change between a run and its resumption, besides
# rnnvision.train.workdir.RESUME_SAFE: they change neither the model, nor the data, nor
# the objective (the parallel mode changes the update only by float rounding and, for a
# loss that draws random numbers, the keys, as a different device count does).
RESUME_SAFE = ("train.parallel", "train.profile_steps")


def base_config() -> ml_collections.ConfigDict:
    """Shared fields; every experiment config starts from this."""
    c = ml_collections.ConfigDict()
    c.task = ""               # name of the task in rnnvision.tasks (set by the experiment config)
    c.seed = 0                # seeds parameter init, data order and every step's RNG
    c.extra_imports = ""      # comma-separated modules to import first (e.g. your own cells)

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000          # optimizer steps in the whole run
    c.train.batch_size = 128          # GLOBAL batch, split over all devices of all hosts
    # The time loop (rnnvision.recurrence.TimeLoop), honoured by every task or refused:
    c.train.truncation = 0            # truncated BPTT window k; 0 = full BPTT
    c.train.remat = False             # gradient checkpointing in chunks of ~sqrt(T) steps
    c.train.unroll = 0                # lax.scan unroll factor; 0 = automatic
    c.train.loop_impl = "auto"        # "auto" (fused fast path where one applies), "fused" or "scan"
    c.train.log_every = 50            # steps between metrics.jsonl / TensorBoard rows
    c.train.eval_every = 0            # steps between evaluations; 0 = only at the end
    c.train.checkpoint_every = 500    # steps between checkpoints (one is always saved at the end)
    c.train.keep_checkpoints = 3      # how many recent checkpoints orbax keeps
    c.train.nonfinite = "stop"        # on a NaN/Inf loss or gradient: "stop" or "skip" the update
    c.train.progress = True           # progress bar (steps/s, ETA, loss) on stderr
    c.train.force_resume = False      # resume even if model/data fields differ from the workdir's
    c.train.restart_if_corrupt = False  # no checkpoint verifies: False = stop (exit 2), True = step 0
    c.train.parallel = "jit"          # data parallelism: "jit" (sharded jit over a device mesh) or "pmap"
    c.train.profile_steps = ""        # "first:last": a jax.profiler trace of those steps in WORKDIR/profile

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


# (field, predicate, what is allowed)
_RULES: list[Rule] = [
    ("seed", lambda v: int_at_least(0)(v) and v < 2**63, "an integer in [0, 2**63)"),
    ("train.num_steps", int_at_least(1), "an integer >= 1"),
    ("train.batch_size", int_at_least(1), "an integer >= 1"),
    ("train.truncation", int_at_least(0), "0 (full BPTT) or a window length >= 1"),
    ("train.remat", lambda v: isinstance(v, bool), "True or False"),
    ("train.unroll", int_at_least(0), "0 (automatic) or an unroll factor >= 1"),
    ("train.loop_impl", one_of(IMPLS), f"one of {IMPLS}"),
    ("train.log_every", int_at_least(1), "an integer >= 1"),
    ("train.eval_every", int_at_least(0), "0 (only at the end) or an integer >= 1"),
    ("train.checkpoint_every", int_at_least(1), "an integer >= 1"),
    ("train.keep_checkpoints", int_at_least(1), "an integer >= 1"),
    ("train.nonfinite", one_of(NONFINITE_POLICIES), f"one of {NONFINITE_POLICIES}"),
    ("train.restart_if_corrupt", lambda v: isinstance(v, bool), "True or False"),
    ("train.parallel", one_of(PARALLEL_MODES), f"one of {PARALLEL_MODES}"),
    ("optim.optimizer", one_of(OPTIMIZERS), f"one of {OPTIMIZERS}"),
    ("optim.learning_rate", finite_number(0.0), "a finite number > 0"),
    ("optim.schedule", one_of(SCHEDULES), f"one of {SCHEDULES}"),
    ("optim.warmup_steps", int_at_least(0), "an integer >= 0"),
    ("optim.weight_decay", finite_number(0.0, strict=False), "a finite number >= 0"),
    ("optim.clip.method", one_of(CLIP_METHODS), f"one of {CLIP_METHODS}"),
    ("eval.batch_size", int_at_least(1), "an integer >= 1"),
]


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Checks the shared fields; `num_devices` is the global device count."""
    check(config, _RULES)
    profile_range(config.train.profile_steps)
    if config.optim.clip.method != "none":
        check(config, [("optim.clip.threshold", finite_number(0.0), "a finite number > 0 when clipping")])
    if config.train.batch_size % num_devices:
        raise ConfigError("train.batch_size", config.train.batch_size,
                          f"a multiple of the device count ({num_devices})")
    if config.optim.warmup_steps >= config.train.num_steps and config.optim.schedule == "warmup_cosine":
        raise ConfigError("optim.warmup_steps", config.optim.warmup_steps,
                          f"fewer than train.num_steps ({config.train.num_steps})")


def profile_range(spec) -> tuple[int, int] | None:
    """train.profile_steps "first:last" -> (first, last), 1 <= first <= last; "" -> None."""
    if spec == "":
        return None
    allowed = '"" (no profile) or "first:last", step numbers with 1 <= first <= last'
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError("train.profile_steps", spec, allowed)
    first, last = (int(p) for p in parts)
    if not 1 <= first <= last:
        raise ConfigError("train.profile_steps", spec, allowed)
    return first, last


def time_loop(config: ml_collections.ConfigDict) -> TimeLoop:
    """The run's TimeLoop from config.train (truncation 0 and unroll 0 mean None)."""
    t = config.train
    return TimeLoop(truncation=t.truncation or None, remat=t.remat, unroll=t.unroll or None,
                    impl=t.loop_impl)
