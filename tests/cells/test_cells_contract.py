"""Every built-in cell, in every variant that changes its code path, passes check_cell."""

import pytest

from rnnvision import cells
from rnnvision.testing import check_cell

# Sizes are shared across the test files so JAX's compilation cache is reused.
# I != H on purpose: a kernel used the wrong way round fails on shapes.
I, H = 3, 4
IMAGE = (5, 6, 2)  # (H, W, C) of conv_lstm steps
ROW = (7, 2)       # (W, C) of row_lstm steps

CASES = {
    "rnn": (lambda: cells.get("rnn", hidden_size=H), (I,)),
    "lstm": (lambda: cells.get("lstm", hidden_size=H), (I,)),
    "gru": (lambda: cells.get("gru", hidden_size=H), (I,)),
    "conv_lstm-k3-SAME": (lambda: cells.get("conv_lstm", features=3, kernel_size=3), IMAGE),
    "conv_lstm-k3-VALID":
        (lambda: cells.get("conv_lstm", features=3, kernel_size=3, padding="VALID"), IMAGE),
    "conv_lstm-k5-SAME": (lambda: cells.get("conv_lstm", features=3, kernel_size=5), IMAGE),
    "conv_lstm-k5-VALID":
        (lambda: cells.get("conv_lstm", features=3, kernel_size=5, padding="VALID"), IMAGE),
    "row_lstm-mask-None": (lambda: cells.get("row_lstm", features=3, mask=None), ROW),
    "row_lstm-mask-A": (lambda: cells.get("row_lstm", features=3, mask="A"), ROW),
    "row_lstm-mask-B": (lambda: cells.get("row_lstm", features=3, mask="B"), ROW),
    # The residual connection applies where input and output shapes agree: layer 2.
    "stacked-lstm-2-residual": (lambda: cells.stack("lstm", 2, residual=True, hidden_size=H), (I,)),
    "lstm-bfloat16": (lambda: cells.get("lstm", hidden_size=H, compute_dtype="bfloat16"), (I,)),
}
# The float64 finite-difference check costs most of the time (three compilations
# per cell), so by default it runs on one case per kind of cell (conv_lstm and
# row_lstm share the custom-gradient convolution of rnnvision.cells.conv);
# `-m slow` runs it on all.
GRADIENTS_BY_DEFAULT = ("lstm", "gru", "conv_lstm-k3-VALID", "row_lstm-mask-A")
STEPS = 3  # enough for the carry to pass through steps; compile time grows with it
BUILTIN = ("rnn", "lstm", "gru", "conv_lstm", "row_lstm")


@pytest.mark.parametrize("case", CASES)
def test_check_cell(case):
    make_cell, input_shape = CASES[case]
    check_cell(make_cell(), input_shape, steps=STEPS, check_gradients=case in GRADIENTS_BY_DEFAULT)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(set(CASES) - set(GRADIENTS_BY_DEFAULT)))
def test_check_cell_gradients(case):
    make_cell, input_shape = CASES[case]
    check_cell(make_cell(), input_shape, steps=STEPS)


def test_every_builtin_cell_is_registered_and_covered():
    covered = {case.split("-")[0] for case in CASES}
    assert set(BUILTIN) <= set(cells.names())
    assert set(BUILTIN) <= covered
