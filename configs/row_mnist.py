r"""Sequential (row-by-row) MNIST classification.

Command (the offline quick-start; synthetic digits, no download):
  python -m experiments.row_mnist --config=configs/row_mnist.py --workdir=/tmp/row_mnist

Variants, combinable with commas (e.g. `configs/row_mnist.py:gru,real`):
  real      the real MNIST t10k[0:8000] subset in ../shared/data/mnist (IDX files),
            first 7000 train, last 1000 evaluation
  tfds      MNIST through TFDS (downloads on first use; full 60k/10k)
  gru       GRU cell instead of LSTM
  rnn       tanh RNN cell
  row_lstm  the PixelRNN Row LSTM (a row of feature vectors as the state)
  pixels    784 steps of one pixel (long-range; slow on CPU)
  permuted  pixels in a fixed random order
  smoke     a few tiny steps, for tests

Expected (2-core CPU, 2026-11-22, see README "Results"): the default LSTM on
`real` reaches >= 97% evaluation accuracy in under 10 minutes.
"""

from __future__ import annotations

import ml_collections

from configs.common import apply_variants, mnist_source
from rnnvision.train.config import base_config

VARIANTS = {
    "real": "real MNIST t10k subset from IDX files", "tfds": "MNIST via TFDS",
    "gru": "GRU cell", "rnn": "tanh RNN cell", "row_lstm": "PixelRNN Row LSTM",
    "pixels": "784 one-pixel steps", "permuted": "permuted pixels", "smoke": "tiny, for tests",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "row_mnist"

    c.data = mnist_source(num_train=20000, num_eval=2000)
    c.data.augment_shift = 2          # random translation of training digits, in pixels
    c.data.permutation_seed = 92916   # permuted: the fixed pixel order

    c.model = ml_collections.ConfigDict()
    c.model.cell = "lstm"             # any registered cell: lstm, gru, rnn, row_lstm, ...
    c.model.hidden_size = 128         # state size (features for convolutional cells)
    c.model.num_layers = 1            # stacked layers
    c.model.residual = False          # residual connections between stacked layers
    c.model.input = "rows"            # "rows" (28x28), "pixels" (784x1) or "permuted"
    c.model.compute_dtype = "float32" # "bfloat16" for matmuls on TPU/GPU
    c.model.cell_options = ""         # extra cell hyper-parameters: "name=value,..."

    c.train.num_steps = 3000
    c.train.batch_size = 128
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.optim.learning_rate = 2e-3
    c.optim.schedule = "cosine"
    c.optim.clip.method = "global_norm"
    c.optim.clip.threshold = 1.0
    c.eval.batch_size = 500
    c.eval.main_metric = "accuracy"   # results.json entry sweeps and comparisons rank by

    return apply_variants(c, arg, VARIANTS, _apply_variant)


def _apply_variant(c: ml_collections.ConfigDict, name: str) -> None:
    if name == "tfds":
        c.data.source = "tfds"
    elif name in ("gru", "rnn", "row_lstm"):
        c.model.cell = name
        if name == "row_lstm":
            c.model.hidden_size = 16
    elif name in ("pixels", "permuted"):
        c.model.input = name
        c.data.augment_shift = 0
        c.train.num_steps = 20000
        c.train.batch_size = 64
    elif name == "smoke":
        c.data.num_train, c.data.num_eval = 256, 64
        c.model.hidden_size = 16
        c.train.num_steps, c.train.batch_size = 6, 16
        c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 2, 0, 3
        c.train.progress = False
        c.eval.batch_size = 32
