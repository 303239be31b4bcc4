"""Weights between rnnvision cells and PyTorch's `torch.nn.LSTM` / `torch.nn.GRU`.

    cell = rnnvision.cells.get("lstm", hidden_size=H)
    params = from_torch(cell, torch.nn.LSTM(I, H))        # torch module -> our params
    module = to_torch(cell, params)                       # our params -> a torch.nn.LSTM
    carry = carry_from_torch(cell, (h0, c0))              # torch (h, c) state -> our carry

Layouts (H hidden size, I input size; torch stores `y = x W^T`, we store `y = x W`):

  lstm  torch weight_ih_l0 (4H, I), weight_hh_l0 (4H, H), bias_ih_l0, bias_hh_l0 (4H,),
        gate order i, f, g, o (ours too)  ->  w_x = W_ih^T, w_h = W_hh^T,
        b = b_ih + b_hh (the two biases are only ever summed). `to_torch` puts the
        whole of b in bias_ih_l0 and zeros in bias_hh_l0.
  gru   torch weight_ih_l0 (3H, I), weight_hh_l0 (3H, H), bias_ih_l0, bias_hh_l0 (3H,),
        gate order r, z, n (ours too)  ->  w_x = W_ih^T, w_h = W_hh^T, b_x = b_ih,
        b_h = b_hh (kept apart: b_hn sits inside the reset product r * (h W_hn + b_hn)).

Only single-layer, unidirectional modules without `proj_size` map onto one cell.
Modules with `bias=False` give zero biases. torch's carry is (h, c) with a
leading num_layers axis; ours is LSTMCarry(c, h) (see `carry_from_torch`).
torch is imported only when these functions are called.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnvision.cells.base import Cell, Params
from rnnvision.cells.gru import GRUCell
from rnnvision.cells.lstm import LSTMCarry, LSTMCell

# Cell type -> the torch.nn class it maps to.
_TORCH_CLASS = {LSTMCell: "LSTM", GRUCell: "GRU"}


def from_torch(cell: Cell, module: Any) -> Params:
    """Our params for `cell` (an lstm or gru) from a single-layer torch.nn.LSTM / GRU.

    Raises:
      TypeError: a cell type without interop, or a module of the wrong class.
      ValueError: a multi-layer, bidirectional or proj_size module, or one whose
        hidden size differs from the cell's.
    """
    torch = _import_torch()
    _check_module(cell, module, torch)
    w_ih, w_hh = _numpy(module.weight_ih_l0), _numpy(module.weight_hh_l0)
    zeros = np.zeros(w_ih.shape[0], np.float32)
    b_ih = _numpy(module.bias_ih_l0) if module.bias else zeros
    b_hh = _numpy(module.bias_hh_l0) if module.bias else zeros
    if isinstance(cell, LSTMCell):
        params = {"w_x": w_ih.T, "w_h": w_hh.T, "b": b_ih + b_hh}
    else:
        params = {"w_x": w_ih.T, "w_h": w_hh.T, "b_x": b_ih, "b_h": b_hh}
    params = {k: jnp.asarray(v) for k, v in params.items()}
    _check_params(cell, params)
    return params


def to_torch(cell: Cell, params: Params, *, batch_first: bool = True) -> Any:
    """A new torch.nn.LSTM / GRU (float32, CPU) computing what `cell` computes with `params`.

    batch_first: the layout of the module's inputs and outputs (ours is batch-major).
    """
    torch = _import_torch()
    cls_name = _torch_class(cell)
    _check_params(cell, params)
    size_in = params["w_x"].shape[0]
    module = getattr(torch.nn, cls_name)(size_in, cell.hidden_size, batch_first=batch_first)
    if isinstance(cell, LSTMCell):
        b_ih, b_hh = params["b"], np.zeros_like(params["b"])
    else:
        b_ih, b_hh = params["b_x"], params["b_h"]
    with torch.no_grad():
        for name, value in (("weight_ih_l0", np.asarray(params["w_x"]).T),
                            ("weight_hh_l0", np.asarray(params["w_h"]).T),
                            ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh)):
            getattr(module, name).copy_(torch.from_numpy(np.array(value, np.float32)))
    return module


def carry_from_torch(cell: Cell, state: Any) -> Any:
    """Our carry from torch's state: (h, c) for LSTM, h for GRU, each (1, B, H)."""
    _torch_class(cell)
    if isinstance(cell, LSTMCell):
        h, c = state
        return LSTMCarry(c=jnp.asarray(_numpy(c)[0]), h=jnp.asarray(_numpy(h)[0]))
    return jnp.asarray(_numpy(state)[0])


def carry_to_torch(cell: Cell, carry: Any) -> Any:
    """torch's state from our carry: (h, c) for LSTM, h for GRU, each (1, B, H)."""
    torch = _import_torch()
    _torch_class(cell)

    def as_torch(a):  # (B, H) -> (num_layers=1, B, H)
        return torch.from_numpy(np.array(a, np.float32)[None])

    if isinstance(cell, LSTMCell):
        return as_torch(carry.h), as_torch(carry.c)
    return as_torch(carry)


# -- checks -----------------------------------------------------------------------

def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("rnnvision.interop needs PyTorch: pip install 'rnnvision[torch]'") from e
    return torch


def _torch_class(cell: Cell) -> str:
    # Exact types: a subclass may change the equations, so it must opt in.
    if type(cell) not in _TORCH_CLASS:
        supported = ", ".join(f"{c.__name__} <-> torch.nn.{n}" for c, n in _TORCH_CLASS.items())
        raise TypeError(f"no PyTorch interop for {type(cell).__name__}; supported: {supported}")
    return _TORCH_CLASS[type(cell)]


def _check_module(cell: Cell, module: Any, torch) -> None:
    cls_name = _torch_class(cell)
    expected = getattr(torch.nn, cls_name)
    if not isinstance(module, expected):
        raise TypeError(f"{type(cell).__name__} maps to torch.nn.{cls_name}; "
                        f"got {type(module).__name__}")
    if module.num_layers != 1:
        raise ValueError(f"num_layers={module.num_layers}: one cell maps one layer; convert each "
                         "layer of a multi-layer module on its own (or use rnnvision.cells.stack)")
    if module.bidirectional:
        raise ValueError("bidirectional=True: convert each direction to its own cell "
                         "(see rnnvision.recurrence.bidirectional)")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"proj_size={module.proj_size}: LSTMs with projections have no "
                         "rnnvision cell")
    if module.hidden_size != cell.hidden_size:
        raise ValueError(f"the module's hidden_size={module.hidden_size} differs from the cell's "
                         f"hidden_size={cell.hidden_size}")


def _check_params(cell: Cell, params: Params) -> None:
    """params must have exactly the names and shapes `cell.init` gives for their input size."""
    if not isinstance(params, dict) or np.ndim(params.get("w_x")) != 2:
        raise ValueError(f"expected {type(cell).__name__} params with a 2-D 'w_x'; got {params!r}")
    size_in = params["w_x"].shape[0]
    expected = jax.eval_shape(lambda key: cell.init(key, (size_in,)), jax.random.key(0))
    got = {k: tuple(np.shape(v)) for k, v in params.items()}
    want = {k: tuple(v.shape) for k, v in expected.items()}
    if got != want:
        raise ValueError(f"{type(cell).__name__}(hidden_size={cell.hidden_size}) params for "
                         f"input size {size_in} must have shapes {want}; got {got}")


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().to(dtype=_import_torch().float32).numpy()
