"""Config file of the sweep tests: the toy task of tests/train/toy_task.py (8 steps).

    python -m experiments.sweep --config=tests/sweep/toy_sweep_config.py --workdir=DIR --grid=...

For the kill test, SWEEP_TEST_PAUSE="<config seed>:<step>" and SWEEP_TEST_GATE=PATH make
the run with that config.seed create PATH.waiting before training step <step> and wait
until PATH exists: the test kills the process at a known point of a known run.
"""

import os
import sys
import time

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS, "train"))

import toy_task  # noqa: E402  (registers the "toy_sum" task)


def toy_config(**overrides):
    """The toy task (8 steps of an LSTM(8) on 6-step sequences), eval.main_metric = mse."""
    config = toy_task.get_config(**overrides)
    config.eval.main_metric = "mse"   # the toy task's results.json: mse
    return config


def _pause_before_step(seed: int, step: int, gate: str) -> None:
    original = toy_task.ToySumTask.train_batch

    def train_batch(self, index, rows):
        if self.config.seed == seed and index == step - 1:  # batch of step `step` (0-based)
            open(gate + ".waiting", "w").close()
            deadline = time.monotonic() + 600
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        return original(self, index, rows)

    toy_task.ToySumTask.train_batch = train_batch


def get_config(arg=None):
    """The toy config, in a process of its own (the command line's)."""
    del arg
    # tensorboardX tries `import torch` (~10 s on a busy machine); these runs do not need it.
    sys.modules.setdefault("torch", None)
    if "SWEEP_TEST_PAUSE" in os.environ:
        seed, step = (int(v) for v in os.environ["SWEEP_TEST_PAUSE"].split(":"))
        _pause_before_step(seed, step, os.environ["SWEEP_TEST_GATE"])
    return toy_config()
