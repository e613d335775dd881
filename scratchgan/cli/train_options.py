"""The checks and pieces of `scratchgan train` beyond parsing (the flags themselves: flags.py): choosing
between the two architectures, --dry-run, --tf32, --cuda-graph.

- ``arch_of(argv)``: the architecture a `scratchgan train` command line asks for (``--arch``, or the
  checkpoint's when resuming without it), so that its defaults apply;
- ``check_flags(config, explicit)``: one line, before anything is loaded, for a flag of the other
  architecture, --dry-run with --resume, --tensorboard without its extra;
- ``prepare_dry_run``, ``check_data_source``, ``dry_run_folder``: a dry run checks what its real run checks
  (the data's paths included, read no further than a folder listing or a header) and makes its temporary
  folder only once every check has passed;
- ``synthetic_request``: the shape and count of --dry-run's random images (data/registry.py loads them).
"""
from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path

from ..checkpoint import CheckpointError, read_meta
from ..data import registry
from ..gan import presets
from ..run import runlog
from . import flags
from .common import Parser, UserError
from .flags import DRY_RUN_STEPS

ARCH_ONLY = flags.arch_only()  # the config keys of the flags of one architecture only
RUNS = "runs"  # where --name NAME and the numbered folders go, relative to the working folder
_NUMBERED = re.compile(r"(\d+)-")  # runs/00012-mlp-fashion-mnist-bce: the number StyleGAN's runs start with


def graphed(step, config, world):
    """--cuda-graph: the run's GANStep replayed from a CUDA graph (fast/cuda_graph/graph.py), or one line why not."""
    if not config.get("cuda_graph"):
        return step
    if world is not None:
        raise UserError("--cuda-graph runs in one process; start it without mpiexec, or drop --cuda-graph")
    from ..fast.cuda_graph import graph
    reason = graph.unsupported(step)
    if reason is not None:
        raise UserError(f"--cuda-graph: {reason}; run without --cuda-graph")
    return graph.GraphedStep(step, config["d_steps"])


def arch_of(argv, given=None):
    """The ``--arch`` of a `scratchgan train` command line; without it ``given`` (a --config file's), the
    --preset's architecture, the resumed checkpoint's, else mlp."""
    pre = Parser(prog="scratchgan train", add_help=False)
    pre.add_argument("--arch", choices=flags.ARCHES, default=None)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--resume", nargs="?", const="", default=None)
    pre.add_argument("--out", default=None)
    pre.add_argument("--name", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.arch or given:
        return known.arch or given
    if preset_arch := presets.arch_of(known.preset):  # `scratchgan train --preset quality` is a DCGAN run
        return preset_arch
    folder = known.out or (str(Path(RUNS) / known.name) if known.name else None)
    if known.resume is not None and (known.resume or folder):  # continue a DCGAN run without repeating --arch dcgan
        path = Path(known.resume) if known.resume else Path(folder) / "checkpoint.npz"
        try:
            config = read_meta(path).get("config")  # the headers only: resolve_config checks the whole file
            arch = config.get("arch") if isinstance(config, dict) else None
        except (CheckpointError, OSError, ValueError):  # train_main says what is wrong with it
            arch = None
        if arch in flags.ARCHES:
            return arch
    return "mlp"


def check_early(args):
    """What is wrong whatever the checkpoint or the data say (before --resume reads its checkpoint)."""
    if getattr(args, "dry_run", False) and args.resume is not None:
        raise UserError("--dry-run starts a fresh run on random images; drop --resume")


def check_flags(config, explicit, arch_choosable):
    """One line for a combination that cannot run, before anything is loaded or written. With
    ``arch_choosable`` (`scratchgan train`), the other architecture's settings leave the config."""
    arch = config.get("arch", "mlp")
    if arch_choosable:
        other = "dcgan" if arch == "mlp" else "mlp"
        wrong = [k for k in ARCH_ONLY[other] if k in explicit]
        if wrong:
            flag = flags.name_of(wrong[0])
            raise UserError(f"{flag} is a flag of --arch {other}; this run is --arch {arch} (add --arch {other}, or "
                            f"drop {flag})")
        for key in ARCH_ONLY[other]:  # config.json and checkpoints record the run's own settings only
            config.pop(key, None)
    if config.get("dry_run") and config.get("resume") is not None:  # a dry run's checkpoint, resumed
        raise UserError(f"{config['resume']} is a --dry-run's checkpoint (random images); start the real run "
                        "instead of resuming it")
    if config["dataset"] == "folder" and arch != "dcgan":
        raise UserError("--dataset folder is for --arch dcgan (examples/dcgan.py); the MLP trains on MNIST-like "
                        "data, cifar10 or a .npy array")
    if config["dataset"] == "npy" and not config.get("data_dir"):  # a dry run too: it reads the file's header
        raise UserError("--dataset npy needs --data-dir FILE.npy, your array of images")
    if config.get("cuda_graph") and config.get("backend") != "cupy":
        raise UserError("--cuda-graph needs --backend cupy (a CUDA graph is a GPU feature; NumPy runs the eager "
                        "step): add --backend cupy or drop --cuda-graph")
    if config.get("tensorboard") is not None and not runlog.tensorboard_available():
        raise UserError(f"--tensorboard needs tensorboardX, which is not installed: {runlog.INSTALL_HINT}")
    if config.get("tf32") and config.get("backend") != "cupy":
        raise UserError("--tf32 needs --backend cupy: TF32 is a mode of NVIDIA GPUs' tensor cores, and NumPy "
                        "computes in full float32 (drop --tf32, or add --backend cupy)")
    if config.get("tf32") and config.get("cuda_graph"):
        raise UserError("--tf32 does not reach --cuda-graph's matmuls: the graph's own GEMM kernel (fast/cuda_graph/gemm.py) has "
                        "no tensor-core path yet; drop --tf32 or --cuda-graph")


def place_run(args, explicit):
    """--name NAME: the run's folder is runs/NAME (``args.out`` and ``explicit["out"]`` say so from here on); one
    line for --name with --out, a NAME that is not one folder's name, and --resume with no checkpoint and no folder."""
    name = explicit.get("name")
    if name is not None:
        if "out" in explicit:
            raise UserError(f"--name {name} is the folder {RUNS}/{name}, and --out {explicit['out']} another: "
                            "give one of them")
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise UserError(f"--name {name!r}: a run's name is one folder name, without / (it becomes {RUNS}/NAME)")
        args.out = explicit["out"] = os.path.join(RUNS, name)
    if args.resume == "" and args.out is None:
        raise UserError("--resume without a checkpoint continues the run in --out DIR or --name NAME: give one of "
                        "them, or --resume FILE")


def numbered_folder(config, root=RUNS):
    """A new folder's path for a run given neither --out nor --name: root/NNNNN-ARCH-DATASET-LOSS, NNNNN the next
    number after the highest one in ``root`` (never one used before, even when that run's folder is gone
    from the middle)."""
    try:
        taken = [int(m.group(1)) for entry in os.listdir(root) if (m := _NUMBERED.match(entry))]
    except (FileNotFoundError, NotADirectoryError):
        taken = []
    label = "-".join(str(config.get(k, "")) for k in ("arch", "dataset", "loss"))
    return os.path.join(root, f"{max(taken, default=-1) + 1:05d}-{label}")


def apply_precision(config, xp):
    """--tf32: float32 matmuls on TF32 tensor cores from here on (a process-wide CuPy setting)."""
    if config.get("tf32"):
        from ..fast.precision import use_tf32
        use_tf32(xp)


@dataclasses.dataclass
class DryRun:
    """What the real run of a --dry-run asks for, so that the dry run checks it as that run would."""
    limit: int | None
    eval_every: int
    count: int | None = None  # the real run's number of images, where known without reading them
    planned: dict = dataclasses.field(default_factory=dict)  # the real run's config, for the plan (plan.py)


def prepare_dry_run(config, explicit):
    """--dry-run: one epoch of DRY_RUN_STEPS steps on synthetic images, into --out or (``config["out"]`` None
    until ``dry_run_folder``) a new temporary folder; returns the real run's ``DryRun``."""
    real = DryRun(config.get("limit"), config.get("eval_every") or 0, planned=dict(config))
    config["dry_run_of"] = config["dataset"]  # what the real run would read, for the image shape
    config["dataset"], config["epochs"], config["eval_every"], config["limit"] = "synthetic", 1, 0, None
    if "out" not in explicit:
        config["out"] = None  # made by dry_run_folder once every check has passed: a refused dry run leaves none
    return real


def dry_run_folder(config, log):
    """The dry run's output folder, made now when it is a new temporary one (returned, else None); says where."""
    made = None
    if config["out"] is None:
        config["out"] = made = tempfile.mkdtemp(prefix="scratchgan-dry-run-")
    log(f"dry run: {DRY_RUN_STEPS} steps on random images, no dataset read; outputs in {config['out']}")
    return made


def check_data_source(config, limit=None):
    """A dry run's check of what its real run reads (``config["dry_run_of"]`` from ``--data-dir``), through
    data.registry.count: nothing is decoded or downloaded. The real run's number of images where it is
    known (else None), never more than ``limit`` (--limit). DataError as the real run's."""
    request = registry.Request(config["split"], config.get("data_dir"))
    return registry.count(config["dry_run_of"], request, limit)


def synthetic_request(config, request):
    """--dry-run's images (data.registry "synthetic"): the shape of the real data's images, else of the
    flags (--image-size, --channels), enough for its DRY_RUN_STEPS steps, labels 0..9 where the real data
    has labels (for --conditional; a folder's are mapped to its listed classes by train.py)."""
    real = registry.BY_NAME[config["dry_run_of"]]
    size, channels = real.shape or (28, 1)
    if config.get("arch") == "dcgan":
        size, channels = config.get("resolution") or size, config.get("channels") or channels
    request.size, request.channels = size, channels
    request.count = config["batch_size"] * config.get("d_steps", 1) * DRY_RUN_STEPS
    request.seed = config.get("seed", 0)  # labelled (0..9) as the real data is; a folder's classes: train.py
    request.labelled = real.name != "npy" and (real.name != "folder" or bool(config.get("conditional")))
