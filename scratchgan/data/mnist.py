"""MNIST and Fashion-MNIST: found on this machine, or downloaded once, verified and cached atomically.

Where the files come from, in order (the first hit wins):

1. ``data_dir`` when given: a folder with the IDX files (``train-images-idx3-ubyte[.gz]``,
   ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``);
   nothing else is looked at.
2. the cache, ``$SCRATCHGAN_DATA/<dataset>/`` (default ``~/.cache/scratchgan/<dataset>/``);
3. system folders (Debian's ``dataset-fashion-mnist`` package installs ``/usr/share/datasets/fashion-mnist``);
4. the official mirrors, tried in order, into the cache.

Every file is checked against SHA-256 sums of the official release, and mirrors are HTTPS only (the
sums protect the content; TLS also keeps a network in the middle from feeding a gzip bomb, and every
decompression is capped at the official file's size anyway). Each file has two: one of the
official ``.gz`` (what the mirrors serve) and one of the decompressed IDX content, so a file that was
recompressed (Debian's Fashion-MNIST) or stored uncompressed is still recognised as the real thing.
Your own IDX files in ``data_dir`` (accepted with ``on_foreign``) may be larger than the official
ones: they are decompressed up to the size their header declares, and no further.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .download import DEFAULT_TIMEOUT, DownloadError, Mismatch, download, fetch
from .idx import DataError, TooLarge, decode_bytes, is_gzip, load_idx_bytes, parse_idx, read_file, shown


class NotOfficial(DataError):
    """A file whose SHA-256 is not the official release's (a corrupt file, another dataset, or the user's own)."""


@dataclass(frozen=True)
class Checksum:
    """SHA-256 sums of one official file: of the ``.gz`` as published and of its IDX content."""
    gz_sha256: str
    idx_sha256: str
    idx_bytes: int  # size of the decompressed content: also a cap on what a download may write


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, fetch and verify one dataset."""
    name: str
    title: str
    mirrors: tuple
    checksums: dict = field(repr=False)  # file stem -> Checksum
    search_dirs: tuple = ()              # system folders looked at before downloading
    license: str = ""


# split -> (images, labels) file stems; the files are <stem> or <stem>.gz
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# MNIST: the .gz sums of train-labels, t10k-images and t10k-labels were computed here from files
# byte-identical to the official ones; all four agree with tensorflow-datasets'
# url_checksums/mnist.txt, which is the source of the train-images .gz sum. Content sums computed here,
# except train-images' (published by several independent projects, same value everywhere).
MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    checksums={
        "train-images-idx3-ubyte": Checksum(
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
        "train-labels-idx1-ubyte": Checksum(
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
        "t10k-images-idx3-ubyte": Checksum(
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
        "t10k-labels-idx1-ubyte": Checksum(
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
    },
    license="CC BY-SA 3.0, Yann LeCun and Corinna Cortes",
)

# Fashion-MNIST: .gz sums from tensorflow-datasets' url_checksums/fashion_mnist.txt (the official
# files); content sums computed here from Debian's recompressed copies and equal to published values.
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    checksums={
        "train-images-idx3-ubyte": Checksum(
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016),
        "train-labels-idx1-ubyte": Checksum(
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
        "t10k-images-idx3-ubyte": Checksum(
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
        "t10k-labels-idx1-ubyte": Checksum(
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
    },
    search_dirs=("/usr/share/datasets/fashion-mnist",),
    license="MIT, Zalando SE",
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
BUNDLED = "mnist-bundled"  # the 10,000 MNIST test digits shipped inside the package
DATASET_NAMES = (*DATASETS, BUNDLED)
BUNDLED_SPLITS = ("test",)



# ----------------------------------------------------------------------------- names and places

def _canonical(name):
    """The canonical dataset name ("Fashion_MNIST" -> "fashion-mnist"); DataError listing the choices."""
    key = str(name).strip().lower().replace("_", "-")
    if key in DATASETS or key == BUNDLED:
        return key
    raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")


def _split_stems(title, split, choices=tuple(SPLITS)):
    if split not in choices:
        raise DataError(f"unknown split {split!r} for {title}; choose one of: {', '.join(choices)}")
    return SPLITS[split]


def data_root() -> Path:
    """Root of the download cache: ``$SCRATCHGAN_DATA``, else ``$XDG_CACHE_HOME/scratchgan``,
    else ``~/.cache/scratchgan``. Each dataset lives in its own sub-folder."""
    env = os.environ.get("SCRATCHGAN_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "scratchgan"


def cache_dir(name) -> Path:
    """The cache folder of one dataset, e.g. ``~/.cache/scratchgan/mnist`` (not created here)."""
    return data_root() / _canonical(name)


def _candidates(stem):
    """File names a folder may hold for one stem: with or without .gz, and the common
    'train-images.idx3-ubyte' spelling of some re-distributions."""
    dotted = stem.replace("-idx", ".idx", 1)
    # .gz first: it is what downloads write, so a fresh download wins over an older plain copy
    return (stem + ".gz", stem, dotted + ".gz", dotted)


def _find(folder, stem):
    for candidate in _candidates(stem):
        path = Path(folder) / candidate
        if path.is_file():
            return path
    return None


# ----------------------------------------------------------------------------- verification

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_array(raw: bytes, source, checksum, title, stem, verify=True, hint=""):
    """Parse ``raw`` (gz or plain IDX bytes) after checking it is the official file.

    Accepted when the bytes are the official .gz, or when the decompressed content is the official
    content (a recompressed or uncompressed copy). Unverified (a user's own file): decompressed no
    further than its IDX header declares.
    """
    source = shown(source)
    if not verify or checksum is None or (is_gzip(raw) and _sha256(raw) == checksum.gz_sha256):
        return load_idx_bytes(raw, source)
    try:  # the official content has a known size: decompress no more
        content = decode_bytes(raw, source, max_bytes=checksum.idx_bytes)
    except TooLarge:  # larger than the official file: someone's own data, or a bomb; not the release either way
        raise NotOfficial(f"{source}: decompresses to more than {checksum.idx_bytes:,} bytes, the size of the "
                          f"official {title} {stem}; the file is another dataset{hint}") from None
    if _sha256(content) != checksum.idx_sha256:
        raise NotOfficial(f"{source}: SHA-256 does not match the official {title} {stem} (neither the .gz "
                          f"{checksum.gz_sha256[:12]}... nor the IDX content {checksum.idx_sha256[:12]}...); "
                          f"the file is corrupt or another dataset{hint}")
    return parse_idx(content, source)


def _read_verified(path, spec, stem, verify=True, hint=""):
    raw = read_file(path, f"the {spec.title} file {stem}")
    return _verified_array(raw, path, spec.checksums.get(stem), spec.title, stem, verify, hint)


def _check_pair(images, labels, images_src, labels_src):
    """The two arrays must be uint8 (N, 28, 28) images and N uint8 labels 0..9, N > 0."""
    images_src, labels_src = shown(images_src), shown(labels_src)
    if images.ndim == 3 and 0 in images.shape[1:]:
        raise DataError(f"{images_src}: holds empty images (shape {images.shape}: "
                        f"{images.shape[1]}x{images.shape[2]} pixels); expected uint8 images of shape (N, 28, 28)")
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_src}: expected uint8 images of shape (N, 28, 28), "
                        f"got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_src}: expected a 1-D uint8 label array, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise DataError(f"{labels_src}: {len(labels)} labels for {len(images)} images in {images_src}")
    if len(images) == 0:
        raise DataError(f"{images_src}: holds no images (shape {images.shape}); expected N > 0 images of 28x28")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_src}: label {int(labels.max())} out of range 0..9")


# ----------------------------------------------------------------------------- download

def _verify_download(checksum, url):
    """``download``'s check of an official file: the .gz as published, or (a mirror may recompress) the same
    IDX content."""
    def verify(sha256, tmp, size):
        if sha256 == checksum.gz_sha256:
            return
        try:
            content = decode_bytes(tmp.read_bytes(), url, max_bytes=checksum.idx_bytes)
        except DataError:
            content = b""
        if _sha256(content) != checksum.idx_sha256:
            raise Mismatch(f"SHA-256 mismatch: got {sha256[:12]}..., expected {checksum.gz_sha256[:12]}...")
    return verify


def _supply_hint(spec, folder):
    return (f"supply the files yourself: --data-dir DIR with the four IDX files "
            f"(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
            f"t10k-labels-idx1-ubyte[.gz]), or put them in {shown(folder)}")


def _fetch(spec, stem, folder, mirrors, timeout, log):
    """Download ``stem``.gz from the first mirror that serves the official file; return its path."""
    checksum = spec.checksums[stem]

    def get(url, final):  # a .gz is never much bigger than its content
        download(url, final, checksum.idx_bytes + (1 << 20), _verify_download(checksum, url), timeout)
    return fetch(f"{stem}.gz", folder, mirrors, get, timeout=timeout, log=log, title=spec.title,
                 supply=_supply_hint(spec, folder))


def _get_array(spec, stem, download, verify, mirrors, timeout, log):
    """One file's array from the cache, a system folder, or the mirrors (into the cache)."""
    folder = data_root() / spec.name
    path = _find(folder, stem)
    if path is not None:
        try:
            return _read_verified(path, spec, stem, verify), path
        except DataError as e:
            if not download:
                raise DataError(f"{e}; delete it to download it again") from None
            if log:
                log(f"{e}; downloading it again")  # replaced atomically below
    for system_dir in spec.search_dirs:
        path = _find(system_dir, stem)
        if path is not None:
            return _read_verified(path, spec, stem, verify), path
    if not download:
        where = ", ".join(shown(p) for p in (folder, *spec.search_dirs))
        raise DownloadError(f"{stem} for {spec.title} not found in {where} and downloading is off; "
                            f"{_supply_hint(spec, folder)}", reason="not on this machine and downloading is off")
    path = _fetch(spec, stem, folder, spec.mirrors if mirrors is None else tuple(mirrors), timeout, log)
    return _read_verified(path, spec, stem, verify), path


def _from_data_dir(spec, split, data_dir, verify, on_foreign=None):
    """Both files of ``split`` from a user's folder, with a clear message for what is missing.

    ``on_foreign``: None refuses files that are not the official release; a callable accepts them
    (parsed and shape-checked all the same) and is called once with a line naming them."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"data dir {shown(folder)} does not exist or is not a folder")
    stems = SPLITS[split]
    missing = [(role, stem) for role, stem in zip(("images", "labels"), stems) if _find(folder, stem) is None]
    if missing:
        what = " and the ".join(f"{split} {role} ({stem}[.gz])" for role, stem in missing)
        others = [s for s in SPLITS if s != split and all(_find(folder, stem) for stem in SPLITS[s])]
        hint = f"; that folder has the {others[0]!r} split: use --split {others[0]}" if others else ""
        raise DataError(f"{spec.title}: the {what} are missing in {shown(folder)}{hint}")
    paths = [_find(folder, stem) for stem in stems]
    hint = "; replace it with the official file"
    if on_foreign is None:
        return [(_read_verified(path, spec, stem, verify, hint), path) for stem, path in zip(stems, paths)]
    arrays, foreign = [], []
    for stem, path in zip(stems, paths):
        try:
            arrays.append((_read_verified(path, spec, stem, verify, hint), path))
        except NotOfficial:
            arrays.append((_read_verified(path, spec, stem, verify=False), path))
            foreign.append(shown(path.name))
    if foreign:
        on_foreign(f"{', '.join(foreign)} in {shown(folder)} are not the official {spec.title} files "
                   "(SHA-256 differs); "
                   "training on them as given")
    return arrays


# ----------------------------------------------------------------------------- public API

def load_mnist_bundled(split="test"):
    """The 10,000 MNIST test digits shipped inside the package: (images uint8 (N, 28, 28), labels uint8 (N,)).

    Works offline and from an installed wheel (read through importlib.resources).
    """
    stems = _split_stems("the bundled MNIST (the 10,000 test digits only)", split, BUNDLED_SPLITS)
    root = importlib.resources.files(__package__).joinpath("bundled")
    arrays = []
    for stem in stems:
        resource = root.joinpath(f"{stem}.gz")
        try:
            raw = resource.read_bytes()
        except OSError as e:
            raise DataError(f"bundled file {stem}.gz is missing from the installed package ({e}); "
                            "reinstall scratchgan") from None
        arrays.append(_verified_array(raw, f"bundled {stem}.gz", MNIST.checksums[stem], MNIST.title, stem,
                                      hint="; reinstall scratchgan"))
    images, labels = arrays
    _check_pair(images, labels, f"bundled {stems[0]}.gz", f"bundled {stems[1]}.gz")
    return images, labels


def load_dataset(name, split="train", data_dir=None, download=True, *, verify=True, mirrors=None,
                 timeout=DEFAULT_TIMEOUT, log=None, on_foreign=None):
    """Load a dataset split: (images uint8 (N, 28, 28), labels uint8 (N,)) on the host.

    ``name``: "mnist", "fashion-mnist" or "mnist-bundled"; ``split``: "train" or "test".
    ``data_dir``: read the IDX files from this folder only. Otherwise: the cache, system folders,
    then (``download=True``) the official mirrors, or ``mirrors`` (base URLs) when given.
    ``verify``: check SHA-256 sums against the official release. ``log``: a callable for progress
    lines (downloads); the library prints nothing itself. Raises DataError (DownloadError when the
    files are not here and could not be fetched) with a one-line message that says what to do.
    ``on_foreign``: a callable to accept IDX files in ``data_dir`` that are not the official release
    (your own data in MNIST's format), called once with a line naming them; None refuses them.
    Downloads and the cache are always checked.
    """
    key = _canonical(name)
    if key == BUNDLED:
        if data_dir is not None:
            raise DataError(f"{BUNDLED} reads the digits shipped inside the package; drop --data-dir, "
                            "or use the dataset 'mnist' to read the IDX files in that folder")
        return load_mnist_bundled(split)
    spec = DATASETS[key]
    stems = _split_stems(spec.title, split)
    if data_dir is not None:
        (images, images_src), (labels, labels_src) = _from_data_dir(spec, split, data_dir, verify, on_foreign)
    else:
        images, images_src = _get_array(spec, stems[0], download, verify, mirrors, timeout, log)
        labels, labels_src = _get_array(spec, stems[1], download, verify, mirrors, timeout, log)
    _check_pair(images, labels, images_src, labels_src)
    return images, labels


def load_dataset_or_bundled(name, split="train", data_dir=None, log=None, *, progress=None, **kwargs):
    """``load_dataset``, with the offline fallback of the examples.

    When ``name`` is "mnist", no ``data_dir`` was given and MNIST can be neither found nor downloaded,
    this logs ONE line through ``log`` (``warnings.warn`` when ``log`` is None) and returns the bundled
    10,000 MNIST test digits instead, whatever ``split`` asked for. Every other failure raises
    DataError. ``progress`` is load_dataset's ``log`` (download lines; off by default so that an
    offline run says one line, not one per mirror); ``kwargs`` go to ``load_dataset`` (download,
    verify, mirrors, timeout).
    """
    try:
        return load_dataset(name, split, data_dir, log=progress, **kwargs)
    except DownloadError as e:
        if _canonical(name) != "mnist" or data_dir is not None:
            raise
        message = f"could not download MNIST ({e.reason}); training on the bundled 10k MNIST test digits instead"
        if log is None:
            warnings.warn(message, stacklevel=2)
        else:
            log(message)
        return load_mnist_bundled("test")


def download_dataset(name, *, mirrors=None, timeout=DEFAULT_TIMEOUT, log=None) -> Path:
    """Make sure all four files of a dataset are in its cache folder (downloading what is missing or
    corrupt there); returns that folder. For a `download` command and for preparing offline machines."""
    key = _canonical(name)
    if key == BUNDLED:
        raise DataError(f"{BUNDLED} ships inside the package; nothing to download")
    spec = DATASETS[key]
    folder = data_root() / spec.name
    for stem in (*SPLITS["train"], *SPLITS["test"]):
        path = _find(folder, stem)
        if path is not None:
            try:
                _read_verified(path, spec, stem)
                continue
            except DataError as e:
                if log:
                    log(f"{e}; downloading it again")
        _fetch(spec, stem, folder, spec.mirrors if mirrors is None else tuple(mirrors), timeout, log)
    return folder
