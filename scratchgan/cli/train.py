"""Command line: `python -m scratchgan train|sample|evaluate|export|interpolate`, and the training entry
point of the examples. The train command's flags are flags.py's table; this module parses them, resolves the
run's config (defaults < preset < objective < checkpoint < --config FILE < flags: a file's settings count as given,
config_file.py), then runs it in named steps (``_train``); --dry-run prints the real run's plan first (plan.py).

Every user mistake (a bad flag value, an unknown dataset, a missing file, a checkpoint of another
model, CuPy without a GPU, a used or unwritable --out, a full disk, too little memory) ends in one
line on stderr and exit code 2, never a traceback: ``_exit_code`` maps every exception to its line
and exit code, in one place.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import signal
import sys
import warnings
from pathlib import Path

import numpy as np

from .. import fast, nn
from ..backend import BackendError, backend_name, get_xp
from ..checkpoint import CheckpointError
from ..data import BatchLoader, DataError, registry
from ..data.idx import shown
from ..data.transforms import fit_images
from ..errors import SettingError
from ..fast.process import environment as process_environment  # the settings that make timings comparable
from ..gan import presets
from ..gan.checkpoint_schema import load_run_checkpoint
from ..gan.models import DCGAN_SIZES, build_step
from ..run import distributed, rundir, runlog
from ..run.trainer import Trainer, TrainingDiverged, TrainingInterrupted
from . import config_file, flags, plan, train_options
from .common import EXIT_INTERRUPTED, EXIT_TERMINATED, Parser, Terminated, UserError, signal_name, stop_on_sigterm
from .common import fail as _fail
from .common import log as _log
from .common import os_error_message as _os_error_message

EXIT_DIVERGED = 3


# ---------------------------------------------------------------------------------- training flags
# every flag, its default and its help: flags.FLAGS; these are derived from it
MLP_DEFAULTS, DCGAN_DEFAULTS = flags.defaults("mlp"), flags.defaults("dcgan")
ARCH_DEFAULTS = {"mlp": MLP_DEFAULTS, "dcgan": DCGAN_DEFAULTS}  # `scratchgan train --arch mlp|dcgan`


def make_train_parser(prog, description, defaults=MLP_DEFAULTS, suppress=False, both=False):
    """The parser of an example (``defaults``: its architecture's) or, ``both``, of `scratchgan train`."""
    parser = Parser(prog=prog, description=description)
    flags.add_flags(parser, defaults["arch"], both=both, suppress=suppress)
    if not both:
        parser.set_defaults(arch=defaults["arch"])
    return parser


def load_images(config, log, with_labels=False):
    """uint8 images for the run (data.registry), as the files hold them for the MLP, fitted to (N, C, S, S)
    for the DCGAN; records what was really loaded in ``config``.

    ``with_labels``: returns (images, the registry's Loaded: its labels (N,) or None, class names, why none).
    """
    request = registry.Request(config["split"], config.get("data_dir"), config.get("resolution"),
                               config.get("channels"), log=log, on_foreign=log)
    if config["dataset"] == "synthetic":  # --dry-run: random images of the real data's shape
        train_options.synthetic_request(config, request)
    loaded = registry.load(config["dataset"], request, limit=config.get("limit"))
    config["dataset"], config["split"] = loaded.name, loaded.split  # config.json, checkpoints, `evaluate`
    images = _fit_to_dcgan(config, loaded.images) if config.get("arch") == "dcgan" else loaded.images
    return (images, loaded) if with_labels else images


def _fit_to_dcgan(config, images):
    """The images as the DCGAN makes them: --image-size and --channels, by default the images' own."""
    own = images.shape[-1]
    config["channels"] = config.get("channels") or (images.shape[1] if images.ndim == 4 else 1)
    config["resolution"] = config.get("resolution") or own
    if config["resolution"] not in DCGAN_SIZES:
        raise UserError(f"{shown(config['data_dir'])}: images of {own}x{own} pixels; the DCGAN makes "
                        f"{', '.join(map(str, DCGAN_SIZES))}: pass --image-size to resize them to one of those")
    return fit_images(images, config["resolution"], config["channels"])


# What a resume reads back from a checkpoint's config (audited key by key): a checkpoint is data, never
# instructions, so a setting that names a place comes from the command line.
#   out, name, resume, overwrite,        where to write, what to delete: the command line only, always
#   tensorboard
#   data_dir                             which files to read: the command line, or the checkpoint's own
#                                        when it continues its own run in place (its run id is the one in
#                                        --out's manifest.json: the user gave that path to that run)
#   everything else                      what the networks, the data order and the schedule are (sizes,
#                                        rates, choices of objective, backend, evaluator, ...): the
#                                        checkpoint's, unless a flag is given again; none names a path or
#                                        a program (the choices are checked where they are used)
# (environment, image_shape, num_images, ranks, best, ... are recorded, never read back: recomputed.)
# The flags a checkpoint never sets are those of flags.FLAGS with resumes=False: the places above, and how
# this process computes (--reference, --cuda-graph, --tf32).
COMMAND_LINE_ONLY = tuple(sorted(set(flags.BY_KEY) - flags.from_checkpoint() - {"version"}))


def load_resumed(args):
    """(checkpoint path, its meta) of ``--resume`` (None, None without it); UserError for one that cannot be."""
    if args.resume is None:
        return None, None
    resume = Path(args.resume) if args.resume else Path(args.out) / "checkpoint.npz"
    if not resume.exists():
        raise UserError(f"cannot resume: {resume} does not exist (train first, or pass the checkpoint path)")
    try:
        arrays, meta = load_run_checkpoint(resume)  # checked (metadata, sizes, NaN/Inf) before anything is written
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if any(name.endswith(("/m_sum", "/v_sum")) for name in arrays):  # Adam's state before the moments m, v
        raise UserError(f"cannot resume: {resume} is too old to load (written before scratchgan 0.1.0, with Adam's "
                        "running sums m_sum, v_sum); start a new run (`scratchgan sample` still reads its generator)")
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
        for key, value in flags.loss_defaults(config.get("loss", "bce")).items():
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

    Under ``mpiexec -n N`` it trains data-parallel (scratchgan/run/distributed.py), with the same flags."""
    return distributed.run(_train_main, argv, prog, description, defaults)


MLP_DESCRIPTION = "Train the classic MLP GAN on MNIST-like 28x28 images, from scratch in NumPy (or CuPy with " \
                  "--backend cupy)."
TRAIN_DESCRIPTION = "Train the classic MLP GAN (--arch mlp, as examples/mnist_mlp.py) or a DCGAN (--arch dcgan, " \
                    "as examples/dcgan.py), from scratch in NumPy (or CuPy with --backend cupy)."


@dataclasses.dataclass
class _Run:
    """What a training command knows so far, for the steps below and for its exit line."""
    prog: str
    args: argparse.Namespace
    explicit: dict          # the flags given on the command line
    defaults: dict          # the architecture's defaults (both architectures' keys for `scratchgan train`)
    both: bool              # `scratchgan train`: --arch chooses
    log: object = _log
    trainer: Trainer | None = None
    dry_folder: str | None = None  # the temporary folder of a --dry-run without --out, made after every check
    config_path: str | None = None  # --config FILE
    from_file: frozenset = frozenset()  # the keys of ``explicit`` that FILE set (no flag gave them)
    callbacks: tuple = ()  # scratchgan.train's (cli/api.py): called with each logged metrics row
    config: dict | None = None  # the run's config, once resolved
    argv: list | None = None  # the command line's arguments, recorded in config.json
    console: runlog.ConsoleLog | None = None  # what the command prints, also into OUT/log.txt


def command_main(argv=None):
    """`scratchgan train ARGS`: --arch chooses the MLP's or the DCGAN's defaults."""
    return train_main(argv, prog="scratchgan train", defaults=None)


def _train_main(argv, prog, description, defaults):
    both = defaults is None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        path, data = _read_config_file(argv)
    except UserError as e:
        return _fail(prog, e)
    if both:
        given = data.get("arch") if data.get("arch") in flags.ARCHES else None  # a bad one: said below
        given = given or presets.arch_of(data.get("preset"))  # a file's preset chooses as a flag's does
        defaults = flags.defaults(train_options.arch_of(argv, given), both=True)
    description = description or (TRAIN_DESCRIPTION if both else MLP_DESCRIPTION)
    args = make_train_parser(prog, description, defaults, both=both).parse_args(argv)
    explicit = vars(make_train_parser(prog, description, defaults, suppress=True, both=both).parse_args(argv))
    run = _Run(prog, args, explicit, defaults, both, argv=argv)
    try:
        _apply_config_file(run, path, data)
    except UserError as e:
        return _fail(prog, e)
    if run.args.reference:
        fast.set_enabled(False)  # every layer, loss and optimizer runs its reference code
    fast.configure_process()  # unless --reference: the CPU process settings of scratchgan/fast/process.py
    previous_sigterm = stop_on_sigterm()  # outside Trainer.fit (which saves first), as Ctrl-C stops Python
    run.console = runlog.ConsoleLog().start()  # everything printed, into OUT/log.txt once the run holds OUT
    try:
        return _train(run)
    except Exception as e:  # noqa: BLE001 (what is not a user's fault is raised again by _exit_code)
        return _exit_code(run, e)
    except KeyboardInterrupt as e:
        return _exit_code(run, e)
    finally:
        run.console.stop()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        if run.dry_folder is not None:  # a dry run that stopped before training: its empty folder goes
            with contextlib.suppress(OSError):
                os.rmdir(run.dry_folder)


def _read_config_file(argv):
    """(--config FILE's path, its mapping), or (None, {}) without --config."""
    path = config_file.path_of(argv)
    return (path, config_file.read(path)) if path is not None else (None, {})


def _apply_config_file(run, path, data):
    """The settings of --config FILE under the flags given: into ``run.args`` and ``run.explicit`` (a file's
    setting counts as given, for the preset, the objective's defaults and a resume)."""
    del run.args.config
    run.explicit.pop("config", None)
    if path is None:
        return
    values, places = config_file.settings(data, path, run.defaults["arch"], None if run.both else run.defaults["arch"])
    run.config_path, run.from_file = path, frozenset(set(values) - set(run.explicit))
    for key in run.from_file:
        setattr(run.args, key, values[key])
    run.explicit = {**values, **run.explicit}
    if places:
        run.log(f"--config {path}: {', '.join(places)} not applied (where a run writes comes from the command "
                "line only)")


def _train(run):
    """Check, load, build, train; the exit code (0 also for a resume with nothing left to do)."""
    config, resume, meta = _configure(run)
    run.config = config
    _check_measurable(config)
    world = distributed.init(config["backend"])  # data-parallel under mpiexec (None otherwise)
    writes = world is None or world.rank == 0  # rank 0 alone checks, claims and writes --out
    if not writes:
        run.log = _quiet
    if resume is not None and _nothing_to_do(config, meta, resume, run.log):
        return 0
    run_id = rundir.run_id_of(meta) if resume is not None else None
    xp = get_xp(config["backend"])  # before anything is made: no CuPy is one line, and no folder left behind
    real = _prepare_dry_run(config, run.explicit, world)
    if writes:
        _check_outputs(config, resume, run_id)
    train_options.apply_precision(config, xp)  # --tf32
    images, labels = _training_data(config, real, writes, run.log, meta if resume is not None else None)
    step = _build_step(config, xp, world)
    if real is not None:
        _show_plan(run, real, step, xp, config)
    loader = BatchLoader(images, config["batch_size"], xp=xp, dtype=config["dtype"], seed=config["seed"],
                         flatten=config.get("arch") != "dcgan", labels=labels)
    if config.get("cuda_graph"):  # the graph gathers its batches from the loader's device copy
        loader = step.gathering(loader)
    if real is not None:
        run.dry_folder = train_options.dry_run_folder(config, run.log)
    run.trainer = trainer = make_trainer(step, loader, config, world, images.shape, writes, run.log)
    trainer.callbacks = list(run.callbacks)
    trainer.command = [*run.prog.split(), *(run.argv or [])]  # config.json's provenance
    trainer.console = run.console if writes else None
    if config.get("eval_every") and writes:
        from ..run.evaluation import make_eval_hook
        real = loader.images(len(images))  # the classifier takes flat 28x28 images, FID any
        trainer.eval_hook = make_eval_hook(config, real if config.get("eval_metric") == "fid" else
                                           real.reshape(len(images), 784), backend=config["backend"], log=run.log)
    run.log(f"training {config['dataset']} ({len(images)} images, split {config['split']}) on "
            f"{backend_name(xp)}/{config['dtype']}: G {step.G.num_parameters():,} and D "
            f"{step.D.num_parameters():,} parameters; outputs in {config['out']}")
    _fit(trainer, config, resume, run_id, meta, writes)
    run.dry_folder = None  # trained: the folder is the dry run's result
    return _finish(run, config, writes)


def _configure(run):
    """The run's config from defaults, preset, objective, checkpoint and flags, checked; (config, resume, meta)."""
    train_options.check_early(run.args)
    train_options.place_run(run.args, run.explicit)  # --name NAME: runs/NAME
    resumed = load_resumed(run.args)
    config, resume = resolve_config(run.args, run.explicit, run.defaults, run.log, resumed=resumed)
    train_options.check_flags(config, run.explicit, arch_choosable=run.both)
    if config["out"] is None and not config.get("dry_run"):  # (a dry run makes a temporary folder)
        config["out"] = train_options.numbered_folder(config)
    if config["dataset"] == "mnist-bundled" and "split" not in run.explicit:
        config["split"] = "test"  # the bundled digits are MNIST's test split; an explicit --split train errs
    return config, resume, resumed[1]


def _check_measurable(config):
    """--eval-every on data the evaluator does not know: refused before anything is loaded, saying what does
    score such a run."""
    from ..run.evaluation import measured, no_metric
    if config.get("eval_every") and config.get("eval_metric") != "fid" and not measured(config["dataset"]):
        raise UserError(f"--eval-every: {no_metric(config['dataset'], Path(config['out'] or 'RUN') / 'checkpoint.npz')}")


def _prepare_dry_run(config, explicit, world):
    """--dry-run: what its real run would read and ask (train_options.DryRun), else None."""
    if not config.get("dry_run"):
        return None
    if world is not None:
        raise UserError("--dry-run runs in one process; start it without mpiexec")
    return train_options.prepare_dry_run(config, explicit)


def _show_plan(run, real, step, xp, config):
    """--dry-run: the plan of the real run (plan.py), before the dry run's own steps."""
    said = plan.sources(real.planned, set(run.explicit) - run.from_file, run.from_file, run.config_path)
    whole = train_options.check_data_source(config) if real.limit else real.count  # without --limit
    count, known = plan.dataset_size(real.planned, real.count, whole)
    for line in plan.lines(real.planned, said, count, known, step, xp, config):
        run.log(line)


def _check_outputs(config, resume, run_id):
    """Every place the run writes, before anything is loaded or written."""
    if config["out"] is not None:  # (None: a dry run's new temporary folder)
        rundir.check(config["out"], resume, config["overwrite"], resume_run_id=run_id)
    if config.get("tensorboard"):
        rundir.probe_writable(config["tensorboard"], "--tensorboard")


def _dry_folder_labels(config, loaded):
    """A dry run of a conditional folder run: the folder's classes from its listing (and dataset.json), its
    labelling checked as the real run checks it, and the random images' labels among those classes."""
    from ..data.folder import listing_labels
    classes, problem = listing_labels(config["data_dir"])
    labels = None if classes is None else (loaded.labels % len(classes)).astype(np.int64)
    return dataclasses.replace(loaded, labels=labels, classes=classes, no_labels=problem)


def _class_labels(config, loaded, dataset, resumed=None):
    """The labels of a --conditional run, checked; records num_classes (and an image folder's class names,
    which `sample --label NAME` reads). A resumed checkpoint (``resumed``: its meta) must know as many
    classes as the data has."""
    labels = loaded.labels
    if labels is None:
        if loaded.no_labels:
            raise UserError(f"--conditional needs class labels: {loaded.no_labels}")
        how = (" (put each class's images in a sub-folder of --data-dir, or list them in its dataset.json)"
               if dataset == "folder" else "")
        raise UserError(f"--conditional needs class labels, and --dataset {dataset} has none{how}")
    classes = loaded.classes
    count = len(classes) if classes is not None else int(labels.max()) + 1
    if count < 2:
        raise UserError(f"--conditional needs at least 2 classes; --dataset {dataset} has one"
                        + (f" ({classes[0]})" if classes else ""))
    seen = np.bincount(labels, minlength=count)
    # --limit keeps an image folder's first files, sorted by path: whole classes may be left out
    if classes is not None and not seen.all() and config["dataset"] != "synthetic":
        missing = int((seen == 0).sum())
        raise UserError(f"--limit {config.get('limit')} keeps no image of {missing} of the {count} classes (first: "
                        f"{classes[int(np.argmin(seen))]}): the folder's files are taken in order; raise --limit "
                        "or drop it")
    trained = (resumed or {}).get("config", {}).get("num_classes", count)
    if trained != count:
        raise UserError(f"cannot resume: {config['resume']} was trained on {trained} classes, and --dataset "
                        f"{dataset} has {count}; resume on the data it was trained on")
    config["num_classes"] = count
    if classes is not None:
        config["class_names"] = list(classes)
    return labels


def _training_data(config, real, writes, log, resumed=None):
    """The images (and labels for --conditional, else None) of the run, checked against the flags;
    records what the data made of the config (image_size, image_shape, num_images)."""
    if real is not None:  # the paths a real run reads, read no further
        real.count = train_options.check_data_source(config, real.limit)
    images, loaded = load_images(config, log, with_labels=True)
    dataset = config["dataset"] if real is None else config["dry_run_of"]
    if real is not None and dataset == "folder" and config.get("conditional"):  # the folder's classes, listed
        loaded = _dry_folder_labels(config, loaded)
    labels = _class_labels(config, loaded, dataset, resumed) if config.get("conditional") else None
    count = len(images) if real is None else real.count  # a dry run: the real data's size, where known
    if count is not None and config["batch_size"] > count:
        raise UserError(f"--batch-size {config['batch_size']} is larger than the {count} training "
                        "images; use a smaller batch size")
    eval_every = config.get("eval_every") if real is None else real.eval_every
    if eval_every and writes and config.get("eval_metric") != "fid" and (int(np.prod(images.shape[1:])) != 784 or
                                  not registry.BY_NAME[dataset].mnist_like):
        raise UserError("--eval-every measures MNIST-like 28x28 grayscale runs only "
                        f"(its classifier is trained on {dataset} digits/clothes); --eval-metric fid measures any run")
    config["image_size"] = int(np.prod(images.shape[1:]))  # the MLP's flattened image length
    config["image_shape"] = list(images.shape[1:])
    config["num_images"] = len(images)
    return images, labels


def _build_step(config, xp, world):
    """The run's GANStep (models.build_step), graphed under --cuda-graph."""
    config["environment"] = {**process_environment(), "fast_paths": fast.enabled()}  # False: --reference
    step = build_step(config, xp)
    if config["batch_size"] < 2 and any(isinstance(m, nn.BatchNorm1d) for net in (step.G, step.D)
                                        for m in net.modules()):
        raise UserError(f"--batch-size {config['batch_size']}: BatchNorm needs at least 2 images per batch "
                        "for its batch statistics; use --batch-size 2 or more, or --no-batchnorm")
    return train_options.graphed(step, config, world)  # --cuda-graph (experimental; fast/cuda_graph/graph.py)


def make_trainer(step, loader, config, world, shape, writes, log):
    """The Trainer of the run: one process, or rank ``world.rank`` of a data-parallel run (every line that
    knows of ranks is here)."""
    if world is not None:  # this rank's slice of each global batch, averaged gradients, synced BatchNorm
        config["ranks"] = world.size
        step, loader = distributed.parallelize(step, world), distributed.ShardedLoader(loader, world)
    conv = config.get("arch") == "dcgan"
    return Trainer(step, loader, config["out"], config, sample_every=config["sample_every"],
                   log_every=config["log_every"], image_shape=None if conv else tuple(shape[1:]),
                   d_steps=config["d_steps"], progress=config["progress"] and writes and _on_terminal(), log=log,
                   instance_noise=config.get("instance_noise", 0.0), snapshot_every=config.get("snapshot_every", 0),
                   world=world)


def _fit(trainer, config, resume, run_id, meta, writes):
    """Claim --out (rank 0) and train to --epochs."""
    claim = rundir.claim(config["out"], resume, config["overwrite"], resume_run_id=run_id,
                         resumed_step=meta.get("global_step") if resume is not None else None)
    with (claim if writes else contextlib.nullcontext()) as manifest:
        trainer.manifest = manifest  # every file the run writes is recorded there first (None: not rank 0)
        with warnings.catch_warnings():  # NumPy's overflow warnings (worker threads too): the watchdog says it
            warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
            trainer.fit(config["epochs"], resume_from=resume)


def _finish(run, config, writes):
    """The closing lines of a finished run; exit code 0."""
    warning = run.trainer.divergence_warning()
    if warning:
        print(f"{run.prog}: warning: {warning}", file=sys.stderr)
    if not writes:
        return 0
    out = Path(config["out"])
    names = [n for n in ("samples/", "log.txt", "losses.png", "progress.gif", "real_vs_fake.png", "metrics.csv",
                          "metrics.jsonl", "checkpoint.npz", "checkpoint_best.npz")
             if (out / n).exists()]
    run.log(f"done: {config['out']}/ has {', '.join(names)}")
    return 0


# ------------------------------------------------------------------------- errors -> one line, exit code
USER_FAULTS = (UserError, DataError, BackendError, CheckpointError, rundir.RunDirError, ValueError)
SIZE_KEYS = ("latent_dim", "g_hidden", "d_hidden", "g_width", "d_width", "batch_size")


def _exit_code(run, error):
    """The one place a training command's exceptions become a line on stderr and an exit code: 2 for what
    the user can fix, 3 for a diverged run, 128 + signal for Ctrl-C / SIGTERM. Anything else is re-raised."""
    prog, trainer = run.prog, run.trainer
    if isinstance(error, SettingError) and error.setting in run.from_file:  # -> the file's key
        return _fail(prog, f"--config {run.config_path}: {error.setting} {error.why}")
    if isinstance(error, SettingError) and error.setting in flags.BY_KEY:  # the library's words -> the flag
        return _fail(prog, f"{flags.name_of(error.setting)} {error.why}")
    if isinstance(error, USER_FAULTS):
        return _fail(prog, error)
    if isinstance(error, MemoryError):
        return _fail(prog, _memory_message(error, run.explicit, SIZE_KEYS))
    if isinstance(error, OSError):
        return _fail(prog, _os_error_message(error, trainer))
    if isinstance(error, TrainingDiverged):
        print(f"{prog}: stopped: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    if isinstance(error, TrainingInterrupted):
        print(f"{prog}: {error}", file=sys.stderr)
        return 128 + int(error.signum)  # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports them
    if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C, or Ctrl-C / SIGTERM outside the training loop
        kept = trainer.last_good if trainer is not None and trainer.last_good else "none (nothing was saved)"
        print(f"{prog}: {str(error) or f'aborted by {signal_name(error)}; last good checkpoint: {kept}'}",
              file=sys.stderr)
        return EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED
    raise error


def _on_terminal():
    """Whether stderr is a terminal: a progress bar redrawn with \\r is for a person watching, never for a file."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def _quiet(message):
    """The log of the ranks other than 0 in a data-parallel run: rank 0 says it."""


def _memory_message(error, explicit, keys):
    """One line for a MemoryError, naming the size flag the user gave whose value is the largest
    dimension of the array that could not be allocated (else all size flags given, else all)."""
    text = str(error)
    shape = re.search(r"shape \(([^)]*)\)", text)
    dims = [int(d) for d in re.findall(r"\d+", shape.group(1))] if shape else []
    given = [k for k in keys if k in explicit]
    largest = str(max(dims)) if dims else None  # the size that did not fit
    culprits = [k for k in given if largest in str(explicit[k]).split(",")] or given
    named = ", ".join(f"{flags.name_of(k)} {explicit[k]}" for k in culprits) if culprits else \
        ", ".join(flags.name_of(k) for k in keys)
    return f"out of memory ({error or 'MemoryError'}); the networks or batches are too large for this machine: " \
           f"lower {named}"

