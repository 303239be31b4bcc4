"""Property: every invalid value of a shared config field is rejected before any compute,
with a ConfigError naming the field; every valid config passes.

The allowed values are restated here from the documentation of the fields
(`rnnvision/train/config.py`), independently of the validation code under test.
"""

from __future__ import annotations

import math
import os
import sys

import ml_collections
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS, "train"))
import toy_task  # noqa: E402

from rnnvision.train import config as config_lib, loop  # noqa: E402
from rnnvision.config_checks import ConfigError, set_field  # noqa: E402


def _integer(lo, hi=None):
    return lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= lo
                      and (hi is None or v < hi))


def _real(lo, strict=True):
    def ok(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            if not math.isfinite(float(v)):
                return False
        except OverflowError:
            return False
        return v > lo if strict else v >= lo
    return ok


def _member(options):
    return lambda v: isinstance(v, str) and v in options


# The allowed names, restated (not imported): a name dropped from, or misspelt in,
# rnnvision/train/config.py makes the property fail.
OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop")
SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine")
CLIP_METHODS = ("none", "global_norm", "value", "adaptive")
NONFINITE = ("stop", "skip")

# field -> (is it valid?, a strategy of valid values)
SPEC = {
    "seed": (_integer(0, 2**63), st.integers(0, 2**63 - 1)),
    "train.num_steps": (_integer(1), st.integers(1, 10**9)),
    "train.batch_size": (_integer(1), st.integers(1, 4096)),
    "train.truncation": (_integer(0), st.integers(0, 1000)),
    "train.log_every": (_integer(1), st.integers(1, 10**6)),
    "train.eval_every": (_integer(0), st.integers(0, 10**6)),
    "train.checkpoint_every": (_integer(1), st.integers(1, 10**6)),
    "train.keep_checkpoints": (_integer(1), st.integers(1, 100)),
    "train.nonfinite": (_member(NONFINITE), st.sampled_from(NONFINITE)),
    "optim.optimizer": (_member(OPTIMIZERS), st.sampled_from(OPTIMIZERS)),
    "optim.learning_rate": (_real(0.0), st.floats(1e-12, 10.0)),
    "optim.schedule": (_member(SCHEDULES), st.sampled_from(SCHEDULES)),
    "optim.warmup_steps": (_integer(0), st.integers(0, 100)),
    "optim.weight_decay": (_real(0.0, strict=False), st.floats(0.0, 1.0)),
    "optim.clip.method": (_member(CLIP_METHODS), st.sampled_from(CLIP_METHODS)),
    "optim.clip.threshold": (_real(0.0), st.floats(1e-6, 1e6)),
    "eval.batch_size": (_integer(1), st.integers(1, 4096)),
}

# Anything a mistyped config could hold: wrong sign, wrong type, NaN/inf, near-miss names.
ANY_VALUE = st.one_of(
    st.integers(-10, 10), st.integers(-2**70, 2**70), st.sampled_from([2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=6), st.sampled_from(["adam ", "Adam", "norm", "ignore", "1e-3", "cosine_"]),
    st.lists(st.integers(0, 3), max_size=2),
)


def _invalid_value(field):
    return ANY_VALUE.filter(lambda v: not SPEC[field][0](v))


def _config(values: dict) -> ml_collections.ConfigDict:
    """The toy config with `values` set; built from a dict, so any type can be stored."""
    tree = toy_task.get_config().to_dict()
    for field, value in values.items():
        set_field(tree, field, value)
    return ml_collections.ConfigDict(tree)


def _invalid_fields(values: dict, num_devices: int) -> set[str]:
    """The fields the spec says are wrong, given all the values (clip, cross-field rules)."""
    bad = {f for f, v in values.items() if f != "optim.clip.threshold" and not SPEC[f][0](v)}
    if values["optim.clip.method"] != "none" and not SPEC["optim.clip.threshold"][0](
            values["optim.clip.threshold"]):
        bad.add("optim.clip.threshold")
    if not bad and values["train.batch_size"] % num_devices:
        bad.add("train.batch_size")
    if (not bad and values["optim.schedule"] == "warmup_cosine"
            and values["optim.warmup_steps"] >= values["train.num_steps"]):
        bad.add("optim.warmup_steps")
    return bad


@st.composite
def _values(draw):
    """A value for every field; in half the configs, each field may hold anything (10%)."""
    invalid_probability = draw(st.sampled_from([0.0, 0.1]))
    values = {}
    for field, (_, valid) in SPEC.items():
        arbitrary = draw(st.floats(0, 1)) < invalid_probability
        values[field] = draw(ANY_VALUE if arbitrary else valid)
    return values


@settings(max_examples=50, deadline=None)
@given(values=_values(), num_devices=st.sampled_from([1, 2, 4]))
def test_validate_accepts_exactly_the_valid_configs(values, num_devices):
    bad = _invalid_fields(values, num_devices)
    event("invalid" if bad else "valid")
    config = _config(values)
    if not bad:
        config_lib.validate(config, num_devices)
        return
    with pytest.raises(ConfigError) as info:
        config_lib.validate(config, num_devices)
    assert info.value.field in bad
    assert f"config field {info.value.field}=" in str(info.value)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(data=st.data(), field=st.sampled_from(sorted(SPEC)))
def test_one_invalid_field_stops_the_run_before_any_compute(tmp_path, monkeypatch, data, field):
    """Through `loop.run`: the error names the field; no task is built, no workdir made."""
    if field == "optim.clip.threshold":  # only checked when clipping
        values = {"optim.clip.method": "global_norm"}
    else:
        values = {}
    values[field] = data.draw(_invalid_value(field), label=field)

    def no_compute(*_):
        raise AssertionError("the task was built: validation came too late")

    monkeypatch.setattr(loop.tasks, "build", no_compute)
    workdir = tmp_path / f"run{data.draw(st.integers(0, 10**9), label='dir')}"
    with pytest.raises(ConfigError) as info:
        loop.run(_config(values), str(workdir))
    assert info.value.field == field and field in str(info.value)
    assert not workdir.exists()
