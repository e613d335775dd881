"""Atomic, crash-safe persistence of a training state as one ``.npz`` file.

A checkpoint is a flat ``{name: array}`` dict plus a JSON-able ``meta`` dict, stored as an
uncompressed ``.npz`` with the meta as a string entry ``__meta__``. This module knows nothing of
networks or optimizers: the trainer builds the dicts (e.g. ``"G/params"``, ``"opt_G/m"``).
Writes go through ``fileio.atomic_write``: a temporary file in the same directory, fsynced, then
renamed over the old file, so a crash or Ctrl-C at any moment leaves either the old or the new
checkpoint, never half of one.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .fileio import atomic_write  # the one atomic writer (viz, trainer, evaluate_cli import it from here)

META_KEY = "__meta__"
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(Exception):
    """A file could not be loaded as a scratchgan checkpoint; the message names the file and why."""


def _json_default(obj):
    """Let NumPy scalars (a float32 loss, an int64 step) into the meta as plain numbers."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"checkpoint meta value of type {type(obj).__name__} is not JSON-serializable; "
                    "store arrays in `arrays`, not in `meta`")


def save_checkpoint(path, arrays, meta):
    """Write ``arrays`` ({name: host array}) and ``meta`` (JSON-able dict) to ``path`` atomically.

    Names may contain "/" and "." (``"G/0.W"``). Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    if not isinstance(meta, dict):
        raise TypeError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    # Everything that can be checked is checked before the temp file exists: a bad call never
    # touches the disk.
    meta_json = json.dumps(meta, default=_json_default)
    host = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"checkpoint array names must be non-empty strings, got {name!r}")
        if name == META_KEY:
            raise ValueError(f"{META_KEY!r} is reserved for the checkpoint metadata")
        a = np.asarray(value)
        if a.dtype.hasobject:
            raise TypeError(f"checkpoint array {name!r} has dtype object; only numeric/string arrays "
                            "can be stored (they are loaded with allow_pickle=False)")
        host[name] = a
    host[META_KEY] = np.array(meta_json)

    # What np.savez does inside, minus its keyword API: keys such as "file" or "allow_pickle" would
    # collide with np.savez's own parameters, and allow_pickle=False refuses object arrays at save
    # time rather than at load time.
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, a in host.items():
                with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, a, allow_pickle=False)
    return path


def _one_line(e):
    return f"{type(e).__name__}: {e}".replace("\n", " ")


def load_checkpoint(path):
    """Load a checkpoint written by ``save_checkpoint`` -> ``(arrays, meta)``, all in host memory.

    Raises ``CheckpointError`` for a missing, foreign, truncated or corrupt file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a scratchgan checkpoint") from None
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({_one_line(e)})") from None
    if not head:
        raise CheckpointError(f"{path} is empty (truncated or corrupt)")
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a scratchgan checkpoint (not an .npz archive)")

    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if META_KEY not in names:
                raise CheckpointError(f"{path} is not a scratchgan checkpoint (no {META_KEY} entry)")
            arrays = {name: npz[name] for name in names if name != META_KEY}
            meta_raw = npz[META_KEY]
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        # A crash of a non-atomic writer, a partial copy or a full disk all end up here.
        raise CheckpointError(f"{path} is truncated or corrupt ({_one_line(e)})") from e

    try:
        if meta_raw.ndim != 0 or meta_raw.dtype.kind != "U":
            raise ValueError(f"{META_KEY} is a {meta_raw.dtype} array of shape {meta_raw.shape}, "
                             "expected a JSON string")
        meta = json.loads(str(meta_raw[()]))
        if not isinstance(meta, dict):
            raise ValueError(f"{META_KEY} holds a JSON {type(meta).__name__}, expected an object")
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} has corrupt metadata ({_one_line(e)})") from e
    return arrays, meta
