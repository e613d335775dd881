"""One training step of the default MNIST MLP GAN: scratchgan vs PyTorch eager, side by side.

    python benchmarks/bench_step.py                 # CPU, batches 64, 256, 1024
    python benchmarks/bench_step.py --breakdown     # + where scratchgan's time goes, per layer/phase
    python benchmarks/bench_step.py --quick         # a smoke run (CI)
    python benchmarks/bench_step.py --backend cupy  # CuPy vs PyTorch CUDA
    python benchmarks/bench_step.py --backend cupy --cuda-graph   # + the step replayed as one CUDA graph

A step is what examples/mnist_mlp.py runs per batch: D on a real and a fake batch, Adam on D,
then G through the updated D (non-saturating BCE-with-logits), Adam on G; float32.
Each measurement runs in its OWN process (OpenBLAS's and PyTorch's thread pools in one process
fight over the cores and slow both down several-fold), and the sides alternate, so slow drifts of
the machine hit both alike. Reported: the median over steps within a run, then the median over
runs. The GEMM floor is the time of exactly the matmuls scratchgan's step performs, through the
same array library, back to back: no step built on that library can be faster. With ``--cuda-graph`` (CuPy
only) a last column times the same step as fast/cuda_graph/graph.py's GraphedStep, which gathers its batches inside the
graph from the loader's device copy (a new epoch's order uploaded when one runs out, as the trainer does).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

G_SIZES = [(100, 128), (128, 512), (512, 1024), (1024, 784)]
D_SIZES = [(784, 512), (512, 256), (256, 128), (128, 1)]


def gemm_shapes(n):
    """(M, K, N, transpose_a, transpose_b) of every matmul in one scratchgan step at batch n."""
    shapes = []
    fwd = lambda sizes: [(n, i, o, "x@W") for i, o in sizes]  # noqa: E731
    dW = lambda sizes: [(i, n, o, "x.T@dy") for i, o in sizes]  # noqa: E731
    dx = lambda sizes: [(n, o, i, "dy@W.T") for i, o in sizes]  # noqa: E731
    shapes += fwd(G_SIZES) + dW(G_SIZES) + dx(G_SIZES[1:])  # G: forward once, backward once (no dz)
    shapes += 3 * fwd(D_SIZES)  # D on real, on fake, on fake again in the G step
    shapes += 2 * (dW(D_SIZES) + dx(D_SIZES[1:]))  # D step: dW, dx but not into the images
    shapes += dx(D_SIZES)  # G step: only dx, down to G(z); D's dW would be thrown away
    return shapes


def step_flops(n):
    return sum(2 * m * k * p for m, k, p, _ in gemm_shapes(n))


# ------------------------------------------------------------------------------------------- workers
def _timed(fn, steps, warmup, sync, faults=None):
    """Median ms per call of fn; with a dict ``faults``, also its page faults per call in faults["per_call"]
    (fresh memory the kernel must zero-fill: the cost of not reusing freed arrays)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    before = _minor_faults()
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    if faults is not None:
        faults["per_call"] = (_minor_faults() - before) / steps
    return statistics.median(times) * 1e3


def _minor_faults():
    try:
        import resource
    except ImportError:  # not on a Unix: no count
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def worker_scratchgan(batch, steps, warmup, backend, breakdown=False):
    from scratchgan import fast
    fast.configure_process()  # first, as the entry points do (scratchgan/fast/process.py); SCRATCHGAN_REFERENCE=1: not
    import numpy as np

    from scratchgan.backend import get_xp, synchronize
    from scratchgan.cli import train as train_command
    from scratchgan.data import BatchLoader
    from scratchgan.gan import models  # after the process settings

    xp = get_xp(backend)
    config = dict(train_command.MLP_DEFAULTS, image_size=784, batch_size=batch, backend=backend)
    step = models.build_step(config, xp)
    # an MNIST-sized dataset, so the data timing gathers from a realistic 188 MB array
    images = np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    loader = BatchLoader(images, batch, xp=xp)
    batches = list(loader.epoch(0))[:8]
    it = iter(range(1 << 30))

    def one_step():
        step.step([batches[next(it) % len(batches)]])

    sync = lambda: synchronize(xp)  # noqa: E731
    faults = {}
    result = {"ms": _timed(one_step, steps, warmup, sync, faults), "faults": faults["per_call"]}

    data_epoch = loader.epoch(1)
    data_warmup = min(warmup, len(loader) // 4)
    result["data_ms"] = _timed(lambda: next(data_epoch), min(steps, len(loader) - data_warmup - 1), data_warmup, sync)
    if breakdown:
        result["breakdown"] = _breakdown(step, one_step, steps, sync)
    return result


def worker_graphed(batch, steps, warmup, backend):
    """The step as a CUDA graph (fast/cuda_graph/graph.py): one launch per step after a warm-up and a capture."""
    from scratchgan import fast
    fast.configure_process()
    import numpy as np

    from scratchgan.backend import get_xp, synchronize
    from scratchgan.cli import train as train_command
    from scratchgan.data import BatchLoader
    from scratchgan.fast.cuda_graph.graph import GraphedStep
    from scratchgan.gan import models

    xp = get_xp(backend)
    config = dict(train_command.MLP_DEFAULTS, image_size=784, batch_size=batch, backend=backend)
    step = GraphedStep(models.build_step(config, xp), 1)
    images = np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    loader = BatchLoader(images, batch, xp=xp)
    step.gather_from(loader)
    order = loader.permutation(0)
    step.start_epoch(order)

    def one_step():
        if step.next_pos + batch > len(order):  # the epoch's batches are used up: the next epoch's order
            step.start_epoch(order)
        step.step()

    return {"ms": _timed(one_step, steps, warmup, lambda: synchronize(xp))}


def _breakdown(step, one_step, steps, sync):
    """Wrap every layer's forward/backward and each optimizer step with a timer (synchronised)."""
    totals = {}

    def wrap(obj, attr, key):
        fn = getattr(obj, attr)

        def timed(*args, **kwargs):
            sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0
            return out
        setattr(obj, attr, timed)

    for net_name, net in (("G", step.G), ("D", step.D)):
        for i, layer in enumerate(net):
            label = f"{net_name}[{i}] {layer!r}"
            wrap(layer, "forward", (label, "forward"))
            wrap(layer, "backward", (label, "backward"))
    wrap(step.opt_G, "step", ("Adam G (%d params)" % step.G.num_parameters(), "update"))
    wrap(step.opt_D, "step", ("Adam D (%d params)" % step.D.num_parameters(), "update"))
    wrap(step.opt_G, "zero_grad", ("zero_grad G", "update"))
    wrap(step.opt_D, "zero_grad", ("zero_grad D", "update"))
    wrap(step.noise, "sample", ("noise z", "data"))
    for _ in range(5):
        one_step()
    totals.clear()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step()
    sync()
    total = (time.perf_counter() - t0) / steps * 1e3
    rows = [[name, phase, ms * 1e3 / steps] for (name, phase), ms in totals.items()]
    return {"total_ms": total, "rows": rows}


def worker_torch(batch, steps, warmup, backend, freeze_d=False):
    import torch
    from torch import nn

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    device = "cuda" if backend == "cupy" else "cpu"
    torch.manual_seed(0)

    def mlp(sizes, bn_from, out_act):
        layers = []
        for i, (d_in, d_out) in enumerate(sizes):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(sizes) - 1:
                if bn_from is not None and i >= bn_from:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.LeakyReLU(0.2))
        if out_act:
            layers.append(out_act)
        return nn.Sequential(*layers).to(device)

    G = mlp(G_SIZES, 1, nn.Tanh())
    D = mlp(D_SIZES, None, None)
    criterion = nn.BCEWithLogitsLoss()
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    reals = [torch.rand(batch, 784, device=device) * 2 - 1 for _ in range(8)]
    ones = torch.ones(batch, 1, device=device)
    zeros = torch.zeros(batch, 1, device=device)
    it = iter(range(1 << 30))

    def one_step():  # the PyTorch DCGAN tutorial's order
        real = reals[next(it) % len(reals)]
        D.zero_grad()
        out_real = D(real)
        err_real = criterion(out_real, ones)
        err_real.backward()
        fake = G(torch.randn(batch, 100, device=device))
        out_fake = D(fake.detach())
        err_fake = criterion(out_fake, zeros)
        err_fake.backward()
        opt_D.step()
        G.zero_grad()
        if freeze_d:
            D.requires_grad_(False)
        out = D(fake)
        err_G = criterion(out, ones)
        err_G.backward()
        if freeze_d:
            D.requires_grad_(True)
        opt_G.step()
        # the same statistics scratchgan's step returns, kept on the device
        return err_real + err_fake, err_G, out_real.sigmoid().mean(), out_fake.sigmoid().mean()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    faults = {}
    return {"ms": _timed(one_step, steps, warmup, sync, faults), "faults": faults["per_call"]}


def worker_gemm(lib, batch, steps, warmup, backend):
    """The GEMM floor: exactly the step's matmuls, back to back, through numpy/cupy or torch."""
    if lib != "torch":
        from scratchgan import fast
        fast.configure_process()  # NumPy with the engine's OpenBLAS settings, as the entry points load it
    import numpy as np
    shapes = gemm_shapes(batch)
    rng = np.random.default_rng(0)
    if lib == "torch":
        import torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        device = "cuda" if backend == "cupy" else "cpu"
        conv = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    else:
        from scratchgan.backend import get_xp, synchronize, to_device
        xp = get_xp(backend)
        conv = lambda a: to_device(a, xp)  # noqa: E731
        sync = lambda: synchronize(xp)  # noqa: E731
    operands = []
    for m, k, p, kind in shapes:
        # lay the operands out as the engine does: x.T and W.T are transposed views
        if kind == "x.T@dy":
            a = conv(rng.standard_normal((k, m), dtype=np.float32)).T
        else:
            a = conv(rng.standard_normal((m, k), dtype=np.float32))
        if kind == "dy@W.T":
            b = conv(rng.standard_normal((p, k), dtype=np.float32)).T
        else:
            b = conv(rng.standard_normal((k, p), dtype=np.float32))
        operands.append((a, b))

    def all_matmuls():
        for a, b in operands:
            a @ b
    return {"ms": _timed(all_matmuls, steps, warmup, sync)}


# ------------------------------------------------------------------------------------------- driver
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_worker(args_list):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")  # this checkout's scratchgan
    out = subprocess.run([sys.executable, __file__, "--worker", *args_list], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"benchmark worker {args_list} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine_header(backend):
    lines = [f"python {platform.python_version()}, {platform.machine()}, "
             f"{len(os.sched_getaffinity(0))} cores available"]
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
        lines.append(f"CPU: {model}")
    except OSError:
        pass
    import numpy
    lines.append(f"numpy {numpy.__version__}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
                 f"OMP/OPENBLAS_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}/"
                 f"{os.environ.get('OPENBLAS_NUM_THREADS', '-')}; OPENBLAS_THREAD_TIMEOUT="
                 f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT') or '(unset: fast.configure_process loads NumPy with 18)'}"
                 f"; SCRATCHGAN_REFERENCE={os.environ.get('SCRATCHGAN_REFERENCE', '(unset: fast paths on)')}")
    try:
        import torch
        lines.append(f"torch {torch.__version__}")
    except ImportError:
        lines.append("torch not installed: PyTorch columns will be empty (pip install torch==2.13.0)")
    lines.append(f"backend: {backend}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="64,256,1024", help="batch sizes (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=5, help="alternating runs per side (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy", help="(default: %(default)s)")
    parser.add_argument("--breakdown", action="store_true", help="also time scratchgan per layer and phase")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 64, 1 rep, few steps")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="add a column: the step replayed as one CUDA graph (fast/cuda_graph/graph.py; --backend cupy)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, batch, steps, warmup, backend = args.worker[:5]
        batch, steps, warmup = int(batch), int(steps), int(warmup)
        if kind == "scratchgan":
            res = worker_scratchgan(batch, steps, warmup, backend, breakdown="breakdown" in args.worker)
        elif kind == "graphed":
            res = worker_graphed(batch, steps, warmup, backend)
        elif kind in ("torch", "torch-frozen-d"):
            res = worker_torch(batch, steps, warmup, backend, freeze_d=kind == "torch-frozen-d")
        elif kind == "torch-same":  # PyTorch in a process set up as scratchgan's is (glibc's heap threshold)
            from scratchgan import fast
            fast.configure_process()
            res = worker_torch(batch, steps, warmup, backend)
        else:
            res = worker_gemm(kind.split("-")[1], batch, steps, warmup, backend)
        print(json.dumps(res))
        return 0

    if args.quick:
        args.batches, args.reps, args.steps, args.warmup = "64", 1, 10, 3
    batches = [int(b) for b in args.batches.split(",")]
    have_torch = importlib.util.find_spec("torch") is not None
    sides = ["scratchgan", "gemm-numpy"] + (["torch", "torch-same", "torch-frozen-d", "gemm-torch"] if have_torch
                                            else [])
    graphed = args.cuda_graph and args.backend == "cupy"
    if graphed:
        sides.append("graphed")
    for line in machine_header(args.backend):
        print("# " + line)
    if args.cuda_graph and not graphed:
        print("# --cuda-graph: a CUDA graph needs --backend cupy; the graphed column is left empty")
    results = {}
    for batch in batches:
        steps = max(5, args.steps * 64 // batch) if batch > 64 else args.steps
        samples = {s: [] for s in sides}
        for rep in range(args.reps):
            order = sides if rep % 2 == 0 else sides[::-1]  # alternate so drifts hit every side alike
            for side in order:
                res = run_worker([side, str(batch), str(steps), str(args.warmup), args.backend])
                samples[side].append(res)
        med = {s: statistics.median(r["ms"] for r in samples[s]) for s in sides}
        med["data"] = statistics.median(r["data_ms"] for r in samples["scratchgan"])
        for s in ("scratchgan", "torch", "torch-same"):
            if s in sides:
                med[f"{s}_faults"] = statistics.median(r["faults"] for r in samples[s])
        results[batch] = med
        print(f"# batch {batch}: done ({args.reps} runs x {steps} steps per side)", flush=True)

    flops = {b: step_flops(b) for b in batches}
    head = ["batch", "GFLOP/step", "scratchgan ms", "PyTorch ms", "ratio", "PyTorch, same process settings ms",
            "ratio", "PyTorch (D frozen) ms", "ratio",
            "GEMM floor ms", "scratchgan/floor", "scratchgan GFLOP/s", "torch GEMM floor ms", "data ms/batch",
            "page faults/step (scratchgan, PyTorch, PyTorch same settings)", "graphed ms (--cuda-graph)", "graphed / PyTorch"]
    rows = []
    for b in batches:
        r = results[b]
        t = r.get("torch")
        tf = r.get("torch-frozen-d")
        ts = r.get("torch-same")
        rows.append([b, f"{flops[b] / 1e9:.2f}", f"{r['scratchgan']:.2f}", f"{t:.2f}" if t else "-",
                     f"{r['scratchgan'] / t:.2f}" if t else "-", f"{ts:.2f}" if ts else "-",
                     f"{r['scratchgan'] / ts:.2f}" if ts else "-", f"{tf:.2f}" if tf else "-",
                     f"{r['scratchgan'] / tf:.2f}" if tf else "-", f"{r['gemm-numpy']:.2f}",
                     f"{r['scratchgan'] / r['gemm-numpy']:.2f}", f"{flops[b] / r['scratchgan'] / 1e6:.0f}",
                     f"{r['gemm-torch']:.2f}" if have_torch else "-", f"{r['data']:.3f}",
                     f"{r['scratchgan_faults']:.0f}, " + (f"{r['torch_faults']:.0f}, {r['torch-same_faults']:.0f}"
                                                          if t else "-"),
                     f"{r['graphed']:.3f}" if graphed else "-",
                     f"{r['graphed'] / t:.2f}" if graphed and t else "-"])
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    print("\nratio = scratchgan ms / PyTorch ms (below 1: scratchgan is faster). PyTorch runs the DCGAN-tutorial "
          "step; 'same process settings': its process first calls scratchgan.fast.configure_process(), as "
          "scratchgan's does (glibc's heap threshold, OpenBLAS's thread wait); '(D frozen)' also skips D's "
          "parameter gradients in the G step, as scratchgan does.")

    if args.breakdown:
        for b in batches:
            res = run_worker(["scratchgan", str(b), str(max(20, args.steps // 2)), str(args.warmup), args.backend,
                              "breakdown"])
            bd = res["breakdown"]
            print(f"\nscratchgan breakdown at batch {b} (timers synchronise around every call; "
                  f"total {bd['total_ms']:.2f} ms/step with timers):")
            print("| layer / phase | kind | ms/step | share |")
            print("|---|---|---|---|")
            for name, phase, ms in sorted(bd["rows"], key=lambda r: -r[2]):
                print(f"| {name} | {phase} | {ms:.3f} | {100 * ms / bd['total_ms']:.1f}% |")
            by_phase = {}
            for _, phase, ms in bd["rows"]:
                by_phase[phase] = by_phase.get(phase, 0.0) + ms
            print("by phase: " + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(by_phase.items())) +
                  f", other (losses, stats, Python) {bd['total_ms'] - sum(by_phase.values()):.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_header(args.backend), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
