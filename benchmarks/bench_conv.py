"""Conv2d / ConvTranspose2d forward+backward at DCGAN (64x64) sizes: scratchgan vs PyTorch, CPU or CUDA.

    python benchmarks/bench_conv.py               # batch 64, float32, NumPy vs PyTorch CPU
    python benchmarks/bench_conv.py --batch 16
    python benchmarks/bench_conv.py --threads 1   # both sides single-threaded
    python benchmarks/bench_conv.py --quick       # tiny smoke run (seconds)
    python benchmarks/bench_conv.py --subpixel    # also the ConvT layers as four 2x2 sub-convolutions
    python benchmarks/bench_conv.py --backend cupy          # CuPy vs PyTorch CUDA (cuDNN), both in float32
    python benchmarks/bench_conv.py --backend cupy --tf32   # both sides with TF32 tensor cores

On CUDA each timed repetition ends with a device synchronisation on both sides (CuPy's
``synchronize``, ``torch.cuda.synchronize``), so the times are the GPU's work, not the launch queue's.
In float32 PyTorch runs with TF32 off for matmuls and cuDNN; with --tf32 both sides may use it
(PyTorch's default for cuDNN convolutions). ``--subpixel`` adds a column: scratchgan with the
sub-pixel ConvTranspose2d (scratchgan/fast/subpixel.py, inactive by default) switched on.

Each side is timed in its own subprocess (NumPy's BLAS and torch's thread pools would fight for the
cores in one process); the processes alternate over several rounds, each warms up first, and the
table shows the median over all timed repetitions. Times are one forward plus one backward (with dx
and dW), wall clock, on NCHW-contiguous float32 inputs for both sides. Other load on the machine
shows up in both columns: check `uptime` first.
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

SUBPIXEL = "scratchgan.nn.conv.conv_transpose2d_forward"  # its INACTIVE replacement: fast/subpixel.py
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


def _time_scratchgan(batch, warmup, reps, backend="numpy", subpixel=False, tf32=False):
    import contextlib

    from scratchgan import fast
    fast.configure_process()  # as the entry points do: OpenBLAS's thread wait, the heap setting (fast/process.py)
    import numpy as np

    from scratchgan.backend import get_xp, synchronize
    from scratchgan.nn import Conv2d, ConvTranspose2d

    xp = get_xp(backend)
    if tf32:
        from scratchgan.fast.precision import use_tf32
        use_tf32(xp)
    kind = "numpy" if backend == "numpy" else "cupy"
    trying = fast.trying(SUBPIXEL, kind) if subpixel else contextlib.nullcontext()
    rng = np.random.default_rng(0)
    out = {}
    with trying:
        for name, kind_, c_in, c_out, k, s, p, size in LAYERS:
            cls = Conv2d if kind_ == "conv" else ConvTranspose2d
            layer = cls(c_in, c_out, k, stride=s, padding=p, seed=0).to(backend=backend)
            x = xp.asarray(rng.standard_normal((batch, c_in, size, size)).astype(np.float32))
            dy = xp.asarray(rng.standard_normal(layer.forward(x).shape).astype(np.float32))
            layer.backward(dy)
            synchronize(xp)
            times = []
            for r in range(warmup + reps):
                t0 = time.perf_counter()
                layer.forward(x)
                layer.backward(dy)
                synchronize(xp)  # the GPU's work done, not just queued
                if r >= warmup:
                    times.append(time.perf_counter() - t0)
            out[name] = times
    return out


def _time_torch(batch, warmup, reps, threads=None, backend="numpy", tf32=False):
    import torch

    torch.set_num_threads(threads or os.cpu_count())
    device = "cuda" if backend == "cupy" else "cpu"
    if device == "cuda":  # float32 unless --tf32 (then PyTorch's default for cuDNN, and matmuls too)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape, in the warm-up
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    out = {}
    for name, kind, c_in, c_out, k, s, p, size in LAYERS:
        cls = torch.nn.Conv2d if kind == "conv" else torch.nn.ConvTranspose2d
        layer = cls(c_in, c_out, k, stride=s, padding=p).to(device)
        x = torch.randn(batch, c_in, size, size, device=device, requires_grad=True)
        dy = torch.randn_like(layer(x))
        sync()
        times = []
        for r in range(warmup + reps):
            t0 = time.perf_counter()
            y = layer(x)
            y.backward(dy)
            sync()
            if r >= warmup:
                times.append(time.perf_counter() - t0)
        out[name] = times
    return out


def _worker(args):
    if args.worker == "torch":
        times = _time_torch(args.batch, args.warmup, args.reps, args.threads, args.backend, args.tf32)
    else:
        times = _time_scratchgan(args.batch, args.warmup, args.reps, args.backend,
                                 subpixel=args.worker == "subpixel", tf32=args.tf32)
    print(json.dumps(times))


def _run_side(side, args):
    argv = ["--batch", str(args.batch), "--warmup", str(args.warmup), "--reps", str(args.reps),
            "--backend", args.backend] + (["--tf32"] if args.tf32 else [])
    return run_side(__file__, side, argv, args.threads)


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
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                    help="numpy: against PyTorch on the CPU; cupy: against PyTorch CUDA (default: %(default)s)")
    ap.add_argument("--tf32", action="store_true",
                    help="with --backend cupy: both sides may use TF32 tensor cores (default: off, float32)")
    ap.add_argument("--subpixel", action="store_true",
                    help="also time scratchgan with the sub-pixel ConvTranspose2d switched on (default: off)")
    ap.add_argument("--worker", choices=["scratchgan", "subpixel", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:  # one thread too: on a busy machine, BLAS thread pools make tiny runs slow and noisy
        args.batch, args.rounds, args.reps, args.warmup = 2, 1, 2, 1
        args.threads = args.threads or 1
    if args.worker:
        return _worker(args)
    if args.tf32 and args.backend != "cupy":
        print("bench_conv.py: error: --tf32 needs --backend cupy (NumPy and PyTorch's CPU kernels have no TF32)",
              file=sys.stderr)
        return 2
    error = backend_error(args.backend)  # before any worker starts: one line if it cannot run here
    if error:
        print(f"bench_conv.py: error: {error}", file=sys.stderr)
        return 2
    torch_version = installed_torch()
    sides = ["scratchgan"] + (["subpixel"] if args.subpixel else []) + \
        ([] if args.no_torch or torch_version is None else ["torch"])
    import numpy as np
    print(f"bench_conv: {args.backend}{' (CUDA)' if args.backend == 'cupy' else ''}, batch {args.batch}, "
          f"float32{' with TF32 tensor cores' if args.tf32 else ''}, forward+backward, median of "
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
    torch_on = "torch" in ms
    header = f"{'layer':<26} {'scratchgan ms':>14}"
    if "subpixel" in ms:
        header += f" {'sub-pixel ms':>13} {'sub/ref':>8}"
    if torch_on:
        header += f" {'torch ms':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    total = {side: 0.0 for side in ms}
    for name, *_ in LAYERS:
        for side in ms:
            total[side] += ms[side][name]
    for name, *_ in [*LAYERS, ("total",)]:
        row = total if name == "total" else {side: ms[side][name] for side in ms}
        line = f"{name:<26} {row['scratchgan']:>14.2f}"
        if "subpixel" in ms:
            line += f" {row['subpixel']:>13.2f} {row['subpixel'] / row['scratchgan']:>8.2f}"
        if torch_on:
            line += f" {row['torch']:>10.2f} {row['scratchgan'] / row['torch']:>7.2f}"
        print(line)
    if torch_on:
        print("ratio = scratchgan / torch (lower is better for scratchgan)")
    if "subpixel" in ms:
        print("sub/ref = with the sub-pixel ConvTranspose2d / without (it changes the k4 s2 p1 ConvT rows only: "
              "G2-G5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
