"""Where the tests find the real datasets: ``../shared/datasets`` beside the repository.

The folder is found relative to this file, never by an absolute path; ``SCRATCHGAN_TEST_DATASETS``
points elsewhere. ``dataset_dir(name)`` returns a dataset's folder when its files are there. When
they are not, the test is skipped with a reason that says what to fetch, except under ``CI=true``:
there missing data is a failure, so CI can never pass by silently skipping the end-to-end tests.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("SCRATCHGAN_TEST_DATASETS") or REPO.parent / "shared" / "datasets")

# The files each folder must hold (the bundled-shared MNIST has no train images).
FILES = {
    "mnist": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "fashion-mnist": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                      "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
}


def in_ci():
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(name):
    """The message for a dataset whose files are not all there, or None when they are."""
    folder = ROOT / name
    absent = [f for f in FILES[name] if not (folder / f).is_file()]
    if not absent:
        return None
    return (f"missing data: {folder / absent[0]} not found; put the gzipped IDX files of {name} "
            f"({', '.join(FILES[name])}) in {folder}, or set SCRATCHGAN_TEST_DATASETS to a folder "
            f"holding mnist/ and fashion-mnist/")


def dataset_dir(name):
    """The folder of dataset ``name`` ("mnist" or "fashion-mnist"); skips (fails under CI) if absent."""
    message = missing(name)
    if message is not None:
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return ROOT / name
