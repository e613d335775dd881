"""A training loop written by hand with the public API (README's "by hand" style) against PyTorch eager.

    python benchmarks/bench_by_hand.py                   # batch 64, 5 alternating runs per side
    python benchmarks/bench_by_hand.py --batches 64,256 --reps 7
    python benchmarks/bench_by_hand.py --quick           # a smoke run
    python benchmarks/bench_by_hand.py --baseline ../baseline   # + the same loop on another checkout

The loop: nn.Sequential of public layers, optim.Adam, losses.bce_with_logits, and the DCGAN
tutorial's step for the default MNIST MLP GAN (benchmarks/bench_step.py's networks): D on a real and
a fake batch, Adam on D, G through the updated D, Adam on G. The backward calls do the work PyTorch's
autograd does for the same code: D's parameter gradients are computed in the G step too, as the
tutorial's PyTorch code computes them; ``need_dx=False`` where autograd computes no input gradient
either (the real batch, the detached fake, z: inputs that require no grad), as examples/gan_by_hand.py
writes it. (A checkout without ``need_dx``, e.g. --baseline, runs plain ``backward(dy)``.) It
calls ``scratchgan.fast.configure_process()`` first, as a user's script should (README, "Speed").
No GANStep: what it gets from the fast paths is what every user's loop gets. Beside it, the same
PyTorch step, the GANStep (which also skips D's weight gradients in the G step and the inputs'
gradients) and the loop on the reference path (SCRATCHGAN_REFERENCE=1). Each side runs in its own
process, the sides alternate, and the table shows the median of the runs' median step times.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_step  # noqa: E402  the networks, the PyTorch worker, the GANStep worker, the timer


def worker_by_hand(batch, steps, warmup):
    try:
        from scratchgan import fast
        fast.configure_process()  # first, before NumPy loads (scratchgan/fast/process.py)
    except ImportError:  # a checkout from before scratchgan/fast/ (--baseline): its import did the settings
        import scratchgan  # noqa: F401
    import numpy as np

    from scratchgan import losses, nn, optim

    def mlp(sizes, bn_from, out, seed):
        layers = []
        for i, (d_in, d_out) in enumerate(sizes):
            layers.append(nn.Linear(d_in, d_out, seed=seed + i))
            if i < len(sizes) - 1:
                if bn_from is not None and i >= bn_from:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.LeakyReLU(0.2))
        if out is not None:
            layers.append(out)
        return nn.Sequential(*layers).to()

    G = mlp(bench_step.G_SIZES, 1, nn.Tanh(), seed=0)
    D = mlp(bench_step.D_SIZES, None, None, seed=10)
    opt_G = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    rng = np.random.default_rng(0)
    reals = [rng.uniform(-1, 1, (batch, 784)).astype(np.float32) for _ in range(8)]
    it = iter(range(1 << 30))
    no_dx = {"need_dx": False} if "need_dx" in inspect.signature(D.backward).parameters else {}

    def one_step():  # the PyTorch DCGAN tutorial's order, as bench_step.worker_torch
        real = reals[next(it) % len(reals)]
        opt_D.zero_grad()
        out_real = D.forward(real)
        err_real, dout = losses.bce_with_logits(out_real, 1.0)
        D.backward(dout, **no_dx)
        fake = G.forward(rng.standard_normal((batch, 100), dtype=np.float32))
        out_fake = D.forward(fake)
        err_fake, dout = losses.bce_with_logits(out_fake, 0.0)
        D.backward(dout, **no_dx)
        opt_D.step()
        opt_G.zero_grad()
        out = D.forward(fake)
        err_G, dout = losses.bce_with_logits(out, 1.0)
        G.backward(D.backward(dout), **no_dx)
        opt_G.step()
        # the same statistics as the PyTorch side: D(x) and D(G(z)) as mean probabilities
        return err_real + err_fake, err_G, (1 / (1 + np.exp(-out_real))).mean(), (1 / (1 + np.exp(-out_fake))).mean()

    return {"ms": bench_step._timed(one_step, steps, warmup, lambda: None)}


def run_worker(kind, batch, steps, warmup, baseline=None):
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHGAN_REFERENCE"}
    root = baseline if kind.endswith("@baseline") else bench_step.ROOT
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")  # the scratchgan of this checkout or the other
    if kind.endswith("-reference"):
        env["SCRATCHGAN_REFERENCE"] = "1"
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, str(batch), str(steps),
                          str(warmup)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])["ms"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="64", help="batch sizes (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=5, help="alternating runs per side (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps first (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 64, 1 rep, few steps")
    parser.add_argument("--baseline", metavar="PATH",
                        help="also run the same loop on another checkout of scratchgan (e.g. a worktree of main)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, batch, steps, warmup = args.worker[0], *map(int, args.worker[1:])
        if kind.startswith("by-hand"):
            res = worker_by_hand(batch, steps, warmup)
        elif kind == "torch":
            res = bench_step.worker_torch(batch, steps, warmup, "numpy")
        else:
            res = bench_step.worker_scratchgan(batch, steps, warmup, "numpy")
        print(json.dumps({"ms": res["ms"]}))
        return 0
    if args.quick:
        args.batches, args.reps, args.steps, args.warmup = "64", 1, 10, 3
    have_torch = importlib.util.find_spec("torch") is not None
    sides = ["by-hand", "gan-step", "by-hand-reference"] + (["torch"] if have_torch else [])
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        sides.append("by-hand@baseline")
    for line in bench_step.machine_header("numpy"):
        print("# " + line)
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        steps = max(5, args.steps * 64 // batch) if batch > 64 else args.steps
        samples = {s: [] for s in sides}
        for rep in range(args.reps):
            for side in (sides if rep % 2 == 0 else sides[::-1]):
                samples[side].append(run_worker(side, batch, steps, args.warmup, args.baseline))
        med = {s: statistics.median(v) for s, v in samples.items()}
        rows.append((batch, med, samples))
        print(f"# batch {batch}: done ({args.reps} runs x {steps} steps per side)", flush=True)
    print("\n| batch | by hand ms | PyTorch eager ms | by hand / PyTorch | GANStep ms | GANStep / PyTorch | "
          "by hand, reference path ms | reference / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for batch, med, _ in rows:
        t = med.get("torch")
        ratio = (lambda s: f"{med[s] / t:.2f}") if t else (lambda s: "-")
        print(f"| {batch} | {med['by-hand']:.2f} | {t:.2f} | **{ratio('by-hand')}** | {med['gan-step']:.2f} | "
              f"{ratio('gan-step')} | {med['by-hand-reference']:.2f} | {ratio('by-hand-reference')} |"
              if t else f"| {batch} | {med['by-hand']:.2f} | - | - | {med['gan-step']:.2f} | - | "
                        f"{med['by-hand-reference']:.2f} | - |")
    if args.baseline:
        for batch, med, _ in rows:
            t = med.get("torch")
            print(f"batch {batch}: the same loop on {args.baseline}: {med['by-hand@baseline']:.2f} ms"
                  + (f" = {med['by-hand@baseline'] / t:.2f}x PyTorch" if t else ""))
    for batch, _, samples in rows:
        print(f"batch {batch}, each run (ms): " + "; ".join(f"{s} " + " / ".join(f"{x:.1f}" for x in v)
                                                            for s, v in samples.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
