"""The evaluator weights shipped with scratchgan: the default rulers of ``evaluate`` and ``--eval-every``.

One CNN evaluator per dataset family, trained by `scratchgan evaluator --dataset NAME --out FILE` (seed 0,
the default epochs, every training image), which rebuilds the file bit for bit. Each file's SHA-256 is
recorded here and checked whenever it is loaded, so a ruler is the same for every user:

- ``cnn-fashion-mnist.npz``: Fashion-MNIST's 60,000 training images; scored on its 10,000 test images.
- ``cnn-mnist.npz``: for ``mnist`` and ``mnist-bundled`` alike; 8,000 of the bundled test digits (MNIST's
  test split, a fixed split of seed 0), the other 2,000 held out.

Each file's metadata (``info``) says what it was trained on and its held-out accuracy; docs/quality.md
gives both.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..checkpoint import CheckpointError

FOLDER = Path(__file__).resolve().parent / "weights"
KIND, SEED = "cnn", 0  # the recipe of every shipped ruler: the default CNN, seed 0, default epochs, all data
FILES = {  # family: (file name under weights/, its SHA-256)
    "fashion-mnist": ("cnn-fashion-mnist.npz", "5a09413b1cf1643c946e6be73d713c0f01b868b0193e7ba65acce6e69efb83ce"),
    "mnist": ("cnn-mnist.npz", "ce094a2415524842e2d2449a20e1037c34a35fdf4ef3b7a7937a98e15e8e18bb"),
}
DATASET_OF = {"fashion-mnist": "fashion-mnist", "mnist": "mnist-bundled"}  # what each family's ruler trains on


def sha256_of(path):
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def path_of(family):
    """The shipped file of ``family`` (not checked), or None when none ships."""
    return FOLDER / FILES[family][0] if family in FILES else None


def verified_path(family):
    """The shipped file of ``family`` after checking its SHA-256; CheckpointError (one line) otherwise."""
    name, expected = FILES[family]
    path = FOLDER / name
    rebuild = f"reinstall scratchgan, or rebuild it with `scratchgan evaluator --dataset {family} --out {path}`"
    try:
        actual = sha256_of(path)
    except OSError as e:
        raise CheckpointError(f"the shipped {family} evaluator {path} cannot be read ({e.strerror or e}); "
                              f"{rebuild}") from None
    if actual != expected:
        raise CheckpointError(f"the shipped {family} evaluator {path} has SHA-256 {actual[:12]}..., not the "
                              f"recorded {expected[:12]}...: it was modified; {rebuild}")
    return path


__all__ = ["FILES", "FOLDER", "KIND", "SEED", "sha256_of", "path_of", "verified_path"]
