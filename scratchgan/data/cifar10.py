"""CIFAR-10 from its binary release, parsed with NumPy alone: no pickle is ever loaded.

The file is the authors' ``cifar-10-binary.tar.gz`` (170,052,171 bytes, SHA-256 below), from
https://www.cs.toronto.edu/~kriz/cifar.html. Inside the tarball, ``cifar-10-batches-bin/`` holds
``data_batch_1.bin`` ... ``data_batch_5.bin`` (the train split, 50,000 images) and ``test_batch.bin``
(10,000). Each of them is 10,000 records of 3,073 bytes::

    byte 0          the label, 0..9 (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck)
    bytes 1..3072   the image: 1024 red, then 1024 green, then 1024 blue bytes, each plane row-major
                    32x32, i.e. (C, H, W) = (3, 32, 32) in C order

so a batch file is ``np.frombuffer(raw, np.uint8).reshape(-1, 3073)``: column 0 the labels, the rest
reshaped to (N, 3, 32, 32).

Where the tarball comes from, in order: ``data_dir`` when given (a folder holding
``cifar-10-binary.tar.gz`` or the extracted ``cifar-10-batches-bin/``; your own files are accepted,
and ``log`` says once when they are not the official tarball), else the cache
``data_root()/cifar10/``, else the official mirror into the cache. A download is written to a temp
file beside its final name and renamed only once its SHA-256 is the official one (``fileio.atomic_path``),
so the cache never holds a half or foreign file; it is refused as soon as it grows past the official size.
Every member is read at most its expected size: a tarball cannot make the parser read more. Batch
files from ``data_dir`` (in a tarball or extracted) must be exactly 10,000 records, 30,730,000 bytes:
the size is checked before a byte is read, so a 30 GB file is one line naming it, not an out-of-memory
error, and a FIFO or a device in their place is refused unread.
"""
from __future__ import annotations

import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from .idx import DataError, NotRegularFile, open_regular, shown
from .download import DEFAULT_TIMEOUT, DownloadError, Mismatch, download, fetch
from .download import sha256_file as _sha256_file
from .mnist import data_root

NAME = "cifar10"
TITLE = "CIFAR-10"
ARCHIVE = "cifar-10-binary.tar.gz"
# The official tarball's SHA-256 and size; the same values are pinned by independent projects
# (MLDatasets.jl's CIFAR10 registration, Go and Python downloaders), MD5 c32a1d4ab5d03f1284b67883e8d87530
# as the authors' page gives it.
SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
SIZE = 170_052_171
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
FOLDER = "cifar-10-batches-bin"
SPLITS = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 1 + 3 * 32 * 32       # one label byte, then the (3, 32, 32) image
BATCH_RECORDS = 10_000          # records per batch file of the official release (and of any data_dir)


def parse_batch(raw: bytes, source="<bytes>"):
    """One batch file's bytes -> (images uint8 (N, 3, 32, 32), labels uint8 (N,)); DataError naming
    ``source`` when the length is not a whole number of records or a label is not 0..9."""
    source = shown(source)
    if len(raw) == 0 or len(raw) % RECORD:
        raise DataError(f"{source}: {len(raw):,} bytes is not a whole number of {RECORD}-byte CIFAR-10 records "
                        "(1 label byte + 3072 pixel bytes); the file is truncated or not a CIFAR-10 batch")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise DataError(f"{source}: label {int(labels.max())} out of range 0..9; not a CIFAR-10 batch file")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()  # (N, C, H, W): the planes are R, G, B
    return images, labels


def _check_batch_size(size, source):
    """A batch file must be exactly BATCH_RECORDS records: checked on its size, before reading it."""
    expected = BATCH_RECORDS * RECORD
    if size != expected:
        what = "truncated" if size < expected else "too long"
        raise DataError(f"{shown(source)}: {size:,} bytes, {what}; a CIFAR-10 batch file is exactly {expected:,} "
                        f"bytes ({BATCH_RECORDS:,} records of {RECORD:,}: 1 label byte + 3072 pixel bytes); "
                        "replace it with the file from the official binary release")


def _read_tar(path, split, exact=False):
    """The split's batch files from the tarball at ``path``, each read at most its expected size.

    ``exact``: each batch member must be exactly BATCH_RECORDS records (a tarball from ``data_dir``;
    the cache's is the official file, its SHA-256 checked)."""
    names = SPLITS[split]
    found = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:  # in the stream's order: the gzip stream is decompressed once, to its end
                name = Path(member.name).name
                if not member.isfile() or name not in names or name in found:
                    continue
                if exact:
                    _check_batch_size(member.size, f"{path}:{name}")
                if member.size % RECORD or member.size > BATCH_RECORDS * RECORD * 5:
                    raise DataError(f"{shown(path)}: {name} has {member.size:,} bytes, not a whole number of "
                                    f"{RECORD}-byte records; not a CIFAR-10 batch file")
                raw = tar.extractfile(member).read(member.size)
                if len(raw) != member.size:
                    raise EOFError(f"{name} ends after {len(raw):,} of its {member.size:,} bytes")
                found[name] = parse_batch(raw, f"{path}:{name}")
            # on to the end even when all is found: a tarball cut short anywhere is refused, not half used
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise DataError(f"{shown(path)}: cannot read ({e.strerror or e})") from None
        why = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"{shown(path)}: truncated or corrupt tarball ({why}); delete it and fetch it again") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{shown(path)}: no {', '.join(missing)} in the tarball; not the CIFAR-10 binary version "
                        f"({ARCHIVE})")
    parts = [found[n] for n in names]
    return _concat(parts)


def _read_folder(folder, split):
    """The split's batch files from an extracted ``cifar-10-batches-bin/``, each checked to be a
    regular file of exactly BATCH_RECORDS records before it is read."""
    parts = []
    for name in SPLITS[split]:
        path = Path(folder) / name
        try:
            with open_regular(path) as f:
                _check_batch_size(os.fstat(f.fileno()).st_size, path)
                raw = f.read(BATCH_RECORDS * RECORD + 1)  # +1: a file that grew since the check is caught below
            parts.append(parse_batch(raw, shown(path)))
        except FileNotFoundError:
            raise DataError(f"{TITLE}: {shown(path)} is missing (the {split} split needs "
                            f"{', '.join(SPLITS[split])})") from None
        except NotRegularFile as e:
            raise DataError(f"{e}; expected a CIFAR-10 batch file") from None
        except OSError as e:
            raise DataError(f"{shown(path)}: cannot read ({e.strerror or e})") from None
    return _concat(parts)


def _concat(parts):
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels


def _verify_download(sha256, tmp, size):
    if sha256 != SHA256:
        raise Mismatch(f"SHA-256 mismatch: got {sha256[:12]}... ({size:,} bytes), expected {SHA256[:12]}... "
                       f"({SIZE:,} bytes)")


def _fetch(folder, mirrors, timeout, log):
    def get(url, final):
        download(url, final, SIZE, _verify_download, timeout,
                 too_big=f"served more than the official {SIZE:,} bytes; not the CIFAR-10 tarball")
    return fetch(ARCHIVE, folder, mirrors, get, timeout=timeout, log=log, note=f" ({SIZE / 1e6:.0f} MB)",
                 supply=f"supply it yourself: --data-dir DIR with {ARCHIVE} (or its extracted {FOLDER}/), or put it "
                        f"in {shown(folder)}")


def load_cifar10(split="train", data_dir=None, download=True, *, mirrors=None, timeout=DEFAULT_TIMEOUT, log=None):
    """CIFAR-10's ``split`` ("train": 50,000, "test": 10,000): (images uint8 (N, 3, 32, 32), labels uint8 (N,)).

    ``data_dir``: a folder with ``cifar-10-binary.tar.gz`` or the extracted ``cifar-10-batches-bin/``
    (or that folder itself); not checksummed against the release, so your own files in that format
    work (``log`` says so once). Otherwise the cache, then the official mirror (``mirrors``: base URLs
    instead), SHA-256 checked. Raises DataError (DownloadError when it could not be fetched), one line.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {TITLE}; choose one of: {', '.join(SPLITS)}")
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if folder.is_file() and folder.name.endswith((".tar.gz", ".tgz")):
            tarball, folder = folder, folder.parent
        else:
            tarball = folder / ARCHIVE
        if not folder.is_dir():
            raise DataError(f"data dir {shown(folder)} does not exist or is not a folder")
        if tarball.is_file():
            if log and (tarball.stat().st_size != SIZE or _sha256_file(tarball) != SHA256):
                log(f"{shown(tarball)} is not the official {ARCHIVE} (its SHA-256 differs); training on it as given")
            return _read_tar(tarball, split, exact=True)
        for candidate in (folder / FOLDER, folder):
            if (candidate / SPLITS[split][0]).is_file():
                if log:
                    log(f"reading the extracted batch files in {shown(candidate)} (not checksummed: your own files are "
                        "taken as given)")
                return _read_folder(candidate, split)
        raise DataError(f"{TITLE}: neither {ARCHIVE} nor {FOLDER}/{SPLITS[split][0]} found in {shown(folder)}; "
                        f"put the binary version there (https://www.cs.toronto.edu/~kriz/{ARCHIVE})")
    cache = data_root() / NAME
    tarball = cache / ARCHIVE
    if tarball.is_file():
        if tarball.stat().st_size == SIZE and _sha256_file(tarball) == SHA256:
            return _read_tar(tarball, split)
        if not download:
            raise DataError(f"{shown(tarball)}: SHA-256 does not match the official {ARCHIVE}; delete it to download "
                            "it again")
        if log:
            log(f"{shown(tarball)}: SHA-256 does not match the official {ARCHIVE}; downloading it again")
    elif not download:
        raise DownloadError(f"{ARCHIVE} not found in {shown(cache)} and downloading is off; pass --data-dir DIR "
                            "with it",
                            reason="not on this machine and downloading is off")
    path = _fetch(cache, MIRRORS if mirrors is None else tuple(mirrors), timeout, log)
    return _read_tar(path, split)
