"""The long-memory probes: the copy task's dependency is exactly L steps."""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import load_config  # noqa: E402

from rnnvision import tasks  # noqa: E402
from rnnvision.recurrence import TimeLoop  # noqa: E402
from rnnvision.train import build_task  # noqa: E402


def _probe_config(task="copy", length=6, truncation=0, **fields):
    c = load_config("smoke").studies["clip" if task == "adding" else "copy"].run
    c.data.dependency, c.train.truncation = length, truncation
    for key, value in fields.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def test_copy_batch_layout():
    task = build_task(_probe_config(length=6, **{"train.batch_size": 16}))
    batch = task.train_batch(3, slice(None))
    x, label = batch["x"], batch["label"]
    a = task.num_symbols
    assert x.shape == (16, 6, a + 2) and label.shape == (16, 1)
    np.testing.assert_array_equal(x[:, 0, :a].argmax(-1), label[:, 0])  # the symbol at step 0
    assert (x[:, 1:-1, :a].sum(-1) == 1).all()                         # distractors in between
    assert (x[:, -1, :a] == 0).all() and (x[:, -1, -1] == 1).all()      # the cue at step L-1
    assert (x[:, :-1, -1] == 0).all()
    again = task.train_batch(3, slice(4, 8))
    np.testing.assert_array_equal(again["x"], x[4:8])                   # rows of one global batch


def test_adding_batch_layout():
    task = build_task(_probe_config("adding", length=8, **{"train.batch_size": 32}))
    b = task.train_batch(0, slice(None))
    values, marker = b["x"][..., 0], b["x"][..., 1]
    assert (marker[:, 0] == 1).all() and (marker.sum(1) == 2).all()
    assert (marker[:, 1:4] == 0).all()                                  # second marker in [L//2, L-1]
    np.testing.assert_allclose(b["target"], (values * marker).sum(1), rtol=1e-6)


@pytest.mark.parametrize("task_name,below,at_or_above", [
    ("copy", (1, 4), (6,)),   # k < L whether or not k divides L
    ("adding", (5,), (6,)),
])
def test_loss_reaches_the_step0_input_iff_k_ge_L(task_name, below, at_or_above):
    """The whole point of the probe's layout: unroll's windows start at step 0, the needed
    input is at step 0 and the loss at step L - 1, so a gradient path exists iff k >= L."""
    length = 6
    task = build_task(_probe_config(task_name, length=length, **{"train.batch_size": 4}))
    params = task.init_params(jax.random.key(0))
    batch = task.train_batch(0, slice(None))

    def input_grad(k):
        other = tasks.build(task.config, TimeLoop(truncation=k))  # same data, same params
        loss = lambda x: other.loss(params, dict(batch, x=x), None)[0]
        return np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(batch["x"])))

    for k in below:
        assert np.abs(input_grad(k)[:, 0]).max() == 0.0, k
    for k in at_or_above:
        assert np.abs(input_grad(k)[:, 0]).max() > 1e-6, k


@pytest.mark.slow
def test_copy_task_cliff_k_ge_L_learns_k_lt_L_does_not(tmp_path):
    """A few hundred Adam steps (minutes on a busy CPU): k = L learns, k = L - 1 stays near chance."""
    from rnnvision.train import loop

    accuracy = {}
    for k in (15, 16):
        c = _probe_config(length=16, truncation=k, **{
            "model.hidden_size": 32, "train.batch_size": 32, "train.num_steps": 300,
            "train.log_every": 50, "train.checkpoint_every": 300, "data.num_eval": 256})
        accuracy[k] = loop.run(c, str(tmp_path / f"k{k}"))["accuracy"]
    assert accuracy[16] > 0.9
    assert accuracy[15] < 0.6
