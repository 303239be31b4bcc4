"""Functional recurrent cells and their registry.

    cell = rnnvision.cells.get("lstm", hidden_size=256)
    params = cell.init(key, (input_size,))
    carry = cell.initial_carry(params, (batch, input_size))
    carry, y = cell.step(params, carry, x)

Registered: rnn, lstm, gru, conv_lstm, row_lstm, diagonal_bilstm (PixelRNN), st_lstm
(PredRNN), causal_lstm (PredRNN++). Add one with `register`.
"""

from rnnvision.cells.base import Array, Carry, Cell, Params
from rnnvision.cells.causal_lstm import CausalLSTMCell
from rnnvision.cells.conv_lstm import ConvLSTMCell
from rnnvision.cells.diagonal_bilstm import DiagonalBiLSTMCell
from rnnvision.cells.gru import GRUCell
from rnnvision.cells.lstm import LSTMCarry, LSTMCell
from rnnvision.cells.registry import get, hparam_names, lookup, names, register
from rnnvision.cells.rnn import SimpleRNNCell
from rnnvision.cells.row_lstm import RowLSTMCell
from rnnvision.cells.st_lstm import STLSTMCell
from rnnvision.cells.stacked import StackedCell

register("rnn", SimpleRNNCell)
register("lstm", LSTMCell)
register("gru", GRUCell)
register("conv_lstm", ConvLSTMCell)
register("row_lstm", RowLSTMCell)
register("diagonal_bilstm", DiagonalBiLSTMCell)
register("st_lstm", STLSTMCell)
register("causal_lstm", CausalLSTMCell)


def stack(name: str, num_layers: int, residual: bool = False, **hparams) -> Cell:
    """`num_layers` copies of cell `name` as one StackedCell (the cell itself if 1)."""
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers={num_layers!r} must be an integer >= 1")
    if num_layers == 1:
        return get(name, **hparams)
    return StackedCell(cells=tuple(get(name, **hparams) for _ in range(num_layers)),
                       residual=residual)


__all__ = ["Array", "Carry", "CausalLSTMCell", "Cell", "ConvLSTMCell", "DiagonalBiLSTMCell",
           "GRUCell", "LSTMCarry", "LSTMCell", "Params", "RowLSTMCell", "STLSTMCell",
           "SimpleRNNCell", "StackedCell", "get",
           "hparam_names", "lookup", "names", "register", "stack"]
