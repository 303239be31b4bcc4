r"""Video classification: a CNN reads every frame, a recurrence reads the frames in order.

Command (the offline quick-start; synthetic digits, no download):
  python -m experiments.video_classification --config=configs/video_classification.py \
      --workdir=/tmp/video_cls

The CPU bar (real digits, ../shared/data/mnist: the first 7000 make the training
videos, the last 1000 the fixed evaluation set of 1000 videos):
  python -m experiments.video_classification --config=configs/video_classification.py:real \
      --workdir=/tmp/video_cls_real
  python -m experiments.video_classification \
      --config=configs/video_classification.py:order_blind,real --workdir=/tmp/video_cls_blind

The data (`rnnvision/data/video_actions.py` documents it): videos of 8-20 frames
(padded to 20) of one digit doing one of ten actions on a 48x48 canvas: four pairs of
classes that are exact time-reverses of each other (move right/left, down/up,
grow/shrink, rotate cw/ccw) and a spin pair that differs only in its first 6 frames.
An order-blind model is at best at chance inside each pair (<= 50%).

Variants, combinable with commas (e.g. `configs/video_classification.py:gru,real`):
  real           real MNIST t10k[0:8000] digits from IDX files: first 7000 for the
                 training videos, last 1000 for the fixed evaluation set
  gru            GRU cell instead of LSTM
  rnn            tanh RNN cell
  bidirectional  a second copy of the cell reads the frames backwards
  conv_lstm      the ConvLSTM classifier: the frames' feature maps go through a
                 conv_lstm cell, pooled over space at the last frame
  order_blind    the baseline: the same CNN, frame features averaged over time, an MLP
  ucf101         UCF101 (TFDS `ucf101`, split 1), 16 frames per video evenly spaced;
                 sized for one GPU, trained from scratch (see "UCF101" below)
  smoke          tiny and fast, for tests

Default model and why (LRCN, Donahue et al. 2015, sized for a 2-core CPU):
  SMALL_FRAME_CNN-like ResNet per frame (4x4 patches to a 12x12 grid, stages of 8, 16
  and 32 channels, no normalisation: GroupNorm cost 1.4-2x per step), its 3x3x32 map
  flattened into D = 128 features (the flattening keeps *where* things are, which the
  moves need), an LSTM of 128 units, a linear classifier at each video's last frame.
  Learning rate 2e-3 (cosine), batch 32, 2000 steps: about 5.5 minutes on 2 cores,
  a third of the 15-minute bar's budget, with accuracy at 0.98 (below).

UCF101 (real videos; TFDS downloads and prepares ~6.5 GB on first use, needs
`pip install -e ".[tfds]"`):
  python -m experiments.video_classification --config=configs/video_classification.py:ucf101 \
      --workdir=runs/video_cls_ucf101
  Published for scale: LRCN (Donahue et al., 2015, Table 1, split 1) reaches 68.2% from
  RGB frames alone (LRCN-fc6, a CaffeNet pre-trained on ImageNet, 16-frame clips) and
  about 82-83% fused with optical flow; a single-frame CNN on RGB 67.4%. This config
  trains its ResNet from scratch on RGB frames only, so expect well below those; it has
  not been run in this repository (no GPU so far).

Expected results (`real`, 2-core AMD EPYC VM, 2026-12-01, JAX 0.10.2; the fixed
evaluation set of 1000 videos from the held-out digit pool; another job shared the
machine, so the times are upper bounds):
  default (LSTM 128):  accuracy 0.982, pair accuracy 0.989, NLL 0.057;
                       2000 steps in 5 min 34 s wall (5 min 44 s CPU); 189,234 parameters
  order_blind:         accuracy 0.397, pair accuracy 0.817 (it tells the five pairs
                       apart, not the two classes inside one), NLL 1.071; 5 min 36 s; 74,162
  Early recognition (default): accuracy 0.23 after 5 frames, 0.84 after 9, 0.95 after
  12, 0.98 after 20 (`early_accuracy/frames_NN` in results.json).
  LSTM vs GRU vs tanh RNN (3 seeds each): docs/lstm_vs_gru.md.
"""

from __future__ import annotations

import ml_collections

from configs.common import apply_variants, mnist_source
from rnnvision.train.config import base_config

VARIANTS = {
    "real": "real MNIST t10k subset from IDX files, evaluation videos from the last 1000",
    "gru": "GRU cell", "rnn": "tanh RNN cell", "bidirectional": "bidirectional cell",
    "conv_lstm": "ConvLSTM classifier on the frames' feature maps",
    "order_blind": "order-blind baseline: mean frame features, an MLP",
    "ucf101": "UCF101 through TFDS, frames subsampled to a fixed count",
    "smoke": "tiny, for tests",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "video_classification"

    c.data = mnist_source(num_train=7000, num_eval=1000)  # the digit pools of the videos
    c.data.dataset = "video_actions"  # "video_actions" (digits doing actions) or "ucf101"
    c.data.canvas = 48                # video_actions: frame height and width in pixels (>= 40)
    c.data.min_frames = 8             # video_actions: shortest video
    c.data.max_frames = 20            # video_actions: longest video; every video is padded to it
    c.data.spin_frames = 6            # video_actions: frames of the spin pair's turn (>= 3, < min_frames)
    c.data.eval_video_seed = 2015     # video_actions: seed of the fixed evaluation videos
    # Training video r of step s is video s * batch_size + r of the stream seeded by `seed`.
    c.data.ucf101_config = "ucf101_1_256"  # ucf101: TFDS builder config (split 1, 256x256 frames)
    c.data.ucf101_train_split = "train"    # ucf101: TFDS split for training
    c.data.ucf101_eval_split = "test"      # ucf101: TFDS split for evaluation
    c.data.ucf101_num_frames = 16     # ucf101: frames per video, evenly spaced over it
    c.data.ucf101_image_size = 64     # ucf101: side of the square frames
    c.data.ucf101_data_dir = ""       # ucf101: TFDS data_dir ("" = TFDS default)

    c.model = ml_collections.ConfigDict()
    c.model.classifier = "recurrent"  # "recurrent" (LRCN / ConvLSTM) or "order_blind"
    c.model.frame_input = "vector"    # "vector" (LRCN: flattened CNN map -> D features) or "grid" (conv cells)
    c.model.cell = "lstm"             # any registered cell: lstm, gru, rnn ("vector"); conv_lstm ("grid")
    c.model.hidden_size = 128         # state size (channels for convolutional cells)
    c.model.num_layers = 1            # stacked layers
    c.model.residual = False          # residual connections between stacked layers
    c.model.bidirectional = False     # a backward copy of the cell reads the frames reversed
    c.model.compute_dtype = "float32" # "bfloat16" for matmuls on TPU/GPU
    c.model.cell_options = ""         # extra cell hyper-parameters: "name=value,..."
    c.model.feature_size = 128        # D: frame features fed to a vector cell (and order_blind)
    c.model.mlp_hidden = 128          # order_blind: hidden units of the MLP
    c.model.cnn_width = 8             # channels of the first ResNet stage (doubled per stage)
    c.model.cnn_stages = 3            # ResNet stages (each after the first halves the grid)
    c.model.cnn_blocks = 1            # residual blocks per stage
    c.model.cnn_stem_kernel = 4       # stem convolution kernel size
    c.model.cnn_stem_stride = 4       # stem stride: grid stride = stem_stride * (2 if pool) * 2**(stages-1)
    c.model.cnn_stem_pool = False     # 3x3 stride-2 max-pool after the stem
    c.model.cnn_norm = "none"         # "group" (GroupNorm) or "none"

    c.train.num_steps = 2000
    c.train.batch_size = 32
    c.train.log_every = 100
    c.train.eval_every = 0
    c.train.checkpoint_every = 500
    c.optim.learning_rate = 2e-3
    c.optim.schedule = "cosine"
    c.optim.clip.method = "global_norm"
    c.optim.clip.threshold = 1.0

    c.eval.batch_size = 200           # videos per evaluation batch
    c.eval.num_videos = 1000          # size of the fixed evaluation set (ucf101: 0 = the whole split)
    c.eval.num_figure_videos = 10     # evaluation videos in the frame strip (the first 10: one per class)
    c.eval.main_metric = "accuracy"   # results.json entry sweeps and comparisons rank by

    return apply_variants(c, arg, VARIANTS, _apply_variant)


def _apply_variant(c: ml_collections.ConfigDict, name: str) -> None:
    if name in ("gru", "rnn"):
        c.model.cell = name
    elif name == "bidirectional":
        c.model.bidirectional = True
    elif name == "conv_lstm":
        c.model.frame_input, c.model.cell = "grid", "conv_lstm"
        c.model.hidden_size = 32
        c.model.cell_options = "kernel_size=3"
    elif name == "order_blind":
        c.model.classifier = "order_blind"
    elif name == "ucf101":
        _ucf101(c)
    elif name == "smoke":
        c.data.num_train, c.data.num_eval = 64, 32
        c.data.canvas, c.data.min_frames, c.data.max_frames, c.data.spin_frames = 40, 4, 6, 3
        c.data.ucf101_num_frames, c.data.ucf101_image_size = 4, 32
        c.model.hidden_size, c.model.feature_size, c.model.mlp_hidden = 8, 16, 8
        c.model.cnn_width, c.model.cnn_stages = 8, 2
        c.train.num_steps, c.train.batch_size = 6, 8
        c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 2, 0, 3
        c.train.progress = False
        c.optim.warmup_steps = 1
        c.eval.batch_size, c.eval.num_videos, c.eval.num_figure_videos = 8, 20, 3


def _ucf101(c: ml_collections.ConfigDict) -> None:
    """UCF101 split 1 (9537 training, 3783 test videos, 101 classes), RGB frames."""
    c.data.dataset = "ucf101"
    c.model.cnn_width, c.model.cnn_stages, c.model.cnn_blocks = 32, 4, 2
    c.model.cnn_stem_kernel, c.model.cnn_stem_stride, c.model.cnn_stem_pool = 7, 2, True
    c.model.cnn_norm = "group"
    c.model.feature_size, c.model.hidden_size = 256, 256
    c.train.num_steps, c.train.batch_size = 20_000, 32
    c.train.checkpoint_every, c.train.eval_every = 2000, 5000
    c.optim.learning_rate, c.optim.schedule, c.optim.warmup_steps = 1e-3, "warmup_cosine", 500
    c.eval.batch_size, c.eval.num_videos = 100, 0
