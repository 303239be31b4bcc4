"""conv_lstm: input checks and errors that name the field and the value.

(Its maths is compared with PyTorch in test_torch_reference.py and with flax in
test_cells_flax_equivalence.py.)
"""

from __future__ import annotations

import re

import pytest

from rnnvision import cells
from rnnvision.testing import prng_key


@pytest.mark.parametrize("input_shape", [(5, 6), (2, 5, 6, 2)], ids=["HW", "BHWC"])
def test_init_rejects_non_frame_inputs_naming_the_shape(input_shape):
    cell = cells.get("conv_lstm", features=3, kernel_size=3)
    shown = str(tuple(input_shape)).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=rf"conv_lstm takes \(H, W, C\) inputs; got "
                                         rf"input_shape={shown}$"):
        cell.init(prng_key(0), input_shape)


_ALLOWED_INITS = "['glorot_uniform', 'lecun_normal', 'normal', 'orthogonal']"

# Each message in full: the field, the value as given, and what is allowed.
BAD_HPARAMS = [
    (dict(features=0), "features=0 must be a positive integer"),
    (dict(features=2.0), "features=2.0 must be a positive integer"),
    (dict(kernel_size=0), "kernel_size=0 must be a positive integer"),
    (dict(kernel_size=(3, -1)), "kernel_size=-1 must be a positive integer"),
    (dict(kernel_size=(3, 3, 3)), "kernel_size=(3, 3, 3) must be an int or (kh, kw)"),
    (dict(kernel_size=(3,)), "kernel_size=(3,) must be an int or (kh, kw)"),
    (dict(padding="same"),
     "padding='same'; allowed: ('SAME', 'VALID', 'SAME_LOWER') or ((lo, hi), (lo, hi))"),
    (dict(padding=((1, 1),)), "padding=((1, 1),) must be a string or two (lo, hi) pairs"),
    (dict(padding=((1, 1), (1, 1), (1, 1))),
     "padding=((1, 1), (1, 1), (1, 1)) must be a string or two (lo, hi) pairs"),
    (dict(padding=((1, 1), (1,))), "padding=((1, 1), (1,)) must be a string or two (lo, hi) pairs"),
    (dict(kernel_init="zeros"),
     f"kernel_init='zeros' is not a known initializer; allowed: {_ALLOWED_INITS}"),
    (dict(recurrent_init="ones"),
     f"recurrent_init='ones' is not a known initializer; allowed: {_ALLOWED_INITS}"),
]


@pytest.mark.parametrize("hparams,message", BAD_HPARAMS,
                         ids=[f"{'-'.join(h)}-{i}" for i, (h, _) in enumerate(BAD_HPARAMS)])
def test_bad_hyper_parameters_raise_the_full_message(hparams, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cells.get("conv_lstm", **{"features": 3, **hparams})


@pytest.mark.parametrize("padding", ["SAME", "VALID", "SAME_LOWER", ((1, 1), (0, 2))])
def test_every_documented_padding_is_accepted(padding):
    assert cells.get("conv_lstm", features=3, padding=padding).padding == padding
