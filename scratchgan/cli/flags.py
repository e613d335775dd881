"""The train command's flags, each stated once: its name, default, check, help and group.

Everything else is derived from ``FLAGS``: the parsers of `scratchgan train`, examples/mnist_mlp.py and
examples/dcgan.py (``add_flags``), their ``--help`` (the "(default: ...)" endings included), the
defaults of each architecture (``defaults``), the objectives' defaults (``loss_defaults``), which flags a
resume takes from the checkpoint (``from_checkpoint``) and the flags of one architecture only
(``arch_only``), and the keys and checks of a --config file (config_file.py). A preset (presets.py) names values of these flags; the checkpoint schema
(checkpoint_schema.CONFIG) has a rule for every one of them (tests/cli/test_flags.py checks both).

A default is one value, or ``ByArch(mlp=..., dcgan=...)`` where the two architectures differ;
``by_loss`` gives the values a ``--loss`` brings (its paper's settings) for the flags the user does not give.
"""
from __future__ import annotations

import argparse
import dataclasses

from .. import __version__
from ..data import registry
from ..gan import objectives, presets
from ..gan.models import DCGAN_SIZES
from ..run import runlog
from .common import non_negative_float, non_negative_int, positive_float, positive_int, unit_interval

ARCHES = ("mlp", "dcgan")
DRY_RUN_STEPS = 3  # the steps of --dry-run


class ByArch(dict):
    """A default that differs between the architectures: ``ByArch(mlp=64, dcgan=128)``."""


@dataclasses.dataclass(frozen=True)
class Flag:
    key: str                      # the config key (argparse's dest)
    group: str | None             # the --help section (None: above them all)
    default: object               # a value, or ByArch(...)
    help: str                     # without its "(default: ...)" ending, which add_flags writes
    type: object = None           # argparse type: a checked conversion (cliutil)
    choices: tuple | None = None
    metavar: str | None = None
    name: str | None = None       # the flag's name, where it is not "--" + key with dashes
    action: str | None = None     # "store_true", "store_false", "version"
    nargs: str | None = None
    const: object = None
    arch: tuple = ARCHES          # the architectures that have the flag
    shown: str | None = None      # the default as --help says it, where not the value ("off", "all")
    by_loss: dict = dataclasses.field(default_factory=dict)  # --loss NAME -> its paper's value
    resumes: bool = True          # False: a resume never takes it from the checkpoint (places, this process)
    dcgan_choices: tuple = ()     # choices only the DCGAN has
    dcgan_help: str = ""          # help only the DCGAN's parser shows
    negation: tuple | None = None  # (name, help) of a second flag that sets the key back to its default

    @property
    def flag(self):
        return self.name or "--" + self.key.replace("_", "-")

    def default_for(self, arch):
        return self.default[arch] if isinstance(self.default, ByArch) else self.default


def _loss_note(by_loss):
    """'; --loss wgan makes it 5e-05, --loss wgan-gp makes it 0.0001' from ``by_loss``; losses that bring
    the same value together ('--loss wgan and wgan-gp make it 5')."""
    values = {}
    for loss, value in by_loss.items():
        values.setdefault(value, []).append(loss)
    parts = [(" and ".join(losses), value, len(losses) > 1) for value, losses in values.items()]
    said = [f"{names} make{'' if plural else 's'} it {value}" for names, value, plural in parts]
    return "; --loss " + ", --loss ".join(said)


_TOOLS = "tools of stronger GANs (docs/derivations/)"
FLAGS = (
    Flag("arch", None, ByArch(mlp="mlp", dcgan="dcgan"), "mlp: the classic MLP GAN of examples/mnist_mlp.py; dcgan: the DCGAN of examples/dcgan.py "
         "(convolutions, --image-size 28/32/64/128, image folders); the defaults that differ between them are given "
         "for each below", choices=ARCHES, shown="mlp"),
    # compute
    Flag("backend", "compute", "numpy", "array library: numpy (CPU) or cupy (CUDA GPU)", choices=("numpy", "cupy")),
    Flag("dtype", "compute", "float32", "floating-point type of weights and activations",
         choices=("float32", "float64")),
    Flag("reference", "compute", False, "run the textbook reference code only, without the fast paths of "
         "scratchgan/fast/ (as SCRATCHGAN_REFERENCE=1)", action="store_true", shown="fast paths on", resumes=False),
    # data
    Flag("dataset", "data", ByArch(mlp="mnist", dcgan="fashion-mnist"),
         "mnist downloads (checksummed, cached) and falls back to the bundled 10k MNIST test digits when offline; "
         "mnist-bundled asks for those directly; cifar10: the binary CIFAR-10 (32x32 RGB, 50k train / 10k test; "
         "downloaded, SHA-256 checked, cached, read without pickle); npy: your own array in --data-dir FILE.npy "
         "(uint8 (N, H, W) or (N, C, H, W), or floats in [0, 1] or [-1, 1])",
         choices=registry.CHOICES, dcgan_choices=registry.DCGAN_CHOICES,
         dcgan_help="; folder: every JPEG/PNG under --data-dir (e.g. CelebA's img_align_celeba/)"),
    Flag("data_dir", "data", None, "read the IDX files (train-images-idx3-ubyte[.gz], ...) from DIR instead of the "
         "cache or the network; your own IDX files are accepted too (a line says they are not the official ones); "
         "with --dataset cifar10, a folder holding cifar-10-binary.tar.gz or cifar-10-batches-bin/; with --dataset "
         "npy, the .npy file", metavar="DIR", dcgan_help="; with --dataset folder, the image folder"),
    Flag("split", "data", "train", "which split to train on", choices=("train", "test")),
    Flag("limit", "data", None, "use only the first N images, for quick trials", type=positive_int, metavar="N",
         shown="all"),
    # training
    Flag("epochs", "training", 20, "total epochs; with --resume, the total to continue to", type=positive_int),
    Flag("batch_size", "training", ByArch(mlp=64, dcgan=128), "", type=positive_int),
    Flag("loss", "training", "bce", "GAN objective: bce (the standard, non-saturating), wgan (weight clipping), "
         "wgan-gp (gradient penalty), lsgan (least squares), hinge; wgan and wgan-gp bring their papers' defaults "
         "for the flags below that you do not give", choices=objectives.NAMES),
    Flag("preset", "training", None, "a measured recipe for the flags you do not give: " +
         "; ".join(f"{name}: {presets.describe(name)}" for name in presets.PRESETS) +
         " (the lowest Inception FID within about 10 minutes of a 2-core CPU; Fashion-MNIST only)",
         choices=tuple(presets.PRESETS), shown="none"),
    # the papers' settings: Arjovsky et al. 2017 (WGAN), Algorithm 1: RMSProp, lr 5e-5, c = 0.01, n_critic = 5;
    # Gulrajani et al. 2017 (WGAN-GP), Algorithm 1: Adam, lr 1e-4, betas (0, 0.9), lambda = 10, n_critic = 5
    Flag("optimizer", "training", "adam", "optimizer of both networks; RMSprop uses --lr only",
         choices=("adam", "rmsprop"), by_loss={"wgan": "rmsprop"}),
    Flag("lr", "training", 2e-4, "learning rate of both networks", type=positive_float,
         by_loss={"wgan": 5e-5, "wgan-gp": 1e-4}),
    Flag("lr_g", "training", None, "generator learning rate", type=positive_float, shown="--lr"),
    Flag("lr_d", "training", None, "discriminator learning rate", type=positive_float, shown="--lr"),
    Flag("beta1", "training", 0.5, "Adam beta1", type=unit_interval(), by_loss={"wgan-gp": 0.0}),
    Flag("beta2", "training", 0.999, "Adam beta2", type=unit_interval(), by_loss={"wgan-gp": 0.9}),
    Flag("latent_dim", "training", 100, "size of the noise vector z", type=positive_int),
    Flag("label_smoothing", "training", 0.0, "one-sided: D's real label becomes 1 - this, e.g. 0.1",
         type=unit_interval()),
    Flag("d_steps", "training", 1, "discriminator steps per generator step", type=positive_int,
         by_loss={"wgan": 5, "wgan-gp": 5}),
    Flag("clip", "training", 0.0, "after each D update clip D's weights to [-C, C], 0 = off", type=non_negative_float,
         metavar="C", by_loss={"wgan": 0.01}),
    Flag("gp_lambda", "training", 0.0, "weight of the gradient penalty LAMBDA mean(||grad D(xhat)|| - 1)^2 in D's "
         "loss, 0 = off; D must be Linear/LeakyReLU only", type=non_negative_float, metavar="LAMBDA",
         by_loss={"wgan-gp": 10.0}),
    Flag("instance_noise", "training", 0.0, "add N(0, SIGMA^2) noise to every input of D, annealed linearly to 0 "
         "over the run", type=non_negative_float, metavar="SIGMA"),
    Flag("loss_on", "training", "logits", "BCE on D's logits (stable, default) or on sigmoid probabilities",
         choices=("logits", "probs")),
    Flag("seed", "training", 0, "seeds weights, noise and data order; same seed on NumPy = identical run",
         type=non_negative_int),
    # tools of stronger GANs, all off by default
    Flag("spectral_norm", _TOOLS, False, "spectral normalisation of D's Linear and Conv2d weights, W / sigma(W) by "
         "one power iteration per forward (Miyato et al. 2018); not with a gradient penalty", action="store_true",
         shown="off"),
    Flag("r1", _TOOLS, 0.0, "R1 penalty (GAMMA/2) mean ||grad_x D(x)||^2 on the real images, in D's loss, 0 = off; "
         "D must be Linear/LeakyReLU only, as for --gp-lambda", type=non_negative_float, metavar="GAMMA"),
    Flag("ema", _TOOLS, 0.0, "keep a moving average of G's weights, ema = BETA ema + (1 - BETA) G, e.g. 0.999, "
         "0 = off; saved in the checkpoint and used by the sample grids, `scratchgan sample` and `scratchgan "
         "evaluate`", type=unit_interval(), metavar="BETA"),
    Flag("diffaugment", _TOOLS, "", "differentiable augmentation (Zhao et al. 2020) of every batch D sees, real and "
         "fake, in both steps: a comma-separated list of translation, cutout, color, applied in that order, e.g. "
         "translation,cutout,color; the MLP's images are augmented as 28x28; '' = off", metavar="POLICY", shown="''"),
    # model
    Flag("resolution", "model", None, "side of the square images the GAN makes; the data is resized to it",
         name="--image-size", type=int, choices=tuple(DCGAN_SIZES), arch=("dcgan",),
         shown="28 for MNIST-like data, 32 for cifar10, 64 for folders, a .npy array's own"),
    Flag("channels", "model", None, "1 (grayscale) or 3 (RGB)", type=int, choices=(1, 3), arch=("dcgan",),
         shown="1 for MNIST-like data, 3 for cifar10 and folders, a .npy array's own"),
    Flag("g_width", "model", 64, "generator channels at the last stage, the tutorial's ngf", type=positive_int,
         arch=("dcgan",)),
    Flag("d_width", "model", 64, "discriminator channels at the first stage, the tutorial's ndf",
         type=positive_int, arch=("dcgan",)),
    Flag("g_hidden", "model", "128,512,1024", "generator hidden sizes, comma-separated", metavar="SIZES",
         arch=("mlp",)),
    Flag("d_hidden", "model", "512,256,128", "discriminator hidden sizes, comma-separated", metavar="SIZES",
         arch=("mlp",)),
    Flag("batchnorm", "model", True, "no BatchNorm in the generator", name="--no-batchnorm", action="store_false",
         arch=("mlp",), shown="BatchNorm on"),
    Flag("dropout", "model", 0.0, "dropout probability after each discriminator hidden layer", type=unit_interval(),
         arch=("mlp",)),
    Flag("conditional", "model", False, "class-conditional GAN on the data's labels: the label joins G's noise; "
         "the MLP's D gets it joined to its input, the DCGAN's D is a projection discriminator; sample grids get "
         "one row per class", action="store_true", shown="off"),
    Flag("embedding_dim", "model", 0, "with --conditional: 0 = one-hot labels, N > 0 = a learned Embedding(classes, "
         "N) in G (and in the MLP's D)", type=non_negative_int, metavar="N"),
    # output
    Flag("out", "output", None, "folder for samples, plots, metrics, log.txt and the checkpoint; one run per folder, "
         "which records every file it writes in OUT/manifest.json: a folder with an earlier run's outputs is refused "
         "unless --resume or --overwrite, and a run never writes over a file it did not record; with --resume FILE: "
         "FILE's folder", metavar="DIR", resumes=False,
         shown="--name's folder, else a new numbered one, runs/00012-mlp-fashion-mnist-bce"),
    Flag("name", "output", None, "the run's folder is runs/NAME (instead of --out)", metavar="NAME", resumes=False,
         shown="a new numbered folder"),
    Flag("sample_every", "output", ByArch(mlp=500, dcgan=200), "save a sample grid every STEPS steps, 0 = only at "
         "epoch ends", type=non_negative_int, metavar="STEPS"),
    Flag("eval_every", "output", 0, "every STEPS steps measure sample quality (Frechet distance in a small "
         "classifier's features, classes covered, precision/recall; see `scratchgan evaluate`) into metrics.csv and "
         "losses.png, warn on collapse, and keep the checkpoint of the lowest distance as checkpoint_best.npz (its "
         "value and step in config.json); 0 = off", type=non_negative_int, metavar="STEPS"),
    Flag("eval_metric", "output", "classifier", "what --eval-every measures: classifier (the small classifier's "
         "metrics above, 28x28 grey runs only), or fid (the Inception FID of 2000 samples against 2000 of the run's "
         "images, any run: minutes on a CPU each time)", choices=("classifier", "fid")),
    Flag("evaluator", "output", "cnn", "the classifier --eval-every measures in: cnn, or mlp for the numbers of "
         "earlier releases", choices=("cnn", "mlp")),
    Flag("log_every", "output", 10, "write a metrics.csv row and check for NaN every STEPS steps", type=positive_int,
         metavar="STEPS"),
    Flag("snapshot_every", "output", 0, "also keep the checkpoint of every EPOCHS-th epoch as "
         "checkpoint_epochNNNN.npz beside the rolling checkpoint.npz (with --eval-every, checkpoint_best.npz keeps "
         "the lowest Frechet distance anyway); 0 = off", type=non_negative_int, metavar="EPOCHS"),
    Flag("resume", "output", None, "continue from CHECKPOINT (default with no value: OUT/checkpoint.npz) to --epochs "
         "in total, into the folder of CHECKPOINT's own run (same run id in OUT/manifest.json) or a new one; flags "
         "not given again keep the checkpoint's values, except the places to write (--out, --tensorboard) and, "
         "outside its own run's folder, --data-dir", nargs="?", const="", metavar="CHECKPOINT", resumes=False),
    Flag("overwrite", "output", False, "delete the files an earlier run in --out recorded writing (its manifest.json: "
         "checkpoint.npz, metrics.csv, samples/..., nothing else, never through a link) and start afresh",
         action="store_true", resumes=False),
    Flag("progress", "output", True, "no progress bar (for logs)", name="--no-progress", action="store_false",
         shown="progress bar on"),
    # conveniences
    Flag("dry_run", "conveniences", False, "check the set-up: what the real run checks before training (flags, "
         "output places, the data's paths: an image folder is listed, a .npy file's header read; no image is "
         "decoded, nothing downloaded) and print its plan (the dataset and its size, steps per epoch, every setting "
         f"and where it came from, the output folder, the estimated memory), then {DRY_RUN_STEPS} steps on random images of the run's shape (no "
         "--eval-every), all outputs written as usual; into --out when given, else into a new temporary folder, "
         "whose path is printed", action="store_true", shown="off"),
    Flag("tensorboard", "conveniences", None, "also write the metrics.csv values as scalars and the sample grids as "
         "images to TensorBoard event files: with no DIR in the run's folder (OUT/tb), with DIR in a folder of this "
         "run's own under it (DIR/OUTNAME-RUNID), so two runs never share one; then `tensorboard --logdir DIR` "
         f"(needs the extra: {runlog.INSTALL_HINT}); metrics.jsonl (one JSON object per logged step) is written "
         "beside metrics.csv either way", metavar="DIR", shown="off", nargs="?", const="", resumes=False),
    Flag("version", "conveniences", None, "print the version and exit", action="version"),
    # --cuda-graph (scratchgan/fast/cuda_graph/graph.py): opt-in until it has run on a GPU
    Flag("cuda_graph", "conveniences", False, "experimental: not yet run on a GPU. With --backend cupy, replay the "
         "whole training step (the MLP GAN: every --loss, --r1, --conditional) from one CUDA graph, matmuls by "
         "scratchgan's own GEMM kernel instead of cuBLAS; what it does not cover is refused in one line",
         action="store_true", shown="off", resumes=False,
         negation=("--no-cuda-graph", "run the eager step, one launch per operation: the default, and the fallback")),
    # --tf32 (scratchgan/fast/precision.py)
    Flag("tf32", "precision", False, "CuPy only: let float32 matmuls and the convolutions (im2col + matmul) run on "
         "TF32 tensor cores (Ampere or newer GPUs), as PyTorch's torch.backends.cuda.matmul.allow_tf32 and its "
         "default for cuDNN convolutions; faster, at a cost in precision: products of 10-bit-mantissa inputs (float32 "
         "keeps 23), so matmuls and convolutions are off by ~1e-3 relative instead of ~1e-7; weights, activations and "
         "Adam stay float32. Refused with --backend numpy, which has no TF32", action="store_true",
         shown="off, full float32", resumes=False),
)
BY_KEY = {flag.key: flag for flag in FLAGS}
# where the settings above may come from besides the command line: not a setting itself (never recorded)
CONFIG_FILE = Flag("config", "conveniences", None, "take the settings from FILE, JSON (or YAML with the extra: "
                   'pip install "scratchgan[yaml]") whose keys are the config keys of these flags (batch_size for '
                   "--batch-size), a run's own config.json included; flags given here win; the places a run "
                   "writes (out, resume, overwrite, tensorboard) come from the command line only",
                   metavar="FILE", shown="none", resumes=False)


def name_of(key):
    """The flag that sets config ``key``: "--image-size" for "resolution"."""
    return BY_KEY[key].flag


def defaults(arch, both=False):
    """Every config key's default for ``arch`` ("mlp" or "dcgan"): the flags of that architecture, or with
    ``both`` (the parser of `scratchgan train`) every flag, ``arch``'s value where the two differ."""
    return {f.key: f.default_for(arch) for f in FLAGS
            if (both or arch in f.arch) and f.action != "version"}


def arch_only():
    """{arch: the keys of the flags only that architecture has}."""
    return {arch: tuple(f.key for f in FLAGS if f.arch == (arch,)) for arch in ARCHES}


def from_checkpoint():
    """The keys a resume takes from the checkpoint's config when the flag is not given again."""
    return {f.key for f in FLAGS if f.resumes and f.action != "version"}


def loss_defaults(loss):
    """{key: value} that ``--loss loss`` brings for the flags not given (its paper's settings; bce: none)."""
    return {f.key: f.by_loss[loss] for f in FLAGS if loss in f.by_loss}


def _ending(flag, arch, both):
    """The "(default: ...)" of ``flag``'s help; in the one `scratchgan train` parser (``both``), a default
    that differs between the architectures is given for each."""
    if flag.action == "version":
        return ""
    if both and isinstance(flag.default, ByArch) and flag.shown is None:
        return " (default: " + ", ".join(f"{flag.default[a]} for --arch {a}" for a in ARCHES) + ")"
    return f" (default: {flag.default_for(arch) if flag.shown is None else flag.shown})"


def _help(flag, arch, both):
    text = flag.help + (_loss_note(flag.by_loss) if flag.by_loss else "")
    if flag.dcgan_help and (both or arch == "dcgan"):
        text += flag.dcgan_help + (", --arch dcgan only" if both and flag.dcgan_choices else "")
    text = (text + _ending(flag, arch, both)).strip().replace("%", "%%")
    return f"(--arch {flag.arch[0]} only) {text}" if both and len(flag.arch) == 1 else text


def _arguments(flag, arch, both, suppress):
    """argparse's keyword arguments for ``flag`` in the parser of ``arch`` (``both``: `scratchgan train`)."""
    kwargs = {"help": _help(flag, arch, both)}
    if flag.action == "version":
        return {**kwargs, "action": "version", "version": f"scratchgan {__version__}"}
    kwargs["dest"] = flag.key
    kwargs["default"] = argparse.SUPPRESS if suppress else flag.default_for(arch)
    if flag.action:
        kwargs["action"] = flag.action
    if flag.choices is not None:
        kwargs["choices"] = list(flag.choices) + (list(flag.dcgan_choices) if both or arch == "dcgan" else [])
    for name in ("type", "metavar", "nargs", "const"):
        if getattr(flag, name) is not None:
            kwargs[name] = getattr(flag, name)
    return kwargs


def add_flags(parser, arch, both=False, suppress=False):
    """Add the train command's flags to ``parser``: those of ``arch`` with its defaults, or with ``both``
    (`scratchgan train`, where --arch chooses) every flag, ``arch``'s defaults where they differ.
    ``suppress``: no defaults at all, so that parsing gives the flags given explicitly."""
    groups = {}
    for flag in FLAGS:
        if not both and (flag.key == "arch" or arch not in flag.arch):
            continue
        if flag.group is not None and flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(flag.group)
        where = parser if flag.group is None else groups[flag.group]
        where.add_argument(flag.flag, **_arguments(flag, arch, both, suppress))
        if flag.negation is not None:
            name, text = flag.negation
            where.add_argument(name, dest=flag.key, action="store_false", help=text,
                               default=argparse.SUPPRESS if suppress else flag.default_for(arch))
    groups[CONFIG_FILE.group].add_argument(CONFIG_FILE.flag, **_arguments(CONFIG_FILE, arch, both, suppress))
    return parser
