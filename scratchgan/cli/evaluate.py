"""`python -m scratchgan evaluate`: measure a checkpoint's generator against real data.

    python -m scratchgan evaluate --checkpoint runs/mnist_mlp/checkpoint.npz [--n 10000] [--json FILE]
    python -m scratchgan evaluate runs/00012-dcgan-cifar10 --metric fid [--n-fake 2000 --n-real 2000]

Generates N images, embeds them with the evaluator classifier (scratchgan.eval.evaluator: the CNN shipped
with the package for MNIST and Fashion-MNIST; any other one trained on first use and cached), and prints the metrics of scratchgan.eval.metrics next to two references:

- real floor: N real images, disjoint from the N real reference images, measured the same way: what a
  perfect generator would score with this N (Frechet distance near 0, precision/recall near their max);
- noise ceiling: N images of uniform noise in [-1, 1]: what no learning at all scores.

``--metric fid`` (the default for runs that are not 28x28 grey digits or clothes) measures the Inception FID
instead (scratchgan.eval.fid): N generated images against N real ones of the run's own dataset, with its
protocol printed beside the number.

`python -m scratchgan evaluator --dataset fashion-mnist --out FILE` trains an evaluator and writes it: the
command that made the shipped weights (scratchgan/eval/weights/), and rebuilds them bit for bit.

Every user mistake ends in one line on stderr and exit code 2, as in the rest of the CLI.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from .. import replace
from ..backend import BackendError, get_xp
from ..checkpoint import CheckpointError, atomic_write, read_meta
from ..data import DataError, load_dataset_or_bundled, registry
from ..eval import fid, metrics, shipped
from ..eval.evaluator import (DEFAULT_KIND, KINDS, TARGET_STEPS_BY_KIND, TIMING_KEYS, TrainingData, fit_evaluator,
                              get_evaluator, save_evaluator)
from ..gan.generator_file import generate_on_host, load_generator
from ..run.evaluation import measured, no_metric
from .common import (Parser, UserError, check_new_files, interruption, non_negative_int, positive_int, run_command, say,
                     with_version)
from .common import fail as _fail
from .common import log as _log
from .common import os_error_message as _os_error_message

# the datasets the evaluator's classifiers know: 28x28 grey digits or clothes (data/registry.py)
METRICS = ("classifier", "fid")
EVALUATED = tuple(name for name, dataset in registry.BY_NAME.items() if dataset.mnist_like)
ROWS = (  # (key, label, format)
    ("frechet_distance", "Frechet distance (classifier features)", "{:.4g}"),
    ("classifier_score", "classifier score (IS-style, max {C})", "{:.3f}"),
    ("classes_covered", "classes covered (of {C})", "{:d}"),
    ("class_kl", "class KL(gen || real)", "{:.4f}"),
    ("precision", "precision (k={k})", "{:.3f}"),
    ("recall", "recall (k={k})", "{:.3f}"),
    ("feature_spread", "feature spread (RMS to mean)", "{:.3f}"),
)


def make_parser(prog):
    p = Parser(prog=prog, description="Measure a checkpoint's generator. 28x28 grey runs, by default: Frechet "
               "distance in the evaluator classifier's feature space (not comparable with Inception FID), "
               "classifier score, mode coverage, k-NN precision and recall; next to a real-data floor and a noise "
               "ceiling. Every other run, or --metric fid: the Inception FID, printed with its protocol.")
    p.add_argument("run", nargs="?", default=None, metavar="RUN",
                   help="a run folder (its checkpoint.npz), a checkpoint or an exported generator")
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="a checkpoint.npz from training (or give RUN)")
    p.add_argument("--metric", choices=METRICS, default=None,
                   help="classifier: the evaluator classifier's metrics below (28x28 grey runs only); fid: the "
                        "Inception FID, for every run, minutes on a CPU (default: classifier for 28x28 grey digits "
                        "or clothes, fid for the others)")
    p.add_argument("--n-fake", type=positive_int, default=fid.DEFAULT_N, metavar="N",
                   help="--metric fid: generated images (default: %(default)s)")
    p.add_argument("--n-real", type=positive_int, default=fid.DEFAULT_N, metavar="N",
                   help="--metric fid: real images, a seeded choice from the split; their statistics are cached "
                        "(default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=10000,
                   help="--metric classifier: number of generated (and of real) images; reduced when the split has "
                        "fewer than 2N images (default: %(default)s)")
    p.add_argument("--dataset", choices=list(EVALUATED), default=None,
                   help="real data to compare with (default: the checkpoint's training dataset)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="read the IDX files from DIR (default: the checkpoint's, when the dataset is the same)")
    p.add_argument("--split", choices=["train", "test"], default=None,
                   help="split of the real images (default: the checkpoint's training split)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write the results to FILE as JSON; an existing FILE is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json FILE (default: off)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                   help="where the generator and the evaluator run (default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds the generator's noise, the choice of real images and the noise images "
                        "(default: %(default)s)")
    p.add_argument("--k", type=positive_int, default=metrics.DEFAULT_K,
                   help="neighbours for precision/recall (default: %(default)s)")
    g = p.add_argument_group("evaluator (the classifier: shipped for MNIST and Fashion-MNIST; any other one is "
                             "trained on first use and cached)")
    g.add_argument("--evaluator", choices=list(KINDS), default=DEFAULT_KIND,
                   help="cnn: the convolutional classifier; mlp: the MLP of earlier releases, for old numbers "
                        "(default: %(default)s)")
    g.add_argument("--evaluator-seed", type=non_negative_int, default=0, metavar="SEED",
                   help="another seed than 0 trains its own evaluator (default: %(default)s)")
    g.add_argument("--evaluator-epochs", type=positive_int, default=None, metavar="E",
                   help="training epochs (default: about 2,400 Adam steps for the mlp, "
                        f"{TARGET_STEPS_BY_KIND['cnn']:,} for the cnn)")
    g.add_argument("--evaluator-limit", type=positive_int, default=None, metavar="N",
                   help="train it on the first N training images only, for quick trials (default: all)")
    return with_version(p)


def generate_images(G, n, latent_dim, seed):
    """n images from z ~ N(0, I) seeded by ``seed``, float32 on the host, (n, D) in [-1, 1]."""
    z = np.random.default_rng(seed).standard_normal((n, latent_dim))
    return generate_on_host(G, z).reshape(n, -1)  # a conditional G makes the classes in turn (gan.generate)


def _check_json_target(path, overwrite):
    """UserError when ``path`` is a folder, lies under a file, or exists without --overwrite (reads only)."""
    if path.is_dir():
        raise UserError(f"--json {path} is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--json {path}: {parent} is a file, not a folder")
            break
    check_new_files([path], "--json", overwrite)


def format_table(results, n_classes, k):
    cols = ("generated", "real floor", "noise ceiling")
    sets = (results, results["real_floor"], results["noise_ceiling"])
    labels = [label.format(C=n_classes, k=k) for _, label, _ in ROWS]
    width = max(len(s) for s in labels + ["metric"])
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{c:>13}" for c in cols)]
    lines.append("-" * len(lines[0]))
    for (key, _, fmt), label in zip(ROWS, labels):
        lines.append(f"{label:<{width}}  " + "  ".join(f"{fmt.format(s[key]):>13}" for s in sets))
    return "\n".join(lines)


def evaluate_main(argv=None, prog="scratchgan evaluate"):
    args = make_parser(prog).parse_args(argv)
    return run_command(prog, lambda: _evaluate(args, prog))


def _evaluate(args, prog):
    stage = ["loading the checkpoint"]  # what an interruption stopped, for its one line
    try:
        args.checkpoint = _checkpoint_path(args)
        _check_measurable(args)
        if args.json:  # before minutes of work: a target that cannot be a file is refused now
            _check_json_target(Path(args.json), args.overwrite)
        G, config, meta = load_generator(args.checkpoint, get_xp(args.backend), log=_log)
        if _metric(args, G, config) == "fid":
            return _report_fid(args, prog, _measure_fid(args, G, config, meta, stage), stage)
        pixels = generate_images(G, 2, int(config["latent_dim"]), args.seed).shape[1]
        if pixels != 784:
            raise UserError(f"{args.checkpoint}: the evaluator handles 28x28 grey images (784 values); this "
                            f"generator makes {pixels}")
        real = _real_images(args, config, stage)
        stage[0] = "loading or training the evaluator (it is cached only once fully trained)"
        evaluator = get_evaluator(real.dataset, real.data_dir, kind=args.evaluator, backend=args.backend,
                                  seed=args.evaluator_seed, epochs=args.evaluator_epochs,
                                  limit=args.evaluator_limit, log=_log)
        _log(evaluator.describe())
        stage[0] = "measuring"
        results = _measure(G, config, real, evaluator, args)
    except KeyboardInterrupt as e:
        raise interruption(e, f"stopped while {stage[0]}; no results were written") from None
    except (UserError, CheckpointError, DataError, BackendError, ValueError) as e:
        return _fail(prog, e)
    except OSError as e:
        return _fail(prog, _os_error_message(e, verb="cannot use", advice="check that path (the evaluator's cache "
                                                                          "is under SCRATCHGAN_DATA)"))
    except MemoryError as e:
        return _fail(prog, f"--n {args.n}: out of memory ({e}); use a smaller --n")
    results.update(_record(args, meta, real, evaluator))
    epoch = f"epoch {meta.get('epoch')}, step {meta.get('global_step')}"
    say(f"{args.checkpoint} ({epoch}) vs {real.dataset} {real.split}, N = {real.n}"
        + (f" (reduced from {args.n})" if real.note else ""))
    say(format_table(results, evaluator.n_classes, args.k))
    say("real floor: a second, disjoint set of N real images; noise ceiling: uniform noise images. "
        "Frechet distance in classifier features: not comparable with Inception FID.")
    return _write_json(args, results, prog) if args.json else 0


def _check_measurable(args):
    """A run on data the evaluator does not know (CIFAR-10, a folder, .npy): said before any work, with the
    commands that do score it. Reads only the checkpoint's header; a damaged file is left to load_generator."""
    if args.dataset is not None or args.metric != "classifier":  # (without --metric: FID for such runs)
        return
    try:
        dataset = read_meta(args.checkpoint).get("config", {}).get("dataset", "mnist")
    except (CheckpointError, OSError, AttributeError):
        return
    if not measured(dataset):
        raise UserError(no_metric(dataset, args.checkpoint))


@dataclasses.dataclass
class _Real:
    """The real images measured against: which, and how many per set (``n``, reduced with a ``note``)."""
    dataset: str
    split: str
    data_dir: str | None
    images: np.ndarray
    n: int
    note: str | None


def _real_images(args, config, stage):
    """The real images: --dataset/--split/--data-dir, else the checkpoint's own where it is the same dataset."""
    trained_on = config.get("dataset", "mnist")
    dataset = args.dataset or trained_on
    if dataset not in EVALUATED:
        raise UserError(f"the evaluator knows {', '.join(EVALUATED)}, not {dataset!r} (the checkpoint's "
                        "dataset); pass --dataset")
    if args.data_dir is not None:
        data_dir = args.data_dir
    else:
        data_dir = config.get("data_dir") if dataset == trained_on else None
    if args.split is not None:
        split = args.split
    elif dataset == "mnist-bundled":
        split = "test"
    else:
        split = config.get("split", "train") if dataset == trained_on else "train"
    if dataset == "mnist-bundled":
        data_dir = None  # the bundled digits ship inside the package
    stage[0] = f"loading the {dataset} images"
    images, _ = load_dataset_or_bundled(dataset, split, data_dir, log=_log)
    n, note = args.n, None
    if len(images) < 2 * n:
        n = len(images) // 2
        note = (f"the {dataset} {split} split has {len(images)} images, fewer than 2 x {args.n} for two "
                f"disjoint real sets; N reduced to {n}")
        _log(f"note: {note}")
    if n < args.k + 2:
        raise UserError(f"N = {n} images is too few for k = {args.k} nearest neighbours")
    return _Real(dataset, split, data_dir, images, n, note)


def _measure(G, config, real, evaluator, args):
    """The metrics of N generated images, of N other real ones (the floor) and of N noise images (the
    ceiling), each against N real images."""
    t0 = time.perf_counter()
    n = real.n
    order = np.random.default_rng([args.seed, 0x4EA1]).permutation(len(real.images))
    real_a, real_b = real.images[order[:n]], real.images[order[n:2 * n]]
    fake = generate_images(G, n, int(config["latent_dim"]), args.seed)
    noise = np.random.default_rng([args.seed, 0x0153]).uniform(-1.0, 1.0, (n, 784)).astype(np.float32)
    reference = metrics.RealReference(evaluator, real_a, args.k)
    results = metrics.compare(reference, fake)
    results["real_floor"] = metrics.compare(reference, real_b)
    results["noise_ceiling"] = metrics.compare(reference, noise)
    results["real_class_distribution"] = reference.class_dist.tolist()
    results["seconds"] = round(time.perf_counter() - t0, 2)
    return results


def _record(args, meta, real, evaluator):
    """What the results were measured on and how, for --json."""
    n, dataset, split = real.n, real.dataset, real.split
    return {
        "n_requested": args.n, "note": real.note, "k": args.k, "seed": args.seed,
        "checkpoint": str(args.checkpoint), "epoch": meta.get("epoch"), "global_step": meta.get("global_step"),
        "dataset": dataset, "split": split, "data_dir": real.data_dir,
        "reference": f"{n} real {dataset} {split} images (seeded choice); real floor: {n} other, disjoint ones; "
                     f"noise ceiling: {n} images of uniform noise in [-1, 1]",
        "coverage_rule": metrics.COVERAGE_RULE,
        "frechet_note": "Frechet distance in the evaluator classifier's feature space; not comparable with "
                        "Inception FID numbers",
        "evaluator": dict(evaluator.info),
    }


def _write_json(args, results, prog):
    try:
        with atomic_write(Path(args.json), durable=False) as f:
            f.write((json.dumps(results, indent=2, sort_keys=True) + "\n").encode())
    except KeyboardInterrupt as e:
        raise interruption(e, f"the results above were not saved to {args.json}") from None
    except OSError as e:  # atomic_write names the target, never its temp file
        return _fail(prog, f"--json {args.json}: cannot write it ({e.strerror or e}); results above were "
                           "not saved")
    _log(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------- --metric fid

def _checkpoint_path(args):
    """The checkpoint to measure: RUN (a run folder's checkpoint.npz, or a file) or --checkpoint."""
    if args.run is not None and args.checkpoint is not None:
        raise UserError("give RUN or --checkpoint, not both")
    if args.run is None:
        if args.checkpoint is None:
            raise UserError("give a run folder (RUN) or --checkpoint PATH")
        return args.checkpoint
    run = Path(args.run)
    if run.is_dir():
        if not (run / "checkpoint.npz").is_file():
            raise UserError(f"{run} is not a run folder: it has no checkpoint.npz")
        return str(run / "checkpoint.npz")
    if not run.exists():
        raise UserError(f"{run} does not exist; give a run folder or a checkpoint")
    return str(run)


def _metric(args, G, config):
    """--metric, else classifier for 28x28 grey MNIST-like runs and fid for every other run."""
    if args.metric is not None:
        return args.metric
    pixels = generate_images(G, 2, int(config["latent_dim"]), args.seed).shape[1]
    dataset = registry.BY_NAME.get(config.get("dataset", "mnist"))
    return "classifier" if pixels == 784 and dataset is not None and dataset.mnist_like else "fid"


def _fid_real_images(args, config):
    """(uint8 real images, a seeded choice of --n-real of them, "dataset split") from the run's own data settings
    (config.json's dataset, data dir, image size and channels; --split, --data-dir and --dataset override)."""
    from .train import load_images  # the run's own loading: registry, offline fallback, the DCGAN's fitting

    settings = {**config, "limit": None}
    if args.dataset is not None:
        settings["dataset"] = args.dataset
    if args.data_dir is not None:
        settings["data_dir"] = args.data_dir
    if args.split is not None:
        settings["split"] = args.split
    settings.setdefault("split", "train")
    images = load_images(settings, _log)
    source = f"{settings['dataset']} {settings['split']}"
    if args.n_real > len(images):
        raise UserError(f"--n-real {args.n_real}: the {source} split has {len(images)} images; use --n-real "
                        f"{len(images)} or fewer")
    return images[fid.choose(len(images), args.n_real)], source, settings


def _fid_cache(real, settings, net):
    """The cache file of the real statistics: per dataset, split, n, image shape, weights (and an image folder's
    or .npy file's path)."""
    from ..data import data_root

    tag = "x".join(str(s) for s in real.shape[1:])
    if settings["dataset"] in ("folder", "npy"):
        where = str(Path(settings.get("data_dir") or "").expanduser().resolve())
        tag += "-" + hashlib.sha256(where.encode()).hexdigest()[:8]
    return fid.stats_cache_path(data_root(), settings["dataset"], settings["split"], len(real),
                                fid.weights_sha256(net), tag)


def _measure_fid(args, G, config, meta, stage):
    """The Inception FID of --n-fake generated images against --n-real real ones, with its record for --json."""
    stage[0] = "loading the real images"
    real, source, settings = _fid_real_images(args, config)
    stage[0] = "loading the FID Inception network"
    net = fid.load_network(args.backend, log=_log)
    stage[0] = "computing Inception features"
    z = np.random.default_rng(args.seed).standard_normal((args.n_fake, int(config["latent_dim"])))
    fake = generate_on_host(G, z)  # (n, D) from an MLP, (n, C, H, W) from a DCGAN
    shape = config.get("image_shape")
    if fake.ndim == 2 and shape and int(np.prod(shape)) == fake.shape[1]:
        fake = fake.reshape(len(fake), *shape)
    results = fid.measure(net, fake, real, source, cache=_fid_cache(real, settings, net), log=_log)
    results.update({"metric": "fid", "seed": args.seed, "checkpoint": str(args.checkpoint),
                    "epoch": meta.get("epoch"), "global_step": meta.get("global_step"),
                    "dataset": settings["dataset"], "split": settings["split"], "data_dir": settings.get("data_dir")})
    return results


def _report_fid(args, prog, results, stage):
    """The FID line on stdout (its protocol beside it), and --json."""
    epoch = f"epoch {results['epoch']}, step {results['global_step']}"
    say(f"{args.checkpoint} ({epoch}): {results['line']}")
    _log(f"{results['seconds']:.0f} s, {results['seconds_per_image']:.3f} s per generated image")
    stage[0] = f"saving the results above to {args.json}"
    return _write_json(args, results, prog) if args.json else 0


# ------------------------------------------------------------------- `scratchgan evaluator`: train one

def make_evaluator_parser(prog):
    p = Parser(prog=prog, description="Train an evaluator classifier and write it to a file. With the defaults "
               "(the CNN, seed 0, the default epochs, all the data) it rebuilds the weights shipped with "
               "scratchgan bit for bit: Fashion-MNIST's from its 60,000 training images, MNIST's (for mnist and "
               "mnist-bundled alike) from 8,000 of the bundled test digits.")
    p.add_argument("--dataset", required=True, choices=list(EVALUATED),
                   help="whose images it learns; mnist and mnist-bundled both mean the bundled test digits")
    p.add_argument("--out", required=True, metavar="FILE", help="the .npz to write; an existing FILE is refused "
                   "unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out FILE (default: off)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="read Fashion-MNIST's IDX files from DIR (default: the data cache, SCRATCHGAN_DATA)")
    p.add_argument("--kind", choices=list(KINDS), default=DEFAULT_KIND, help="(default: %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=shipped.SEED, help="(default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="E",
                   help=f"(default: about {TARGET_STEPS_BY_KIND['cnn']:,} Adam steps for the cnn, "
                        f"{TARGET_STEPS_BY_KIND['mlp']:,} for the mlp)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="train on the first N training images only (default: all)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                   help="where it trains; the shipped weights were trained on numpy (default: %(default)s)")
    return with_version(p)


def evaluator_main(argv=None, prog="scratchgan evaluator"):
    args = make_evaluator_parser(prog).parse_args(argv)
    return run_command(prog, lambda: _train_evaluator(args, prog))


def _train_evaluator(args, prog):
    out = Path(args.out)
    family = "mnist" if args.dataset == "mnist-bundled" else args.dataset
    try:
        check_new_files([out], "--out", args.overwrite)
        if family == "mnist" and args.data_dir is not None:
            raise UserError("--data-dir is for fashion-mnist: the MNIST evaluator learns the bundled test digits, "
                            "the same for every user")
        data = TrainingData(shipped.DATASET_OF.get(family, family), args.data_dir, args.limit, log=_log)
        xp = get_xp(args.backend)
        _log(f"training the evaluator ({data.trained_on}; {args.kind}, seed {args.seed}) on {args.backend}")
        net, info = fit_evaluator(data, kind=args.kind, epochs=args.epochs, seed=args.seed, backend=xp, log=_log)
        info = {k: v for k, v in info.items() if k not in TIMING_KEYS}  # the file holds only what rebuilds it
        save_evaluator(out, net, info)
    except KeyboardInterrupt as e:
        raise interruption(e, f"no evaluator was written to {out}") from None
    except (UserError, DataError, BackendError, CheckpointError, ValueError) as e:
        return _fail(prog, e)
    except OSError as e:
        return _fail(prog, _os_error_message(e, verb="cannot write", advice="choose another --out"))
    digest = shipped.sha256_of(out)
    _log(f"wrote {out}: held-out accuracy {100 * info['accuracy']:.2f}% on {info['held_out']}; SHA-256 {digest}")
    recipe = (args.kind, args.seed, args.epochs, args.limit) == (shipped.KIND, shipped.SEED, None, None)
    if recipe and family in shipped.FILES:
        name, recorded = shipped.FILES[family]
        same = "is the shipped one, bit for bit" if digest == recorded else "differs from the shipped one"
        why = "" if replace.enabled() else (" (the fast paths are off, SCRATCHGAN_REFERENCE=1: they sum in another "
                                            "order, so the last bits differ)")
        _log(f"{out} {same} ({name}, SHA-256 {recorded}){why}")
    return 0


def main(argv=None):
    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())

