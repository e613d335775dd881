"""Which dataset: every name a training run may give, how it loads, and what it holds, in one table
(``BY_NAME``; mnist.DATASETS is where the IDX files of two of them come from).

    loaded = load("cifar10", Request(split="train"), limit=1000)   # Loaded(images, labels, name, split)

``images`` are uint8 (N, H, W) or (N, C, H, W) as the files hold them; fitting them to a network
(the DCGAN's --image-size and --channels) is the caller's. ``limit`` keeps the first N images, here and
nowhere else. ``name`` and ``split`` say what was really loaded: an offline "mnist" falls back to the
bundled test digits ("mnist-bundled", "test"), and the run records that.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from .idx import DataError, shown


@dataclasses.dataclass
class Request:
    """What a loader may need. ``size`` / ``channels``: the side and channels an image folder is decoded
    to; ``count``, ``seed``, ``labelled``: the synthetic images of a dry run; ``log``: progress lines and
    the offline fallback; ``on_foreign``: the line for IDX files that are not the official ones."""
    split: str = "train"
    data_dir: str | None = None
    size: int | None = None
    channels: int | None = None
    count: int = 0
    seed: int = 0
    labelled: bool = True
    log: Callable | None = None
    on_foreign: Callable | None = None


@dataclasses.dataclass
class Loaded:
    images: np.ndarray
    labels: np.ndarray | None  # (N,) uint8 class labels (an image folder's: int64), None where the dataset has none
    name: str                  # the dataset really loaded
    split: str
    classes: tuple | None = None  # the class names, where the data names them (an image folder's)
    no_labels: str | None = None  # why the labels are None where the data has some that cannot be used


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    load: Callable              # load(request) -> Loaded
    count: Callable             # count(request) -> its number of images where known without reading them, else
                                # None; checks the paths the load reads (a dry run's check), reads no image
    shape: tuple | None         # (side, channels) of its images; None: the file's own
    mnist_like: bool = False    # 28x28 grey digits or clothes: the evaluator's classifiers apply
    dcgan_only: bool = False    # images of any size, decoded to the DCGAN's


def _idx(name):
    def load(request):
        from .mnist import load_dataset_or_bundled
        fallback = []  # the one line load_dataset_or_bundled logs when it falls back to the bundled digits

        def note(message):
            fallback.append(message)
            if request.log:
                request.log(message)
        images, labels = load_dataset_or_bundled(name, request.split, request.data_dir, log=note,
                                                 on_foreign=request.on_foreign)
        if fallback:
            return Loaded(images, labels, "mnist-bundled", "test")
        return Loaded(images, labels, name, request.split)
    return load


def _cifar10(request):
    from .cifar10 import load_cifar10
    images, labels = load_cifar10(request.split, request.data_dir, log=request.log)
    return Loaded(images, labels, "cifar10", request.split)


def _npy(request):
    from .npy import load_npy_images
    if not request.data_dir:
        raise DataError("--dataset npy needs --data-dir FILE.npy, your array of images")
    return Loaded(load_npy_images(request.data_dir), None, "npy", request.split)


def _folder(request):
    """The folder's images, and its labels from class sub-folders or dataset.json (folder.py) where it has
    usable ones; ``no_labels`` says why where its labelling cannot be used."""
    from .folder import open_image_folder
    if not request.data_dir:
        raise DataError("--dataset folder needs --data-dir DIR, the folder of images")
    side, channels = BY_NAME["folder"].shape
    folder = open_image_folder(request.data_dir, request.size or side, request.channels or channels, log=request.log)
    return Loaded(folder.images, folder.labels, "folder", request.split, classes=folder.classes,
                  no_labels=folder.label_problem)


def _count_folder(request):
    from .folder import count_image_folder
    if not request.data_dir:
        raise DataError("--dataset folder needs --data-dir DIR, the folder of images")
    return count_image_folder(request.data_dir)


def _count_npy(request):
    from .npy import count_npy_images
    return count_npy_images(request.data_dir)


def _count_bundled(request):
    if request.data_dir is not None:
        raise DataError("mnist-bundled reads the digits shipped inside the package; drop --data-dir, or use the "
                        "dataset 'mnist' to read the IDX files in that folder")


def _count_files(tarball_ok=False):
    """The check of IDX files or CIFAR-10 batches in --data-dir: their folder (CIFAR-10: or its tarball)."""
    def count(request):
        if request.data_dir is None:
            return None
        folder = Path(request.data_dir).expanduser()
        tarball = tarball_ok and folder.is_file() and folder.name.endswith((".tar.gz", ".tgz"))
        if not tarball and not folder.is_dir():
            raise DataError(f"data dir {shown(folder)} does not exist or is not a folder")
        return None
    return count


def _synthetic(request):
    """Random images of the shape ``request.size`` / ``request.channels`` (channels 1: (N, S, S)), with
    labels 0..9 when ``request.labelled``: what a dry run trains on."""
    rng = np.random.default_rng(request.seed)
    side, channels = request.size, request.channels
    shape = (channels, side, side) if channels != 1 else (side, side)
    images = rng.integers(0, 256, (request.count, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, request.count).astype(np.uint8)
    return Loaded(images, labels if request.labelled else None, "synthetic", request.split)


BY_NAME = {d.name: d for d in (
    Dataset("mnist", _idx("mnist"), _count_files(), (28, 1), mnist_like=True),
    Dataset("fashion-mnist", _idx("fashion-mnist"), _count_files(), (28, 1), mnist_like=True),
    Dataset("mnist-bundled", _idx("mnist-bundled"), _count_bundled, (28, 1), mnist_like=True),
    Dataset("cifar10", _cifar10, _count_files(tarball_ok=True), (32, 3)),
    Dataset("npy", _npy, _count_npy, None),
    Dataset("folder", _folder, _count_folder, (64, 3), dcgan_only=True),
    Dataset("synthetic", _synthetic, lambda request: request.count, None),  # a dry run's; no flag names it
)}
CHOICES = tuple(name for name, d in BY_NAME.items() if name != "synthetic" and not d.dcgan_only)
DCGAN_CHOICES = tuple(name for name, d in BY_NAME.items() if d.dcgan_only)


def _dataset(name):
    if name not in BY_NAME:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(CHOICES + DCGAN_CHOICES)}")
    return BY_NAME[name]


def count(name, request, limit=None):
    """What ``load`` would load checked without reading it (paths, a folder's listing, a .npy header): its
    number of images where known, else None; never more than ``limit``."""
    n = _dataset(name).count(request)
    if limit is not None:  # the load takes the first ``limit`` (the data may have fewer: not known here)
        n = limit if n is None else min(n, limit)
    return n


def load(name, request, limit=None):
    """The dataset ``name`` as ``Loaded``, its first ``limit`` images only when given."""
    loaded = _dataset(name).load(request)
    if limit:
        loaded.images = loaded.images[:limit]
        loaded.labels = None if loaded.labels is None else loaded.labels[:limit]
    return loaded
