r"""PixelRNN: binarised MNIST (or CIFAR-10) modelled pixel by pixel, with an exact NLL.

Command (the offline quick-start; synthetic digits, no download):
  python -m experiments.pixel_rnn --config=configs/pixel_rnn.py --workdir=/tmp/pixel_rnn

The CPU bar (real digits, ../shared/data/mnist: first 7000 train, last 1000 evaluate):
  python -m experiments.pixel_rnn --config=configs/pixel_rnn.py:real --workdir=/tmp/pixel_rnn_real

Variants, combinable with commas (e.g. `configs/pixel_rnn.py:diagonal,real`):
  real      real MNIST t10k[0:8000] digits from IDX files: first 7000 train, last 1000
            (binarised once, fixed seed) evaluate
  tfds      MNIST through TFDS (downloads on first use; full 60k / 10k)
  diagonal  Diagonal BiLSTM layers instead of Row LSTM, with the steps that fit the
            same CPU budget
  cifar10   CIFAR-10 through TFDS (256-way softmax per channel, the paper's R -> G -> B
            channel masks), sized for one GPU; the paper reports 3.07 bits/dim (Row
            LSTM) and 3.00 (Diagonal BiLSTM) on the test set, 12-layer models after long
            GPU training; not yet run here
  smoke     tiny and fast, for tests

Expected results (`real`, 2-core AMD EPYC VM, 2026-12-01, JAX 0.10.2; NLL in nats per
28x28 image on the 1000 held-out digits, binarised once; other jobs shared the 2 cores
throughout, so the wall times are upper bounds):
  default (Row LSTM, 1 layer, h = 32):  NLL 91.2 after 1000 steps (about 5 minutes in),
      88.55 after 5000 (0.163 bits/dim) in 20 min 36 s wall; 46,529 parameters
  diagonal (Diagonal BiLSTM, 1 layer, h = 32, 1400 steps):  NLL 89.73 in 24 min 52 s
      wall (a step costs 3.5-5x the Row LSTM's); 42,561 parameters
  independent-pixel baseline (each pixel its training mean): 213.2
  Sampling 16 digits (`python -m benchmarks.pixel_rnn_speed --layers=1 --features=32
  --head=64 --batch=32`): Row LSTM 3.1 s the first time (compilation included), 0.09 s
  after; Diagonal BiLSTM 2.5 s / 0.07 s.
  For scale, the paper (van den Oord et al., 2016) reports 80.75 (Diagonal BiLSTM, 1
  layer) and 79.20 (7 layers) on the standard binarised MNIST after long GPU training.
"""

from __future__ import annotations

import ml_collections

from configs.common import apply_variants, mnist_source
from rnnvision.train.config import base_config

VARIANTS = {
    "real": "real MNIST t10k subset from IDX files", "tfds": "MNIST via TFDS",
    "diagonal": "Diagonal BiLSTM layers, steps for the same budget",
    "cifar10": "CIFAR-10 via TFDS, 256-way softmax, sized for a GPU", "smoke": "tiny, for tests",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "pixel_rnn"

    c.data = mnist_source(num_train=7000, num_eval=1000)  # synthetic pools as large as `real`'s
    c.data.dataset = "binarized_mnist"  # "binarized_mnist" (any data.source) or "cifar10" (tfds)

    c.model = ml_collections.ConfigDict()
    c.model.layer = "row_lstm"        # "row_lstm" or "diagonal_bilstm"
    c.model.num_layers = 1            # recurrent layers, each with a residual connection
    c.model.features = 32             # h: state size of every layer (the residual stream is 2h)
    c.model.head_features = 64        # hidden width of the 1x1 output head
    c.model.input_kernel = 7          # the first, mask-A convolution (7x7 as in the paper)
    c.model.row_kernel = 3            # Row LSTM: taps of its 1-D row convolutions
    c.model.compute_dtype = "float32"  # matmuls/convolutions ("bfloat16" on TPU/GPU)

    c.train.num_steps = 5000
    c.train.batch_size = 32
    c.train.log_every = 100
    c.train.eval_every = 1000         # the NLL of the evaluation set along the run
    c.train.checkpoint_every = 1000
    c.optim.learning_rate = 2e-3
    c.optim.schedule = "cosine"
    c.optim.clip.method = "global_norm"
    c.optim.clip.threshold = 1.0      # on the gradient of the loss in nats per pixel

    c.eval.batch_size = 500           # evaluation chunk (images)
    c.eval.num_images = 0             # 0 = the whole evaluation set; n = its first n images
    c.eval.num_samples = 64           # samples.png: new images drawn
    c.eval.num_completions = 8        # completions.png: evaluation images completed
    c.eval.completion_samples = 5     # completions drawn for each of them
    c.eval.sample_seed = 0            # the noise of samples and completions
    c.eval.main_metric = "nll_nats"   # results.json entry sweeps and comparisons rank by

    return apply_variants(c, arg, VARIANTS, _apply_variant)


def _apply_variant(c: ml_collections.ConfigDict, name: str) -> None:
    if name == "tfds":
        c.data.source = "tfds"
    elif name == "diagonal":
        c.model.layer = "diagonal_bilstm"
        if c.data.dataset == "binarized_mnist":
            # The same CPU budget as the Row LSTM's 5000 steps: a step costs 3.5x as much
            # (h = 32, batch 32, 2 cores).
            c.train.num_steps = 1400
            c.train.eval_every = c.train.checkpoint_every = 350
    elif name == "cifar10":
        c.data.dataset, c.data.source = "cifar10", "tfds"
        c.model.num_layers, c.model.features, c.model.head_features = 7, 96, 96
        c.train.num_steps, c.train.batch_size = 100000, 64
        c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 500, 10000, 5000
        c.optim.learning_rate = 1e-3
        c.eval.num_samples, c.eval.num_completions = 36, 6
    elif name == "smoke":
        c.data.num_train, c.data.num_eval = 64, 24
        c.model.features, c.model.head_features, c.model.input_kernel = 4, 8, 3
        c.train.num_steps, c.train.batch_size = 6, 8
        c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 2, 0, 3
        c.train.progress = False
        c.eval.batch_size = 16
        c.eval.num_samples, c.eval.num_completions, c.eval.completion_samples = 4, 2, 2
