r"""Existing workdirs and sweep directories side by side: one table, one set of figures.

    python -m experiments.compare DIR_A DIR_B ... [--out=DIR] [--metric=accuracy]

Each grid point of a sweep directory and each single-run workdir is a row (n_seeds,
mean/std/min/max of every results.json number, parameters, timing); the columns before
them are the config fields that differ between the rows. The table is printed; with
--out, DIR/compare.csv, DIR/compare.md and DIR/figures/ (learning curves with a band
over seeds, the main metric with error bars) are written too. Exit code 2 when a
directory holds no run.
"""

import sys

from absl import app, flags

from rnnvision.sweep import compare

_OUT = flags.DEFINE_string("out", None, "Directory for compare.csv, compare.md and figures/.")
_METRIC = flags.DEFINE_string("metric", "", "The main metric (default: the first sweep's, "
                              "else the first run config's eval.main_metric, else loss).")


def main(argv: list[str]) -> None:
    directories = argv[1:]
    if not directories:
        print("error: name at least one workdir or sweep directory", file=sys.stderr)
        sys.exit(2)
    try:
        _, text = compare.compare(directories, out=_OUT.value, metric=_METRIC.value)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)


if __name__ == "__main__":
    app.run(main)
