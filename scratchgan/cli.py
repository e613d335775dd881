"""Command line: the examples' training flags, and `python -m scratchgan train|sample`.

Every user mistake (a bad flag value, an unknown dataset, a missing file, a checkpoint of another
model, CuPy without a GPU) ends in one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import fast, models, nn, objectives, optim
from .backend import BackendError, backend_name, get_xp, to_device, to_numpy
from .checkpoint import CheckpointError, load_checkpoint
from .data import BatchLoader, DataError, load_dataset_or_bundled, load_image_folder, resize_square
from .gan import GANStep, NoiseSource, generate
from .trainer import Trainer, TrainingDiverged, TrainingInterrupted, env_summary

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (plus a pointer to --help) and exits 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def number_type(convert, expected, valid, rule):
    """An argparse ``type``: ``convert`` the text, then check ``valid(value)``; both failures say why."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):  # NaN fails every comparison, so it is refused too
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return parse


INF = float("inf")
positive_int = number_type(int, "a positive integer", lambda v: v > 0, "a positive integer")
non_negative_int = number_type(int, "a non-negative integer", lambda v: v >= 0, "0 or more")
positive_float = number_type(float, "a number", lambda v: 0 < v < INF, "a positive number")
non_negative_float = number_type(float, "a number", lambda v: 0 <= v < INF, "0 or more")


def unit_interval(low_open=False, high_open=True):
    rule = f"in {'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    return number_type(float, "a number", lambda v: (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1),
                       rule)


# ---------------------------------------------------------------------------------- training flags
MLP_DEFAULTS = {
    "arch": "mlp", "backend": "numpy", "dtype": "float32", "dataset": "mnist", "data_dir": None, "split": "train",
    "epochs": 20, "batch_size": 64, "lr": 2e-4, "lr_g": None, "lr_d": None, "beta1": 0.5, "beta2": 0.999,
    "latent_dim": 100, "label_smoothing": 0.0, "d_steps": 1, "loss_on": "logits", "batchnorm": True,
    "dropout": 0.0, "g_hidden": "128,512,1024", "d_hidden": "512,256,128", "seed": 0,
    "out": "runs/mnist_mlp", "sample_every": 500, "eval_every": 0, "log_every": 10, "limit": None, "resume": None,
    "progress": True,
    # objectives and conditioning; --loss wgan / wgan-gp change the defaults of lr, beta1, beta2,
    # d_steps, optimizer, clip and gp_lambda (objectives.DEFAULTS) for flags not given explicitly
    "loss": "bce", "optimizer": "adam", "clip": 0.0, "gp_lambda": 0.0, "instance_noise": 0.0,
    "conditional": False, "embedding_dim": 0,
}


DCGAN_DEFAULTS = {
    **{k: v for k, v in MLP_DEFAULTS.items() if k not in ("g_hidden", "d_hidden", "dropout", "batchnorm")},
    "arch": "dcgan", "dataset": "fashion-mnist", "batch_size": 128, "resolution": None, "channels": None,
    "g_width": 64, "d_width": 64, "out": "runs/dcgan", "sample_every": 200,
}


def add_training_flags(parser, defaults, suppress=False):
    """The flags of examples/mnist_mlp.py (and `python -m scratchgan train`), each with its default."""
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
    dcgan = defaults["arch"] == "dcgan"
    g.add_argument("--dataset", choices=["mnist", "fashion-mnist", "mnist-bundled"] + (["folder"] if dcgan else []),
                   default=d("dataset"),
                   help="mnist downloads (checksummed, cached) and falls back to the bundled 10k MNIST test "
                        "digits when offline; mnist-bundled asks for those directly" +
                        ("; folder: every JPEG/PNG under --data-dir (e.g. CelebA's img_align_celeba/)"
                         if dcgan else "") + " (default: %(default)s)")
    g.add_argument("--data-dir", default=d("data_dir"), metavar="DIR",
                   help="read the IDX files (train-images-idx3-ubyte[.gz], ...) from DIR instead of the "
                        "cache or the network" + ("; with --dataset folder, the image folder" if dcgan else "") +
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
    g = parser.add_argument_group("model")
    if dcgan:
        g.add_argument("--image-size", dest="resolution", type=int, choices=list(models.DCGAN_SIZES),
                       default=d("resolution"),
                       help="side of the square images the GAN makes; MNIST-like data is resized to it "
                            "(default: 28 for MNIST-like data, 64 for folders)")
        g.add_argument("--channels", type=int, choices=[1, 3], default=d("channels"),
                       help="1 (grayscale) or 3 (RGB) (default: 1 for MNIST-like data, 3 for folders)")
        g.add_argument("--g-width", type=positive_int, default=d("g_width"),
                       help="generator channels at the last stage, the tutorial's ngf (default: %(default)s)")
        g.add_argument("--d-width", type=positive_int, default=d("d_width"),
                       help="discriminator channels at the first stage, the tutorial's ndf (default: %(default)s)")
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
                   help="folder for samples, plots, metrics and the checkpoint (default: %(default)s)")
    g.add_argument("--sample-every", type=non_negative_int, default=d("sample_every"),
                   metavar="STEPS", help="save a sample grid every STEPS steps, 0 = only at epoch ends "
                                         "(default: %(default)s)")
    g.add_argument("--eval-every", type=non_negative_int, default=d("eval_every"), metavar="STEPS",
                   help="every STEPS steps measure sample quality (Frechet distance in a small classifier's "
                        "features, classes covered, precision/recall; see `scratchgan evaluate`) into "
                        "metrics.csv and losses.png, and warn on collapse; 0 = off (default: %(default)s)")
    g.add_argument("--log-every", type=positive_int, default=d("log_every"), metavar="STEPS",
                   help="write a metrics.csv row and check for NaN every STEPS steps (default: %(default)s)")
    g.add_argument("--resume", nargs="?", const="", default=d("resume"), metavar="CHECKPOINT",
                   help="continue from CHECKPOINT (default with no value: OUT/checkpoint.npz) to --epochs "
                        "in total; flags not given again keep the checkpoint's values (default: %(default)s)")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   default=argparse.SUPPRESS if suppress else defaults["progress"],
                   help="no progress bar (for logs) (default: progress bar on)")
    return parser


def make_train_parser(prog, description, defaults=MLP_DEFAULTS, suppress=False):
    parser = Parser(prog=prog, description=description)
    add_training_flags(parser, defaults, suppress)
    parser.set_defaults(arch=defaults["arch"])
    return parser


def parse_sizes(text, flag):
    try:
        sizes = tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise UserError(f"{flag} must be comma-separated positive integers, got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise UserError(f"{flag} must be comma-separated positive integers, got {text!r}")
    return sizes


# ---------------------------------------------------------------------------------- building a run
def build_mlp_gan(config, xp):
    """G, D (moved to the backend, packed) from a config dict of the training flags."""
    dtype = config["dtype"]
    # conditional runs: one-hot labels or a learned embedding joined to z and to the image
    labels = {"num_classes": config.get("num_classes", 10), "embedding_dim": config.get("embedding_dim", 0)} \
        if config.get("conditional") else {}
    G = models.mlp_generator(latent_dim=config["latent_dim"], hidden=parse_sizes(config["g_hidden"], "--g-hidden"),
                             out_dim=config["image_size"], batchnorm=config["batchnorm"],
                             seed=[config["seed"], 1], dtype=dtype, **labels).to(xp, dtype)
    D = models.mlp_discriminator(in_dim=config["image_size"], hidden=parse_sizes(config["d_hidden"], "--d-hidden"),
                                 dropout=config["dropout"], output=config["loss_on"],
                                 seed=[config["seed"], 2], dtype=dtype, **labels).to(xp, dtype)
    return G, D


def build_dcgan(config, xp):
    """The DCGAN pair for square images of config["resolution"] with config["channels"] channels."""
    dtype = config["dtype"]
    G = models.dcgan_generator(config["latent_dim"], config["resolution"], config["channels"],
                               width=config["g_width"], seed=[config["seed"], 1], dtype=dtype)
    D = models.dcgan_discriminator(config["resolution"], config["channels"], width=config["d_width"],
                                   seed=[config["seed"], 2], dtype=dtype)
    if config["loss_on"] == "probs":
        D.layers.append(nn.Sigmoid())
    return G.to(xp, dtype), D.to(xp, dtype)


def build_gan(config, xp):
    """G and D for the config's architecture ("mlp" or "dcgan"), on backend xp."""
    return build_dcgan(config, xp) if config.get("arch") == "dcgan" else build_mlp_gan(config, xp)


def make_optimizer(config, params, lr):
    """Adam (betas from --beta1/--beta2) or RMSprop (torch's defaults), per --optimizer."""
    if config.get("optimizer", "adam") == "rmsprop":
        return optim.RMSprop(params, lr=lr)
    return optim.Adam(params, lr=lr, betas=(config["beta1"], config["beta2"]))


def build_step(config, xp):
    loss = config.get("loss", "bce")
    objective = objectives.make_objective(loss, on_logits=config["loss_on"] == "logits",
                                          real_target=1.0 - config["label_smoothing"],
                                          gp_lambda=config.get("gp_lambda") or None)
    G, D = build_gan(config, xp)
    opt_G = make_optimizer(config, G.parameters(), config["lr_g"] or config["lr"])
    opt_D = make_optimizer(config, D.parameters(), config["lr_d"] or config["lr"])
    noise = NoiseSource(xp, config["batch_size"], config["latent_dim"], seed=config["seed"], dtype=config["dtype"])
    return GANStep(G, D, opt_G, opt_D, objective, config["latent_dim"], noise, clip=config.get("clip"),
                   gp_lambda=config.get("gp_lambda") or None, instance_noise=config.get("instance_noise", 0.0))


def load_images(config, log, with_labels=False):
    """uint8 images for the run: (N, 28, 28) for the MLP, (N, C, S, S) for the DCGAN.

    ``with_labels``: returns (images, labels (N,) or None where the dataset has none).
    """
    labels = None
    if config["dataset"] == "folder":
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
        images, labels = load_dataset_or_bundled(config["dataset"], config["split"], config["data_dir"], log=note)
        if fallback:  # record what the run really trains on (config.json, checkpoints, `evaluate`)
            config["dataset"], config["split"] = "mnist-bundled", "test"
    if config.get("limit"):
        images = images[: config["limit"]]
        labels = None if labels is None else labels[: config["limit"]]
    if config.get("arch") == "dcgan" and config["dataset"] != "folder":
        config["resolution"] = config["resolution"] or 28
        config["channels"] = config["channels"] or 1
        images = resize_square(images, config["resolution"], config["channels"])
    return (images, labels) if with_labels else images


def resolve_config(args, explicit, defaults, log):
    """The run's config: defaults < checkpoint's config (when resuming) < flags given explicitly."""
    config = {k: v for k, v in vars(args).items()}
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else Path(args.out) / "checkpoint.npz"
        if not resume.exists():
            raise UserError(f"cannot resume: {resume} does not exist (train first, or pass the checkpoint path)")
        try:
            _, meta = load_checkpoint(resume)
        except CheckpointError as e:
            raise UserError(str(e)) from None
        saved = meta.get("config", {})
        config = {**defaults, **{k: v for k, v in saved.items() if k in defaults}, **explicit}
        config["resume"] = str(resume)
    else:  # a flag the user did not give takes the objective's default (--loss wgan: RMSprop 5e-5, ...)
        for key, value in objectives.DEFAULTS.get(config.get("loss", "bce"), {}).items():
            if key not in explicit and key in config:
                config[key] = value
    return config, resume


def train_main(argv=None, prog="mnist_mlp.py", description=None, defaults=MLP_DEFAULTS):
    """Entry point of examples/mnist_mlp.py (and examples/dcgan.py with DCGAN_DEFAULTS); the exit code."""
    description = description or ("Train the classic MLP GAN on MNIST-like 28x28 images, from scratch in "
                                  "NumPy (or CuPy with --backend cupy).")
    parser = make_train_parser(prog, description, defaults)
    args = parser.parse_args(argv)
    if args.reference:
        fast.set_enabled(False)  # every layer, loss and optimizer runs its reference code
    fast.configure_process()  # unless --reference: the CPU process settings of scratchgan/fast/process.py
    explicit = vars(make_train_parser(prog, description, defaults, suppress=True).parse_args(argv))
    log = _log
    try:
        config, resume = resolve_config(args, explicit, defaults, log)
        if config["dataset"] == "mnist-bundled" and "split" not in explicit:
            config["split"] = "test"  # the bundled digits are MNIST's test split; an explicit --split train errs
        xp = get_xp(config["backend"])
        images, labels = load_images(config, log, with_labels=True)
        if config.get("conditional"):
            if config.get("arch", "mlp") != "mlp":
                raise UserError("--conditional is for the MLP GAN (examples/mnist_mlp.py)")
            if labels is None:
                raise UserError(f"--conditional needs class labels, and --dataset {config['dataset']} has none")
            config["num_classes"] = int(labels.max()) + 1
        else:
            labels = None
        if config["batch_size"] > len(images):
            raise UserError(f"--batch-size {config['batch_size']} is larger than the {len(images)} training "
                            "images; use a smaller batch size")
        config["image_size"] = int(np.prod(images.shape[1:]))  # the MLP's flattened image length
        config["image_shape"] = list(images.shape[1:])
        config["num_images"] = len(images)
        config["environment"] = {**env_summary(), "fast_paths": fast.enabled()}  # False: --reference
        step = build_step(config, xp)
        conv = config.get("arch") == "dcgan"
        loader = BatchLoader(images, config["batch_size"], xp=xp, dtype=config["dtype"], seed=config["seed"],
                             flatten=not conv, labels=labels)
        trainer = Trainer(step, loader, config["out"], config, sample_every=config["sample_every"],
                          log_every=config["log_every"], image_shape=None if conv else tuple(images.shape[1:]),
                          d_steps=config["d_steps"], progress=config["progress"], log=log,
                          instance_noise=config.get("instance_noise", 0.0))
        if config.get("eval_every"):
            if int(np.prod(images.shape[1:])) != 784 or config["dataset"] == "folder":
                raise UserError("--eval-every measures MNIST-like 28x28 grayscale runs only "
                                f"(its classifier is trained on {config['dataset']} digits/clothes)")
            from .metrics import make_eval_hook
            trainer.eval_hook = make_eval_hook(config, loader.images(len(images)).reshape(len(images), 784),
                                               backend=config["backend"], log=log)
        log(f"training {config['dataset']} ({len(images)} images, split {config['split']}) on "
            f"{backend_name(xp)}/{config['dtype']}: G {step.G.num_parameters():,} and D "
            f"{step.D.num_parameters():,} parameters; outputs in {config['out']}")
        trainer.fit(config["epochs"], resume_from=resume)
    except (UserError, DataError, BackendError, CheckpointError, ValueError) as e:
        return _fail(prog, e)
    except TrainingDiverged as e:
        print(f"{prog}: stopped: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except (TrainingInterrupted, KeyboardInterrupt) as e:
        print(f"{prog}: {e or 'aborted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    log(f"done: {config['out']}/ has samples/, losses.png, progress.gif, real_vs_fake.png, metrics.csv, "
        f"checkpoint.npz")
    return 0


# ---------------------------------------------------------------------------------- sampling
def sample_main(argv=None, prog="scratchgan sample"):
    parser = Parser(prog=prog, description="Generate images from a checkpoint's generator.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint.npz from training")
    parser.add_argument("--n", type=positive_int, default=64, help="number of images (default: %(default)s)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="writes FILE.npy (float32 images (N, H, W) in [-1, 1]) and FILE.png (a grid)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the noise (default: %(default)s)")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy", help="(default: %(default)s)")
    parser.add_argument("--label", type=non_negative_int, default=None, metavar="K",
                        help="conditional checkpoints: make N images of class K; without it, one row per "
                             "class (N rounded up to a multiple of the classes)")
    args = parser.parse_args(argv)
    try:
        arrays, meta = load_checkpoint(args.checkpoint)
        config = meta.get("config")
        if not config or "latent_dim" not in config:
            raise UserError(f"{args.checkpoint} holds no model config; is it a scratchgan training checkpoint?")
        xp = get_xp(args.backend)
        G, _ = build_gan(config, xp)
        try:
            G.load_state_dict({k[2:]: v for k, v in arrays.items() if k.startswith("G/")})
        except ValueError as e:
            raise UserError(f"{args.checkpoint}: {e}") from None
        n, labels, nrow = args.n, None, None
        if isinstance(G, nn.Conditional):
            K = G.num_classes
            if args.label is not None and args.label >= K:
                raise UserError(f"--label {args.label}: this generator knows classes 0 to {K - 1}")
            if args.label is not None:
                labels = np.full(n, args.label)
            else:  # one row per class
                nrow = -(-n // K)
                n = nrow * K
                labels = np.repeat(np.arange(K), nrow)
            labels = to_device(labels, xp, np.int64)
        elif args.label is not None:
            raise UserError(f"--label needs a conditional checkpoint (trained with --conditional); "
                            f"{args.checkpoint} is unconditional")
        z = np.random.default_rng(args.seed).standard_normal((n, config["latent_dim"]))
        images = to_numpy(generate(G, to_device(z, xp, G.dtype), labels)).astype(np.float32)
        images = images.reshape((n, *config.get("image_shape", [28, 28])))
        stem = Path(args.out)
        stem = stem.with_suffix("") if stem.suffix in (".npy", ".png") else stem
        stem.parent.mkdir(parents=True, exist_ok=True)
        np.save(stem.with_suffix(".npy"), images)
        from . import viz
        viz.save_image_grid(images, stem.with_suffix(".png"), nrow=nrow, scale=2)
    except (UserError, CheckpointError, BackendError, ValueError, OSError) as e:
        return _fail(prog, e)
    _log(f"wrote {stem.with_suffix('.npy')} ({n} images) and {stem.with_suffix('.png')}")
    return 0


def main(argv=None):
    """`python -m scratchgan train|sample ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from .evaluate_cli import evaluate_main  # local: evaluate_cli imports this module
    commands = {"train": lambda a: train_main(a, prog="scratchgan train"), "sample": sample_main,
                "evaluate": evaluate_main}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: python -m scratchgan {train,sample,evaluate} [--help]\n"
              "  train     train the MLP GAN (same flags as examples/mnist_mlp.py)\n"
              "  sample    generate images from a checkpoint\n"
              "  evaluate  measure a checkpoint's samples: Frechet distance (classifier features), coverage, "
              "precision/recall")
        return 0 if argv and argv[0] in ("-h", "--help") else EXIT_USAGE
    return commands[argv[0]](argv[1:])


def _log(message):
    from tqdm.auto import tqdm
    tqdm.write(message)


def _fail(prog, error):
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE
