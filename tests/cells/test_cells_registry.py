"""Cells by name: errors that say what is valid, and values checked when a cell is built."""

import pytest

from rnnvision import cells


def test_get_builds_the_registered_class_with_hparams():
    cell = cells.get("lstm", hidden_size=7, forget_bias=2.0)
    assert isinstance(cell, cells.LSTMCell)
    assert (cell.hidden_size, cell.forget_bias) == (7, 2.0)
    assert {"hidden_size", "forget_bias", "compute_dtype"} <= set(cells.hparam_names("lstm"))


def test_unknown_name_lists_the_registered_cells():
    with pytest.raises(KeyError) as info:
        cells.get("lstn", hidden_size=4)
    for name in ("rnn", "lstm", "gru", "conv_lstm", "row_lstm"):
        assert repr(name) in str(info.value)


def test_unknown_hparam_lists_the_valid_ones():
    with pytest.raises(TypeError, match="hidden_sise") as info:
        cells.get("gru", hidden_sise=4)
    assert "'hidden_size'" in str(info.value) and "'recurrent_scale'" in str(info.value)


@pytest.mark.parametrize("name, hparams, field", [
    ("rnn", {"hidden_size": 0}, "hidden_size"),
    ("lstm", {"hidden_size": -3}, "hidden_size"),
    ("gru", {"hidden_size": 2.5}, "hidden_size"),
    ("lstm", {"recurrent_scale": 0.0}, "recurrent_scale"),
    ("lstm", {"recurrent_init": "eye"}, "recurrent_init"),
    ("gru", {"kernel_init": "zeros"}, "kernel_init"),
    ("rnn", {"compute_dtype": "int8"}, "compute_dtype"),
    ("conv_lstm", {"features": 0}, "features"),
    ("conv_lstm", {"kernel_size": (3, 0)}, "kernel_size"),
    ("conv_lstm", {"padding": "FULL"}, "padding"),
    ("row_lstm", {"mask": "C"}, "mask"),
    ("row_lstm", {"kernel_size": 4}, "kernel_size"),
    ("row_lstm", {"features": 0}, "features"),
])
def test_bad_value_names_the_field(name, hparams, field):
    with pytest.raises(ValueError, match=field):
        cells.get(name, **hparams)


def test_stack_checks_num_layers():
    with pytest.raises(ValueError, match="num_layers"):
        cells.stack("lstm", 0, hidden_size=4)
    assert cells.stack("lstm", 1, hidden_size=4) == cells.get("lstm", hidden_size=4)
    assert len(cells.stack("gru", 3, hidden_size=4).cells) == 3


def test_stack_passes_hparams_to_every_layer_and_residual_defaults_to_off():
    gru = cells.get("gru", hidden_size=5, recurrent_scale=0.5)
    assert cells.stack("gru", 2, hidden_size=5, recurrent_scale=0.5) == cells.StackedCell(
        cells=(gru, gru), residual=False)
    assert cells.stack("gru", 3, residual=True, hidden_size=5, recurrent_scale=0.5) == (
        cells.StackedCell(cells=(gru, gru, gru), residual=True))


def test_register_rejects_non_cells_and_name_clashes():
    with pytest.raises(TypeError, match="subclass"):
        cells.register("not_a_cell", dict)
    with pytest.raises(ValueError, match="already registered"):
        cells.register("lstm", cells.GRUCell)
    cells.register("lstm", cells.LSTMCell)  # the same class again is a no-op
    assert cells.lookup("lstm") is cells.LSTMCell
