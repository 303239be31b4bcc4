"""Runs the toy task in a subprocess (device count / multi-host set by the caller).

    python run_toy.py OUTDIR '{"NAME": {"key": value, ...}, ...}'

Each NAME is one run, in the workdir OUTDIR/NAME with the config overrides given
(several runs share the process, so JAX starts once); the key "_workdir" names another
workdir (the hosts of a multi-process run share one). Its final parameters, streaming
state (as rows of the global batch, if any), evaluation mse and device count go to
OUTDIR/NAME.npz.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import toy_task  # noqa: E402
from rnnvision.train import loop  # noqa: E402


def run(outdir: str, name: str, overrides: dict) -> None:
    overrides = dict(overrides)
    workdir = overrides.pop("_workdir", os.path.join(outdir, name))
    state, results = loop.train_and_evaluate(toy_task.get_config(**overrides), workdir)
    params = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]
    # The stream is stacked (devices, rows per device, ...): as rows of the global batch.
    stream = [np.asarray(x).reshape((-1,) + np.shape(x)[2:])
              for x in jax.tree.leaves(jax.device_get(state.stream))]
    np.savez(os.path.join(outdir, f"{name}.npz"), *params,
             **{f"stream_{i}": s for i, s in enumerate(stream)},
             mse=results["mse"], devices=jax.device_count())


def main():
    outdir, runs = sys.argv[1], json.loads(sys.argv[2])
    for name, overrides in runs.items():
        run(outdir, name, overrides)


if __name__ == "__main__":
    main()
