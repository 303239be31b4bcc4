"""Builds a (possibly stacked) cell from an experiment's `model` config section."""

from __future__ import annotations

import ast

from rnnvision import cells
from rnnvision.config_checks import ConfigError


def parse_options(text: str, field: str = "model.cell_options") -> dict:
    """"mask='A',kernel_size=5" -> {"mask": "A", "kernel_size": 5} (bare words stay strings)."""
    options = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise ConfigError(field, text, "comma-separated name=value pairs, e.g. mask=A,kernel_size=5")
        name, value = (s.strip() for s in item.split("=", 1))
        try:
            options[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[name] = value
    return options


def make_cell(model_cfg, size_field: str = "model.hidden_size") -> cells.Cell:
    """model.cell (registry name), model.hidden_size, model.num_layers, model.residual,
    model.compute_dtype and model.cell_options ("name=value,...") -> a Cell.

    `hidden_size` is passed as the cell's `hidden_size` or, for convolutional
    cells, as its number of `features`.
    """
    name = model_cfg.cell
    if name not in cells.names():
        raise ConfigError("model.cell", name, f"a registered cell: {cells.names()}")
    if not isinstance(model_cfg.num_layers, int) or model_cfg.num_layers < 1:
        raise ConfigError("model.num_layers", model_cfg.num_layers, "an integer >= 1")
    hparams = parse_options(model_cfg.get("cell_options", ""))
    size_name = "hidden_size" if "hidden_size" in cells.hparam_names(name) else "features"
    hparams.setdefault(size_name, model_cfg.hidden_size)
    hparams.setdefault("compute_dtype", model_cfg.get("compute_dtype", "float32"))
    try:
        return cells.stack(name, model_cfg.num_layers, residual=model_cfg.get("residual", False),
                           **hparams)
    except (TypeError, ValueError) as e:
        field = size_field if size_name in str(e) else "model.cell_options"
        raise ConfigError(field, hparams, f"valid hyper-parameters of cell {name!r}: {e}") from None
