"""Runs the toy task in a subprocess (device count / multi-host set by the caller).

    python run_toy.py WORKDIR OUT.npz [key=value ...]
"""

import ast
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import toy_task  # noqa: E402
from rnnvision.train import loop  # noqa: E402


def main():
    workdir, out = sys.argv[1], sys.argv[2]
    overrides = {}
    for item in sys.argv[3:]:
        key, value = item.split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    config = toy_task.get_config(**overrides)
    state, results = loop.train_and_evaluate(config, workdir)
    leaves = jax.tree.leaves(jax.device_get(state.params))
    np.savez(out, *[np.asarray(x) for x in leaves], mse=results["mse"], devices=jax.device_count())


if __name__ == "__main__":
    main()
