"""One DCGAN training step, 64x64x3, batch 128 (the PyTorch DCGAN tutorial's nets): scratchgan vs PyTorch eager.

    python benchmarks/bench_dcgan_step.py                    # NumPy vs PyTorch CPU, float32
    python benchmarks/bench_dcgan_step.py --backend cupy     # CuPy vs PyTorch CUDA: float32 and TF32 columns
    python benchmarks/bench_dcgan_step.py --quick            # smoke run: batch 4, 32x32, width 8, one step
    python benchmarks/bench_dcgan_step.py --size 28 --channels 1 --width 32 --batch 64   # the quality preset's nets

The step is the tutorial's on both sides: D on a real and a fake batch (BCE on logits), Adam on D,
then G through the updated D, Adam on G; nz = 100, ngf = ndf = 64 (``--width``), Adam(2e-4, 0.5,
0.999). scratchgan runs ``models.build_step`` with examples/dcgan.py's defaults (D's parameter
gradients skipped in the G step, as its trainer does); PyTorch runs the tutorial's code as written,
on logits. The real batches are random images already on the device (the data pipeline is not
timed). Each side runs in its own process, the sides alternate over ``--reps`` rounds (drifts of the
machine hit every side alike), each warms up first, and the table shows the median ms per step.

On CUDA every timed step ends with a synchronisation (CuPy's ``synchronize``,
``torch.cuda.synchronize``). The float32 columns run PyTorch with TF32 off for matmuls and cuDNN;
the TF32 columns run scratchgan with ``--tf32`` (scratchgan/fast/precision.py) and PyTorch with TF32 on
for both (its default for cuDNN convolutions). On the CPU there is no TF32: float32 only.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

from sides import backend_error, run_side

LATENT = 100


def _timed(one_step, steps, warmup, sync):
    """Median seconds per step, each step followed by ``sync`` (the device's work done)."""
    for _ in range(warmup):
        one_step()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        one_step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker_scratchgan(args, tf32):
    from scratchgan import fast
    fast.configure_process()  # as the entry points do (scratchgan/fast/process.py)
    import numpy as np

    from scratchgan.backend import get_xp, synchronize
    from scratchgan.cli import train as train_command
    from scratchgan.gan import models

    xp = get_xp(args.backend)
    if tf32:
        from scratchgan.fast.precision import use_tf32
        use_tf32(xp)
    c = args.channels
    config = dict(train_command.DCGAN_DEFAULTS, backend=args.backend, resolution=args.size, channels=c,
                  batch_size=args.batch, g_width=args.width, d_width=args.width, image_size=c * args.size ** 2,
                  image_shape=[c, args.size, args.size])
    step = models.build_step(config, xp)
    rng = np.random.default_rng(0)
    reals = [xp.asarray(rng.uniform(-1, 1, (args.batch, c, args.size, args.size)).astype(np.float32))
             for _ in range(4)]
    it = iter(range(1 << 30))
    return _timed(lambda: step.step([reals[next(it) % len(reals)]]), args.steps, args.warmup,
                  lambda: synchronize(xp))


def tutorial_nets(torch, size, width, device, channels=3):
    """The PyTorch DCGAN tutorial's Generator and Discriminator (64x64; fewer stages for 32; for 28, 7 -> 14 -> 28
    from a 7x7 first kernel, as scratchgan's models.py), weights N(0, 0.02), D ending in logits (no Sigmoid:
    BCEWithLogitsLoss, as scratchgan's default loss on logits)."""
    nn = torch.nn
    widths = {64: [8, 4, 2, 1], 32: [4, 2, 1], 28: [2, 1]}[size]
    k = 7 if size == 28 else 4
    g = [nn.ConvTranspose2d(LATENT, width * widths[0], k, 1, 0, bias=False), nn.BatchNorm2d(width * widths[0]),
         nn.ReLU(True)]
    for a, b in zip(widths, widths[1:]):
        g += [nn.ConvTranspose2d(width * a, width * b, 4, 2, 1, bias=False), nn.BatchNorm2d(width * b), nn.ReLU(True)]
    g += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
    d = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for a, b in zip(widths[::-1], widths[::-1][1:]):
        d += [nn.Conv2d(width * a, width * b, 4, 2, 1, bias=False), nn.BatchNorm2d(width * b),
              nn.LeakyReLU(0.2, inplace=True)]
    d += [nn.Conv2d(width * widths[0], 1, k, 1, 0, bias=False), nn.Flatten()]

    def weights_init(m):  # the tutorial's
        if "Conv" in type(m).__name__:
            nn.init.normal_(m.weight.data, 0.0, 0.02)
        elif "BatchNorm" in type(m).__name__:
            nn.init.normal_(m.weight.data, 1.0, 0.02)
            nn.init.constant_(m.bias.data, 0)
    G, D = nn.Sequential(*g).to(device), nn.Sequential(*d).to(device)
    G.apply(weights_init)
    D.apply(weights_init)
    return G, D


def worker_torch(args, tf32):
    import torch

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    device = "cuda" if args.backend == "cupy" else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True  # the fastest cuDNN algorithm per shape, chosen in the warm-up
    torch.manual_seed(0)
    G, D = tutorial_nets(torch, args.size, args.width, device, args.channels)
    criterion = torch.nn.BCEWithLogitsLoss()
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    reals = [torch.rand(args.batch, args.channels, args.size, args.size, device=device) * 2 - 1 for _ in range(4)]
    ones = torch.ones(args.batch, 1, device=device)
    zeros = torch.zeros(args.batch, 1, device=device)
    it = iter(range(1 << 30))

    def one_step():  # the tutorial's training loop body
        real = reals[next(it) % len(reals)]
        D.zero_grad()
        out_real = D(real)
        err_real = criterion(out_real, ones)
        err_real.backward()
        fake = G(torch.randn(args.batch, LATENT, 1, 1, device=device))
        out_fake = D(fake.detach())
        err_fake = criterion(out_fake, zeros)
        err_fake.backward()
        opt_D.step()
        G.zero_grad()
        err_G = criterion(D(fake), ones)
        err_G.backward()
        opt_G.step()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return _timed(one_step, args.steps, args.warmup, sync)


def time_side(side, args):
    """Time one side (e.g. "torch-tf32") in a fresh process; seconds per step."""
    argv = ["--backend", args.backend, "--batch", str(args.batch), "--size", str(args.size), "--width", str(args.width),
            "--channels", str(args.channels),
            "--steps", str(args.steps), "--warmup", str(args.warmup)]
    return run_side(__file__, side, argv, args.threads)


def make_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                    help="numpy: against PyTorch on the CPU (float32 only); cupy: against PyTorch CUDA, float32 "
                         "and TF32 (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=128, help="images per batch (default: %(default)s)")
    ap.add_argument("--size", type=int, choices=[28, 32, 64], default=64, help="image size (default: %(default)s)")
    ap.add_argument("--channels", type=int, choices=[1, 3], default=3, help="image channels (default: %(default)s)")
    ap.add_argument("--width", type=int, default=64, help="ngf = ndf (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="alternating runs per side (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both sides (default: BLAS's default for NumPy, all cores for torch)")
    ap.add_argument("--no-torch", action="store_true", help="time scratchgan only")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: batch 4, 32x32, width 8, 1 step after 1 warm-up, 1 rep, 1 thread")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    args = make_parser().parse_args(argv)
    if args.worker:
        tf32 = args.worker.endswith("-tf32")
        worker = worker_torch if args.worker.startswith("torch") else worker_scratchgan
        print(json.dumps(worker(args, tf32)))
        return 0
    if args.quick:
        args.batch, args.size, args.width, args.steps, args.warmup, args.reps = 4, 32, 8, 1, 1, 1
        args.threads = args.threads or 1
    error = backend_error(args.backend)  # before any worker starts: one line if it cannot run here
    if error:
        print(f"bench_dcgan_step.py: error: {error}", file=sys.stderr)
        return 2
    have_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
    precisions = ["", "-tf32"] if args.backend == "cupy" else [""]
    sides = [f"{lib}{p}" for p in precisions for lib in ["scratchgan"] + (["torch"] if have_torch else [])]

    import numpy
    print(f"# bench_dcgan_step: {args.backend}, DCGAN {args.size}x{args.size}x{args.channels}, batch {args.batch}, "
          f"width {args.width}, "
          f"median of {args.reps} runs x {args.steps} steps (after {args.warmup} warm-up) per side")
    print(f"# python {platform.python_version()}, numpy {numpy.__version__}, "
          f"{len(os.sched_getaffinity(0))} cores, threads {args.threads or 'default'}, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    samples = {side: [] for side in sides}
    for rep in range(args.reps):
        for side in (sides if rep % 2 == 0 else sides[::-1]):  # alternate who goes first
            samples[side].append(time_side(side, args))
    ms = {side: 1e3 * statistics.median(ts) for side, ts in samples.items()}

    def cell(side):
        return f"{ms[side]:.2f}" if side in ms else "-"

    def ratio(a, b):
        return f"{ms[a] / ms[b]:.2f}" if a in ms and b in ms else "-"

    print()
    print("| backend | batch | scratchgan fp32 ms | PyTorch fp32 ms | ratio | scratchgan TF32 ms | PyTorch TF32 ms "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.backend} | {args.batch} | {cell('scratchgan')} | {cell('torch')} | {ratio('scratchgan', 'torch')} "
          f"| {cell('scratchgan-tf32')} | {cell('torch-tf32')} | {ratio('scratchgan-tf32', 'torch-tf32')} |")
    print("\nratio = scratchgan ms / PyTorch ms (below 1: scratchgan is faster)" +
          ("" if args.backend == "cupy" else "; no TF32 on the CPU"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
