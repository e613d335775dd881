"""How often a conditional generator makes the class it is asked for, as the evaluator's classifier judges.

    SCRATCHGAN_DATA=DIR python benchmarks/class_accuracy.py --checkpoint runs/NAME/checkpoint.npz
    python benchmarks/class_accuracy.py --checkpoint G.npz --per-class 100 --evaluator cnn --seed 0

For each class k, ``--per-class`` images of ``G.generate(label=k)`` (seeds ``seed, seed + 1, ...``: the
noise of `scratchgan sample --seeds`) are classified by the evaluator (scratchgan.eval.evaluator, the
CNN by default: trained on the dataset's training split on first use, then cached under the data cache,
as `scratchgan evaluate` does); the table gives, per class and in all, the fraction judged as the asked
class. The dataset is the checkpoint's (an MNIST-like one: the evaluator classifies 28x28 grey digits or
clothes). ``--evaluator-limit N`` trains a quick evaluator on N images only (a smoke run).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import scratchgan  # noqa: E402
from scratchgan.eval.evaluator import KINDS, get_evaluator  # noqa: E402

MNIST_LIKE = ("mnist", "fashion-mnist", "mnist-bundled")


def judged(G, evaluator, per_class, seed=0):
    """(asked labels (K * per_class,), predicted labels) for ``per_class`` images of every class of G."""
    asked = np.repeat(np.arange(G.num_classes), per_class)
    images = G.generate(len(asked), seed=seed, label=asked)  # uint8 (n, 28, 28) or (n, 1, 28, 28) squeezed
    return asked, evaluator.predict(images.reshape(len(asked), -1))


def table(asked, predicted, names=None):
    """Markdown rows: each class's fraction judged as itself, then all of them together."""
    lines = ["| class | asked | judged as asked | fraction |", "|---|---:|---:|---:|"]
    for k in range(int(asked.max()) + 1):
        mine = asked == k
        hits = int((predicted[mine] == k).sum())
        name = f"{k} ({names[k]})" if names else str(k)
        lines.append(f"| {name} | {int(mine.sum())} | {hits} | {hits / mine.sum():.3f} |")
    hits = int((predicted == asked).sum())
    lines.append(f"| all | {len(asked)} | {hits} | {hits / len(asked):.3f} |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a conditional run's checkpoint.npz, or its exported generator")
    p.add_argument("--per-class", type=int, default=100, help="images per class (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="first noise seed (default: 0)")
    p.add_argument("--evaluator", choices=KINDS, default=KINDS[0], help="the classifier (default: cnn)")
    p.add_argument("--evaluator-limit", type=int, default=None, metavar="N",
                   help="train the evaluator on the first N training images only, 1 epoch (a smoke run)")
    args = p.parse_args(argv)
    try:
        G, config = scratchgan.load_generator(args.checkpoint)
    except Exception as e:  # noqa: BLE001  one line for any file that cannot be a generator
        p.exit(2, f"class_accuracy.py: error: {str(e).splitlines()[0]}\n")
    dataset = config.get("dataset")
    if G.num_classes is None or dataset not in MNIST_LIKE:
        p.exit(2, f"class_accuracy.py: error: {args.checkpoint} is not a conditional generator of an MNIST-like "
                  f"dataset (its dataset: {dataset}); the evaluator classifies 28x28 digits or clothes\n")
    quick = {"limit": args.evaluator_limit, "epochs": 1} if args.evaluator_limit else {}
    evaluator = get_evaluator(dataset, config.get("data_dir"), kind=args.evaluator,
                              log=lambda line: print(line, file=sys.stderr), **quick)
    asked, predicted = judged(G, evaluator, args.per_class, args.seed)
    print(f"{args.checkpoint}: {G!r}, {args.per_class} images per class from seed {args.seed}")
    print(evaluator.describe())
    print("\n".join(table(asked, predicted, G.class_names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
