"""The evaluator's sanity curves: Frechet distance of known corruptions of real images (README table).

    python benchmarks/evaluator_sanity.py --dataset fashion-mnist --data-dir DIR            # the CNN
    python benchmarks/evaluator_sanity.py --dataset fashion-mnist --data-dir DIR --evaluators cnn,mlp

Uses the dataset's cached evaluator(s) (trained on first use, as `scratchgan evaluate` does) and the
test split: N real images are the reference, N other real images the "fresh real subset" (the floor);
each corruption (scratchgan.eval.corruptions) is applied to that fresh subset at increasing levels. Class
subsets: M images (M: the size of the fresh subset's smallest class) from its first k classes, against
the same reference, next to all 10 classes at the same M (the Frechet distance's bias depends on N). Then the precision of
uniform noise and the coverage of a one-class sample, and how precision depends on the share of the largest
real k-NN balls it leaves out (metrics.OUTLIER_SHARE). No GAN is involved: nothing here is tuned to one.
``--quick`` is a smoke run (bundled digits, a small quickly trained evaluator, N = 300).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scratchgan.data import load_dataset_or_bundled  # noqa: E402
from scratchgan.eval import corruptions, metrics  # noqa: E402
from scratchgan.eval.evaluator import KINDS, get_evaluator  # noqa: E402


def curves(evaluator, ref_images, fresh, fresh_labels, seed=0):
    """[(section, level, metrics dict)] for every corruption level, the class subsets, noise, one class."""
    ref = metrics.RealReference(evaluator, ref_images)
    n = len(fresh)
    rows = [("fresh real subset (floor)", "-", metrics.compare(ref, fresh))]
    for name, (corrupt, levels) in corruptions.CORRUPTIONS.items():
        for level in levels:
            rows.append((name, f"{level:g}", metrics.compare(ref, corrupt(fresh, level, **_seed(corrupt, seed)))))
    m = int(np.bincount(fresh_labels).min())  # the most that every single class can give
    for k in (10, 8, 6, 4, 2, 1):
        rows.append((f"classes kept (N = {m})", str(k),
                     metrics.compare(ref, corruptions.keep_classes(fresh, fresh_labels, k, m, seed))))
    noise = np.random.default_rng([seed, 0x0153]).uniform(-1.0, 1.0, (n, 784)).astype(np.float32)
    rows.append(("uniform noise", "-", metrics.compare(ref, noise)))
    return rows


OUTLIER_SHARES = (0.0, 0.05, 0.1, 0.25, 0.5)


def outlier_sweep(evaluator, ref_images, fresh, seed=0):
    """{name: [precision at each OUTLIER_SHARES]} for the fresh real subset, uniform noise, and each
    corruption at its mildest and strongest level: what leaving out the largest real balls does."""
    ref = evaluator.features(ref_images)
    radii = metrics.knn_sq_radii(ref, metrics.DEFAULT_K)
    sets = {"fresh real": fresh,
            "uniform noise": np.random.default_rng([seed, 0x0153]).uniform(-1.0, 1.0, (len(fresh), 784))
                                                                  .astype(np.float32)}
    for name, (corrupt, levels) in corruptions.CORRUPTIONS.items():
        for level in (levels[0], levels[-1]):
            sets[f"{name.split(' (')[0]} {level:g}"] = corrupt(fresh, level, **_seed(corrupt, seed))
    return {name: [metrics.precision_recall(ref, evaluator.features(images), real_radii=radii,
                                            outlier_share=share)[0] for share in OUTLIER_SHARES]
            for name, images in sets.items()}


def _seed(fn, seed):
    return {"seed": seed} if fn in (corruptions.additive_noise, corruptions.salt_and_pepper) else {}


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", help="(default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="the IDX files' folder (default: the data cache)")
    p.add_argument("--evaluators", default="cnn", help="comma-separated kinds, one column each (default: cnn)")
    p.add_argument("--n", type=int, default=5000, help="images per set (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smoke run: bundled digits, small evaluator, N = 300")
    return p


def main(argv=None):
    p = make_parser()
    args = p.parse_args(argv)
    kinds = args.evaluators.split(",")
    if any(k not in KINDS for k in kinds):
        p.error(f"--evaluators: choose among {', '.join(KINDS)}, got {args.evaluators!r}")
    dataset, data_dir, n, quick = args.dataset, args.data_dir, args.n, {}
    if args.quick:
        dataset, data_dir, n, quick = "mnist-bundled", None, 300, {"limit": 2000, "epochs": 1}
    images, labels = load_dataset_or_bundled(dataset, "test", data_dir, log=lambda m: None)
    if len(images) < 2 * n:
        p.error(f"--n {n}: the {dataset} test split has {len(images)} images, fewer than 2N")
    order = np.random.default_rng(0).permutation(len(images))
    ref, fresh, fresh_labels = images[order[:n]], images[order[n:2 * n]], labels[order[n:2 * n]]

    table, evaluators = {}, {}
    for kind in kinds:
        ev = evaluators[kind] = get_evaluator(dataset, data_dir, kind=kind, log=lambda m: print(m, file=sys.stderr),
                                              **quick)
        print(ev.describe())
        t0 = time.perf_counter()
        table[kind] = curves(ev, ref, fresh, fresh_labels)
        print(f"{kind}: {len(table[kind])} comparisons in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    print(f"\n{dataset} test split: reference N = {n} real images; each row N other real images, corrupted "
          f"(Frechet distance in each evaluator's features)\n")
    print("| corruption | level | " + " | ".join(f"FD ({k})" for k in kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    base = table[kinds[0]]
    for i, (section, level, _) in enumerate(base):
        print(f"| {section} | {level} | " + " | ".join(f"{table[k][i][2]['frechet_distance']:.4g}" for k in kinds)
              + " |")
    print()
    print("| check | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    noise = {k: table[k][-1][2] for k in kinds}
    one = {k: next(r[2] for r in table[k] if r[0].startswith("classes kept") and r[1] == "1") for k in kinds}
    floor = {k: table[k][0][2] for k in kinds}
    print("| precision: uniform noise / fresh real | "
          + " | ".join(f"{noise[k]['precision']:.3f} / {floor[k]['precision']:.3f}" for k in kinds) + " |")
    print("| classes covered: fresh real / one class | "
          + " | ".join(f"{floor[k]['classes_covered']} / {one[k]['classes_covered']}" for k in kinds) + " |")
    print("| recall: fresh real / one class | "
          + " | ".join(f"{floor[k]['recall']:.3f} / {one[k]['recall']:.3f}" for k in kinds) + " |")
    monotone = {}
    for k in kinds:
        ok = True
        for name in list(corruptions.CORRUPTIONS) + ["classes kept"]:
            fds = [table[k][0][2]["frechet_distance"]] if name != "classes kept" else []
            fds += [r[2]["frechet_distance"] for r in table[k] if r[0].startswith(name)]
            ok &= all(b > a for a, b in zip(fds, fds[1:]))
        monotone[k] = "yes" if ok else "NO"
    print("| every curve strictly increasing | " + " | ".join(monotone[k] for k in kinds) + " |")
    for kind, ev in evaluators.items():
        sweep = outlier_sweep(ev, ref, fresh)
        print(f"\nprecision ({kind}) against the share of real k-NN balls left out, the largest first "
              f"(the evaluator uses {metrics.OUTLIER_SHARE:g}):\n")
        print("| images | " + " | ".join(f"{share:g}" for share in OUTLIER_SHARES) + " |")
        print("|---|" + "---|" * len(OUTLIER_SHARES))
        for name, values in sweep.items():
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
