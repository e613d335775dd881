"""`scratchgan export`: a training checkpoint's generator alone, for sampling and evaluation.

    python -m scratchgan export --checkpoint runs/mnist_mlp/checkpoint.npz --out G.npz

The file is a checkpoint (checkpoint.py's format) that holds G's weights and BatchNorm buffers under
the same "G/..." names as a training checkpoint, and the run's config to rebuild G, with
``meta["kind"] = "generator"``; no discriminator, no optimizer moments, no noise or data position. So
it is a fraction of the size, and `sample`, `interpolate` and `evaluate` (generator_file.load_generator)
read it as they read a training checkpoint; `train --resume` refuses it (there is nothing to resume).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, read_meta, save_checkpoint
from ..gan.generator_file import load_generator
from .common import Parser, UserError, interruption, run_command, with_version
from .common import fail as _fail
from .common import log as _log
from .common import os_error_message as _os_error_message

KIND = "generator"
EXPORT_FORMAT = 1


def is_export(meta):
    return meta.get("kind") == KIND


def export_generator(checkpoint, out, overwrite=False):
    """Write ``checkpoint``'s generator to ``out`` atomically; returns (out, number of parameters).

    UserError / CheckpointError for a file that is not a training checkpoint (an export included), a
    non-finite generator, or an ``out`` that would replace another file than an earlier export (unless
    ``overwrite``).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    meta = read_meta(checkpoint)  # load_generator checks the whole file
    if is_export(meta):
        raise UserError(f"{checkpoint} is already an exported generator (scratchgan export); export from the "
                        "training checkpoint")
    _check_target(checkpoint, out, overwrite)
    G, config, meta = load_generator(checkpoint, np, log=_log)  # rebuilt and loaded: the weights fit the config
    arrays = {f"G/{name}": value for name, value in G.state_dict().items()}
    bad = [name for name, value in arrays.items() if not np.isfinite(value).all()]
    if bad:
        raise UserError(f"{checkpoint}: the generator holds NaN/Inf in {', '.join(bad[:3])}; export a good "
                        "checkpoint (an earlier snapshot)")
    info = {"kind": KIND, "format": f"{KIND}/{EXPORT_FORMAT}", "config": config,
            "epoch": meta.get("epoch"), "global_step": meta.get("global_step"), "source": str(checkpoint),
            "best": meta.get("best")}
    save_checkpoint(out, arrays, info)
    return out, G.num_parameters()


def _check_target(checkpoint, out, overwrite=False):
    """Refuse an --out that is a folder, the checkpoint itself, or (without --overwrite) any existing file
    but an earlier export."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as G.npz")
    if not out.exists():
        return
    if out.resolve() == checkpoint.resolve():
        raise UserError(f"--out {out} is the checkpoint being exported; choose another --out")
    try:
        old = read_meta(out)
    except CheckpointError:
        old = {}
    if not is_export(old) and not overwrite:
        raise UserError(f"--out {out} exists and is not an exported generator; choose another --out, or add "
                        "--overwrite to replace it (without it, export replaces only an earlier export)")


def make_parser(prog):
    p = Parser(prog=prog, description="Write a checkpoint's generator alone: weights, BatchNorm buffers and the "
               "config to rebuild it; no discriminator, no optimizer state. `sample`, `interpolate` and "
               "`evaluate` accept the file as --checkpoint.")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a training checkpoint (checkpoint.npz, checkpoint_best.npz, checkpoint_epoch0005.npz)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the generator file to write, e.g. G.npz; written atomically; an existing file is "
                        "replaced only if it is an earlier export, unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out FILE even if it is not an earlier export (never the checkpoint "
                        "being exported) (default: off)")
    return with_version(p)


def export_main(argv=None, prog="scratchgan export"):
    args = make_parser(prog).parse_args(argv)
    return run_command(prog, lambda: _export(args, prog))


def _export(args, prog):
    try:
        out, n_params = export_generator(args.checkpoint, args.out, args.overwrite)
    except KeyboardInterrupt as e:
        raise interruption(e, f"nothing was written ({args.out} is written whole or not at all)") from None
    except (UserError, CheckpointError, ValueError) as e:
        return _fail(prog, e)
    except OSError as e:
        return _fail(prog, _os_error_message(e))
    _log(f"wrote {out}: the generator ({n_params:,} parameters) of {args.checkpoint}")
    return 0
