"""The truncated-BPTT / gradient-clipping ablation: a sweep of normal rnnvision runs.

    python -m experiments.tbptt_ablation --config=configs/tbptt_ablation.py[:variant] \
        --workdir=DIR [--config.sweep.shard=i/n] [--config.a.b=value ...]

Same flags as every experiment (rnnvision.train.cli); exit codes: 2 bad config or
workdir, 128+signal when stopped (re-run the command to continue). Diverged
sub-runs are results, not errors.
"""

import sys

from absl import app, flags, logging

from rnnvision.ablation import sweep
from rnnvision.train import cli, config as config_lib, workdir as workdir_lib
from rnnvision.train.interrupt import Interrupted


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _main(argv) -> None:
    del argv
    if cli._WORKDIR.value is None:
        _log("error: --workdir is required")
        sys.exit(2)
    if not flags.FLAGS["verbosity"].present:  # orbax is chatty at INFO
        logging.set_verbosity(logging.WARNING)
    try:
        rows = sweep.main(cli._CONFIG.value, cli._WORKDIR.value, log=_log)
    except (config_lib.ConfigError, workdir_lib.ConfigMismatchError) as e:
        _log(f"error: {e}")
        sys.exit(2)
    except Interrupted as e:
        _log(f"{e}; re-run the same command to continue the sweep")
        sys.exit(128 + e.signum)
    _log(f"{len(rows)} settings summarised in {cli._WORKDIR.value}/summary.md")


if __name__ == "__main__":
    app.run(_main, flags_parser=cli.parse_flags)
