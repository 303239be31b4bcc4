"""The experiment layer's contracts: declared capabilities, the time loop honoured or
refused by every task, each entry point running its own task only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import captioning as captioning_config
from configs import moving_mnist as moving_mnist_config
from configs import row_mnist as row_mnist_config
from rnnvision import cells, tasks
from rnnvision.config_checks import ConfigError, override
from rnnvision.data.vocab import BOS_ID, EOS_ID, PAD_ID
from rnnvision.models.captioner import Captioner
from rnnvision.models.resnet import ResNetEncoder
from rnnvision.models.search import SpecialTokens
from rnnvision.recurrence import TimeLoop
from rnnvision.tasks import Capability, Task
from rnnvision.train import build_task
from rnnvision.train.config import time_loop
from rnnvision.train.workdir import config_differences

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_declaring_a_capability_without_its_methods_fails_at_class_definition():
    with pytest.raises(TypeError, match=r"declares Capability.STREAMING but does not define "
                                        r"\['init_stream', 'stream_loss'\]"):
        class Broken(Task):  # noqa: F841
            capabilities = frozenset({Capability.STREAMING})

    class Declared(Task):
        capabilities = frozenset({Capability.RECURRENT_LOSS})

        def recurrent_loss(self, batch):
            return None

    assert Declared.capabilities == {Capability.RECURRENT_LOSS}


def test_capabilities_of_the_built_in_tasks():
    row = tasks.lookup("row_mnist")
    assert row.capabilities == {Capability.RECURRENT_LOSS}
    assert tasks.lookup("stream_frames").capabilities == {Capability.STREAMING,
                                                          Capability.RECURRENT_LOSS}
    assert tasks.lookup("captioning").capabilities == frozenset()
    with pytest.raises(ConfigError, match="task='nope'"):
        tasks.lookup("nope")


def test_the_trainer_builds_the_time_loop_from_config_train():
    c = override(row_mnist_config.get_config("smoke"), **{
        "train.truncation": 7, "train.remat": True, "train.unroll": 2, "train.loop_impl": "scan"})
    assert time_loop(c) == TimeLoop(truncation=7, remat=True, unroll=2, impl="scan")
    task = build_task(c)
    assert task.time_loop == task.model.time_loop == time_loop(c)
    assert time_loop(row_mnist_config.get_config("smoke")) == TimeLoop()


@pytest.mark.parametrize("config_module,variant,field_value", [
    (row_mnist_config, "smoke,row_lstm", "train.loop_impl='fused'"),
    (moving_mnist_config, "smoke", "train.loop_impl='fused'"),
    (captioning_config, "smoke", "train.loop_impl='fused'"),
])
def test_an_impl_a_task_cannot_run_is_refused_naming_the_field(config_module, variant,
                                                                field_value):
    c = override(config_module.get_config(variant), **{"train.loop_impl": "fused"})
    with pytest.raises(ConfigError, match=field_value):
        build_task(c)


def test_the_fused_impl_is_accepted_where_it_applies():
    c = override(row_mnist_config.get_config("smoke"), **{"train.loop_impl": "fused"})
    assert build_task(c).time_loop.impl == "fused"


def _captioner(truncation):
    encoder = ResNetEncoder(width=4, num_stages=1, blocks_per_stage=1, stem_stride=2,
                            norm="none")
    return Captioner(encoder, cells.get("gru", hidden_size=8), 12,
                     SpecialTokens(PAD_ID, BOS_ID, EOS_ID), embed_dim=6, attention="soft",
                     attention_dim=6, time_loop=TimeLoop(truncation=truncation))


def test_captioning_honours_truncation_in_words():
    """The last word's logits reach the embeddings of earlier words only through the
    decoder state: with truncation k, exactly the words of the last window reach it."""
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 1)), jnp.uint8)
    inputs = jnp.array([[1, 4, 5, 6, 7, 8]] * 2)  # every word once: its embedding row is its own
    params = _captioner(None).init(jax.random.key(0), (8, 8, 1))

    def embed_grad_rows(truncation):
        model = _captioner(truncation)
        grad = jax.grad(lambda p: model.teacher_forced(p, images, inputs)[0][:, -1].sum())(params)
        return np.abs(np.asarray(grad["embed"])).sum(-1)[np.asarray(inputs[0])]  # per position

    full, k2, k1 = embed_grad_rows(None), embed_grad_rows(2), embed_grad_rows(1)
    assert (full > 0).all()                              # every word reaches the last logits
    # windows of 2 words from the first: [0, 1], [2, 3], [4, 5]; the last word is in [4, 5]
    assert (k2[:4] == 0).all() and (k2[4:] > 0).all()
    assert (k1[:5] == 0).all() and k1[5] > 0
    np.testing.assert_allclose(embed_grad_rows(6), full, rtol=1e-6)   # k >= T: full BPTT


def test_experiments_refuse_a_config_of_another_task(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.row_mnist", "--config=configs/moving_mnist.py:smoke",
         f"--workdir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert ("experiments.row_mnist runs task 'row_mnist', but the config is one of task "
            "'moving_mnist': run it with `python -m experiments.moving_mnist`") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_workdir_written_before_a_trainer_field_existed_still_resumes():
    new = row_mnist_config.get_config("smoke").to_dict()
    old = json.loads(json.dumps(new))
    del old["train"]["loop_impl"], old["train"]["unroll"]
    assert config_differences(old, new) == []
    changed = json.loads(json.dumps(new))
    changed["train"]["loop_impl"] = "scan"   # not the default: a real difference
    assert config_differences(old, changed) == ["  train.loop_impl: '<absent>' -> 'scan'"]
