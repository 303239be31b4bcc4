"""The trainer's command line on the toy task, with fault-injection hooks for tests.

    python toy_cli.py --config=toy_config.py --workdir=DIR [--config.a.b=value ...]

It is the real CLI (`rnnvision.train.cli.main`: exit codes, resume on re-run);
environment variables only add faults, so a test can re-run the same command
without them to resume:

  RELIABILITY_PAUSE_AT=K, RELIABILITY_GATE=PATH
      before training step K (in the loop, once its batch is ready), create
      PATH.waiting and wait until PATH exists:
      the test signals the run at a known step, then opens the gate.
  RELIABILITY_KILL_IN_SAVE=K
      SIGKILL this process inside orbax's commit of the checkpoint of step K
      (all arrays written, the temporary directory not yet renamed).
  RELIABILITY_STUCK_THREAD=1, RELIABILITY_EXIT_GRACE=SECONDS
      start a non-daemon thread that never ends (as a library's stuck worker would),
      and give the CLI's exit watchdog SECONDS instead of its default: the process must
      still end, with the CLI's exit code.
"""

import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# This checkout's rnnvision, not whichever one is installed; the toy task from tests/train.
sys.path[:0] = [REPO, os.path.join(os.path.dirname(HERE), "train")]
# tensorboardX tries `import torch` (~10 s on a busy machine); these runs do not need it.
sys.modules.setdefault("torch", None)

import toy_task  # noqa: E402  (registers the "toy_sum" task)
from rnnvision.train import cli  # noqa: E402


def _pause_before_step(step: int, gate: str) -> None:
    # The pause is in the training loop's thread, when it takes the batch of `step`
    # (batches are built ahead, in the prefetch thread, so train_batch is too early).
    from rnnvision.train import prefetch

    original = prefetch.Prefetcher.__next__

    def next_batch(self):
        item = original(self)
        if item[0] == step:
            open(gate + ".waiting", "w").close()
            deadline = time.monotonic() + 600
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        return item

    prefetch.Prefetcher.__next__ = next_batch


def _kill_in_checkpoint_commit(step: int) -> None:
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self, *args, **kwargs):
        if self.get_final().name == str(step):
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def _start_stuck_thread() -> None:
    threading.Thread(target=threading.Event().wait, name="stuck", daemon=False).start()


if __name__ == "__main__":
    if os.environ.get("RELIABILITY_STUCK_THREAD"):
        _start_stuck_thread()
    if "RELIABILITY_EXIT_GRACE" in os.environ:
        cli.EXIT_GRACE_SECONDS = float(os.environ["RELIABILITY_EXIT_GRACE"])
    if "RELIABILITY_PAUSE_AT" in os.environ:
        _pause_before_step(int(os.environ["RELIABILITY_PAUSE_AT"]), os.environ["RELIABILITY_GATE"])
    if "RELIABILITY_KILL_IN_SAVE" in os.environ:
        _kill_in_checkpoint_commit(int(os.environ["RELIABILITY_KILL_IN_SAVE"]))
    cli.main("toy_sum")
