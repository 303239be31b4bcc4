r"""Truncated-BPTT and gradient-clipping ablation: a sweep of normal rnnvision runs.

Command (the default: the 20-minute CPU sweep behind the README's results):
  python -m experiments.tbptt_ablation --config=configs/tbptt_ablation.py --workdir=/tmp/tbptt

Writes DIR/summary.csv, DIR/summary.md, DIR/figures/*.png, DIR/grad_bias/*.csv,
DIR/memory.csv and one normal workdir per sub-run in DIR/runs/<setting>/seed<i>. Each
study is a grid of rnnvision.sweep over train.truncation and optim.clip.method/threshold
with seeds (DIR/sweep.json records them; a changed study in an existing DIR is refused).
Re-running the command continues an interrupted sweep. Shard over processes or
machines with --config.sweep.shard=i/n (each shard runs its part and rebuilds the
summary from what exists), then run once with --config.sweep.stage=report for the
gradient-bias and memory analyses and the final summary. Shards on machines without a
shared DIR: copy their DIR/runs/* into one DIR before the report stage.

Variants (combinable with commas, e.g. `:pixel_mnist,smoke`):
  (none)               studies copy + clip + clip_trunc; gradient bias on copy; memory
  pixel_mnist          pixel-by-pixel MNIST (784 steps, loss at the end) instead
  moving_mnist_stream  100-frame Moving-MNIST next-frame prediction, streaming TBPTT(k, k)
  paper                the grid one would run in a paper (GPU/TPU): k = 1..32 and full x
                       none / global norm 0.25, 1, 4 / value / adaptive x 5 seeds, bigger models
  smoke                tiny everything, for tests (seconds)
  Study-picking variants (pixel_mnist, moving_mnist_stream) can be combined with each
  other and with the default studies via --config.sweep.studies=copy,clip,pixel.

Studies of the default variant (each a grid k x clip x seeds of normal runs):
  copy        copy task, dependency L = 20 (symbol at step 0, recall at step 19, loss
              there only; rnnvision/tasks/probes.py), LSTM(64), Adam 3e-3, clip global
              norm 1, k = 1, 5, 10, 19, 20 (= L = T, i.e. full BPTT), 2 seeds, 300 steps.
  clip        adding task L = 20, tanh RNN(64) with recurrent spectral radius 2.5 at init,
              SGD lr 0.05, full BPTT, clip none / global norm 1, 10 / value 0.1 /
              adaptive 0.1, 2 seeds, 500 steps.
  clip_trunc  the same without clipping but with truncation k = 4.
  grad_bias   at init and at every checkpoint (steps 100, 200, 300) of copy k=20 seed 0:
              truncated vs full gradient for k = 1, 2, 4, 5, 10, 19, 20 on 256 sequences.
  memory      compiled peak memory of an LSTM(128) step, batch 32, 64 features,
              T = 64, 256, 1024: full / truncated in-graph / streaming window / remat, k = 32.

Measured 2026-11-30 on a 2-core x86-64 CPU VM, no other jobs: 97 s wall (127 s CPU)
for the default. Expected and found (tables in docs/results_ablation.md, figures in
DIR/figures/):
  copy cliff   final accuracy k = 1, 5, 10, 19: 0.22, 0.19, 0.32, 0.22 (chance 0.125;
               the small leak is explained in probes.py); k = 20: 1.00 (99% by step 160).
  grad bias    cosine(truncated, full) at init for k = 1, 2, 4, 5, 10, 20: 0.78, 0.83,
               0.89, 0.91, 0.96, 1 (k = 19 = k = 1: its last window is one step); after
               training (step 300) 0.03 .. 0.27 below k = 20: lag 19 is 53% of the gradient.
  clipping     no clipping: 2/2 runs diverge (NaN/Inf at steps 34, 44; sigma_max 2.5 ->
               1e7); global norm 1 / 10, value 0.1, adaptive 0.1: 0/2 diverge, final MSE
               0.116 / 0.089 / 0.086 / 0.094 (mean predictor 0.167); k = 4 unclipped: no
               divergence, MSE 0.155.
  memory       T = 1024: full 225 MiB, truncated in-graph 225, streaming window 7.9,
               remat 74 MiB.
Not run at full size here: pixel_mnist (CPU: hours), moving_mnist_stream (CPU: ~1 h;
one k = 10 run took 138 ms per 10-frame update under the load above), paper (GPU/TPU
days; shard it). Each ran end to end as `:<variant>,smoke`.
"""

from __future__ import annotations

import ml_collections

from configs.common import mnist_source, variants
from rnnvision.train.config import base_config

VARIANTS = {
    "pixel_mnist": "pixel-by-pixel MNIST study (784 steps, loss at the end)",
    "moving_mnist_stream": "100-frame Moving-MNIST streaming TBPTT study",
    "paper": "the large GPU/TPU grid",
    "smoke": "tiny, for tests",
}
DEFAULT_STUDIES = "copy,clip,clip_trunc"


def _run_common(c: ml_collections.ConfigDict) -> None:
    """Trainer fields every sub-run shares (a sweep runs many small runs: keep them quiet)."""
    c.train.progress = False          # no progress bar per sub-run (the sweep logs each run)
    c.train.eval_every = 0            # evaluate at the end only
    c.train.keep_checkpoints = 10     # keep the checkpoints the gradient-bias analysis reads
    c.optim.schedule = "constant"     # no decay: truncation/clipping effects stay visible
    c.eval.batch_size = 512           # evaluation batch


def probe_run(task: str, dependency: int, cell: str, hidden: int, *, optimizer: str = "adam",
              learning_rate: float = 3e-3, recurrent_scale: float = 1.0,
              steps: int = 300) -> ml_collections.ConfigDict:
    """A normal run config of a copy/adding probe (rnnvision/tasks/probes.py)."""
    c = base_config()
    c.task = task                     # "copy" or "adding"
    c.data = ml_collections.ConfigDict()
    c.data.dependency = dependency    # L: the needed input is at step 0, the loss at step L - 1
    c.data.num_symbols = 8            # copy: alphabet size (chance accuracy 1/8)
    c.data.num_copy = 1               # copy: symbols shown at step 0 and recalled at the end
    c.data.marker = False             # copy: a marker channel at step 0 (False: see probes.py)
    c.data.num_eval = 512             # evaluation sequences (one fixed set for every run)
    c.model = ml_collections.ConfigDict()
    c.model.cell = cell               # a registered dense cell: lstm, gru, rnn
    c.model.hidden_size = hidden      # state size
    c.model.num_layers = 1            # stacked layers
    c.model.residual = False          # residual connections between layers
    c.model.compute_dtype = "float32" # matmul dtype
    c.model.cell_options = (f"recurrent_scale={recurrent_scale}"  # e.g. spectral radius of W_h
                            if recurrent_scale != 1.0 else "")
    c.train.num_steps = steps         # optimizer steps
    c.train.batch_size = 64           # sequences per step
    c.train.log_every = 10            # metrics.jsonl rows (grad norms, clipping, sigma_max)
    c.train.checkpoint_every = 100    # checkpoints = the gradient-bias analysis's points
    c.optim.optimizer = optimizer     # "adam" for the cliff, "sgd" for the clipping study
    c.optim.learning_rate = learning_rate
    _run_common(c)
    return c


def pixel_mnist_run() -> ml_collections.ConfigDict:
    """Pixel-by-pixel MNIST (configs/row_mnist.py:pixels) as a sub-run config."""
    from configs.row_mnist import get_config as row_mnist_config

    c = ml_collections.ConfigDict(row_mnist_config("pixels").to_dict())
    c.model.hidden_size = 64          # LSTM state size
    c.train.num_steps = 2000          # optimizer steps (784 sequential steps each)
    c.train.batch_size = 64           # images per step
    c.train.log_every = 20            # metrics rows
    c.train.checkpoint_every = 500    # checkpoints (gradient-bias points)
    c.optim.learning_rate = 1e-3      # Adam
    _run_common(c)
    return c


def stream_run() -> ml_collections.ConfigDict:
    """Streaming next-frame prediction (rnnvision/tasks/stream_frames.py) as a sub-run config."""
    c = base_config()
    c.task = "stream_frames"
    c.data = mnist_source(num_train=2000, num_eval=500)  # the digit pools
    c.data.num_frames = 100           # T: frames per sequence (the loss is on every frame)
    c.data.num_objects = 2            # digits per video
    c.data.canvas = 64                # frame size (Moving MNIST: 64x64)
    c.data.downsample = 4             # average-pool frames by this factor (64 -> 16 px)
    c.data.num_eval_sequences = 64    # evaluation videos (whole sequences, no truncation)
    c.data.reset_at_start = True      # reset the stream at every sequence start
    c.model = ml_collections.ConfigDict()
    c.model.cell = "lstm"             # dense cells on flattened frames; conv_lstm on (h, w, 1)
    c.model.hidden_size = 256         # state size (features for conv_lstm)
    c.model.num_layers = 1            # stacked layers
    c.model.residual = False          # residual connections between layers
    c.model.compute_dtype = "float32" # matmul dtype
    c.model.cell_options = ""         # extra cell hyper-parameters "name=value,..."
    c.model.k1 = 0                    # new frames per update; 0 = k2 = train.truncation (T if 0)
    c.train.num_steps = 200           # sequence batches (x T / k1 updates: study equal_data)
    c.train.batch_size = 16           # videos per sequence batch
    c.train.log_every = 2             # metrics rows, every 2 sequence batches
    c.train.checkpoint_every = 50     # checkpoints, every 50 sequence batches
    c.optim.learning_rate = 1e-3      # Adam
    _run_common(c)
    return c


def study(run: ml_collections.ConfigDict, truncations: str, clips: str, seeds: int,
          metric: str, target: str, equal_data: bool = False) -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.run = run                       # the sub-runs' config (k, clip and seed are set per run)
    s.truncations = truncations       # comma-separated k values; "full" = full BPTT
    s.clips = clips                   # comma-separated "none" | "<method>:<threshold>"
    s.seeds = seeds                   # seeds per setting (run seed = run.seed + index)
    s.metric = metric                 # results.json entry reported as "final metric"
    s.target = target                 # "<logged metric>(>=|<=)<value>" for "steps to target"
    s.equal_data = equal_data         # streaming: run.train.num_steps counts sequence batches,
                                      # times T / k1 updates each, so every k sees equal data
    return s


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    c.sweep = ml_collections.ConfigDict()
    c.sweep.studies = DEFAULT_STUDIES  # which of c.studies to run, in order
    c.sweep.shard = "0/1"             # "i/n": run the sub-runs j with j % n == i
    c.sweep.stage = "all"             # "all" (runs + report when unsharded), "runs" or "report"
    c.sweep.measure_memory = True     # compiled memory of each setting's gradient step
    c.sweep.compilation_cache = True  # JAX's persistent compilation cache in DIR/jax_cache

    c.studies = ml_collections.ConfigDict()
    c.studies.copy = study(
        probe_run("copy", 20, "lstm", 64), truncations="1,5,10,19,20",
        clips="global_norm:1", seeds=2, metric="accuracy", target="accuracy>=0.99")
    c.studies.clip = study(
        probe_run("adding", 20, "rnn", 64, optimizer="sgd", learning_rate=0.05,
                  recurrent_scale=2.5, steps=500),
        truncations="full", clips="none,global_norm:1,global_norm:10,value:0.1,adaptive:0.1",
        seeds=2, metric="mse", target="mse<=0.1")
    c.studies.clip_trunc = study(
        probe_run("adding", 20, "rnn", 64, optimizer="sgd", learning_rate=0.05,
                  recurrent_scale=2.5, steps=500),
        truncations="4", clips="none", seeds=2, metric="mse", target="mse<=0.1")
    c.studies.pixel = study(
        pixel_mnist_run(), truncations="28,98,196,392,full", clips="global_norm:1", seeds=2,
        metric="accuracy", target="accuracy>=0.9")
    c.studies.stream = study(
        stream_run(), truncations="5,10,25,50,full", clips="global_norm:1", seeds=2,
        metric="mse", target="", equal_data=True)

    c.grad_bias = ml_collections.ConfigDict()
    c.grad_bias.study = "copy"        # study whose run is measured ("" = no analysis)
    c.grad_bias.truncation = "20"     # that run's k ...
    c.grad_bias.clip = ""             # ... clip ("" = the study's first) ...
    c.grad_bias.seed = 0              # ... and seed index
    c.grad_bias.truncations = "1,2,4,5,10,19,20"  # k values compared with full BPTT
    c.grad_bias.checkpoints = "all"   # "all" (init + every kept checkpoint) or steps "0,100"
    c.grad_bias.batch_size = 256      # the fixed batch's size
    c.grad_bias.lags = True           # also split the full gradient by time lag

    c.memory = ml_collections.ConfigDict()
    c.memory.cell = "lstm"            # cell of the memory measurement
    c.memory.hidden_size = 128        # its state size
    c.memory.batch_size = 32          # batch
    c.memory.features = 64            # input features per step
    c.memory.lengths = "64,256,1024"  # sequence lengths T ("" = no memory analysis)
    c.memory.truncation = 32          # k of the truncated and streaming modes
    c.memory.modes = "full,truncated,stream,remat"  # see rnnvision/ablation/memory.py

    picked = []
    names = variants(arg, VARIANTS)
    for name in names:
        _apply_variant(c, name, picked)
    if picked:
        c.sweep.studies = ",".join(picked)
    elif "paper" in names:  # the paper grid alone: every study
        c.sweep.studies = DEFAULT_STUDIES + ",pixel,stream"
    c.lock()
    return c


def _apply_variant(c: ml_collections.ConfigDict, name: str, picked: list[str]) -> None:
    if name == "pixel_mnist":
        picked.append("pixel")
        c.grad_bias.study, c.grad_bias.truncation = "pixel", "full"
        c.grad_bias.truncations = "28,98,196,392,784"
        c.grad_bias.batch_size = 64
        c.memory.lengths = "196,392,784,1568"
        c.memory.features = 1
    elif name == "moving_mnist_stream":
        picked.append("stream")
        if c.grad_bias.study == "copy":
            c.grad_bias.study, c.grad_bias.truncation = "stream", "full"
            c.grad_bias.truncations = "1,2,5,10,25,50,100"
            c.grad_bias.batch_size = 16
        c.memory.lengths = "25,50,100,200,400"
        c.memory.features = 256
        c.memory.hidden_size = 256
        c.memory.batch_size = 16
        c.memory.truncation = 10
    elif name == "paper":
        _paper(c)
    elif name == "smoke":
        _smoke(c)


def _paper(c: ml_collections.ConfigDict) -> None:
    """The grid as one would run it in a paper (GPU/TPU; hours)."""
    clips = "none,global_norm:0.25,global_norm:1,global_norm:4,value:0.1,adaptive:0.05"
    for s in c.studies.values():
        s.seeds = 5
        s.clips = clips
    c.studies.copy.truncations = "1,2,4,8,16,19,20"
    c.studies.copy.run.model.hidden_size = 128
    c.studies.copy.run.train.num_steps = 2000
    c.studies.clip.truncations = "1,2,4,8,16,full"
    c.studies.clip.run.train.num_steps = 3000
    c.studies.clip_trunc.truncations = "2,8"
    c.studies.pixel.truncations = "1,4,16,28,64,98,196,392,full"
    c.studies.pixel.run.model.hidden_size = 128
    c.studies.pixel.run.train.num_steps = 20000
    c.studies.stream.truncations = "1,2,4,5,10,20,25,50,full"
    c.studies.stream.run.train.num_steps = 2000
    c.grad_bias.batch_size = 1024
    c.memory.lengths = "64,128,256,512,1024,2048,4096"


def _smoke(c: ml_collections.ConfigDict) -> None:
    """Tiny everything: the whole command end to end in seconds (tests)."""
    for s in c.studies.values():
        s.seeds = 1
        r = s.run
        r.train.num_steps, r.train.log_every, r.train.checkpoint_every = 4, 2, 2
        r.model.hidden_size = 8
        r.eval.batch_size = 32
    for name in ("copy", "clip", "clip_trunc"):
        run = c.studies[name].run
        run.data.dependency, run.data.num_eval, run.train.batch_size = 4, 32, 8
    c.studies.copy.truncations, c.studies.copy.clips = "2,4", "global_norm:1"
    c.studies.clip.truncations, c.studies.clip.clips = "full", "none,global_norm:1"
    c.studies.clip_trunc.truncations = "2"
    pixel = c.studies.pixel.run
    pixel.data.num_train, pixel.data.num_eval, pixel.train.batch_size = 64, 32, 8
    c.studies.pixel.truncations = "392,full"
    stream = c.studies.stream.run
    stream.data.num_train, stream.data.num_eval, stream.data.num_eval_sequences = 32, 16, 4
    stream.data.num_frames, stream.train.batch_size = 8, 4
    stream.train.num_steps, stream.train.log_every, stream.train.checkpoint_every = 2, 1, 1
    c.studies.stream.truncations = "2,full"
    if c.grad_bias.study == "copy":
        c.grad_bias.truncation, c.grad_bias.truncations = "4", "1,2,4"
    elif c.grad_bias.study == "pixel":
        c.grad_bias.truncations = "392,784"
    else:
        c.grad_bias.truncations = "2,8"
    c.grad_bias.batch_size = 8
    c.memory.lengths, c.memory.truncation, c.memory.hidden_size = "16,32", 8, 8
    c.memory.features, c.memory.batch_size = 4, 2
