"""The truncated-BPTT / gradient-clipping ablation: a sweep of normal rnnvision runs.

    python -m experiments.tbptt_ablation --config=configs/tbptt_ablation.py[:variant] \
        --workdir=DIR [--config.sweep.shard=i/n] [--config.a.b=value ...]

Same flags as every experiment (rnnvision.train.cli); exit codes: 2 bad config or
workdir, 128+signal when stopped (re-run the command to continue). Diverged
sub-runs are results, not errors.
"""

import sys

from rnnvision.ablation import sweep
from rnnvision.train import cli


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ablation(config, workdir: str) -> str:
    rows = sweep.main(config, workdir, log=_log)
    return f"{len(rows)} settings summarised in {workdir}/summary.md"


def _accepts(config) -> str | None:
    if config is not None and "studies" in config and "sweep" in config:
        return None
    return ("experiments.tbptt_ablation needs an ablation config (with `sweep` and `studies`, "
            "e.g. configs/tbptt_ablation.py); a single run's config runs with "
            f"`python -m experiments.{config.get('task') if config else '<name>'}`")


if __name__ == "__main__":
    cli.run_command(_ablation, _accepts)
