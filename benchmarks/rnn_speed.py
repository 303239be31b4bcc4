"""Speed of rnnvision's recurrences against their peers: the whole table, one command.

    python -m benchmarks.rnn_speed                 # CPU, full table (5 min on 2 cores)
    python -m benchmarks.rnn_speed --quick         # two shapes, float32 only, no ConvLSTM
                                                   # or memory (~1 min)
    python -m benchmarks.rnn_speed --cells=conv_lstm --peers=torch
                                                   # only the ConvLSTM rows against torch
    python -m benchmarks.rnn_speed --device=gpu    # GPU peers (not yet run on a GPU, see below)

Rows: the dense cells in float32 on four shapes, then in bfloat16 (matmuls in
bfloat16 with float32 accumulation: ours `compute_dtype="bfloat16"`, flax
`dtype=bfloat16`, torch's module and inputs in bfloat16) on the first shape,
then ConvLSTM on three shapes (CONV_SHAPES; the peers: a plain PyTorch ConvLSTM,
benchmarks/steps.py, on all three, flax's on the first). Prints one row per
(cell, shape, mode) with the median time of each implementation and our time as
a ratio to each peer's, then the compiled
memory of long-sequence training (benchmarks/memory.py), and writes both as
CSV and Markdown to --out (default benchmarks/results/).

Method: all implementations of a row are compiled and warmed up, then timed in
interleaved rounds (A B C A B C ..., the order rotated every round) so that
load from other processes hits all of them alike; the table shows medians.
The CSV also has the median process CPU time of each (less sensitive to other
processes than wall time, but it counts the spinning of idle OpenMP threads).

Threads: XLA:CPU runs each op on an intra-op pool with one thread per core and
parallelises large matmuls/fusions over it; torch gets the same count with
torch.set_num_threads (default: all cores; --threads=1 pins both to one).

GPU (--device=gpu): peers are torch CUDA (cuDNN) and JAX's own cuDNN LSTM
(jax.experimental.rnn). This path has not been run on a GPU yet; expect to
fix small things on the first run.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import sys
import time

from benchmarks.cli import ArgumentParser, UsageError, run

SHAPES = [(100, 64, 128, 256), (28, 128, 28, 128), (784, 64, 1, 128), (20, 16, 4096, 512)]
QUICK_SHAPES = SHAPES[:2]
# bfloat16 compute (float32 accumulation), every implementation in bfloat16: the first shape.
BF16_SHAPES = SHAPES[:1]
CELLS = ("lstm", "gru", "conv_lstm")
PEER_CHOICES = ("torch", "flax")
# ConvLSTM: T, B, (H, W, C) input, features, kernel size. A 64-feature layer; the
# Moving-MNIST default layer (configs/moving_mnist.py); an OpenSTL ConvLSTM-S layer.
CONV_SHAPES = [(20, 16, (16, 16, 16), 64, 5), (20, 16, (8, 8, 64), 32, 3),
               (20, 16, (16, 16, 16), 128, 5)]
CONV_FLAX_REPEATS = 2


def parse_args(argv=None):
    """The arguments, checked: a bad one is a one-line error (benchmarks.cli), exit 2."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="two shapes, fewer repeats, no memory")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"),
                   help="directory for rnn_speed.csv / rnn_speed.md")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of JAX and torch (default: all cores)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; quick 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs after compiling")
    p.add_argument("--generic", action="store_true",
                   help="also time our generic lax.scan path (no fast path)")
    p.add_argument("--cells", default="lstm,gru,conv_lstm",
                   help="comma-separated subset; --cells=conv_lstm times only the ConvLSTM "
                        "rows (no bfloat16 or memory table)")
    p.add_argument("--peers", default="torch,flax",
                   help="comma-separated peers; --peers=torch skips flax (its ConvLSTM "
                        "training step takes over a minute)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory table")
    p.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 rows")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args) -> None:
    """Refuses, before any benchmark runs, what would fail (or do nothing) later."""
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        raise UsageError(f"--cells={args.cells!r}: allowed: a comma-separated subset of {CELLS}")
    peers = [c.strip() for c in args.peers.split(",") if c.strip()]
    if [c for c in peers if c not in PEER_CHOICES]:
        raise UsageError(f"--peers={args.peers!r}: allowed: a comma-separated subset of {PEER_CHOICES}")
    for name, value, lo in (("--threads", args.threads, 1), ("--repeats", args.repeats, 1),
                            ("--warmup", args.warmup, 0)):
        if value is not None and value < lo:
            raise UsageError(f"{name}={value}: must be an integer >= {lo}")
    try:
        os.makedirs(args.out, exist_ok=True)  # now, not after minutes of timing
    except OSError as e:
        raise UsageError(f"--out={args.out!r} cannot be created ({e.strerror or e}): give a "
                         "writable directory") from None


def check_device(device: str) -> None:
    """--device=gpu needs a GPU that JAX sees."""
    import jax
    if device == "gpu":
        try:
            jax.devices("gpu")
        except RuntimeError:
            raise UsageError("--device=gpu: JAX sees no GPU (install jax for your accelerator, "
                             "e.g. pip install -U 'jax[cuda12]'), or use --device=cpu") from None


def configure_threads(args) -> int:
    """Must run before jax/torch are imported: XLA reads its flags at start-up."""
    cores = os.cpu_count() or 1
    threads = args.threads or cores
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + " --xla_cpu_multi_thread_eigen=false").strip()
        elif threads != cores:
            print(f"note: XLA:CPU always uses {cores} threads; only torch gets {threads}")
    import torch
    torch.set_num_threads(threads)
    return threads


# -- timing ---------------------------------------------------------------------------

def time_interleaved(steps: dict, repeats: int, warmup: int) -> dict:
    """{name: (median wall s, median cpu s)} over `repeats` interleaved rounds."""
    import numpy as np
    for step in steps.values():
        for _ in range(1 + warmup):  # the first call compiles
            step()
    names = list(steps)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            steps[n]()
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
    return {n: (float(np.median(wall[n])), float(np.median(cpu[n]))) for n in names}


def train_gflop(cell: str, t, b, i, h) -> float:
    """Matmul FLOPs of a training step: forward 2TB(I+H)GH, backward 2TB GH (2H + I)."""
    g = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    return 2 * t * b * g * h * (2 * i + 3 * h) / 1e9


def infer_gflop(cell: str, t, b, i, h) -> float:
    g = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    return 2 * t * b * g * h * (i + h) / 1e9


# -- the rows -------------------------------------------------------------------------

def dense_rows(args, shapes, cells, dtype="float32"):
    from benchmarks import steps as S
    gpu = args.device == "gpu"
    for cell in [c for c in ("lstm", "gru") if c in cells]:
        for t, b, i, h in shapes:
            x, g = S.problem(t, b, i, h)
            for mode in ("train", "infer"):
                impls = {"ours": S.ours(cell, x, g, mode, hidden_size=h, compute_dtype=dtype)}
                if args.generic:
                    impls["ours_generic"] = S.ours(cell, x, g, mode, generic=True, hidden_size=h,
                                                   compute_dtype=dtype)
                if "torch" in args.peers:
                    impls["torch"] = S.torch_rnn(cell, x, g, mode, h, "cuda" if gpu else "cpu",
                                                 dtype=dtype)
                if "flax" in args.peers:
                    impls["flax"] = S.flax_rnn(cell, x, g, mode, h, dtype=dtype)
                if gpu and cell == "lstm" and dtype == "float32":
                    impls["jax_cudnn"] = S.jax_cudnn_lstm(x, g, mode, h)
                flop = (train_gflop if mode == "train" else infer_gflop)(cell, t, b, i, h)
                name = cell if dtype == "float32" else f"{cell} {dtype}"
                yield {"cell": name, "shape": f"T={t} B={b} I={i} H={h}", "mode": mode,
                       "gflop": flop}, impls


def conv_gflop(mode: str, t, b, hwc, f, k) -> float:
    """Convolution FLOPs of a ConvLSTM step, as matmuls of the k*k*C patches (dense
    formulas with I = k*k*C, H -> k*k*F columns, times H*W pixels): training counts
    the forward pass, dh and the parameter gradients."""
    (hh, ww, c), taps = hwc, k * k
    per_pixel = (2 * 4 * f * taps * (2 * c + 3 * f) if mode == "train"
                 else 2 * 4 * f * taps * (c + f))
    return t * b * hh * ww * per_pixel / 1e9


def conv_rows(args, cells):
    if "conv_lstm" not in cells:
        return
    from benchmarks import steps as S
    for index, (t, b, hwc, f, k) in enumerate(CONV_SHAPES):
        x, g = S.problem(t, b, hwc, (*hwc[:2], f))
        for mode in ("train", "infer"):
            impls = {"ours": S.ours("conv_lstm", x, g, mode, features=f, kernel_size=k)}
            if args.generic:
                impls["ours_generic"] = S.ours("conv_lstm", x, g, mode, generic=True,
                                               features=f, kernel_size=k)
            if "torch" in args.peers:
                impls["torch"] = S.torch_conv_lstm(x, g, mode, f, k,
                                                   "cuda" if args.device == "gpu" else "cpu")
            meta = {"cell": "conv_lstm",
                    "shape": f"T={t} B={b} {hwc[0]}x{hwc[1]}x{hwc[2]} F={f} k={k}",
                    "mode": mode, "gflop": conv_gflop(mode, t, b, hwc, f, k)}
            # flax's ConvLSTM training step takes over a minute on a 2-core CPU (the
            # backward convolutions inside its scan fall back to naive loops; see
            # rnnvision/cells/conv_grad.py): it runs on the first shape only, with
            # fewer rounds.
            if "flax" in args.peers and index == 0:
                impls["flax"] = S.flax_rnn("conv_lstm", x, g, mode, f, kernel_size=k)
                meta.update(repeats=min(args.repeats, CONV_FLAX_REPEATS), warmup=0)
            yield meta, impls


PEERS = ("torch", "flax", "jax_cudnn")


def run_rows(args, rows):
    results = []
    for meta, impls in rows:
        row = dict(meta)
        times = time_interleaved(impls, row.pop("repeats", args.repeats),
                                 row.pop("warmup", args.warmup))
        for name, (wall, cpu) in times.items():
            row[f"{name}_ms"] = 1e3 * wall
            row[f"{name}_cpu_ms"] = 1e3 * cpu
        for peer in PEERS + ("ours_generic",):
            if peer in times:
                row[f"ours/{peer}"] = times["ours"][0] / times[peer][0]
        row["ours_gflops"] = meta["gflop"] / times["ours"][0]
        results.append(row)
        print(format_row(row), flush=True)
    return results


def format_row(row) -> str:
    parts = [f"{row['cell']:9s} {row['mode']:5s} {row['shape']:28s}",
             f"ours {row['ours_ms']:8.1f} ms"]
    for peer in PEERS + ("ours_generic",):
        if f"{peer}_ms" in row:
            parts.append(f"{peer} {row[f'{peer}_ms']:8.1f} ms (x{row[f'ours/{peer}']:.2f})")
    return " | ".join(parts)


# -- output ---------------------------------------------------------------------------

def environment(args, threads) -> dict:
    import flax
    import jax
    import torch
    return {"date": datetime.date.today().isoformat(), "device": args.device,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "threads": threads, "jax": jax.__version__, "flax": flax.__version__,
            "torch": torch.__version__, "python": platform.python_version(),
            "repeats": args.repeats, "load_avg_start": "%.1f %.1f %.1f" % os.getloadavg()}


def write_outputs(args, env, speed, memory):
    """rnn_speed.csv / .md; a run of some cells only (--cells) writes
    rnn_speed_<cells>.csv / .md, so it never overwrites the full table."""
    os.makedirs(args.out, exist_ok=True)
    stem = "rnn_speed"
    if args.cells != parse_args([]).cells:
        stem += "_" + "_".join(sorted(args.cells.split(",")))
    keys = sorted({k for row in speed for k in row}, key=lambda k: (k not in speed[0], k))
    with open(os.path.join(args.out, stem + ".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(speed)
    if memory:
        with open(os.path.join(args.out, "rnn_memory.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(memory[0]))
            writer.writeheader()
            writer.writerows(memory)
    md = markdown(env, speed, memory)
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write(md)
    return md


def markdown(env, speed, memory) -> str:
    peers = [p for p in PEERS if any(f"{p}_ms" in r for r in speed)]
    lines = [f"Command: `python -m benchmarks.rnn_speed {' '.join(sys.argv[1:])}`".rstrip(),
             "", ", ".join(f"{k}: {v}" for k, v in env.items()), "",
             "Median wall time per step (ms); ratio = ours / peer (< 1: ours is faster).", "",
             "| cell | mode | shape | ours | " + " | ".join(peers) + " | "
             + " | ".join(f"ours/{p}" for p in peers) + " |",
             "|" + "---|" * (4 + 2 * len(peers))]
    for r in speed:
        cells = [f"{r[f'{p}_ms']:.1f}" if f"{p}_ms" in r else "" for p in peers]
        ratios = [f"{r[f'ours/{p}']:.2f}" if f"ours/{p}" in r else "" for p in peers]
        lines.append(f"| {r['cell']} | {r['mode']} | {r['shape']} | {r['ours_ms']:.1f} | "
                     + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if memory:
        lines += ["", "Compiled memory of one LSTM training step, T=1000 B=64 I=128 H=256 "
                  "(XLA memory_analysis; ratio to full BPTT on the fast path):", "",
                  "| variant | temp MB | total MB | temp ratio | total ratio |",
                  "|---|---|---|---|---|"]
        for m in memory:
            lines.append(f"| {m['variant']} | {m['temp_bytes'] / 1e6:.1f} | "
                         f"{m['total_bytes'] / 1e6:.1f} | {m['temp_ratio']:.3f} | "
                         f"{m['total_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    threads = configure_threads(args)
    check_device(args.device)
    env = environment(args, threads)
    print(", ".join(f"{k}: {v}" for k, v in env.items()), flush=True)
    cells = {c.strip() for c in args.cells.split(",")}
    args.peers = {p.strip() for p in args.peers.split(",")}
    shapes = QUICK_SHAPES if args.quick else SHAPES
    start = time.perf_counter()
    speed = run_rows(args, dense_rows(args, shapes, cells))
    if not (args.quick or args.no_bf16):
        speed += run_rows(args, dense_rows(args, BF16_SHAPES, cells, dtype="bfloat16"))
    if not args.quick or cells == {"conv_lstm"}:
        speed += run_rows(args, conv_rows(args, cells))
    memory = []
    if not (args.quick or args.no_memory) and "lstm" in cells:
        from benchmarks import memory as M
        memory = M.measure()
        for m in memory:
            print(f"memory {m['variant']:22s} temp {m['temp_bytes'] / 1e6:8.1f} MB "
                  f"(x{m['temp_ratio']:.3f})  total {m['total_bytes'] / 1e6:8.1f} MB "
                  f"(x{m['total_ratio']:.3f})", flush=True)
    env["load_avg_end"] = "%.1f %.1f %.1f" % os.getloadavg()
    env["minutes"] = round((time.perf_counter() - start) / 60, 1)
    md = write_outputs(args, env, speed, memory)
    print("\n" + md)


if __name__ == "__main__":
    run(main, sys.argv[1:])
