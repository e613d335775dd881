"""The quality table: objectives alone and with the tools of stronger GANs, scored by the built-in evaluator.

    python benchmarks/quality_table.py --data-dir ../shared/datasets/fashion-mnist            # every row, 10 epochs
    python benchmarks/quality_table.py --data-dir ../shared/datasets/fashion-mnist --rows bce,bce+tools --epochs 20
    python benchmarks/quality_table.py --dataset mnist-bundled --rows bce --epochs 5            # the bundled digits

Each row is one `scratchgan train` run (the MLP GAN unless the row says dcgan) with
``--snapshot-every`` at the scored epochs; each kept snapshot is then scored by `scratchgan evaluate`
(the CNN evaluator unless --evaluator says otherwise; N generated against N real training images):
Frechet distance in the evaluator's features, recall, and classes covered. With ``--fid-n N`` each snapshot
is also scored by Inception FID (`scratchgan evaluate --metric fid`, N generated against N real training
images), and the table ends with the rank correlation of the two rulers. Seconds per epoch come from the
run's own log. Runs go one after another, each in its own process, on all the cores.

    python benchmarks/quality_table.py --data-dir ../shared/datasets/fashion-mnist --rows bce,hinge --fid-n 2000
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ["--ema", "0.999", "--spectral-norm", "--diffaugment", "translation,cutout,color"]
ROWS = {
    "bce": [],
    "bce+tools": TOOLS,
    "hinge": ["--loss", "hinge"],
    "hinge+tools": ["--loss", "hinge", *TOOLS],
    "wgan-gp": ["--loss", "wgan-gp"],
    # spectral norm and the gradient penalty are refused together: EMA and DiffAugment only
    "wgan-gp+tools": ["--loss", "wgan-gp", "--ema", "0.999", "--diffaugment", "translation,cutout,color"],
    # one tool at a time, to see which one holds a row back
    "bce+ema": ["--ema", "0.999"],
    "bce+sn": ["--spectral-norm"],
    "bce+diffaug": ["--diffaugment", "translation,cutout,color"],
    "hinge+ema": ["--loss", "hinge", "--ema", "0.999"],
    "hinge+sn": ["--loss", "hinge", "--spectral-norm"],
    "wgan-gp+ema": ["--loss", "wgan-gp", "--ema", "0.999"],
    "wgan-gp+diffaug": ["--loss", "wgan-gp", "--diffaugment", "translation,cutout,color"],
    # the 28x28 DCGAN of examples/dcgan.py (widths 64, batch 128, BCE)
    "dcgan": ["--arch", "dcgan", "--image-size", "28", "--channels", "1"],
    "dcgan+ema": ["--arch", "dcgan", "--image-size", "28", "--channels", "1", "--ema", "0.999"],
    # --preset quality: the 28x28 DCGAN at widths 32, batch 64, EMA 0.999 (the table's --epochs wins over its 12)
    "quality-preset": ["--preset", "quality"],
}


def run(cmd, log_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        with open(log_path) as f:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{f.read()[-2000:]}")
    with open(log_path) as f:
        return f.read()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist-bundled"],
                   help="(default: %(default)s)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="the dataset's IDX files (not for mnist-bundled)")
    p.add_argument("--rows", default=None, help="comma-separated, of: " + ", ".join(ROWS) + " (default: every row "
                   "the dataset can run: quality-preset is a Fashion-MNIST recipe)")
    p.add_argument("--epochs", type=int, default=10, help="train this long (default: %(default)s)")
    p.add_argument("--score-at", default="5,10,20", help="epochs scored, up to --epochs (default: %(default)s)")
    p.add_argument("--seeds", default="0", help="(default: %(default)s)")
    p.add_argument("--n", type=int, default=5000, help="images per evaluation (default: %(default)s)")
    p.add_argument("--evaluator", default="cnn", help="(default: %(default)s)")
    p.add_argument("--fid-n", type=int, default=0, metavar="N",
                   help="also score by Inception FID, N generated against N real images; 0: no FID (default: %(default)s)")
    p.add_argument("--out", default="runs/quality", metavar="DIR", help="(default: %(default)s)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    score_at = [e for e in (int(x) for x in args.score_at.split(",")) if e <= args.epochs]
    every = score_at[0] if score_at else args.epochs
    data = ["--dataset", args.dataset] + (["--data-dir", os.path.abspath(args.data_dir)] if args.data_dir else [])
    results = []
    rows = args.rows.split(",") if args.rows else [r for r in ROWS if r != "quality-preset"
                                                    or args.dataset == "fashion-mnist"]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"--rows: no row {unknown[0]!r}; the rows are {', '.join(ROWS)}")
    for name in rows:
        for seed in (int(s) for s in args.seeds.split(",")):
            out = os.path.join(args.out, f"{args.dataset}-{name}-s{seed}")
            cmd = [sys.executable, "-m", "scratchgan", "train", *data, *ROWS[name], "--epochs", str(args.epochs),
                   "--seed", str(seed), "--snapshot-every", str(every), "--sample-every", "0", "--no-progress",
                   "--out", out, "--overwrite"]
            t0 = time.perf_counter()
            text = run(cmd, out + ".log")
            per_epoch = [float(s) for s in re.findall(r"epoch \d+/\d+ done in ([\d.]+) s", text)]
            row = {"row": name, "seed": seed, "seconds": time.perf_counter() - t0,
                   "s_per_epoch": sum(per_epoch) / max(1, len(per_epoch)), "scores": {}}
            for epoch in score_at:
                snapshot = os.path.join(out, f"checkpoint_epoch{epoch:04d}.npz")
                if not os.path.exists(snapshot):
                    continue
                js = os.path.join(out, f"eval_epoch{epoch:04d}.json")
                run([sys.executable, "-m", "scratchgan", "evaluate", "--checkpoint", snapshot, *data[2:],
                     "--n", str(args.n), "--evaluator", args.evaluator, "--json", js], js + ".log")
                with open(js) as f:
                    r = json.load(f)
                row["scores"][epoch] = {k: r[k] for k in ("frechet_distance", "recall", "classes_covered")}
                if args.fid_n:
                    row["scores"][epoch]["fid"] = inception_fid(snapshot, data[2:], args.fid_n, out, epoch)
            results.append(row)
            print(f"# {name} seed {seed}: {row['s_per_epoch']:.1f} s/epoch, "
                  + ", ".join(f"epoch {e}: FD {s['frechet_distance']:.1f}" for e, s in row["scores"].items()),
                  flush=True)
            with open(os.path.join(args.out, "results.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
    fid = " / FID" if args.fid_n else ""
    head = " | ".join(f"epoch {e}: FD / recall / classes{fid}" for e in score_at)
    print(f"\n{args.dataset}, {args.evaluator} evaluator, N = {args.n}\n")
    print(f"| row | seed | s/epoch | {head} |")
    print("|---|---|---|" + "---|" * len(score_at))
    for r in results:
        cells = [(f"{s['frechet_distance']:.1f} / {s['recall']:.3f} / {s['classes_covered']}"
                  + (f" / {s['fid']:.1f}" if "fid" in s else "")
                  if (s := r["scores"].get(e)) else "-") for e in score_at]
        print(f"| {r['row']} | {r['seed']} | {r['s_per_epoch']:.1f} | " + " | ".join(cells) + " |")
    pairs = [(s["frechet_distance"], s["fid"]) for r in results for s in r["scores"].values() if "fid" in s]
    if len(pairs) >= 3:
        print(f"\nSpearman rank correlation, CNN distance against Inception FID over {len(pairs)} snapshots: "
              f"{spearman(*zip(*pairs)):.3f}")
    return 0


def inception_fid(snapshot, data_flags, n, out, epoch):
    """The snapshot's Inception FID (N generated against N real images of the run's training split), as `evaluate` records it."""
    js = os.path.join(out, f"fid_epoch{epoch:04d}.json")
    run([sys.executable, "-m", "scratchgan", "evaluate", "--checkpoint", snapshot, *data_flags, "--metric", "fid",
         "--n-fake", str(n), "--n-real", str(n), "--json", js, "--overwrite"], js + ".log")
    with open(js) as f:
        return json.load(f)["fid"]


def spearman(a, b):
    """Spearman's rho: the Pearson correlation of the ranks (ties get their mean rank)."""
    import numpy as np

    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):  # ties: the mean of their ranks
            r[v == value] = r[v == value].mean()
        return r
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


if __name__ == "__main__":
    sys.exit(main())
