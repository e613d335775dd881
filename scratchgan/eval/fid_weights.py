"""The FID Inception's weights: pytorch-fid's published file, downloaded once, converted once to ``.npz``, checked.

Where they come from, in order:
1. ``$SCRATCHGAN_FID_WEIGHTS``: a ``.pth`` (pytorch-fid's file, or any ``torch.save``d state dict of the same
   tensors) or an ``.npz`` (this module's conversion), for offline machines and tests;
2. the cache, ``$SCRATCHGAN_DATA/fid-inception/`` (default ``~/.cache/scratchgan/fid-inception/``): the ``.npz``,
   else the ``.pth`` (converted on first use);
3. the download of the ``.pth`` from pytorch-fid's release (96 MB) into that cache, then its conversion.

The ``.pth`` is read by torch_zip.py (no torch, no code from the file); the ``.npz`` is read with
``allow_pickle=False``; either way the arrays are checked (names, shapes, float, finite) before use.
"""
from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from ..data.download import DEFAULT_TIMEOUT, DownloadError, Mismatch, download, fetch, sha256_file
from ..data.idx import DataError, shown
from ..data.mnist import data_root
from ..errors import UserError
from ..fileio import atomic_path
from .inception import build_fid_inception, check_fid_state, fid_state_names, load_fid_state
from .torch_zip import TorchFileError, read_state_dict

FILE = "pt_inception-2015-12-05-6726825d.pth"
URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FILE}"
# The published check: the "6726825d" in the file's name is the leading hex of its SHA-256, torch.hub's
# convention (torch.hub.download_url_to_file(..., hash_prefix) verifies exactly this when pytorch-fid loads it).
SHA256_PREFIX = FILE.rsplit("-", 1)[1].split(".")[0]
LIMIT = 128 * 2**20  # the file is about 96 MB: a server sending more is not sending it
NPZ = FILE.replace(".pth", ".npz")
CACHE_NAME = "fid-inception"
ENV = "SCRATCHGAN_FID_WEIGHTS"


class FIDWeightsError(UserError):
    """The weights could not be found, fetched or read (one line that says what to do)."""


def cache_folder() -> Path:
    """``$SCRATCHGAN_DATA/fid-inception`` (default ``~/.cache/scratchgan/fid-inception``), not created here."""
    return data_root() / CACHE_NAME


def _verify(sha256, tmp, size):
    if not sha256.startswith(SHA256_PREFIX):
        raise Mismatch(f"SHA-256 {sha256[:12]}... ({size:,} bytes) does not start with the published {SHA256_PREFIX}")


def _supply():
    return (f"download {URL} on a machine with a network and put it in {shown(cache_folder())}/ "
            f"(or set {ENV}=PATH to that file)")


def download_weights(*, timeout=DEFAULT_TIMEOUT, log=None, url=URL) -> Path:
    """pytorch-fid's ``.pth`` in the cache: downloaded (SHA-256 prefix checked, written atomically) if absent."""
    folder = cache_folder()
    path = folder / FILE
    if path.is_file():
        return path

    def get(u, final):
        download(u, final, LIMIT, _verify, timeout, too_big=f"served more than {LIMIT:,} bytes; not {FILE}")
    try:
        return fetch(FILE, folder, [url], get, timeout=timeout, log=log, title="the FID Inception network",
                     note=" (96 MB, once)", supply=_supply())
    except DownloadError as e:
        raise FIDWeightsError(f"the FID Inception weights are not on this machine and could not be downloaded "
                              f"({e.reason}); {_supply()}") from None
    except DataError as e:
        raise FIDWeightsError(str(e)) from None


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise FIDWeightsError(f"{shown(path)}: not a readable .npz of the FID Inception weights "
                              f"({' '.join(str(e).split())}); delete it to convert again") from None


def _read_pth(path):
    try:
        return read_state_dict(path)
    except TorchFileError as e:
        raise FIDWeightsError(str(e)) from None


def _checked(arrays, path, net):
    try:
        check_fid_state(net, arrays)
    except ValueError as e:
        raise FIDWeightsError(f"{shown(path)}: {e}") from None
    return arrays


def convert(pth, npz, net=None):
    """Read pytorch-fid's ``.pth`` (torch_zip), check it, write its float32 arrays as ``npz`` atomically; the arrays."""
    net = net or build_fid_inception()
    arrays = _checked(_read_pth(pth), pth, net)
    wanted = {k: np.ascontiguousarray(arrays[k], dtype=np.float32) for k in sorted(fid_state_names(net))}
    try:
        with atomic_path(npz, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **wanted)
    except OSError as e:
        raise FIDWeightsError(f"cannot write {shown(npz)} ({e.strerror or e}); set SCRATCHGAN_DATA to a writable "
                              "folder") from None
    return wanted


def load_weights(*, download=True, log=None, timeout=DEFAULT_TIMEOUT, net=None):
    """(arrays under pytorch-fid's names, where they came from): $SCRATCHGAN_FID_WEIGHTS, else the cached
    ``.npz``, else the cached (or downloaded) ``.pth`` converted to that ``.npz`` once. FIDWeightsError, one line."""
    net = net or build_fid_inception()
    env = os.environ.get(ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FIDWeightsError(f"{ENV}={env}: no such file; point it at {FILE} or its .npz")
        arrays = _read_npz(path) if path.suffix == ".npz" else _read_pth(path)
        return _checked(arrays, path, net), path
    npz, pth = cache_folder() / NPZ, cache_folder() / FILE
    if npz.is_file():
        return _checked(_read_npz(npz), npz, net), npz
    if not pth.is_file():
        if not download:
            raise FIDWeightsError(f"the FID Inception weights are not on this machine and downloading is off; "
                                  f"{_supply()}")
        pth = download_weights(timeout=timeout, log=log)
    elif sha256_file(pth)[:len(SHA256_PREFIX)] != SHA256_PREFIX:
        raise FIDWeightsError(f"{shown(pth)}: SHA-256 does not start with the published {SHA256_PREFIX}; delete it "
                              "to download it again")
    if log:
        log(f"converting {shown(pth)} to {shown(npz)} (once)")
    return convert(pth, npz, net), npz


def fid_inception(progress=True, *, backend="numpy", download=True):
    """The FID Inception-v3 with pytorch-fid's weights, in eval mode, on ``backend`` (float32): downloads and
    converts them as needed (``progress``: say so on stderr). ``$SCRATCHGAN_FID_WEIGHTS=PATH`` (.pth or .npz)
    takes the weights from PATH instead."""
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if progress else None
    net = build_fid_inception()
    arrays, _ = load_weights(download=download, log=log, net=net)
    load_fid_state(net, arrays)
    return net.to(backend=backend).eval()
