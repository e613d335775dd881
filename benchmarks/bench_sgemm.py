"""The CUDA graph's SGEMM (scratchgan/fast/cuda_graph/gemm.py) per GEMM shape of the MLP GAN step, against cupy.matmul.

    python benchmarks/bench_sgemm.py --backend cupy                  # batches 64, 1024, 4096 on the GPU
    python benchmarks/bench_sgemm.py --backend cupy --batches 64     # one batch
    python benchmarks/bench_sgemm.py --quick                         # NumPy smoke run: the shapes, numpy.matmul

Each distinct product of one training step (benchmarks/bench_step.py's ``gemm_shapes``: forward x W, dW = x^T dy,
dx = dy W^T, with their layouts, x.T and W.T as transposed views) is timed through:
  - cupy.matmul (cuBLAS, what the eager step runs);
  - the graph's default kernel (64 x 64 tiles), the 32 x 32-tile variant, and split-K (64 x 64 tiles, S runs of
    K from ``gemm.choose_splits`` for this GPU's SM count, summed in order by a second kernel).
Each variant is first checked against cupy.matmul (the largest relative difference is printed). Times are
CUDA-event times of ``--reps`` back-to-back calls after a warm-up, in microseconds per call; a step's total
weights each shape by how often the step runs it. "best" names the fastest of the graph's kernels per shape,
which is how the default is to be chosen (by measurement, not here). On NumPy only numpy.matmul is timed: the
kernels need a GPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's scratchgan
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_step's shapes

import numpy as np  # noqa: E402
from bench_step import gemm_shapes  # noqa: E402

KERNELS = ("64x64", "32x32", "split-K")


def step_shapes(batch):
    """{(M, K, N, layout): how many times one step runs it}."""
    return Counter(gemm_shapes(batch))


def operands(xp, M, K, N, layout, rng):
    """a (M, K) and b (K, N) laid out as the step has them: x.T and W.T are transposed views."""
    def on(shape):
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32))
    a = on((K, M)).T if layout == "x.T@dy" else on((M, K))
    b = on((N, K)).T if layout == "dy@W.T" else on((K, N))
    return a, b


def time_calls(xp, call, reps, warmup):
    """Microseconds per call: CUDA events around ``reps`` calls on CuPy, the host clock on NumPy (median of 3)."""
    for _ in range(warmup):
        call()
    if xp.__name__ == "numpy":
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                call()
            runs.append((time.perf_counter() - t0) / reps)
        return statistics.median(runs) * 1e6
    start, end = xp.cuda.Event(), xp.cuda.Event()
    start.record()
    for _ in range(reps):
        call()
    end.record()
    end.synchronize()
    return xp.cuda.get_elapsed_time(start, end) * 1e3 / reps


def kernel_calls(xp, gemm, a, b, sms):
    """{variant: (a call writing its product into a fixed buffer, the buffer)} for the graph's kernels."""
    M, N = a.shape[0], b.shape[1]
    splits = gemm.choose_splits(M, N, a.shape[1], sms)
    outs = {name: xp.empty((M, N), np.float32) for name in KERNELS}
    partial = xp.empty((splits, M, N), np.float32)
    calls = {"64x64": lambda: gemm.gemm(a, b, outs["64x64"]),
             "32x32": lambda: gemm.gemm(a, b, outs["32x32"], tile="32x32"),
             "split-K": lambda: gemm.gemm_split_k(a, b, outs["split-K"], partial)}
    return {name: (calls[name], outs[name]) for name in KERNELS}, splits


def measure(xp, batch, reps, warmup, sms):
    """Rows of (M, K, N, layout, count, matmul us, {variant: us}, {variant: rel. difference}, splits)."""
    from scratchgan.fast.cuda_graph import gemm
    rng = np.random.default_rng(0)
    rows = []
    for (M, K, N, layout), count in sorted(step_shapes(batch).items()):
        a, b = operands(xp, M, K, N, layout, rng)
        reference = xp.matmul(a, b)
        matmul_us = time_calls(xp, lambda: xp.matmul(a, b), reps, warmup)
        times, errors, splits = {}, {}, "-"
        if xp.__name__ != "numpy":
            calls, splits = kernel_calls(xp, gemm, a, b, sms)
            scale = float(abs(reference).max())
            for name, (call, out) in calls.items():
                call()
                errors[name] = float(abs(out - reference).max()) / scale
                times[name] = time_calls(xp, call, reps, warmup)
        rows.append((M, K, N, layout, count, matmul_us, times, errors, splits))
    return rows


def report(batch, rows, device):
    print(f"\n## batch {batch} ({device})\n")
    head = ["M", "K", "N", "layout", "per step", "cupy.matmul us" if rows and rows[0][6] else "numpy.matmul us",
            *(f"{k} us" for k in KERNELS), "split-K runs", "best kernel", "best / matmul", "max rel. diff"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    totals = {"matmul": 0.0, **{k: 0.0 for k in KERNELS}, "best": 0.0}
    for M, K, N, layout, count, matmul_us, times, errors, splits in rows:
        totals["matmul"] += count * matmul_us
        cells = [M, K, N, layout, count, f"{matmul_us:.1f}"]
        if times:
            best = min(times, key=times.get)
            for k in KERNELS:
                totals[k] += count * times[k]
            totals["best"] += count * times[best]
            cells += [f"{times[k]:.1f}" for k in KERNELS] + [splits, best, f"{times[best] / matmul_us:.2f}",
                                                             f"{max(errors.values()):.1e}"]
        else:
            cells += ["-"] * len(KERNELS) + ["-", "-", "-", "-"]
        print("| " + " | ".join(map(str, cells)) + " |")
    line = f"step total (each shape times its count): matmul {totals['matmul'] / 1e3:.3f} ms"
    if rows and rows[0][6]:
        line += "; " + ", ".join(f"{k} {totals[k] / 1e3:.3f} ms" for k in KERNELS)
        line += f"; best kernel per shape {totals['best'] / 1e3:.3f} ms"
    print("\n" + line)
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy", help="(default: %(default)s)")
    parser.add_argument("--batches", default="64,1024,4096", help="batch sizes (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=50, help="timed calls per shape (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: %(default)s)")
    parser.add_argument("--sms", type=int, default=None, help="SMs for split-K's choice (default: the GPU's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 64, 3 calls per shape")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.reps, args.warmup = "64", 3, 1
    from scratchgan.backend import BackendError, get_xp
    try:
        xp = get_xp(args.backend)
    except BackendError as e:
        print(f"bench_sgemm.py: {e}", file=sys.stderr)
        return 2
    if xp.__name__ == "numpy":
        device, sms = "NumPy on the CPU: the graph's kernels need CuPy and a GPU", args.sms or 0
    else:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        sms = args.sms or props["multiProcessorCount"]
        device = f"{name}, {sms} SMs, CuPy {xp.__version__}"
    print(f"# {device}")
    for batch in (int(b) for b in args.batches.split(",")):
        report(batch, measure(xp, batch, args.reps, args.warmup, sms), device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
