"""Builds a (possibly stacked) cell from an experiment's `model` config section.

Two kinds of registered cell:

  one layer     (lstm, gru, conv_lstm, ...): `model.num_layers` copies are stacked
                into a `StackedCell` (layer l's output is layer l+1's input).
  whole stack   (st_lstm, causal_lstm): the cell holds every layer itself because
                state flows between layers in ways a `StackedCell` cannot express
                (PredRNN's zigzag memory). Such a cell declares it by having a
                `num_layers` hyper-parameter; `model.num_layers` becomes that
                hyper-parameter and the cell is never stacked again.
"""

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


def is_whole_stack(name: str) -> bool:
    """True if registered cell `name` holds all its layers itself (a `num_layers`
    hyper-parameter), so the factory must not stack copies of it."""
    return "num_layers" in cells.hparam_names(name)


def make_cell(model_cfg, size_field: str = "model.hidden_size", **extra_hparams) -> cells.Cell:
    """model.cell (registry name), model.hidden_size, model.num_layers, model.residual,
    model.compute_dtype and model.cell_options ("name=value,...") -> a Cell.

    `hidden_size` is passed as the cell's `hidden_size` or, for convolutional
    cells, as its number of `features`. For a whole-stack cell (module docstring)
    `model.num_layers` is the cell's own `num_layers`; giving it in
    `model.cell_options` as well, or asking for `model.residual`, is refused (one
    place says how many layers there are, and such stacks have no residual option).
    `extra_hparams` (e.g. decoupling=True) are set by the task, not the user.
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
    hparams.update(extra_hparams)
    whole_stack = is_whole_stack(name)
    if whole_stack:
        hparams = _whole_stack_hparams(model_cfg, hparams)
    try:
        if whole_stack:
            return cells.get(name, **hparams)
        return cells.stack(name, model_cfg.num_layers, residual=model_cfg.get("residual", False),
                           **hparams)
    except (TypeError, ValueError) as e:
        if size_name in str(e):
            field, value = size_field, hparams[size_name]
        elif "num_layers" in str(e):
            field, value = "model.num_layers", model_cfg.num_layers
        else:
            field, value = "model.cell_options", model_cfg.get("cell_options", "")
        raise ConfigError(field, value, f"valid hyper-parameters of cell {name!r}: {e}") from None


def _whole_stack_hparams(model_cfg, hparams: dict) -> dict:
    """hparams plus num_layers=model.num_layers; ambiguous configs raise ConfigError."""
    name = model_cfg.cell
    if "num_layers" in hparams:
        raise ConfigError("model.cell_options", model_cfg.get("cell_options", ""),
                          f"no num_layers for cell {name!r}: it is a whole stack whose layers "
                          f"are model.num_layers (= {model_cfg.num_layers})")
    if model_cfg.get("residual", False):
        raise ConfigError("model.residual", model_cfg.residual,
                          f"False for cell {name!r}: a whole stack has no residual connections")
    return dict(hparams, num_layers=model_cfg.num_layers)


def cells_with_decoupling() -> list[str]:
    """Registered cells that offer PredRNN-V2's memory decoupling term
    (`step_with_decoupling`, enabled by their `decoupling` hyper-parameter)."""
    return [name for name in cells.names()
            if callable(getattr(cells.lookup(name), "step_with_decoupling", None))
            and "decoupling" in cells.hparam_names(name)]
