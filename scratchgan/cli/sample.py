"""`scratchgan sample` and `scratchgan interpolate`: images from a generator, for use downstream.

    python -m scratchgan sample --checkpoint C --n 64 --out samples          # samples.npy + samples.png
    python -m scratchgan sample --checkpoint C --seeds 0-999 --outdir fake   # fake/seed0000_0000.png, ...
    python -m scratchgan interpolate --checkpoint C --seeds 0,5,9 --steps 16 --out walk.gif

C is a training checkpoint or a generator exported from one (`scratchgan export`). The noise comes from
scratchgan.gan.latent: one vector per seed with --seeds, the truncation trick with --truncation, slerp
between the seeds for the walk. Every user mistake ends in one line on stderr and exit code 2.

Users' files are never replaced without --overwrite: FILE.npy and FILE.png (FILE.gif and FILE.png) are
written together at the end, to temporary files renamed into place, so Ctrl-C or SIGTERM leaves neither.
An --outdir holds MARKER while it is being written, recording what it was asked for; an interrupted
folder keeps its PNGs (each written whole), and `sample ... --resume` with the same flags writes the
rest, then removes the marker. FID tools skip the marker (not an image); its name says what it is.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from .. import nn
from ..backend import BackendError, get_xp
from ..checkpoint import CheckpointError, atomic_write
from ..fileio import atomic_path
from ..gan import latent
from ..gan.generator_file import class_index, generate_on_host, load_generator
from ..run import viz
from .common import (
    Parser,
    UserError,
    check_new_files,
    interruption,
    non_negative_int,
    positive_int,
    run_command,
    unit_interval,
    with_version,
)
from .common import fail as _fail
from .common import log as _log
from .common import os_error_message as _os_error_message

DEFAULT_N = 64
MAX_FRAMES = 1000  # frames of one latent walk: (seeds - 1) x --steps + 1
GRID_MAX_IMAGES = 1024  # the grid beside the .npy shows at most this many (32 x 32 tiles)
MARKER = "INCOMPLETE.json"  # in an --outdir while it is being written: what it was asked for
MARKER_FORMAT = 1
TRUNCATION_HELP = ("the truncation trick: each noise vector z ~ N(0, I) is scaled towards the mean latent (0) as "
                   "z <- PSI z, 0 < PSI <= 1; smaller PSI gives more typical, less varied images (default: 1, off)")


def seeds_type(text):
    """argparse type of --seeds: "0-99", "3,5,9" or both mixed -> a list of ints."""
    try:
        return latent.parse_seeds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


truncation_type = unit_interval(low_open=True, high_open=False)


def _add_common(p):
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a checkpoint.npz from training, or a generator written by `scratchgan export`")
    p.add_argument("--truncation", type=truncation_type, default=1.0, metavar="PSI", help=TRUNCATION_HELP)
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy", help="(default: %(default)s)")


# ---------------------------------------------------------------------------------- sample
def make_sample_parser(prog):
    p = Parser(prog=prog, description="Generate images from a checkpoint's generator.")
    _add_common(p)
    p.add_argument("--n", type=positive_int, default=None,
                   help=f"number of images, all from the noise of --seed (default: {DEFAULT_N})")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="writes FILE.npy (float32 images in [-1, 1]: (N, 28, 28) from an MLP checkpoint, "
                        "(N, C, H, W) from a DCGAN one) and FILE.png (a grid of the first "
                        f"{GRID_MAX_IMAGES:,} images at most; conditional models: the first of each class) "
                        "(default: with --outdir DIR, DIR.npy and DIR.png beside the folder); existing files "
                        "are refused unless --overwrite")
    p.add_argument("--outdir", default=None, metavar="DIR",
                   help="also write one PNG per image into DIR, a new or empty folder (grey or RGB as trained), "
                        "named by seed and index: seed0007_0000.png (conditional models add _class3); a folder "
                        "that FID tools (pytorch-fid, clean-fid, torch-fidelity) read as is. While it is being "
                        f"written it holds {MARKER} (not an image): a folder with that file is incomplete, "
                        "and --resume finishes it (default: none)")
    p.add_argument("--resume", action="store_true",
                   help=f"finish an interrupted --outdir: DIR holds {MARKER} from the same command (same "
                        "checkpoint, seeds, truncation, label); keep the PNGs already written, write the others, "
                        "then FILE.npy and FILE.png (default: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing FILE.npy and FILE.png (never anything in --outdir) (default: off)")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the noise of all --n images (default: 0)")
    p.add_argument("--seeds", type=seeds_type, default=None, metavar="LIST",
                   help="one image per seed instead of --n/--seed, e.g. 0-99 or 3,5,9; a seed always gives "
                        "the same noise, whatever other seeds are listed (it is the first image of "
                        "--seed S) (default: none)")
    p.add_argument("--label", default=None, metavar="K",
                   help="conditional checkpoints: make N images of class K (an index, or a class name of an image "
                        "folder's run: its sub-folder or dataset.json name); without it, one row per "
                        "class (N rounded up to a multiple of the classes; with --seeds, every seed in every class) (default: none)")
    return with_version(p)


def _check_outdir(path, resume):
    """UserError unless ``path`` is a new or empty folder, or (``resume``) one that an interrupted run
    marked with MARKER (reads only; whether that run was this request is checked once G is loaded)."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise UserError(f"--outdir {path} is a file, not a folder; choose another --outdir")
        if not any(path.iterdir()):
            return
        marker = path / MARKER
        if not marker.is_file() or marker.is_symlink():
            raise UserError(f"--outdir {path} is not empty; choose a new or empty folder (FID tools read "
                            "every image in it)" + (f" (--resume finishes only a folder holding {MARKER})"
                                                   if resume else ""))
        if not resume:
            raise UserError(f"--outdir {path} holds an interrupted `scratchgan sample` ({marker} says what it "
                            "was asked for); add --resume to finish it, or choose a new or empty folder")
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--outdir {path} lies under {parent}, which is a file; choose another --outdir")
            break


def write_together(writers):
    """Write each ``(path, write)`` (``write(temp_path)`` writes the whole file) to a temporary file beside
    ``path``, and rename them into place only once all are written: Ctrl-C while writing leaves none."""
    with contextlib.ExitStack() as stack:
        temps = [(stack.enter_context(atomic_path(path, durable=False)), write) for path, write in writers]
        for temp, write in temps:
            write(temp)


def _save_npy(images):
    def write(temp):
        with open(temp, "wb") as f:
            np.save(f, images)
    return write


def _save_grid(images, nrow):
    """The grid of ``images`` (``nrow`` per row), at most GRID_MAX_IMAGES of them: a grid of 20,000
    images would be a 300-megapixel PNG that no one looks at; the folder and the .npy hold them all."""
    if nrow is None:
        images = images[:GRID_MAX_IMAGES]
    else:  # one row per class: the first images of each row
        rows = len(images) // nrow
        keep = max(1, min(nrow, GRID_MAX_IMAGES // rows))
        images = images.reshape(rows, nrow, *images.shape[1:])[:GRID_MAX_IMAGES, :keep]
        images, nrow = images.reshape(-1, *images.shape[2:]), keep
    return lambda temp: viz.save_image_grid(images, temp, nrow=nrow, scale=2)


def resolve_label(G, config, label):
    """--label as a class index (it may name a class of an image folder's run); None stays None."""
    if label is None or not isinstance(G, nn.Conditional):
        return label
    try:
        return class_index(config, label, G.num_classes)
    except ValueError as e:
        raise UserError(f"--label {label}: {e}") from None


def _conditional_labels(G, n, label):
    """(n, labels or None, nrow) for ``n`` images; a conditional G without --label: one row per class."""
    if isinstance(G, nn.Conditional):
        if label is not None:  # (resolve_label has checked it)
            return n, np.full(n, label), None
        K = G.num_classes
        nrow = -(-n // K)
        return nrow * K, np.repeat(np.arange(K), nrow), nrow
    if label is not None:
        raise UserError("--label needs a conditional checkpoint (trained with --conditional); this one is "
                        "unconditional")
    return n, None, None


def image_shape_of(config):
    return tuple(config.get("image_shape", [28, 28]))


def to_picture(image):
    """One image in [-1, 1], (H, W) or (C, H, W), as uint8 (H, W) grey or (H, W, 3) RGB."""
    return viz.make_grid(image[None], nrow=1, padding=0)


def write_pngs(images, folder, names, skip=()):
    """One PNG per image into ``folder`` (created), each written atomically; names in ``skip`` (already
    written) are left as they are."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names):
        if name in skip:
            continue
        with atomic_write(folder / name, durable=False) as f:
            Image.fromarray(to_picture(image)).save(f, format="PNG")


# ------------------------------------------------------------ an --outdir being written: its marker
def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_request(checkpoint, names, truncation, label):
    """What makes an --outdir's images what they are; an interrupted folder is finished only by the same."""
    return {"checkpoint_sha256": _sha256(checkpoint), "images": len(names),
            "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
            "truncation": float(truncation), "label": label}


REQUEST_FLAGS = {"checkpoint_sha256": "--checkpoint (another file, or the same file with other weights)",
                 "images": "--seeds / --n / --seed", "names_sha256": "--seeds / --n / --seed",
                 "truncation": "--truncation", "label": "--label"}
_TEMP_NAME = re.compile(r"\.(.+)\.\d+\.[0-9a-f]{8}\.tmp")  # fileio.atomic_path's temporary files


def write_marker(outdir, request, checkpoint, targets):
    """MARKER in ``outdir`` (created): this folder is being written, by which request, with which files
    beside it; removed once everything is written."""
    info = {"what": "scratchgan sample stopped before it wrote every image of this folder; run the same "
                    "command with --resume to finish it. FID tools would read a part of the images only.",
            "command": "scratchgan sample", "format": MARKER_FORMAT, "checkpoint": str(checkpoint),
            "request": request, "writes_also": [str(p) for p in targets]}
    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_write(outdir / MARKER, durable=False) as f:
        f.write((json.dumps(info, indent=2) + "\n").encode())


def read_marker(outdir, request, names):
    """(names already written, files beside the folder the interrupted run claimed): UserError unless
    ``outdir``'s MARKER records this very request and the folder holds only that run's files."""
    marker = outdir / MARKER
    try:
        info = json.loads(marker.read_text())
        recorded, claimed = info["request"], info["writes_also"]
        if info.get("command") != "scratchgan sample" or not isinstance(recorded, dict):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"--resume: {marker} is not the marker of an interrupted `scratchgan sample`; choose a "
                        "new or empty --outdir") from None
    for key, flag in REQUEST_FLAGS.items():
        if recorded.get(key) != request[key]:
            raise UserError(f"--resume: {outdir}/ was started with another {flag} ({marker} records what it "
                            "was asked for); give the same flags, or choose a new or empty --outdir")
    expected, written = set(names), set()
    for entry in outdir.iterdir():
        name = entry.name
        if name == MARKER:
            continue
        temp = _TEMP_NAME.fullmatch(name)
        if temp and (temp.group(1) in expected or temp.group(1) == MARKER):
            continue  # a temporary file of a write that a kill -9 cut short: not an image, FID tools skip it
        if name not in expected or entry.is_symlink() or not entry.is_file():
            raise UserError(f"--resume: {outdir}/ holds {name!r}, which the interrupted run did not write; move "
                            "it away, or choose a new or empty --outdir")
        written.add(name)
    return written, {str(p) for p in claimed if isinstance(p, str)}


def _sample_names(G, args, L):
    """(z (n, L), labels or None, names without .png, nrow) of the images the flags ask for."""
    if args.seeds is None:  # N images from one seed's noise, as before --seeds existed
        seed = args.seed or 0
        n, labels, nrow = _conditional_labels(G, args.n or DEFAULT_N, args.label)
        z = np.random.default_rng(seed).standard_normal((n, L))
        names = [f"seed{seed:04d}_{i:04d}" for i in range(n)]
    else:  # one noise vector per seed; a conditional G without --label draws it in every class
        seeds, zs = args.seeds, latent.seed_noise(args.seeds, L)
        if isinstance(G, nn.Conditional) and args.label is None:
            K = G.num_classes                                   # row k: every seed in class k
            z, labels, nrow = np.tile(zs, (K, 1)), np.repeat(np.arange(K), len(seeds)), len(seeds)
            names = [f"seed{s:04d}_{k:04d}" for k in range(K) for s in seeds]
        else:
            _, labels, nrow = _conditional_labels(G, len(seeds), args.label)
            z, names = zs, [f"seed{s:04d}_0000" for s in seeds]
    if labels is not None and args.label is None:
        names = [f"{name}_class{k}" for name, k in zip(names, labels)]
    return z, labels, names, nrow


def sample_main(argv=None, prog="scratchgan sample"):
    args = make_sample_parser(prog).parse_args(argv)
    return run_command(prog, lambda: _sample(args, prog))


def _sample_targets(args):
    """Where `sample` writes, checked before anything is loaded: (outdir or None, FILE.npy, FILE.png, the flag
    that named them, whether an interrupted --outdir is resumed)."""
    if args.out is None and args.outdir is None:
        raise UserError("give --out FILE (FILE.npy and FILE.png) or --outdir DIR (one PNG per image)")
    if args.seeds is not None and (args.n is not None or args.seed is not None):
        raise UserError("--seeds picks the images (one per seed): give it without --n and --seed")
    if args.resume and args.outdir is None:
        raise UserError("--resume finishes an interrupted --outdir DIR; without --outdir there is nothing to "
                        "resume (--overwrite replaces FILE.npy and FILE.png)")
    outdir = Path(args.outdir) if args.outdir is not None else None
    if outdir is not None:
        _check_outdir(outdir, args.resume)
        if args.out is None and outdir.name in ("", ".", ".."):
            raise UserError(f"--outdir {outdir}: give --out FILE too, for the .npy and the grid (they go "
                            "beside a named folder)")
    if args.out is not None:
        stem = Path(args.out)
        stem = stem.with_suffix("") if stem.suffix in (".npy", ".png") else stem
        npy, png = stem.with_suffix(".npy"), stem.with_suffix(".png")
    else:  # beside the folder, so that FID tools reading the folder see the samples only
        npy, png = outdir.with_name(outdir.name + ".npy"), outdir.with_name(outdir.name + ".png")
    flag = "--out" if args.out is not None else "--outdir"
    resuming = args.resume and outdir is not None and (outdir / MARKER).is_file()
    if not resuming:  # before loading anything; a resumed run may replace the files its marker claims
        check_new_files([npy, png], flag, args.overwrite)
    return outdir, npy, png, flag, resuming


def _sample(args, prog):
    outdir = marked = None
    try:
        outdir, npy, png, flag, resuming = _sample_targets(args)
        xp = get_xp(args.backend)
        G, config, _ = load_generator(args.checkpoint, xp, log=_log)
        args.label = resolve_label(G, config, args.label)
        z, labels, names, nrow = _sample_names(G, args, int(config["latent_dim"]))
        n, files = len(names), [name + ".png" for name in names]
        done = set()
        if outdir is not None:
            request = sample_request(args.checkpoint, files, args.truncation, args.label)
            if resuming:
                done, claimed = read_marker(outdir, request, files)
                check_new_files([npy, png], flag, args.overwrite, ours=claimed)
        z = latent.truncate(z, args.truncation)
        images = generate_on_host(G, z, labels).reshape((-1, *image_shape_of(config)))
        if outdir is not None:
            if not resuming:
                write_marker(outdir, request, args.checkpoint, [npy, png])
            marked = outdir / MARKER
            _log(f"writing {n - len(done):,} images into {outdir}/" +
                 (f" ({len(done):,} of {n:,} already there)" if done else ""))
            write_pngs(images, outdir, files, skip=done)
        write_together([(npy, _save_npy(images)), (png, _save_grid(images, nrow))])
        if marked is not None:
            marked.unlink()  # the folder is whole
    except KeyboardInterrupt as e:
        if marked is None:
            raise interruption(e, "nothing was written") from None
        # counted in the folder: the signal may have come between a PNG's rename and the loop's next step
        there = len(set(files).intersection(entry.name for entry in os.scandir(outdir)))
        raise interruption(e, f"{there:,} of {n:,} images are in {outdir}/, which {marked} marks as incomplete; "
                              "run the same command with --resume to finish it") from None
    except (UserError, CheckpointError, BackendError, ValueError) as e:
        return _fail(prog, e)
    except OSError as e:
        return _fail(prog, _os_error_message(e, advice="choose another --out or --outdir"))
    except MemoryError as e:
        asked = f"--n {args.n or DEFAULT_N}" if args.seeds is None else f"--seeds ({len(args.seeds):,} seeds)"
        return _fail(prog, f"{asked}: out of memory ({e}); ask for fewer images")
    _log(f"wrote {npy} ({n} images) and {png}" + (f"; one PNG per image in {outdir}/" if outdir else ""))
    return 0


# ---------------------------------------------------------------------------------- interpolate
def make_interpolate_parser(prog):
    p = Parser(prog=prog, description="A latent walk: slerp between the noise vectors of the seeds, written as "
               "a GIF and a strip PNG (one row per class for conditional models).")
    _add_common(p)
    p.add_argument("--seeds", type=seeds_type, required=True, metavar="LIST",
                   help="the seeds to walk through, in order, at least two: e.g. 0,5,9 or 0-3")
    p.add_argument("--steps", type=positive_int, default=16,
                   help="frames from one seed to the next (the walk has (seeds - 1) x STEPS + 1 frames, "
                        f"at most {MAX_FRAMES}) (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="FILE.gif",
                   help="writes FILE.gif (the walk, looping) and FILE.png (its frames in a strip, one row per "
                        "class for conditional models), both or neither; existing files are refused unless "
                        "--overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace existing FILE.gif and FILE.png (default: off)")
    p.add_argument("--label", default=None, metavar="K",
                   help="conditional checkpoints: walk in class K only (an index or a class name) (default: every "
                        "class, one row each)")
    return with_version(p)


def walk_noise(zs, steps):
    """The walk's noise (T, D): ``steps`` slerp frames from each seed's z towards the next, then the last z."""
    t = np.arange(steps) / steps
    parts = [latent.slerp(a, b, t) for a, b in zip(zs[:-1], zs[1:])]
    return np.concatenate(parts + [zs[-1:]])


def _upscale(picture, scale):
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


def interpolate_main(argv=None, prog="scratchgan interpolate"):
    args = make_interpolate_parser(prog).parse_args(argv)
    return run_command(prog, lambda: _interpolate(args, prog))


def _interpolate(args, prog):
    try:
        out = Path(args.out)
        if out.suffix.lower() != ".gif":
            raise UserError(f"--out {out}: give a file name ending in .gif (the strip goes beside it as .png)")
        if out.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name ending in .gif")
        if len(args.seeds) < 2:
            raise UserError(f"--seeds {args.seeds[0]}: a walk needs two seeds or more, e.g. 0,5,9")
        frames = (len(args.seeds) - 1) * args.steps + 1
        if frames > MAX_FRAMES:
            raise UserError(f"--steps {args.steps} with {len(args.seeds)} seeds makes {frames} frames, more than "
                            f"{MAX_FRAMES}; use fewer steps or seeds")
        strip = out.with_suffix(".png")
        check_new_files([out, strip], "--out", args.overwrite)  # before loading anything
        xp = get_xp(args.backend)
        G, config, _ = load_generator(args.checkpoint, xp, log=_log)
        args.label = resolve_label(G, config, args.label)
        z = latent.truncate(walk_noise(latent.seed_noise(args.seeds, int(config["latent_dim"])), args.steps),
                            args.truncation)
        T = len(z)
        _conditional_labels(G, 1, args.label)  # --label K only for a conditional G that knows class K
        labels = None
        if isinstance(G, nn.Conditional):  # the same walk in each class (or in class --label only)
            classes = [args.label] if args.label is not None else list(range(G.num_classes))
            labels = np.repeat(np.array(classes), T)
            z = np.tile(z, (len(classes), 1))
        rows = len(z) // T
        _log(f"making {out} ({T} frames) and {strip}")
        images = generate_on_host(G, z, labels).reshape((-1, *image_shape_of(config)))             # (rows * T, ...)
        scale = max(1, 96 // images.shape[-1])  # a small image is shown bigger, pixels kept sharp
        pictures = [_upscale(viz.make_grid(images[j::T], nrow=rows, padding=2 if rows > 1 else 0), scale)
                    for j in range(T)]
        write_together([(strip, lambda temp: viz.save_image_grid(images, temp, nrow=T, scale=2)),
                        (out, lambda temp: viz.save_progress_gif(pictures, temp, duration_ms=80, max_frames=T))])
    except KeyboardInterrupt as e:
        raise interruption(e, f"nothing was written ({args.out} and its strip .png appear only together, at "
                              "the end)") from None
    except (UserError, CheckpointError, BackendError, ValueError) as e:
        return _fail(prog, e)
    except OSError as e:
        return _fail(prog, _os_error_message(e, advice="choose another --out"))
    except MemoryError as e:
        return _fail(prog, f"out of memory ({e}); use fewer --steps or seeds")
    _log(f"wrote {out} ({T} frames) and {strip}")
    return 0
