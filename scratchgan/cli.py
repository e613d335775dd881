"""Command line: the examples' training flags, and `python -m scratchgan train|sample`.

Every user mistake (a bad flag value, an unknown dataset, a missing file, a checkpoint of another
model, CuPy without a GPU, a used or unwritable --out, a full disk, too little memory) ends in one
line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import warnings
from pathlib import Path

import numpy as np

from . import distributed, fast, models, nn, objectives, presets, rundir, train_options
from .backend import BackendError, backend_name, get_xp
from .checkpoint import CheckpointError
from .checkpoint_schema import load_run_checkpoint
from .cliutil import (EXIT_USAGE, Parser, UserError, non_negative_float, non_negative_int, positive_float,
                      positive_int, unit_interval)
from .cliutil import fail as _fail, log as _log
from .cliutil import os_error_message as _os_error_message
from .cliutil import Terminated, say, stop_on_sigterm
from .data import BatchLoader, DataError, load_dataset_or_bundled, load_image_folder, resize_square
from .evaluate_cli import evaluate_main
from .export import export_main
from .sample_cli import interpolate_main, sample_main  # noqa: F401 (cli.sample_main, as before)
from .models import build_step
from .trainer import Trainer, TrainingDiverged, TrainingInterrupted, env_summary

EXIT_DIVERGED, EXIT_INTERRUPTED = 3, 130


# ---------------------------------------------------------------------------------- training flags
MLP_DEFAULTS = {
    "arch": "mlp", "backend": "numpy", "dtype": "float32", "dataset": "mnist", "data_dir": None, "split": "train",
    "epochs": 20, "batch_size": 64, "lr": 2e-4, "lr_g": None, "lr_d": None, "beta1": 0.5, "beta2": 0.999,
    "latent_dim": 100, "label_smoothing": 0.0, "d_steps": 1, "loss_on": "logits", "batchnorm": True,
    "dropout": 0.0, "g_hidden": "128,512,1024", "d_hidden": "512,256,128", "seed": 0,
    "out": "runs/mnist_mlp", "sample_every": 500, "eval_every": 0, "log_every": 10, "limit": None, "resume": None,
    "overwrite": False, "progress": True,
    # objectives and conditioning; --loss wgan / wgan-gp change the defaults of lr, beta1, beta2,
    # d_steps, optimizer, clip and gp_lambda (objectives.DEFAULTS) for flags not given explicitly
    "loss": "bce", "optimizer": "adam", "clip": 0.0, "gp_lambda": 0.0, "instance_noise": 0.0,
    "conditional": False, "embedding_dim": 0,
    "snapshot_every": 0,  # numbered checkpoints every N epochs (checkpoint_epochNNNN.npz), 0 = off
    # the tools of stronger GANs, all off by default
    "spectral_norm": False, "r1": 0.0, "ema": 0.0, "diffaugment": "",
    "tensorboard": None, "dry_run": False,  # train_options.add_flags
    "evaluator": "cnn",  # the classifier --eval-every measures in (scratchgan.evaluator.KINDS)
    "preset": None,  # scratchgan.presets: flags not given take a measured recipe's values
}


DCGAN_DEFAULTS = {
    **{k: v for k, v in MLP_DEFAULTS.items() if k not in ("g_hidden", "d_hidden", "dropout", "batchnorm")},
    "arch": "dcgan", "dataset": "fashion-mnist", "batch_size": 128, "resolution": None, "channels": None,
    "g_width": 64, "d_width": 64, "out": "runs/dcgan", "sample_every": 200,
}
ARCH_DEFAULTS = {"mlp": MLP_DEFAULTS, "dcgan": DCGAN_DEFAULTS}  # `scratchgan train --arch mlp|dcgan`


def add_training_flags(parser, defaults, suppress=False, both=False):
    """The flags of examples/mnist_mlp.py (and `python -m scratchgan train`), each with its default;
    ``both``: the flags of both architectures (`scratchgan train --arch mlp|dcgan`)."""
    def d(key):
        return argparse.SUPPRESS if suppress else defaults[key]

    g = parser.add_argument_group("compute")
    g.add_argument("--backend", choices=["numpy", "cupy"], default=d("backend"),
                   help="array library: numpy (CPU) or cupy (CUDA GPU) (default: %(default)s)")
    g.add_argument("--dtype", choices=["float32", "float64"], default=d("dtype"),
                   help="floating-point type of weights and activations (default: %(default)s)")
    g.add_argument("--reference", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="run the textbook reference code only, without the fast paths of scratchgan/fast/ "
                        "(as SCRATCHGAN_REFERENCE=1) (default: fast paths on)")
    g = parser.add_argument_group("data")
    dcgan = defaults["arch"] == "dcgan" or both
    mlp = defaults["arch"] == "mlp" or both
    g.add_argument("--dataset", choices=["mnist", "fashion-mnist", "mnist-bundled", "cifar10", "npy"] +
                   (["folder"] if dcgan else []),
                   default=d("dataset"),
                   help="mnist downloads (checksummed, cached) and falls back to the bundled 10k MNIST test "
                        "digits when offline; mnist-bundled asks for those directly; cifar10: the binary CIFAR-10 "
                        "(32x32 RGB, 50k train / 10k test; downloaded, SHA-256 checked, cached, read without pickle)"
                        "; npy: your own array in --data-dir FILE.npy (uint8 (N, H, W) or (N, C, H, W), or floats in "
                        "[0, 1] or [-1, 1])" +
                        ("; folder: every JPEG/PNG under --data-dir (e.g. CelebA's img_align_celeba/)"
                         + (", --arch dcgan only" if both else "") if dcgan else "") + " (default: %(default)s)")
    g.add_argument("--data-dir", default=d("data_dir"), metavar="DIR",
                   help="read the IDX files (train-images-idx3-ubyte[.gz], ...) from DIR instead of the "
                        "cache or the network; your own IDX files are accepted too (a line says they are not the "
                        "official ones); with --dataset cifar10, a folder holding cifar-10-binary.tar.gz or "
                        "cifar-10-batches-bin/; with --dataset npy, the .npy file" +
                        ("; with --dataset folder, the image folder" if dcgan else "") +
                        " (default: %(default)s)")
    g.add_argument("--split", choices=["train", "test"], default=d("split"),
                   help="which split to train on (default: %(default)s)")
    g.add_argument("--limit", type=positive_int, default=d("limit"), metavar="N",
                   help="use only the first N images, for quick trials (default: all)")
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=d("epochs"),
                   help="total epochs; with --resume, the total to continue to (default: %(default)s)")
    g.add_argument("--batch-size", type=positive_int, default=d("batch_size"), help="(default: %(default)s)")
    g.add_argument("--loss", choices=list(objectives.NAMES), default=d("loss"),
                   help="GAN objective: bce (the standard, non-saturating), wgan (weight clipping), wgan-gp "
                        "(gradient penalty), lsgan (least squares), hinge; wgan and wgan-gp bring their "
                        "papers' defaults for the flags below that you do not give (default: %(default)s)")
    g.add_argument("--preset", choices=list(presets.PRESETS), default=d("preset"),
                   help="a measured recipe for the flags you do not give: " +
                        "; ".join(f"{name}: {presets.describe(name)}" for name in presets.PRESETS) +
                        " (the lowest distance per CPU minute of the quality table in README.md; MLP only) "
                        "(default: none)")
    g.add_argument("--optimizer", choices=["adam", "rmsprop"], default=d("optimizer"),
                   help="optimizer of both networks; RMSprop uses --lr only; --loss wgan makes it rmsprop "
                        "(default: %(default)s)")
    g.add_argument("--lr", type=positive_float, default=d("lr"),
                   help="learning rate of both networks; --loss wgan makes it 5e-05, wgan-gp 0.0001 "
                        "(default: %(default)s)")
    g.add_argument("--lr-g", type=positive_float, default=d("lr_g"),
                   help="generator learning rate (default: --lr)")
    g.add_argument("--lr-d", type=positive_float, default=d("lr_d"),
                   help="discriminator learning rate (default: --lr)")
    g.add_argument("--beta1", type=unit_interval(), default=d("beta1"),
                   help="Adam beta1; --loss wgan-gp makes it 0.0 (default: %(default)s)")
    g.add_argument("--beta2", type=unit_interval(), default=d("beta2"),
                   help="Adam beta2; --loss wgan-gp makes it 0.9 (default: %(default)s)")
    g.add_argument("--latent-dim", type=positive_int, default=d("latent_dim"),
                   help="size of the noise vector z (default: %(default)s)")
    g.add_argument("--label-smoothing", type=unit_interval(), default=d("label_smoothing"),
                   help="one-sided: D's real label becomes 1 - this, e.g. 0.1 (default: %(default)s)")
    g.add_argument("--d-steps", type=positive_int, default=d("d_steps"),
                   help="discriminator steps per generator step; --loss wgan and wgan-gp make it 5 "
                        "(default: %(default)s)")
    g.add_argument("--clip", type=non_negative_float, default=d("clip"), metavar="C",
                   help="after each D update clip D's weights to [-C, C], 0 = off; --loss wgan makes it 0.01 "
                        "(default: %(default)s)")
    g.add_argument("--gp-lambda", type=non_negative_float, default=d("gp_lambda"), metavar="LAMBDA",
                   help="weight of the gradient penalty LAMBDA mean(||grad D(xhat)|| - 1)^2 in D's loss, "
                        "0 = off; D must be Linear/LeakyReLU only; --loss wgan-gp makes it 10 (default: %(default)s)")
    g.add_argument("--instance-noise", type=non_negative_float, default=d("instance_noise"), metavar="SIGMA",
                   help="add N(0, SIGMA^2) noise to every input of D, annealed linearly to 0 over the run "
                        "(default: %(default)s)")
    g.add_argument("--loss-on", choices=["logits", "probs"], default=d("loss_on"),
                   help="BCE on D's logits (stable, default) or on sigmoid probabilities (default: %(default)s)")
    g.add_argument("--seed", type=non_negative_int, default=d("seed"),
                   help="seeds weights, noise and data order; same seed on NumPy = identical run "
                        "(default: %(default)s)")
    g = parser.add_argument_group("tools of stronger GANs (docs/derivations/)")
    g.add_argument("--spectral-norm", action="store_true",
                   default=argparse.SUPPRESS if suppress else defaults["spectral_norm"],
                   help="spectral normalisation of D's Linear and Conv2d weights, W / sigma(W) by one power "
                        "iteration per forward (Miyato et al. 2018); not with a gradient penalty (default: off)")
    g.add_argument("--r1", type=non_negative_float, default=d("r1"), metavar="GAMMA",
                   help="R1 penalty (GAMMA/2) mean ||grad_x D(x)||^2 on the real images, in D's loss, 0 = off; "
                        "D must be Linear/LeakyReLU only, as for --gp-lambda (default: %(default)s)")
    g.add_argument("--ema", type=unit_interval(), default=d("ema"), metavar="BETA",
                   help="keep a moving average of G's weights, ema = BETA ema + (1 - BETA) G, e.g. 0.999, 0 = off; "
                        "saved in the checkpoint and used by the sample grids, `scratchgan sample` and "
                        "`scratchgan evaluate` (default: %(default)s)")
    g.add_argument("--diffaugment", default=d("diffaugment"), metavar="POLICY",
                   help="differentiable augmentation (Zhao et al. 2020) of every batch D sees, real and fake, in "
                        "both steps: a comma-separated list of translation, cutout, color, applied in that order, "
                        "e.g. translation,cutout,color; the MLP's images are augmented as 28x28; '' = off "
                        "(default: '%(default)s')")
    g = parser.add_argument_group("model")
    if dcgan:
        g.add_argument("--image-size", dest="resolution", type=int, choices=list(models.DCGAN_SIZES),
                       default=d("resolution"),
                       help="side of the square images the GAN makes; the data is resized to it "
                            "(default: 28 for MNIST-like data, 32 for cifar10, 64 for folders, a .npy array's own)")
        g.add_argument("--channels", type=int, choices=[1, 3], default=d("channels"),
                       help="1 (grayscale) or 3 (RGB) (default: 1 for MNIST-like data, 3 for cifar10 and folders, "
                            "a .npy array's own)")
        g.add_argument("--g-width", type=positive_int, default=d("g_width"),
                       help="generator channels at the last stage, the tutorial's ngf (default: %(default)s)")
        g.add_argument("--d-width", type=positive_int, default=d("d_width"),
                       help="discriminator channels at the first stage, the tutorial's ndf (default: %(default)s)")
        if not mlp:
            return _add_output_flags(parser, defaults, suppress)
    g.add_argument("--g-hidden", default=d("g_hidden"), metavar="SIZES",
                   help="generator hidden sizes, comma-separated (default: %(default)s)")
    g.add_argument("--d-hidden", default=d("d_hidden"), metavar="SIZES",
                   help="discriminator hidden sizes, comma-separated (default: %(default)s)")
    g.add_argument("--no-batchnorm", dest="batchnorm", action="store_false",
                   default=argparse.SUPPRESS if suppress else defaults["batchnorm"],
                   help="no BatchNorm in the generator (default: BatchNorm on)")
    g.add_argument("--dropout", type=unit_interval(), default=d("dropout"),
                   help="dropout probability after each discriminator hidden layer (default: %(default)s)")
    g.add_argument("--conditional", action="store_true",
                   default=argparse.SUPPRESS if suppress else defaults["conditional"],
                   help="class-conditional GAN: the label joins G's noise and D's input; sample grids get "
                        "one row per class (default: off)")
    g.add_argument("--embedding-dim", type=non_negative_int, default=d("embedding_dim"), metavar="N",
                   help="with --conditional: 0 = one-hot labels, N > 0 = a learned Embedding(classes, N) "
                        "in G and in D (default: %(default)s)")
    return _add_output_flags(parser, defaults, suppress)


def _add_output_flags(parser, defaults, suppress):
    def d(key):
        return argparse.SUPPRESS if suppress else defaults[key]

    g = parser.add_argument_group("output")
    g.add_argument("--out", default=d("out"), metavar="DIR",
                   help="folder for samples, plots, metrics and the checkpoint; one run per folder, which records "
                        "every file it writes in OUT/manifest.json: a folder with an earlier run's outputs is refused "
                        "unless --resume or --overwrite, and a run never writes over a file it did not record; with "
                        "--resume FILE: FILE's folder (default: %(default)s)")
    g.add_argument("--sample-every", type=non_negative_int, default=d("sample_every"),
                   metavar="STEPS", help="save a sample grid every STEPS steps, 0 = only at epoch ends "
                                         "(default: %(default)s)")
    g.add_argument("--eval-every", type=non_negative_int, default=d("eval_every"), metavar="STEPS",
                   help="every STEPS steps measure sample quality (Frechet distance in a small classifier's "
                        "features, classes covered, precision/recall; see `scratchgan evaluate`) into "
                        "metrics.csv and losses.png, warn on collapse, and keep the checkpoint of the lowest distance "
                        "as checkpoint_best.npz (its value and step in config.json); 0 = off (default: %(default)s)")
    g.add_argument("--evaluator", choices=["cnn", "mlp"], default=d("evaluator"),
                   help="the classifier --eval-every measures in: cnn, or mlp for the numbers of earlier "
                        "releases (default: %(default)s)")
    g.add_argument("--log-every", type=positive_int, default=d("log_every"), metavar="STEPS",
                   help="write a metrics.csv row and check for NaN every STEPS steps (default: %(default)s)")
    g.add_argument("--snapshot-every", type=non_negative_int, default=d("snapshot_every"), metavar="EPOCHS",
                   help="also keep the checkpoint of every EPOCHS-th epoch as checkpoint_epochNNNN.npz beside the "
                        "rolling checkpoint.npz (with --eval-every, checkpoint_best.npz keeps the lowest Frechet "
                        "distance anyway); 0 = off (default: %(default)s)")
    g.add_argument("--resume", nargs="?", const="", default=d("resume"), metavar="CHECKPOINT",
                   help="continue from CHECKPOINT (default with no value: OUT/checkpoint.npz) to --epochs "
                        "in total, into the folder of CHECKPOINT's own run (same run id in OUT/manifest.json) or a "
                        "new one; flags not given again keep the checkpoint's values, except the places to write "
                        "(--out, --tensorboard) and, outside its own run's folder, --data-dir (default: %(default)s)")
    g.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS if suppress else defaults["overwrite"],
                   help="delete the files an earlier run in --out recorded writing (its manifest.json: "
                        "checkpoint.npz, metrics.csv, samples/..., nothing else, never through a link) and start "
                        "afresh (default: %(default)s)")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   default=argparse.SUPPRESS if suppress else defaults["progress"],
                   help="no progress bar (for logs) (default: progress bar on)")
    return parser


def make_train_parser(prog, description, defaults=MLP_DEFAULTS, suppress=False, both=False):
    parser = Parser(prog=prog, description=description)
    if both:  # `scratchgan train`: --arch chooses; the examples fix it
        train_options.add_arch_flag(parser, suppress)
    add_training_flags(parser, defaults, suppress, both)
    train_options.add_flags(parser, defaults, suppress)
    if both:
        train_options.describe_defaults(parser, ARCH_DEFAULTS)
    else:
        parser.set_defaults(arch=defaults["arch"])
    return parser


def load_images(config, log, with_labels=False):
    """uint8 images for the run: (N, 28, 28) for the MLP, (N, C, S, S) for the DCGAN.

    ``with_labels``: returns (images, labels (N,) or None where the dataset has none).
    """
    labels = None
    if config["dataset"] in train_options.DATASETS:  # cifar10, npy, --dry-run's synthetic images
        images, labels = train_options.load_images(config, log)
    elif config["dataset"] == "folder":
        if not config["data_dir"]:
            raise UserError("--dataset folder needs --data-dir DIR, the folder of images")
        config["resolution"] = config["resolution"] or 64
        config["channels"] = config["channels"] or 3
        images = load_image_folder(config["data_dir"], config["resolution"], config["channels"], log=log)
    else:
        fallback = []  # the one line load_dataset_or_bundled logs when it falls back to the bundled digits

        def note(message):
            fallback.append(message)
            log(message)
        images, labels = load_dataset_or_bundled(config["dataset"], config["split"], config["data_dir"], log=note,
                                                 on_foreign=log)
        if fallback:  # record what the run really trains on (config.json, checkpoints, `evaluate`)
            config["dataset"], config["split"] = "mnist-bundled", "test"
    if config.get("limit"):
        images = images[: config["limit"]]
        labels = None if labels is None else labels[: config["limit"]]
    if config.get("arch") == "dcgan" and config["dataset"] not in ("folder", *train_options.DATASETS):
        config["resolution"] = config["resolution"] or 28
        config["channels"] = config["channels"] or 1
        images = resize_square(images, config["resolution"], config["channels"])
    return (images, labels) if with_labels else images


# What a resume reads back from a checkpoint's config (audited key by key): a checkpoint is data, never
# instructions, so a setting that names a place comes from the command line.
#   out, resume, overwrite, tensorboard  where to write, what to delete: the command line only, always
#   data_dir                             which files to read: the command line, or the checkpoint's own
#                                        when it continues its own run in place (its run id is the one in
#                                        --out's manifest.json: the user gave that path to that run)
#   everything else                      what the networks, the data order and the schedule are (sizes,
#                                        rates, choices of objective, backend, evaluator, ...): the
#                                        checkpoint's, unless a flag is given again; none names a path or
#                                        a program (the choices are checked where they are used)
# (environment, image_shape, num_images, ranks, best, ... are recorded, never read back: recomputed.)
COMMAND_LINE_ONLY = ("out", "resume", "overwrite", "tensorboard")


def load_resumed(args):
    """(checkpoint path, its meta) of ``--resume`` (None, None without it); UserError for one that cannot be."""
    if args.resume is None:
        return None, None
    resume = Path(args.resume) if args.resume else Path(args.out) / "checkpoint.npz"
    if not resume.exists():
        raise UserError(f"cannot resume: {resume} does not exist (train first, or pass the checkpoint path)")
    try:
        _, meta = load_run_checkpoint(resume)  # checked (metadata, sizes, NaN/Inf) before anything is written
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if meta.get("kind") == "generator":  # scratchgan export: G alone, no D or optimizer state
        raise UserError(f"cannot resume: {resume} is an exported generator (G alone); resume from the training "
                        "checkpoint")
    return resume, meta


def resolve_config(args, explicit, defaults, log, resumed=None):
    """The run's config: defaults < checkpoint's config (when resuming) < flags given explicitly.

    ``resumed``: ``load_resumed(args)`` when the caller has it already. Returns (config, checkpoint path or None).
    """
    config = {k: v for k, v in vars(args).items()}
    resume, meta = resumed if resumed is not None else load_resumed(args)
    if resume is not None:
        saved = meta.get("config", {})
        saved = saved if isinstance(saved, dict) else {}
        kept = {k: v for k, v in saved.items() if k in defaults and k not in COMMAND_LINE_ONLY}
        if saved.get("eval_every") and "evaluator" not in saved:  # its metrics.csv holds the MLP's numbers
            kept["evaluator"] = "mlp"
        if "preset" in explicit and explicit["preset"] != saved.get("preset"):
            raise UserError(f"--preset {explicit['preset']}: a run's recipe is set when it starts ({resume} was "
                            f"started with {'--preset ' + saved['preset'] if saved.get('preset') else 'no preset'}); "
                            "drop --preset when resuming")
        config = {**defaults, **kept, **explicit}
        config["resume"] = str(resume)
        if "out" not in explicit:  # --resume FILE continues in FILE's folder
            config["out"] = str(resume.parent) if args.resume else args.out
        if saved.get("data_dir") and "data_dir" not in explicit and not _continues_in_place(config["out"], meta):
            raise UserError(f"{resume} was trained on --data-dir {saved['data_dir']}: give --data-dir again (a "
                            f"checkpoint resumed outside its own run folder does not choose which files are read)")
        if saved.get("tensorboard") and "tensorboard" not in explicit and log:
            log(f"the run logged to TensorBoard in {saved['tensorboard']}; give --tensorboard again to go on "
                "logging (a checkpoint never chooses where a run writes)")
    else:  # a flag the user did not give takes the preset's value, then the objective's default
        chosen = presets.apply(config, explicit)  # (--loss wgan: RMSprop 5e-5, ...)
        if config.get("preset"):
            log(f"--preset {config['preset']}: {presets.describe(config['preset'])} where not given")
        for key, value in objectives.DEFAULTS.get(config.get("loss", "bce"), {}).items():
            if key not in chosen and key in config:
                config[key] = value
    return config, resume


def _continues_in_place(out, meta):
    """Whether the checkpoint (``meta``) is of the run recorded in ``out``'s manifest."""
    try:
        manifest = rundir.Manifest.read(out) if Path(out).is_dir() else None
    except rundir.RunDirError:  # rundir.check says what is wrong with it
        return False
    run_id = rundir.run_id_of(meta)
    return manifest is not None and run_id is not None and manifest.run_id == run_id


def _nothing_to_do(config, meta, resume, log):
    """A resume whose --epochs the checkpoint has already done: True (one line, exit 0) when it is exactly
    done; UserError when it asks for fewer than done. Nothing is written either way."""
    done, partial, epochs = meta.get("epoch"), meta.get("batch_in_epoch", 0), config["epochs"]
    if not all(type(v) is int for v in (done, partial, epochs)):  # the checks of the checkpoint name what is wrong
        return False
    if epochs > done:
        return False
    if epochs == done and not partial:
        log(f"nothing to do: {resume} has done all {done} epochs of --epochs {epochs}; nothing was changed "
            "(to train on, pass a larger --epochs)")
        return True
    so_far = f"{done} epoch{'s' if done != 1 else ''}" + (" and part of the next" if partial else "")
    raise UserError(f"--epochs {epochs}: {resume} has already done {so_far}; nothing was changed (to train on, "
                    f"pass --epochs {done + 1} or more)")


def train_main(argv=None, prog="mnist_mlp.py", description=None, defaults=MLP_DEFAULTS):
    """Entry point of examples/mnist_mlp.py (and examples/dcgan.py with DCGAN_DEFAULTS) and, with
    defaults=None, of `scratchgan train`, where --arch chooses them; the exit code.

    Under ``mpiexec -n N`` it trains data-parallel (scratchgan/distributed.py), with the same flags."""
    return distributed.run(_train_main, argv, prog, description, defaults)


def _train_main(argv, prog, description, defaults):
    both = defaults is None
    if both:
        argv = list(sys.argv[1:] if argv is None else argv)
        defaults = train_options.combined_defaults(train_options.arch_of(argv), ARCH_DEFAULTS)
        description = description or ("Train the classic MLP GAN (--arch mlp, as examples/mnist_mlp.py) or a DCGAN "
                                      "(--arch dcgan, as examples/dcgan.py), from scratch in NumPy (or CuPy with "
                                      "--backend cupy).")
    description = description or ("Train the classic MLP GAN on MNIST-like 28x28 images, from scratch in "
                                  "NumPy (or CuPy with --backend cupy).")
    parser = make_train_parser(prog, description, defaults, both=both)
    args = parser.parse_args(argv)
    if args.reference:
        fast.set_enabled(False)  # every layer, loss and optimizer runs its reference code
    fast.configure_process()  # unless --reference: the CPU process settings of scratchgan/fast/process.py
    explicit = vars(make_train_parser(prog, description, defaults, suppress=True, both=both).parse_args(argv))
    log = _log
    trainer = config = None
    dry_folder = None  # the temporary folder of a --dry-run without --out, made after every check passed
    previous_sigterm = _stop_on_sigterm()  # outside Trainer.fit (which saves first), as Ctrl-C stops Python
    try:
        train_options.check_early(args)
        resumed = load_resumed(args)
        config, resume = resolve_config(args, explicit, defaults, log, resumed=resumed)
        train_options.check_flags(config, explicit, arch_choosable=both)
        # data-parallel when started by mpiexec (None otherwise): rank 0 alone checks, claims and writes --out
        world = distributed.init(config["backend"])
        writes = world is None or world.rank == 0
        if not writes:
            log = _quiet
        if resume is not None and _nothing_to_do(config, resumed[1], resume, log):
            return 0
        run_id = rundir.run_id_of(resumed[1]) if resume is not None else None
        if config["dataset"] == "mnist-bundled" and "split" not in explicit:
            config["split"] = "test"  # the bundled digits are MNIST's test split; an explicit --split train errs
        xp = get_xp(config["backend"])  # before anything is made: no CuPy is one line, and no folder left behind
        real = None  # a --dry-run: what its real run would read and ask, checked as that run checks it
        if config.get("dry_run"):
            if world is not None:
                raise UserError("--dry-run runs in one process; start it without mpiexec")
            real = train_options.prepare_dry_run(config, explicit)
        if writes:  # every place the run writes, before anything is loaded or written
            if config["out"] is not None:  # (None: a dry run's new temporary folder)
                rundir.check(config["out"], resume, config["overwrite"], resume_run_id=run_id)
            if config.get("tensorboard"):
                rundir.probe_writable(config["tensorboard"], "--tensorboard")
        train_options.apply_precision(config, xp)  # --tf32
        if real is not None:
            real.count = train_options.check_data_source(config, real.limit)  # the paths a real run reads, read no further
        images, labels = load_images(config, log, with_labels=True)
        dataset = config["dataset"] if real is None else config["dry_run_of"]
        if config.get("conditional"):
            if config.get("arch", "mlp") != "mlp":
                raise UserError("--conditional is for the MLP GAN (examples/mnist_mlp.py)")
            if labels is None:
                raise UserError(f"--conditional needs class labels, and --dataset {dataset} has none")
            config["num_classes"] = int(labels.max()) + 1
        else:
            labels = None
        count = len(images) if real is None else real.count  # a dry run: the real data's size, where known
        if count is not None and config["batch_size"] > count:
            raise UserError(f"--batch-size {config['batch_size']} is larger than the {count} training "
                            "images; use a smaller batch size")
        eval_every = config.get("eval_every") if real is None else real.eval_every
        if eval_every and writes and (int(np.prod(images.shape[1:])) != 784 or
                                      dataset in ("folder", *train_options.DATASETS)):
            raise UserError("--eval-every measures MNIST-like 28x28 grayscale runs only "
                            f"(its classifier is trained on {dataset} digits/clothes)")
        config["image_size"] = int(np.prod(images.shape[1:]))  # the MLP's flattened image length
        config["image_shape"] = list(images.shape[1:])
        config["num_images"] = len(images)
        config["environment"] = {**env_summary(), "fast_paths": fast.enabled()}  # False: --reference
        step = build_step(config, xp)
        if config["batch_size"] < 2 and any(isinstance(m, nn.BatchNorm1d) for net in (step.G, step.D)
                                            for m in net.modules()):
            raise UserError(f"--batch-size {config['batch_size']}: BatchNorm needs at least 2 images per batch "
                            "for its batch statistics; use --batch-size 2 or more, or --no-batchnorm")
        step = train_options.graphed(step, config, world)  # --cuda-graph (experimental; fast/graph.py)
        conv = config.get("arch") == "dcgan"
        loader = BatchLoader(images, config["batch_size"], xp=xp, dtype=config["dtype"], seed=config["seed"],
                             flatten=not conv, labels=labels)
        if config.get("cuda_graph"):  # the graph gathers its batches from the loader's device copy
            loader = step.gathering(loader)
        if world is not None:  # this rank's slice of each global batch, averaged gradients, synced BatchNorm
            config["ranks"] = world.size
            step, loader = distributed.parallelize(step, world), distributed.ShardedLoader(loader, world)
        if real is not None:
            dry_folder = train_options.dry_run_folder(config, log)
        trainer = Trainer(step, loader, config["out"], config, sample_every=config["sample_every"],
                          log_every=config["log_every"], image_shape=None if conv else tuple(images.shape[1:]),
                          d_steps=config["d_steps"], progress=config["progress"] and writes, log=log,
                          instance_noise=config.get("instance_noise", 0.0),
                          snapshot_every=config.get("snapshot_every", 0), world=world)
        if config.get("eval_every") and writes:
            from .metrics import make_eval_hook
            trainer.eval_hook = make_eval_hook(config, loader.images(len(images)).reshape(len(images), 784),
                                               backend=config["backend"], log=log)
        log(f"training {config['dataset']} ({len(images)} images, split {config['split']}) on "
            f"{backend_name(xp)}/{config['dtype']}: G {step.G.num_parameters():,} and D "
            f"{step.D.num_parameters():,} parameters; outputs in {config['out']}")
        claim = rundir.claim(config["out"], resume, config["overwrite"], resume_run_id=run_id,
                             resumed_step=resumed[1].get("global_step") if resume is not None else None)
        with (claim if writes else contextlib.nullcontext()) as manifest:
            trainer.manifest = manifest  # every file the run writes is recorded there first (None: not rank 0)
            with warnings.catch_warnings():  # NumPy's overflow warnings (worker threads too): the watchdog says it
                warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
                trainer.fit(config["epochs"], resume_from=resume)
        dry_folder = None  # trained: the folder is the dry run's result
    except (UserError, DataError, BackendError, CheckpointError, rundir.RunDirError, ValueError) as e:
        return _fail(prog, e)
    except MemoryError as e:
        return _fail(prog, _memory_message(e, explicit, ("latent_dim", "g_hidden", "d_hidden", "g_width", "d_width",
                                                         "batch_size")))
    except OSError as e:
        return _fail(prog, _os_error_message(e, trainer))
    except TrainingDiverged as e:
        print(f"{prog}: stopped: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except TrainingInterrupted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 128 + int(e.signum)  # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports them
    except KeyboardInterrupt as e:  # a second Ctrl-C, or Ctrl-C / SIGTERM outside the training loop
        kept = trainer.last_good if trainer is not None and trainer.last_good else "none (nothing was saved)"
        name = "SIGTERM" if isinstance(e, _Terminated) else "Ctrl-C"
        print(f"{prog}: {str(e) or f'aborted by {name}; last good checkpoint: {kept}'}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, _Terminated) else EXIT_INTERRUPTED
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        if dry_folder is not None:  # a dry run that stopped before training: its empty folder goes
            with contextlib.suppress(OSError):
                os.rmdir(dry_folder)
    warning = trainer.divergence_warning()
    if warning:
        print(f"{prog}: warning: {warning}", file=sys.stderr)
    if not writes:
        return 0
    out = Path(config["out"])
    names = [n for n in ("samples/", "losses.png", "progress.gif", "real_vs_fake.png", "metrics.csv",
                          "metrics.jsonl", "checkpoint.npz", "checkpoint_best.npz")
             if (out / n).exists()]
    log(f"done: {config['out']}/ has {', '.join(names)}")
    return 0


def main(argv=None):
    """`python -m scratchgan train|sample ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": lambda a: train_main(a, prog="scratchgan train", defaults=None), "sample": sample_main,
                "evaluate": evaluate_main, "export": export_main, "interpolate": interpolate_main}
    if argv and argv[0] in ("--version", "-V"):
        from . import __version__
        say(f"scratchgan {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        stream = sys.stdout if asked else sys.stderr  # as argparse: help on stdout, a usage error on stderr
        say("usage: python -m scratchgan {train,sample,evaluate,export,interpolate} [--help]\n"
            "  train     train the MLP GAN or, with --arch dcgan, the DCGAN (the flags of examples/mnist_mlp.py "
            "and examples/dcgan.py)\n"
            "  sample    generate images from a checkpoint\n"
            "  evaluate  measure a checkpoint's samples: Frechet distance (classifier features), coverage, "
            "precision/recall\n"
            "  export       write a checkpoint's generator alone (weights, BatchNorm buffers, config)\n"
            "  interpolate  a latent walk between seeds (slerp) as a GIF and a strip PNG", file=stream)
        if asked:
            return 0
        problem = f"unknown command {argv[0]!r}" if argv else "a command is required"
        say(f"scratchgan: error: {problem}; choose one of: {', '.join(commands)}", file=sys.stderr)
        return EXIT_USAGE
    return commands[argv[0]](argv[1:])


def _quiet(message):
    """The log of the ranks other than 0 in a data-parallel run: rank 0 says it."""


# SIGTERM outside the training loop stops as Ctrl-C does: the mechanism every command shares (cliutil)
_Terminated, _stop_on_sigterm = Terminated, stop_on_sigterm


def _memory_message(error, explicit, keys):
    """One line for a MemoryError, naming the size flag the user gave whose value is the largest
    dimension of the array that could not be allocated (else all size flags given, else all)."""
    text = str(error)
    shape = re.search(r"shape \(([^)]*)\)", text)
    dims = [int(d) for d in re.findall(r"\d+", shape.group(1))] if shape else []
    given = [k for k in keys if k in explicit]
    largest = str(max(dims)) if dims else None  # the size that did not fit
    culprits = [k for k in given if largest in str(explicit[k]).split(",")] or given
    flags = ", ".join(f"--{k.replace('_', '-')} {explicit[k]}" for k in culprits) if culprits else \
        ", ".join(f"--{k.replace('_', '-')}" for k in keys)
    return f"out of memory ({error or 'MemoryError'}); the networks or batches are too large for this machine: " \
           f"lower {flags}"

