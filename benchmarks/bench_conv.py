"""Conv2d / ConvTranspose2d forward+backward at DCGAN (64x64) sizes: scratchgan (NumPy) vs PyTorch CPU.

    python benchmarks/bench_conv.py               # batch 64, float32
    python benchmarks/bench_conv.py --batch 16
    python benchmarks/bench_conv.py --threads 1   # both sides single-threaded
    python benchmarks/bench_conv.py --quick       # tiny smoke run (seconds)

Each side is timed in its own subprocess (NumPy's BLAS and torch's thread pools would fight for the
cores in one process); the processes alternate over several rounds, each warms up first, and the
table shows the median over all timed repetitions. Times are one forward plus one backward (with dx
and dW), wall clock, on NCHW-contiguous float32 inputs for both sides. Other load on the machine
shows up in both columns: check `uptime` first.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# (name, kind, C_in, C_out, kernel, stride, padding, input H=W): the DCGAN 64x64 layers (ngf = ndf = 64)
LAYERS = [
    ("D1 conv 3->64     64x64", "conv", 3, 64, 4, 2, 1, 64),
    ("D2 conv 64->128   32x32", "conv", 64, 128, 4, 2, 1, 32),
    ("D3 conv 128->256  16x16", "conv", 128, 256, 4, 2, 1, 16),
    ("D4 conv 256->512   8x8", "conv", 256, 512, 4, 2, 1, 8),
    ("D5 conv 512->1     4x4", "conv", 512, 1, 4, 1, 0, 4),
    ("G1 convT 100->512  1x1", "convT", 100, 512, 4, 1, 0, 1),
    ("G2 convT 512->256  4x4", "convT", 512, 256, 4, 2, 1, 4),
    ("G3 convT 256->128  8x8", "convT", 256, 128, 4, 2, 1, 8),
    ("G4 convT 128->64  16x16", "convT", 128, 64, 4, 2, 1, 16),
    ("G5 convT 64->3    32x32", "convT", 64, 3, 4, 2, 1, 32),
]


def _time_scratchgan(batch, warmup, reps):
    from scratchgan import fast
    fast.configure_process()  # as the entry points do: OpenBLAS's thread wait, the heap setting (fast/process.py)
    import numpy as np

    from scratchgan.nn import Conv2d, ConvTranspose2d

    rng = np.random.default_rng(0)
    out = {}
    for name, kind, c_in, c_out, k, s, p, size in LAYERS:
        cls = Conv2d if kind == "conv" else ConvTranspose2d
        layer = cls(c_in, c_out, k, stride=s, padding=p, seed=0)
        x = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
        dy = rng.standard_normal(layer.forward(x).shape).astype(np.float32)
        layer.backward(dy)
        times = []
        for r in range(warmup + reps):
            t0 = time.perf_counter()
            layer.forward(x)
            layer.backward(dy)
            if r >= warmup:
                times.append(time.perf_counter() - t0)
        out[name] = times
    return out


def _time_torch(batch, warmup, reps, threads=None):
    import torch

    torch.set_num_threads(threads or os.cpu_count())
    torch.manual_seed(0)
    out = {}
    for name, kind, c_in, c_out, k, s, p, size in LAYERS:
        cls = torch.nn.Conv2d if kind == "conv" else torch.nn.ConvTranspose2d
        layer = cls(c_in, c_out, k, stride=s, padding=p)
        x = torch.randn(batch, c_in, size, size, requires_grad=True)
        dy = torch.randn_like(layer(x))
        times = []
        for r in range(warmup + reps):
            t0 = time.perf_counter()
            y = layer(x)
            y.backward(dy)
            if r >= warmup:
                times.append(time.perf_counter() - t0)
        out[name] = times
    return out


def _worker(args):
    if args.worker == "scratchgan":
        times = _time_scratchgan(args.batch, args.warmup, args.reps)
    else:
        times = _time_torch(args.batch, args.warmup, args.reps, args.threads)
    print(json.dumps(times))


def _run_side(side, args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--batch", str(args.batch),
           "--warmup", str(args.warmup), "--reps", str(args.reps)]
    if args.threads:  # NumPy's BLAS reads its thread count at import: set it for the child process
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="alternating subprocess runs per side")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per layer per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: batch 2, one round, one thread")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both sides (default: BLAS's default for NumPy, os.cpu_count() for torch)")
    ap.add_argument("--no-torch", action="store_true", help="time scratchgan only")
    ap.add_argument("--worker", choices=["scratchgan", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:  # one thread too: on a busy machine, BLAS thread pools make tiny runs slow and noisy
        args.batch, args.rounds, args.reps, args.warmup = 2, 1, 2, 1
        args.threads = args.threads or 1
    if args.worker:
        return _worker(args)

    try:  # the version without importing torch here: the workers import it
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    sides = ["scratchgan"] + ([] if args.no_torch or torch_version is None else ["torch"])
    import numpy as np
    print(f"bench_conv: batch {args.batch}, float32, forward+backward, median of "
          f"{args.rounds} rounds x {args.reps} reps (after {args.warmup} warm-up), "
          f"threads {args.threads or 'default'}")
    print(f"numpy {np.__version__}, torch {torch_version or 'not installed'}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT') or '(unset: scratchgan uses 18)'}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")

    times = {side: {name: [] for name, *_ in LAYERS} for side in sides}
    for r in range(args.rounds):
        order = sides if r % 2 == 0 else sides[::-1]  # alternate who goes first
        for side in order:
            for name, ts in _run_side(side, args).items():
                times[side][name].extend(ts)

    ms = {side: {name: 1e3 * statistics.median(ts) for name, ts in per.items()} for side, per in times.items()}
    header = f"{'layer':<26} {'scratchgan ms':>14}" + (f" {'torch ms':>10} {'ratio':>7}" if "torch" in ms else "")
    print(header)
    print("-" * len(header))
    total = {side: 0.0 for side in ms}
    for name, *_ in LAYERS:
        for side in ms:
            total[side] += ms[side][name]
        line = f"{name:<26} {ms['scratchgan'][name]:>14.2f}"
        if "torch" in ms:
            line += f" {ms['torch'][name]:>10.2f} {ms['scratchgan'][name] / ms['torch'][name]:>7.2f}"
        print(line)
    line = f"{'total':<26} {total['scratchgan']:>14.2f}"
    if "torch" in ms:
        line += f" {total['torch']:>10.2f} {total['scratchgan'] / total['torch']:>7.2f}"
    print(line)
    print("ratio = scratchgan / torch (lower is better for scratchgan)" if "torch" in ms else "")


if __name__ == "__main__":
    main()
