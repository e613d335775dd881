"""DCGAN quality parity: scratchgan's 28x28 DCGAN against the same network in PyTorch, same everything.

    python benchmarks/dcgan_parity.py --data-dir ../shared/datasets/fashion-mnist            # 1 epoch, seeds 0,1
    python benchmarks/dcgan_parity.py --data-dir ../shared/datasets/fashion-mnist --steps 20 --n 1000   # a smoke run

For each seed, two training runs, each in its own process, one after the other:

- **scratchgan**: ``models.build_step`` with the DCGAN flags of ``examples/dcgan.py`` (28x28x1, widths
  64, batch 128, BCE on logits, Adam 2e-4 / 0.5 / 0.999), fed by the trainer's ``BatchLoader`` and
  ``NoiseSource``, exactly as ``Trainer`` calls it.
- **PyTorch**: the same layers in ``torch.nn`` (ConvTranspose2d/BatchNorm2d/ReLU, Conv2d/BatchNorm2d/
  LeakyReLU), started from scratchgan's initial weights (copied), fed the same batches in the same
  order and the same z, with the tutorial's step (D on real and fake, Adam on D, G through the
  updated D, Adam on G) and ``torch.optim.Adam``.

Then each G (eval mode: BatchNorm's running statistics) draws ``--n`` images from one fixed z, and
the built-in evaluator (``scratchgan.eval.evaluator``, the default kind of ``scratchgan evaluate``) scores
them against ``--n`` real test images: Frechet distance in its features, precision, recall, classes
covered. The two implementations agree when the gap between their means is within the spread of the
seeds (the largest minus the smallest distance over all runs of one side). Float32, the CPU.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("scratchgan", "torch")


def make_config(seed, batch_size):
    from scratchgan.cli import train as train_command
    config = dict(train_command.DCGAN_DEFAULTS)
    config.update(dataset="fashion-mnist", resolution=28, channels=1, seed=seed, batch_size=batch_size,
                  image_size=784, image_shape=[28, 28])
    return config


def torch_twins(G_sg, D_sg):
    """torch.nn.Sequential copies of scratchgan's DCGAN G and D (28x28: two stages), weights included."""
    import torch

    from scratchgan import nn

    def twin(net):
        layers = []
        for m in net.layers:
            if isinstance(m, nn.Reshape):
                layers.append(torch.nn.Unflatten(1, tuple(m.shape)))
            elif isinstance(m, nn.ConvTranspose2d):
                t = torch.nn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                             bias=False)
                t.weight.data.copy_(torch.from_numpy(m.W.data.copy()))
                layers.append(t)
            elif isinstance(m, nn.Conv2d):
                t = torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=False)
                t.weight.data.copy_(torch.from_numpy(m.W.data.copy()))
                layers.append(t)
            elif isinstance(m, nn.BatchNorm2d):
                t = torch.nn.BatchNorm2d(m.gamma.data.shape[0], eps=m.eps, momentum=m.momentum)
                t.weight.data.copy_(torch.from_numpy(m.gamma.data.reshape(-1).copy()))
                t.bias.data.copy_(torch.from_numpy(m.beta.data.reshape(-1).copy()))
                layers.append(t)
            elif isinstance(m, nn.ReLU):
                layers.append(torch.nn.ReLU())
            elif isinstance(m, nn.LeakyReLU):
                layers.append(torch.nn.LeakyReLU(m.negative_slope))
            elif isinstance(m, nn.Tanh):
                layers.append(torch.nn.Tanh())
            elif isinstance(m, nn.Flatten):
                layers.append(torch.nn.Flatten())
            else:
                raise TypeError(f"no torch twin for {m!r}")
        return torch.nn.Sequential(*layers)
    return twin(G_sg), twin(D_sg)


def worker(side, seed, args):
    """Train one side for the run's steps; write its --n samples as a float32 .npy; print a JSON line."""
    from scratchgan import fast
    fast.configure_process()
    import numpy as np

    from scratchgan.data import BatchLoader, load_dataset
    from scratchgan.gan.models import build_step

    config = make_config(seed, args.batch_size)
    images, _ = load_dataset("fashion-mnist", "train", data_dir=args.data_dir)
    loader = BatchLoader(images, args.batch_size, xp=np, dtype="float32", seed=seed, flatten=False)
    step = build_step(config, np)
    total = args.steps or args.epochs * len(loader)
    fixed_z = np.random.default_rng([seed, 0x5A3]).standard_normal((args.n, config["latent_dim"]), dtype=np.float32)

    if side == "torch":
        import torch
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        G, D = torch_twins(step.G, step.D)
        opt_G = torch.optim.Adam(G.parameters(), lr=config["lr"], betas=(config["beta1"], config["beta2"]))
        opt_D = torch.optim.Adam(D.parameters(), lr=config["lr"], betas=(config["beta1"], config["beta2"]))
        bce = torch.nn.BCEWithLogitsLoss()

        def train_step(real, z):
            real, z = torch.from_numpy(real), torch.from_numpy(z)
            fake = G(z)
            opt_D.zero_grad()
            out_real, out_fake = D(real), D(fake.detach())
            loss_D = bce(out_real, torch.ones_like(out_real)) + bce(out_fake, torch.zeros_like(out_fake))
            loss_D.backward()
            opt_D.step()
            opt_G.zero_grad()
            out = D(fake)
            loss_G = bce(out, torch.ones_like(out))
            loss_G.backward()
            opt_G.step()

        def sample(z):
            G.eval()
            with torch.no_grad():
                return np.concatenate([G(torch.from_numpy(z[i:i + 500])).numpy() for i in range(0, len(z), 500)])
    else:
        def train_step(real, z):
            step.noise.sample = lambda: z  # the z drawn below, shared with the torch side
            step.step([real])

        def sample(z):
            step.G.eval()
            return np.concatenate([step.G.forward(z[i:i + 500]) for i in range(0, len(z), 500)])

    # The same batches and z for both sides: the trainer's loader and noise stream, drawn here.
    from scratchgan.gan.step import NoiseSource
    noise = NoiseSource(np, args.batch_size, config["latent_dim"], seed=seed, dtype="float32")
    t0, done, epoch = time.perf_counter(), 0, 0
    while done < total:
        noise.start_epoch(epoch)
        for real in loader.epoch(epoch):
            if done == total:
                break
            train_step(real, noise.sample())
            done += 1
        epoch += 1
    seconds = time.perf_counter() - t0
    fake = sample(fixed_z).reshape(args.n, 784).astype(np.float32)
    path = os.path.join(args.out, f"{side}_seed{seed}.npy")
    np.save(path, fake)
    print(json.dumps({"side": side, "seed": seed, "steps": done, "seconds": seconds, "samples": path}))


def run_worker(side, seed, args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, os.path.abspath(__file__), "--worker", side, str(seed), "--data-dir", args.data_dir,
            "--out", args.out, "--n", str(args.n), "--epochs", str(args.epochs), "--steps", str(args.steps),
            "--batch-size", str(args.batch_size)]
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"worker {side} seed {seed} failed:\n{out.stderr.strip()[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def score(runs, args):
    """The evaluator's metrics of every run's samples against --n real test images."""
    import numpy as np

    from scratchgan.data import load_dataset
    from scratchgan.eval import evaluator as ev_module
    from scratchgan.eval import metrics
    kwargs = {}
    if args.evaluator and "kind" in inspect.signature(ev_module.get_evaluator).parameters:
        kwargs["kind"] = args.evaluator
    ev = ev_module.get_evaluator("fashion-mnist", args.data_dir, **kwargs)
    test, _ = load_dataset("fashion-mnist", "test", data_dir=args.data_dir)
    order = np.random.default_rng(0x7E57).permutation(len(test))
    real = test[order[:args.n]].reshape(args.n, 784).astype(np.float32) / 127.5 - 1.0
    reference = metrics.RealReference(ev, real)
    for run in runs:
        run.update(metrics.compare(reference, np.load(run["samples"])))
    return ev


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, metavar="DIR", help="the Fashion-MNIST IDX files")
    p.add_argument("--seeds", default="0,1", help="(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--steps", type=int, default=0, help="train this many steps instead of --epochs (default: off)")
    p.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s, examples/dcgan.py's)")
    p.add_argument("--n", type=int, default=10000, help="samples and real images scored (default: %(default)s)")
    p.add_argument("--evaluator", default=None, help="the evaluator kind, where there are several "
                                                     "(default: scratchgan evaluate's)")
    p.add_argument("--out", default="runs/dcgan_parity", metavar="DIR", help="samples go here (default: %(default)s)")
    p.add_argument("--score-only", action="store_true",
                   help="score the samples an earlier run left in --out (e.g. with another --evaluator)")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.data_dir = os.path.abspath(args.data_dir)
    os.makedirs(args.out, exist_ok=True)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args)
        return 0
    runs, log = [], os.path.join(args.out, "runs.jsonl")
    if args.score_only:
        with open(log) as f:
            runs = [json.loads(line) for line in f]
    for i, seed in enumerate(int(s) for s in args.seeds.split(",") if not args.score_only):
        for side in (SIDES if i % 2 == 0 else SIDES[::-1]):  # alternate which side runs first
            runs.append(run_worker(side, seed, args))
            print(f"# {side} seed {seed}: {runs[-1]['steps']} steps in {runs[-1]['seconds']:.0f} s", flush=True)
            with open(log, "w" if len(runs) == 1 else "a") as f:
                f.write(json.dumps(runs[-1]) + "\n")
    ev = score(runs, args)
    print(f"# evaluator: {ev.describe()}")
    print(f"# {args.n} samples of each G (eval mode) against {args.n} real Fashion-MNIST test images\n")
    print("| side | seed | steps | s/step | Frechet distance | precision | recall | classes covered |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(runs, key=lambda r: (r["side"], r["seed"])):
        print(f"| {r['side']} | {r['seed']} | {r['steps']} | {r['seconds'] / r['steps']:.3f} | "
              f"{r['frechet_distance']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['classes_covered']} |")
    by_side = {s: [r["frechet_distance"] for r in runs if r["side"] == s] for s in SIDES}
    means = {s: sum(v) / len(v) for s, v in by_side.items()}
    spread = max(max(v) - min(v) for v in by_side.values())
    gap = abs(means["scratchgan"] - means["torch"])
    print(f"\nmean Frechet distance: scratchgan {means['scratchgan']:.2f}, PyTorch {means['torch']:.2f}; "
          f"gap {gap:.2f}, seed spread {spread:.2f}: "
          + ("within the spread" if gap <= spread else "OUTSIDE the spread"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
