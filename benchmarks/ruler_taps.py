"""Which layer of the CNN evaluator ranks runs as Inception FID does?

    python benchmarks/quality_table.py --data-dir PATH/TO/fashion-mnist --rows bce,hinge,wgan-gp \\
        --score-at 5,10 --fid-n 2000 --out runs/quality
    python benchmarks/ruler_taps.py --runs runs/quality --data-dir PATH/TO/fashion-mnist

reads the snapshots that quality_table.py scored by Inception FID (``--runs``: its results.jsonl and the runs'
checkpoint_epochNNNN.npz files) and measures the Frechet distance of each in several layers ("taps") of the
shipped CNN evaluator: the 128-d features that `scratchgan evaluate` uses, each convolution stage's
activations whole, and the same averaged over a 2 x 2 grid of regions (local texture, little position). The
images are those `evaluate` draws (the same real sets, the same generated ones for ``--seed``), so the
features tap reproduces the recorded CNN distance. It prints every snapshot's distances beside its FID, each
tap's real-data floor, and each tap's Spearman rank correlation with FID.

Why: the two rulers agree on most snapshots but not on what EMA, spectral norm and DiffAugment do to an MLP
GAN (quality.md); the question is whether lower layers, which see local texture before the classifier's
head discards it, rank as FID does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

from scratchgan.backend import get_xp, to_numpy  # noqa: E402
from scratchgan.cli.evaluate import generate_images  # noqa: E402
from scratchgan.data import load_dataset_or_bundled  # noqa: E402
from scratchgan.eval.evaluator import as_model_input, family_of, load_shipped  # noqa: E402
from scratchgan.eval.metrics import frechet_distance_features  # noqa: E402
from scratchgan.gan.generator_file import load_generator  # noqa: E402
from quality_table import spearman  # noqa: E402

REAL_ORDER = 0x4EA1  # the salt `scratchgan evaluate` draws its two real sets with (cli/evaluate.py _measure)


def region_means(a, k=2):
    """(N, C, H, W) -> (N, C*k*k): the mean of each channel over a k x k grid of regions (np.array_split's rows
    and columns, so 7 splits as 4 + 3)."""
    rows = np.array_split(np.arange(a.shape[2]), k)
    cols = np.array_split(np.arange(a.shape[3]), k)
    return np.concatenate([a[:, :, r[0]:r[-1] + 1, c[0]:c[-1] + 1].mean(axis=(2, 3)) for r in rows for c in cols],
                          axis=1)


KINDS = ("whole", "regions", "features")


def tap_features(evaluator, images, kinds=KINDS, batch_size=1000):
    """{tap name: (N, F) float64} for images in [-1, 1] (N, 784): each hidden activation of the evaluator's
    network in order, the convolution stages "whole" and over 2 x 2 "regions", the last one as `evaluate` uses
    it ("features"); only the ``kinds`` asked for."""
    xp, dtype = evaluator.net.xp, evaluator.net.dtype
    parts = []
    for start in range(0, len(images), batch_size):
        x = as_model_input(images[start:start + batch_size], xp, dtype)
        taps, stage = {}, 0
        for layer in evaluator.body:
            x = layer.forward(x)
            if type(layer).__name__ != "LeakyReLU":
                continue
            a = to_numpy(x).astype(np.float64)
            if a.ndim == 4:
                stage += 1
                if "whole" in kinds:
                    taps[f"conv{stage} whole ({a[0].size})"] = a.reshape(len(a), -1)
                if "regions" in kinds:
                    taps[f"conv{stage} 2x2 regions ({a.shape[1] * 4})"] = region_means(a)
            elif "features" in kinds:
                taps[f"features ({a.shape[1]}, what evaluate uses)"] = a
        parts.append(taps)
    for m in evaluator.net.modules():  # inference only: drop the forward caches
        m.cache = None
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def scored_snapshots(runs, dataset):
    """[(row, seed, epoch, cnn distance, fid, checkpoint path)] of results.jsonl's snapshots that have an FID."""
    out = []
    with open(os.path.join(runs, "results.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            for epoch, s in r["scores"].items():
                if "fid" in s:
                    path = os.path.join(runs, f"{dataset}-{r['row']}-s{r['seed']}", f"checkpoint_epoch{int(epoch):04d}.npz")
                    out.append((r["row"], r["seed"], int(epoch), s["frechet_distance"], s["fid"], path))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description="Frechet distances in each layer of the CNN evaluator, ranked against "
                                            "Inception FID.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs", required=True, metavar="DIR", help="quality_table.py's --out folder, run with --fid-n")
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist-bundled"))
    p.add_argument("--data-dir", default=None, metavar="DIR", help="the dataset's IDX files (not for mnist-bundled)")
    p.add_argument("--n", type=int, default=5000, help="images per set, as `evaluate --n`")
    p.add_argument("--seed", type=int, default=0, help="as `evaluate --seed`")
    p.add_argument("--taps", default=",".join(KINDS), metavar="KINDS",
                   help=f"which taps, comma-separated, of: {', '.join(KINDS)} (the whole stages are the slow ones: "
                        "the Frechet distance of 3,136-d features takes seconds)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every distance here")
    args = p.parse_args(argv)

    kinds = [k for k in args.taps.split(",") if k]
    if not kinds or any(k not in KINDS for k in kinds):
        p.error(f"--taps takes some of {', '.join(KINDS)}, comma-separated, not {args.taps!r}")
    snapshots = scored_snapshots(args.runs, args.dataset)
    missing = [s[5] for s in snapshots if not os.path.exists(s[5])]
    if missing:
        p.error(f"{missing[0]} is missing ({len(missing)} snapshots scored in results.jsonl have no checkpoint)")
    if len(snapshots) < 3:
        p.error(f"{args.runs}/results.jsonl has {len(snapshots)} snapshots scored by Inception FID; a rank "
                "correlation needs 3 or more (quality_table.py --fid-n N)")
    xp = get_xp("numpy")
    evaluator = load_shipped(family_of(args.dataset))
    split = "test" if args.dataset == "mnist-bundled" else "train"
    images, _ = load_dataset_or_bundled(args.dataset, split, args.data_dir)
    n = min(args.n, len(images) // 2)
    order = np.random.default_rng([args.seed, REAL_ORDER]).permutation(len(images))
    real = tap_features(evaluator, images[order[:n]], kinds)
    floor = {k: frechet_distance_features(real[k], v)
             for k, v in tap_features(evaluator, images[order[n:2 * n]], kinds).items()}
    names = list(real)
    results = []
    for row, seed, epoch, recorded, fid, path in snapshots:
        G, config, _ = load_generator(path, xp)
        fake = tap_features(evaluator, generate_images(G, n, int(config["latent_dim"]), args.seed), kinds)
        results.append({"row": row, "seed": seed, "epoch": epoch, "fid": fid, "recorded_cnn_distance": recorded,
                        "taps": {k: frechet_distance_features(real[k], fake[k]) for k in names}})
    print(f"{args.dataset}, N = {n}: Frechet distance in each tap of the shipped CNN evaluator, and Inception FID\n")
    print("| row | seed | epoch | Inception FID | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    for r in sorted(results, key=lambda r: r["fid"]):
        print(f"| {r['row']} | {r['seed']} | {r['epoch']} | {r['fid']:.1f} | "
              + " | ".join(f"{r['taps'][k]:.3g}" for k in names) + " |")
    print("| real-data floor | | | | " + " | ".join(f"{floor[k]:.3g}" for k in names) + " |")
    rho = {k: spearman([r["taps"][k] for r in results], [r["fid"] for r in results]) for k in names}
    print(f"\nSpearman rank correlation with Inception FID over {len(results)} snapshots:")
    for k in names:
        print(f"- {k}: {rho[k]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": args.dataset, "n": n, "floor": floor, "spearman": rho, "snapshots": results}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
