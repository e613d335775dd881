"""Data-parallel step time at 1, 2 (and 4, where the cores allow) ranks, and what the all-reduces cost.

    python benchmarks/bench_distributed.py                    # the MNIST MLP GAN, global batch 64
    python benchmarks/bench_distributed.py --arch dcgan       # the 28x28 DCGAN (width 32), batch 64
    python benchmarks/bench_distributed.py --quick            # a smoke run (CI)
    python benchmarks/bench_distributed.py --backend cupy     # NCCL, one GPU per rank

Each rank count runs under its own ``mpiexec -n R`` (needs ``pip install "scratchgan[mpi]"``); the
global batch stays the same, so R ranks each compute 1/R of it. A step is GANStep.step (D on a real
and a fake batch, Adam on D, G through the updated D, Adam on G), as the trainer runs it, float32.
Reported per step (medians over the timed steps, rank 0's clock): the step time, the gradient
all-reduces (one per network: bytes = 4 x the parameters of G and D) and the synchronised
BatchNorm's small all-reduces, in milliseconds and as a share of the step; the median over
``--rounds`` runs, the rank counts in turn. The all-reduces are timed with a synchronisation around
each (``World.timed``), so the step here includes them, and their time includes waiting for the
slowest rank to arrive. Each rank gets cores / R BLAS and scratchgan threads (OPENBLAS_NUM_THREADS).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args):
    from scratchgan import fast
    fast.configure_process()
    import numpy as np

    from scratchgan.backend import get_xp, synchronize
    from scratchgan.cli.train import DCGAN_DEFAULTS, MLP_DEFAULTS
    from scratchgan.data import BatchLoader
    from scratchgan.gan.models import build_step
    from scratchgan.run import distributed

    world = distributed.init(args.backend)
    xp = get_xp(args.backend)
    config = dict(DCGAN_DEFAULTS if args.arch == "dcgan" else MLP_DEFAULTS)
    config.update(backend=args.backend, batch_size=args.batch, image_size=784, resolution=28, channels=1,
                  g_width=args.width, d_width=args.width)
    step = build_step(config, xp)
    images = np.random.default_rng(0).integers(0, 256, (args.batch * 4, 28, 28), dtype=np.uint8)
    loader = BatchLoader(images, args.batch, xp=xp, flatten=args.arch != "dcgan")
    if world is not None:
        step = distributed.parallelize(step, world)
        loader = distributed.ShardedLoader(loader, world)
    batches = [b for b in loader.epoch(0)]
    times = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup and world is not None:
            world.timed = True
            world.comm_bytes = {k: 0 for k in world.comm_bytes}
            world.comm_seconds = {k: 0.0 for k in world.comm_seconds}
        synchronize(xp)
        t0 = time.perf_counter()
        step.step([batches[i % len(batches)]])
        synchronize(xp)
        times.append(time.perf_counter() - t0)
    times = times[args.warmup:]
    result = {"ranks": world.size if world else 1, "mpi": world is not None, "step_ms": 1e3 * statistics.median(times),
              "params": step.G.num_parameters() + step.D.num_parameters()}
    if world is not None:
        # the two gradient all-reduces alone, each after a barrier: the transfer without the waiting
        # for a slower rank that the in-step figure includes
        bufs = [step.opt_G.store.grad.copy(), step.opt_D.store.grad.copy()]
        alone = []
        for _ in range(max(3, args.steps // 2)):
            spent = 0.0
            for buf in bufs:
                synchronize(xp)
                world.comm.Barrier()
                t0 = time.perf_counter()
                world.allreduce_sum_(buf)
                synchronize(xp)
                spent += time.perf_counter() - t0
            alone.append(spent)
        result["alone_ms"] = 1e3 * statistics.median(alone)
        for kind in ("grad", "bn"):
            result[f"{kind}_bytes"] = world.comm_bytes[kind] / args.steps
            result[f"{kind}_ms"] = 1e3 * world.comm_seconds[kind] / args.steps
    if world is None or world.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def run(args, ranks):
    cmd = [sys.executable, __file__, "--worker", "--arch", args.arch, "--batch", str(args.batch), "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--width", str(args.width), "--backend", args.backend]
    if ranks:
        mpiexec = Path(sys.executable).parent / "mpiexec"
        cmd = [str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), *cmd]
    # the cores split between the ranks: R ranks x all cores' threads each would oversubscribe them
    threads = str(max(1, (os.cpu_count() or 1) // max(ranks, 1)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS=threads)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"bench_distributed.py: {' '.join(cmd[:4])} ... failed: {out.stderr.strip()[-400:]}")
    return json.loads(lines[0][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("mlp", "dcgan"), default="mlp")
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--batch", type=int, default=64, help="the global batch (default: %(default)s)")
    parser.add_argument("--width", type=int, default=32, help="DCGAN width (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="runs per rank count, in turn; the median")
    parser.add_argument("--quick", action="store_true", help="a few steps, 1 and 2 ranks (a smoke run)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.steps, args.warmup, args.batch, args.rounds = 3, 1, 16, 1
    cores = os.cpu_count() or 1
    counts = [r for r in (1, 2, 4) if r <= max(cores, 2)]
    print(f"# {args.arch}, global batch {args.batch}, {args.backend}/float32, {cores} cores, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    if 4 not in counts:
        print(f"# 4 ranks skipped: this machine has {cores} cores")
    sides = [0] + counts
    rounds = [[run(args, r) for r in sides] for _ in range(args.rounds)]  # sides in turn: drifts hit all
    rows = []
    for i in range(len(sides)):
        runs = [one[i] for one in rounds]
        rows.append({k: statistics.median(r[k] for r in runs) if isinstance(runs[0][k], float) else runs[0][k]
                     for k in runs[0]})
    base = rows[0]["step_ms"]
    print("| ranks | per-rank batch | step ms | speed-up | grad all-reduce KB/step | ms in step | share | "
          "ms alone | BatchNorm syncs KB/step | ms | share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = f"{r['ranks']} (mpiexec)" if r["mpi"] else "1 (no MPI)"
        comm = ""
        if r["mpi"]:
            comm = " | ".join([f"{r['grad_bytes'] / 1e3:.0f}", f"{r['grad_ms']:.2f}",
                               f"{100 * r['grad_ms'] / r['step_ms']:.0f}%", f"{r['alone_ms']:.2f}",
                               f"{r['bn_bytes'] / 1e3:.1f}", f"{r['bn_ms']:.2f}",
                               f"{100 * r['bn_ms'] / r['step_ms']:.0f}%"])
        else:
            comm = " | ".join(["-"] * 7)
        print(f"| {name} | {args.batch // r['ranks']} | {r['step_ms']:.2f} | {base / r['step_ms']:.2f}x | {comm} |")
    print(f"# gradient bytes per step = 4 x {rows[0]['params']:,} parameters (G and D) = "
          f"{4 * rows[0]['params'] / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
