"""Atomic, crash-safe persistence of a training state as one ``.npz`` file.

A checkpoint is a flat ``{name: array}`` dict plus a JSON-able ``meta`` dict, stored as an
uncompressed ``.npz`` with the meta as a string entry ``__meta__``. This module knows nothing of
networks or optimizers: the trainer builds the dicts (e.g. ``"G/params"``, ``"opt_G/m"``).
Writes go through ``fileio.atomic_write``: a temporary file in the same directory, fsynced, then
renamed over the old file, so a crash or Ctrl-C at any moment leaves either the old or the new
checkpoint, never half of one.

Loading reads headers first: the zip directory and each array's ``.npy`` header, whose declared shape
must fit the bytes the file holds for it, and the metadata; a caller's ``check`` sees the metadata and
the declared shapes before any array is read (``checkpoint_schema`` checks a run's metadata and the
networks it describes there). Every array is checked for NaN and Inf as it is read. Arrays are
loaded with ``allow_pickle=False``: a checkpoint is data, never code.
"""
from __future__ import annotations

import contextlib
import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .fileio import atomic_write  # the one atomic writer (viz, trainer, evaluate_cli import it from here)

META_KEY = "__meta__"
_ZIP_MAGIC = b"PK\x03\x04"
MAX_META_BYTES = 16 * 2**20  # a run's metadata is a few kB; a larger one is refused before it is read


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


def _human(nbytes):
    """1536 -> '1.5 KiB': sizes in messages, as a person reads them."""
    size = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.3g} {unit}"
        size /= 1024


class _Entry(NamedTuple):
    """One array of the archive as its .npy header declares it: nothing of its data is read yet."""
    info: zipfile.ZipInfo
    shape: tuple
    dtype: np.dtype


def _check_magic(path):
    """CheckpointError for a missing, empty or non-zip file (reads 4 bytes)."""
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


def _read_header(path, zf, info):
    """The (shape, dtype) that a member's .npy header declares, checked against the member's size,
    so that no later allocation can be larger than the bytes the file really holds."""
    name = info.filename[: -len(".npy")]
    if info.compress_type != zipfile.ZIP_STORED:  # a compressed member can declare any size
        raise CheckpointError(f"{path}: array {name} is compressed; scratchgan reads checkpoints stored "
                              "uncompressed, as it writes them")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"array {name} has .npy format version {version}, not 1.0 or 2.0")
        header_bytes = f.tell()
    if dtype.hasobject:
        raise CheckpointError(f"{path}: array {name} holds Python objects ({dtype}); a checkpoint holds "
                              "numbers only, and objects are never unpickled")
    if any(d < 0 for d in shape):
        raise ValueError(f"array {name} declares the negative shape {shape}")
    declared = math.prod(shape) * dtype.itemsize
    held = info.file_size - header_bytes
    if declared != held:
        raise CheckpointError(f"{path}: array {name} declares shape {shape} of {dtype} ({_human(declared)}), "
                              f"but the file holds {_human(held)} for it; the file is damaged or was not "
                              "written by scratchgan")
    return _Entry(info, tuple(shape), dtype)


def _read_index(path, zf):
    """{name: _Entry} of every array in the archive, from the headers alone, the metadata's included."""
    infos = zf.infolist()
    stored = sum(info.compress_size for info in infos)
    if stored > path.stat().st_size:  # members that overlap would let a small file declare a large one
        raise CheckpointError(f"{path}: its members add up to {_human(stored)}, more than the file's "
                              f"{_human(path.stat().st_size)}; the file is damaged or was not written by scratchgan")
    index = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"{path} is not a scratchgan checkpoint ({info.filename!r} is not an array)")
        index[info.filename[: -len(".npy")]] = _read_header(path, zf, info)
    if META_KEY not in index:
        raise CheckpointError(f"{path} is not a scratchgan checkpoint (no {META_KEY} entry)")
    return index


def _read_array(zf, entry):
    with zf.open(entry.info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read_meta(path, zf, entry):
    """The metadata dict: a 0-d unicode array holding a JSON object."""
    try:
        if entry.shape != () or entry.dtype.kind != "U":
            raise ValueError(f"{META_KEY} is a {entry.dtype} array of shape {entry.shape}, expected a JSON string")
        if entry.dtype.itemsize > MAX_META_BYTES:
            raise ValueError(f"{META_KEY} is {_human(entry.dtype.itemsize)}, more than metadata ever needs "
                             f"({_human(MAX_META_BYTES)})")
        meta = json.loads(str(_read_array(zf, entry)[()]))
        if not isinstance(meta, dict):
            raise ValueError(f"{META_KEY} holds a JSON {type(meta).__name__}, expected an object")
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} has corrupt metadata ({_one_line(e)})") from e
    return meta


@contextlib.contextmanager
def _damage_as_checkpoint_error(path):
    """Turn what a damaged archive raises while it is read into one CheckpointError naming the file."""
    try:
        yield
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as e:
        # A crash of a non-atomic writer, a partial copy or a full disk all end up here.
        raise CheckpointError(f"{path} is truncated or corrupt ({_one_line(e)})") from e


def _open_archive(path):
    """(open ZipFile, {name: _Entry} of the arrays, meta): headers and metadata only; the caller closes it."""
    _check_magic(path)
    with _damage_as_checkpoint_error(path):
        zf = zipfile.ZipFile(path)
    try:
        with _damage_as_checkpoint_error(path):
            index = _read_index(path, zf)
            meta = _read_meta(path, zf, index.pop(META_KEY))
    except BaseException:
        zf.close()
        raise
    return zf, index, meta


def read_meta(path):
    """The metadata of a checkpoint, without reading any of its arrays (their headers are checked)."""
    zf, _, meta = _open_archive(Path(path))
    zf.close()
    return meta


def load_checkpoint(path, check=None, check_finite=True):
    """Load a checkpoint written by ``save_checkpoint`` -> ``(arrays, meta)``, all in host memory.

    Headers first: every array's declared shape must fit the bytes the file holds for it; then
    ``check(meta, shapes)`` (``shapes``: {name: (shape, dtype)}) may refuse the file before any array
    is read, e.g. when the shapes do not fit the network its config describes. Each array is then
    read and, with ``check_finite``, checked for NaN and Inf (one reduction each).
    Raises ``CheckpointError`` for a missing, foreign, truncated, corrupt or non-finite file.
    """
    path = Path(path)
    zf, index, meta = _open_archive(path)
    with zf:
        if check is not None:
            check(meta, {name: (entry.shape, entry.dtype) for name, entry in index.items()})
        arrays = {}
        for name, entry in index.items():
            try:
                with _damage_as_checkpoint_error(path):
                    arrays[name] = a = _read_array(zf, entry)
            except MemoryError:  # a genuine file larger than this machine's memory: say which file
                size = _human(math.prod(entry.shape) * entry.dtype.itemsize)
                raise CheckpointError(f"{path}: out of memory reading its array {name} ({size}); it does not "
                                      "fit in this machine's memory") from None
            if check_finite and a.dtype.kind in "fc" and not np.isfinite(a).all():
                bad = int(np.count_nonzero(~np.isfinite(a)))
                raise CheckpointError(f"{path}: NaN/Inf in {name} ({bad:,} of {a.size:,} values); a checkpoint "
                                      "must be finite to be used: take an earlier one (a checkpoint_epochNNNN.npz "
                                      "snapshot, checkpoint_best.npz)")
    return arrays, meta
