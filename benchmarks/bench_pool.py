"""MaxPool2d and AvgPool2d forward at Inception-v3's sizes: scratchgan vs PyTorch, CPU or CUDA.

    python benchmarks/bench_pool.py                  # batch 64, float32, NumPy vs PyTorch CPU
    python benchmarks/bench_pool.py --threads 1      # both sides single-threaded
    python benchmarks/bench_pool.py --channels-last  # both sides on channels-last inputs (a conv's output)
    python benchmarks/bench_pool.py --quick          # tiny smoke run (seconds)
    python benchmarks/bench_pool.py --backend cupy   # CuPy vs PyTorch CUDA

The rows are the FID Inception's pools: MaxPool2d(3, 2) after the stem's convolutions and between the
blocks, and AvgPool2d(3, 1, 1, count_include_pad=False) in its A blocks, at the 71x71x192 and 35x35x288
maps. Forward only (the FID network needs no backward), wall clock, float32.

Each side is timed in its own subprocess (NumPy's and torch's thread pools would fight for the cores in
one process); the processes alternate over several rounds, each warms up first, and the table shows the
median over all timed repetitions. NumPy's elementwise operations run on one thread whatever the
setting; torch's pooling kernels use ``--threads`` (default: every core). On CUDA each repetition ends
with a device synchronisation on both sides. Other load on the machine shows up in both columns: check
`uptime` first.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from sides import backend_error, run_side
from sides import torch_version as installed_torch

# (name, pool, kernel, stride, padding, count_include_pad, C, H=W)
LAYERS = [
    ("max 3/2    192x71x71", "max", 3, 2, 0, True, 192, 71),
    ("avg 3/1/1  192x71x71", "avg", 3, 1, 1, False, 192, 71),
    ("max 3/2    288x35x35", "max", 3, 2, 0, True, 288, 35),
    ("avg 3/1/1  288x35x35", "avg", 3, 1, 1, False, 288, 35),
]


def _inputs(batch, channels_last, make):
    """One input per distinct (C, H) shape, NCHW or channels-last in memory (``make(shape)`` draws NCHW)."""
    out = {}
    for *_, c, size in LAYERS:
        if (c, size) not in out:
            out[(c, size)] = make((batch, c, size, size), channels_last)
    return out


def _time(run, warmup, reps, sync):
    sync()
    times = []
    for r in range(warmup + reps):
        t0 = time.perf_counter()
        run()
        sync()  # the GPU's work done, not just queued
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _time_scratchgan(batch, warmup, reps, backend="numpy", channels_last=False):
    from scratchgan import fast
    fast.configure_process()  # as the entry points do (fast/process.py)
    import numpy as np

    from scratchgan import nn
    from scratchgan.backend import get_xp, synchronize

    xp = get_xp(backend)
    rng = np.random.default_rng(0)

    def make(shape, last):
        x = xp.asarray(rng.standard_normal(shape, dtype=np.float32))
        return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if last else x

    xs = _inputs(batch, channels_last, make)
    out = {}
    for name, pool, k, s, p, cip, c, size in LAYERS:
        layer = nn.MaxPool2d(k, s, p) if pool == "max" else nn.AvgPool2d(k, s, p, count_include_pad=cip)

        def run(layer=layer, x=xs[(c, size)]):
            layer.forward(x)
            layer.cache = None  # no backward follows: let the cache go, as an eval-only network would

        out[name] = _time(run, warmup, reps, lambda: synchronize(xp))
    return out


def _time_torch(batch, warmup, reps, threads=None, backend="numpy", channels_last=False):
    import torch

    torch.set_num_threads(threads or os.cpu_count())
    device = "cuda" if backend == "cupy" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    F = torch.nn.functional

    def make(shape, last):
        x = torch.randn(shape, device=device)
        return x.contiguous(memory_format=torch.channels_last) if last else x

    xs = _inputs(batch, channels_last, make)
    out = {}
    with torch.no_grad():
        for name, pool, k, s, p, cip, c, size in LAYERS:
            x = xs[(c, size)]
            if pool == "max":
                run = lambda x=x, k=k, s=s, p=p: F.max_pool2d(x, k, s, p)
            else:
                run = lambda x=x, k=k, s=s, p=p, cip=cip: F.avg_pool2d(x, k, s, p, count_include_pad=cip)
            out[name] = _time(run, warmup, reps, sync)
    return out


def _worker(args):
    if args.worker == "torch":
        times = _time_torch(args.batch, args.warmup, args.reps, args.threads, args.backend, args.channels_last)
    else:
        times = _time_scratchgan(args.batch, args.warmup, args.reps, args.backend, args.channels_last)
    print(json.dumps(times))


def _run_side(side, args):
    argv = ["--batch", str(args.batch), "--warmup", str(args.warmup), "--reps", str(args.reps),
            "--backend", args.backend] + (["--channels-last"] if args.channels_last else [])
    return run_side(__file__, side, argv, args.threads)


def make_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="alternating subprocess runs per side")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per layer per run")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: batch 2, one round, one thread")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both sides (default: NumPy's default, os.cpu_count() for torch)")
    ap.add_argument("--channels-last", action="store_true",
                    help="both sides on channels-last inputs, as a convolution's output is (default: NCHW)")
    ap.add_argument("--no-torch", action="store_true", help="time scratchgan only")
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                    help="numpy: against PyTorch on the CPU; cupy: against PyTorch CUDA (default: %(default)s)")
    ap.add_argument("--worker", choices=["scratchgan", "torch"], help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.reps, args.warmup = 2, 1, 2, 1
        args.threads = args.threads or 1
    if args.worker:
        return _worker(args)
    error = backend_error(args.backend)  # before any worker starts: one line if it cannot run here
    if error:
        print(f"bench_pool.py: error: {error}", file=sys.stderr)
        return 2
    torch_version = installed_torch()
    sides = ["scratchgan"] + ([] if args.no_torch or torch_version is None else ["torch"])
    import numpy as np
    print(f"bench_pool: {args.backend}{' (CUDA)' if args.backend == 'cupy' else ''}, batch {args.batch}, float32, "
          f"{'channels-last' if args.channels_last else 'NCHW'} inputs, forward only, median of {args.rounds} rounds "
          f"x {args.reps} reps (after {args.warmup} warm-up), threads {args.threads or 'default'}")
    print(f"numpy {np.__version__}, torch {torch_version or 'not installed'}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")

    times = {side: {name: [] for name, *_ in LAYERS} for side in sides}
    for r in range(args.rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):  # alternate who goes first
            for name, ts in _run_side(side, args).items():
                times[side][name].extend(ts)

    ms = {side: {name: 1e3 * statistics.median(ts) for name, ts in per.items()} for side, per in times.items()}
    torch_on = "torch" in ms
    print(f"| layer | scratchgan ms |{' torch ms | ratio |' if torch_on else ''}")
    print(f"|---|---|{'---|---|' if torch_on else ''}")
    for name, *_ in LAYERS:
        line = f"| {name} | {ms['scratchgan'][name]:.1f} |"
        if torch_on:
            line += f" {ms['torch'][name]:.1f} | {ms['scratchgan'][name] / ms['torch'][name]:.2f} |"
        print(line)
    if torch_on:
        print("ratio = scratchgan / torch (lower is better for scratchgan)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
