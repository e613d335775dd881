"""Image folders (CelebA's ``img_align_celeba/``, or any folder of photos), decoded ONCE into a cache.

    images = load_image_folder("~/data/celeba/img_align_celeba", image_size=64)   # uint8 (N, 3, 64, 64)
    loader = BatchLoader(images, 128, flatten=False, xp=get_xp("cupy"))          # float32 in [-1, 1]

What is read: every ``.jpg .jpeg .png .bmp .webp`` file (any letter case) under the folder, found
recursively, hidden files and folders (names starting with ".") left out, other files ignored.
The order is the sorted relative paths ("a/b.png" as POSIX text), so it never depends on the file system.

Only regular files are opened: a FIFO, a socket or a device with an image's name (``pipe.png``) is
skipped and reported, never read (a FIFO would block the decoder forever, a device could be endless).
The check is made before opening and again on the open file (opened without blocking), so a file
swapped after the scan is caught too. Symlinked files are followed, wherever they point, inside the
folder or out of it: reading changes nothing, and folders of links into a photo library are a common
way to make a dataset; the target must still be a regular file. Symlinked sub-folders are not followed (a link to ``..`` would
loop, and a link to ``/`` would scan the whole disk).

Each image gets the DCGAN tutorial's transform, ``Resize(image_size)`` then ``CenterCrop(image_size)``:

1. ``convert("RGB")`` or ``convert("L")`` (RGBA and LA lose their alpha, P/CMYK/1/YCbCr are
   converted by Pillow, 16-bit grey is scaled by 1/257 instead of clipped), EXIF orientation applied;
2. the shorter side is resized to ``image_size`` (bicubic, antialiased: Pillow filters over the
   whole footprint when it shrinks), the longer side to ``int(image_size * long / short)``;
3. the central ``image_size x image_size`` square is kept: offsets ``int(round((w - S) / 2))``,
   ``int(round((h - S) / 2))``, as torchvision's CenterCrop.

JPEGs at least 4x larger than needed (short side >= 4 * image_size) are decoded by libjpeg at a
reduced scale (1/2, 1/4 or 1/8) that still leaves >= 2 * image_size pixels on the short side before
the bicubic resize: 5-10x faster on camera photos, a few grey levels of difference. CelebA
(178 x 218) at 64 or 128 pixels never takes that path.

The cache: ``<cache_dir or data_root()/"folders">/<name>-<path hash>-<S>px-<mode>-<key>.npy`` with a
sidecar ``.json`` manifest (the key, N, the files kept, the files skipped and why). The key is a
SHA-256 of (absolute folder path, image_size, channels, the transform's version, and the sorted
(relative path, size, mtime_ns) of every image file), so adding, removing or changing one image
builds a new cache (and the older cache of the same folder, size and mode is deleted). It is
written atomically (``scratchgan.fileio``): the array goes to a temp ``.<name>.npy.<pid>.XXXX.part.npy``
in the same folder, is flushed, then renamed; the manifest is renamed in last and is what marks a cache complete, so a
partial file from an interrupted run is never read (a Ctrl-C removes its temp file; a leftover one
from a killed run is ignored, and reported through ``log``).

Unreadable images (not an image, truncated, empty, 0x0 pixels, not a regular file, an unsupported
mode) are skipped and counted, and reported ONCE at the end through ``log`` (how many, the first few
names and why); they never stop a run halfway. A missing folder, a folder without image files, or one
where no image can be read is a ``DataError`` with one line that names the folder and what was found.
Labels (for ``--conditional``), computed with the images and kept in the cache's manifest:

- ``DIR/dataset.json`` in StyleGAN's dataset_tool format, ``{"labels": [["img00000.png", 6], ...]}`` (paths
  relative to DIR, forward slashes; ``"labels": null`` means none), with an optional ``"classes": [names]``
  (scratchgan's addition; without it class k is named "k"). Its contents are part of the cache key.
- else class sub-folders, as torchvision's ImageFolder: ``DIR/cat/**.png``, ``DIR/dog/**.png``; the classes
  are the top-level sub-folders holding image files, sorted by name, the label the position. An image
  directly in DIR makes the folder unlabelled, as before.
A labelling that cannot be used (a file listed but absent, an image without a label, a label that is not an
int or out of range, a class left with no readable image) is kept as one line and raised as a DataError
only when the labels are asked for (``ImageFolder.checked_labels``): an unconditional run never reads them.

Names are printed as ``idx.shown`` writes them: a name with an escape code or a newline in it appears
as Python's repr, never raw.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..backend import cpu_threads  # the one count of usable cores
from ..fileio import atomic_path, atomic_write
from .idx import DataError, NotRegularFile, open_regular, shown
from .mnist import data_root

# What the folder scan picks up (lower-cased suffixes). Pillow reads all of these with its standard
# plugins; a file Pillow cannot read (e.g. a .webp where Pillow was built without libwebp) is
# skipped and reported like any other unreadable image.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Bump when the transform below changes: it is part of the cache key, so old caches are not reused.
TRANSFORM_VERSION = "resize-shorter-bicubic+center-crop+exif/v1"
MANIFEST_FORMAT = 1

LABELS_FILE = "dataset.json"  # StyleGAN's dataset_tool labels: {"labels": [["a/img.png", 6], ...]}
CHANNEL_MODES = {3: "RGB", 1: "L"}
_MAX_SKIPPED_SHOWN = 5   # names quoted in the one log line / error message
_CHUNK = 64              # images per thread-pool task


@dataclass(frozen=True)
class ImageFolder:
    """A decoded image folder: ``images`` (read-only np.memmap, uint8 (N, C, S, S)) and where it came from.

    ``files``: the relative paths of the N images, in order (row i of ``images`` is ``files[i]``);
    ``skipped``: ``(relative path, reason)`` of the unreadable ones; ``cache_path``: the .npy;
    ``from_cache``: True when nothing was decoded this time. ``labels``: int64 (N,) class indices and
    ``classes`` their names, both None for an unlabelled folder or when ``label_problem`` (one line) says
    why its labelling cannot be used.
    """
    images: np.ndarray
    files: tuple
    skipped: tuple
    folder: Path
    cache_path: Path
    from_cache: bool
    labels: np.ndarray | None = None
    classes: tuple | None = None
    label_problem: str | None = None

    def checked_labels(self):
        """(labels, classes): DataError with the one line of ``label_problem``; (None, None) when unlabelled."""
        if self.label_problem:
            raise DataError(self.label_problem)
        return self.labels, self.classes

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self):
        return len(self.images)

    def __repr__(self):
        n, c, s, _ = self.images.shape
        return (f"ImageFolder({str(self.folder)!r}, N={n}, channels={c}, image_size={s}, "
                f"skipped={self.num_skipped}, from_cache={self.from_cache})")


# ----------------------------------------------------------------------------- arguments

def _channels_mode(channels):
    """3 / "RGB" -> (3, "RGB"); 1 / "L" -> (1, "L")."""
    if isinstance(channels, str):
        key = channels.strip().upper()
        for c, mode in CHANNEL_MODES.items():
            if key == mode:
                return c, mode
    elif isinstance(channels, (int, np.integer)) and not isinstance(channels, bool) and int(channels) in CHANNEL_MODES:
        return int(channels), CHANNEL_MODES[int(channels)]
    raise ValueError(f"channels must be 3 (\"RGB\") or 1 (\"L\"), got {channels!r}")


def _check_size(image_size):
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return int(image_size)


def _check_workers(workers):
    if workers is None:
        return cpu_threads()  # the cores this process may use, as for Adam and im2col (backend.py)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise ValueError(f"workers must be a positive integer or None (all cores), got {workers!r}")
    return int(workers)


# ----------------------------------------------------------------------------- scan

def _is_hidden(name):
    return name.startswith(".")


def scan_image_folder(folder):
    """The image files under ``folder``: a sorted list of (relative POSIX path, size, mtime_ns), and
    how many other (non-image, non-hidden) files were seen. DataError when the folder is missing."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataError(f"image folder {shown(root)} does not exist")
    if not root.is_dir():
        raise DataError(f"image folder {shown(root)} is not a folder")
    entries, others = [], []

    def unreadable(e):  # os.walk swallows errors by default: a sub-folder we cannot list is worth a line
        raise DataError(f"image folder {shown(root)}: cannot list {shown(e.filename)} ({e.strerror or e})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]  # prune hidden folders in place
        for name in filenames:
            if _is_hidden(name):
                continue
            path = os.path.join(dirpath, name)
            rel = Path(path).relative_to(root).as_posix()
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                others.append(rel)
                continue
            try:
                st = os.stat(path)
            except OSError:  # a dangling symlink, a file deleted while we walk
                others.append(rel)
                continue
            entries.append((rel, st.st_size, st.st_mtime_ns))
    entries.sort()
    others.sort()
    return entries, others


def cache_key(folder, image_size, channels, entries, labels_file=None) -> str:
    """SHA-256 (hex) of everything the cached array and its labels depend on (``labels_file``: the bytes
    of DIR/dataset.json, when there is one)."""
    fields = {
        "folder": str(Path(folder).expanduser().resolve()),
        "image_size": int(image_size),
        "channels": int(channels),
        "transform": TRANSFORM_VERSION,
        "files": [list(e) for e in entries],
    }
    if labels_file is not None:  # (an unreadable one: its error line)
        raw = labels_file if isinstance(labels_file, bytes) else str(labels_file).encode()
        fields["labels_file"] = hashlib.sha256(raw).hexdigest()
    payload = json.dumps(fields, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _cache_stem(folder, image_size, mode):
    """``<name>-<hash of the absolute path>-<S>px-<mode>``: one prefix per (folder, size, mode)."""
    resolved = str(Path(folder).expanduser().resolve())
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(resolved).name or "root").strip("._") or "folder"
    return f"{name[:40]}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}-{image_size}px-{mode}"


# ----------------------------------------------------------------------------- labels

def _read_labels_file(root):
    """The bytes of ``root/dataset.json``; None when there is none; a DataError (returned, raised only when
    the labels are asked for) when it cannot be read."""
    path = root / LABELS_FILE
    try:
        with open_regular(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:  # NotRegularFile too: a FIFO named dataset.json is never read
        return DataError(f"cannot read {shown(path)} ({getattr(e, 'kind', None) or e.strerror or e})")


def folder_labels(root, entries, files, labels_file):
    """(labels int64 (len(files),) or None, class names or None, problem line or None) of the kept image
    ``files`` (relative paths) of the folder whose image files are ``entries``; ``labels_file``: the bytes
    of dataset.json or None (then class sub-folders, or no labels)."""
    if isinstance(labels_file, DataError):
        return None, None, str(labels_file)
    try:
        if labels_file is not None:
            return (*_labels_from_file(root, entries, files, labels_file), None)
        return (*_labels_from_folders(root, entries, files), None)
    except DataError as e:
        return None, None, str(e)


def _labels_from_folders(root, entries, files):
    """ImageFolder's classes: the sorted top-level sub-folders; none when an image lies directly in ``root``."""
    tops = [rel.split("/", 1)[0] if "/" in rel else None for rel, _, _ in entries]
    if None in tops:
        return None, None
    classes = tuple(sorted(set(tops)))
    index = {name: k for k, name in enumerate(classes)}
    labels = np.array([index[rel.split("/", 1)[0]] for rel in files], dtype=np.int64)
    _check_every_class(root, labels, classes, "")
    return labels, classes


def _labels_from_file(root, entries, files, raw):
    """The labels of StyleGAN's dataset.json, checked: every image labelled, every listed file there, ints."""
    where = f"{shown(root / LABELS_FILE)}"
    form = '{"labels": [["img00000.png", 6], ...]}'
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{where} is not JSON ({shown(' '.join(str(e).split())[:80])}); expected {form}") from None
    if not isinstance(doc, dict) or "labels" not in doc:
        raise DataError(f"{where} has no \"labels\" key; expected StyleGAN's dataset_tool format {form}")
    pairs = doc["labels"]
    if pairs is None:  # dataset_tool writes null for an unlabelled dataset
        return None, None
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                              for p in pairs):
        raise DataError(f"{where}: \"labels\" must be a list of [file, label] pairs, as {form}")
    given = {}
    for name, label in pairs:
        if isinstance(label, bool) or not isinstance(label, int):
            raise DataError(f"{where}: the label of {shown(name)} is {shown(json.dumps(label))}, not an integer "
                            "class index")
        if name in given:
            raise DataError(f"{where} lists {shown(name)} twice")
        given[name] = label
    classes = doc.get("classes")
    names_ok = isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes)
    if classes is not None and not (names_ok and len(set(classes)) == len(classes)):
        raise DataError(f"{where}: \"classes\" must be a list of distinct, non-empty class names")
    bad = next((name for name, label in given.items()
                if label < 0 or (classes is not None and label >= len(classes))), None)
    if bad is not None:
        top = f"0 to {len(classes) - 1} (its \"classes\" names {len(classes)})" if classes else "0 or more"
        raise DataError(f"{where}: the label of {shown(bad)} is {given[bad]}, out of range: labels are {top}")
    images = {rel for rel, _, _ in entries}
    absent = sorted(set(given) - images)
    if absent:
        many = len(absent) > 1
        raise DataError(f"{where} lists {len(absent)} file{'s' if many else ''} that {'are' if many else 'is'} "
                        f"not an image file of the folder (first: {shown(absent[0])}); paths are relative to the "
                        "folder, with forward slashes")
    unlabelled = sorted(images - set(given))
    if unlabelled:
        raise DataError(f"{where} gives no label for {len(unlabelled)} of the {len(images)} images (first: "
                        f"{shown(unlabelled[0])})")
    labels = np.array([given[rel] for rel in files], dtype=np.int64)
    classes = tuple(classes) if classes is not None else tuple(str(k) for k in range(max(given.values()) + 1))
    _check_every_class(root, labels, classes, f" (labelled by {LABELS_FILE})")
    return labels, classes


def _check_every_class(root, labels, classes, how):
    """DataError naming the first class with no readable image: a label a conditional G would never see."""
    counts = np.bincount(labels, minlength=len(classes))
    empty = [k for k in range(len(classes)) if counts[k] == 0]
    if empty:
        k = empty[0]
        more = f" and {len(empty) - 1} more" if len(empty) > 1 else ""
        raise DataError(f"image folder {shown(root)}{how}: class {k} ({shown(classes[k])}){more} has no readable "
                        "image")


# ----------------------------------------------------------------------------- one image

def _to_8bit(img):
    """16-bit and float greys to 8-bit "L" by scaling (Pillow's convert("L") would clip at 255)."""
    a = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.size and a.max() > 255):
        a = np.round(a.astype(np.float64) / 257.0)
    elif img.mode == "F" and a.size and np.nanmax(a) <= 1.0:
        a = a.astype(np.float64) * 255.0
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8), "L")


def transform_image(img, image_size, mode):
    """A loaded PIL image -> uint8 (C, S, S): convert to ``mode``, resize the shorter side to S
    (bicubic, antialiased), crop the central S x S square (torchvision's Resize + CenterCrop)."""
    S = image_size
    if img.width == 0 or img.height == 0:  # the resize below would divide by zero
        raise EmptyImage(f"empty image ({img.width}x{img.height} pixels)")
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = _to_8bit(img)
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the direct P -> RGB conversion warns about it; the result is the same
    if img.mode != mode:
        img = img.convert(mode)
    w, h = img.size
    if w <= h:
        ow, oh = S, int(S * h / w)   # torchvision: new_long = int(size * long / short)
    else:
        ow, oh = int(S * w / h), S
    if (ow, oh) != (w, h):
        img = img.resize((ow, oh), Image.Resampling.BICUBIC)
    left, top = int(round((ow - S) / 2.0)), int(round((oh - S) / 2.0))
    if (ow, oh) != (S, S):
        img = img.crop((left, top, left + S, top + S))
    x = np.asarray(img, dtype=np.uint8)           # (S, S) or (S, S, 3)
    return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)   # -> (C, S, S)


class EmptyImage(ValueError):
    """An image of 0 pixels in width or height: nothing to resize."""


def _reason(error, size):
    if isinstance(error, NotRegularFile):  # a FIFO has size 0 too, but "empty file" would not say what it is
        return f"{error.kind}, not a regular file"
    if size == 0:
        return "empty file"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image Pillow can read"
    text = " ".join(str(error).split()) or type(error).__name__
    return shown(text if len(text) <= 100 else text[:97] + "...")  # an error's text may quote the file's name


def decode_image(path, image_size, mode):
    """Open, fully decode and transform one file -> uint8 (C, S, S); raises on any unreadable file.

    Opened only when it is a regular file (``idx.open_regular``: a FIFO named pipe.png never blocks).
    """
    with open_regular(path) as f, Image.open(f) as img:
        w, h = img.size
        if img.format == "JPEG" and min(w, h) >= 4 * image_size:
            # libjpeg's DCT scaling: keep >= 2 * image_size on the short side for the bicubic resize
            short = min(w, h)
            img.draft(None, (max(1, w * 2 * image_size // short), max(1, h * 2 * image_size // short)))
        img.load()  # decode now: a truncated or corrupt file fails here, inside the try of the caller
        img = ImageOps.exif_transpose(img)
        return transform_image(img, image_size, mode)


# ----------------------------------------------------------------------------- cache files

def _read_manifest(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _open_cached(npy, manifest_path, key, shape_tail):
    """The cached memmap and its manifest when both are complete and match ``key``; else None."""
    manifest = _read_manifest(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or manifest.get("key") != key:
        return None
    try:
        images = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    n = manifest.get("n")
    if (not isinstance(images, np.memmap) or images.dtype != np.uint8
            or images.shape != (n, *shape_tail) or len(manifest.get("files", ())) != n):
        return None
    return images, manifest


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_stale(cache, stem, keep_key, log):
    """Delete older caches of the same (folder, size, mode): their key can never match again."""
    removed = 0
    for manifest_path in cache.glob(f"{stem}-*.json"):
        manifest = _read_manifest(manifest_path)
        if not isinstance(manifest, dict) or manifest.get("key") == keep_key:
            continue
        try:
            _unlink(manifest_path)  # manifest first: a cache without one is never used
            _unlink(manifest_path.with_suffix(".npy"))
            removed += 1
        except OSError:  # e.g. still mapped by another process on Windows: harmless, retried next time
            pass
    if removed and log:
        log(f"removed {removed} outdated cache{'s' if removed > 1 else ''} of this folder from {shown(cache)}")


# ----------------------------------------------------------------------------- decoding

def _decode_all(root, rels, sizes, out, image_size, mode, workers, bar):
    """Decode every file into ``out[i]``; returns {i: reason} for the files that failed."""
    failed = {}

    def work(start):
        errors = {}
        for i in range(start, min(start + _CHUNK, len(rels))):
            try:
                out[i] = decode_image(root / rels[i], image_size, mode)
            except Exception as e:  # noqa: BLE001  any failure of one file skips that file, never the run
                errors[i] = _reason(e, sizes[i])
        return errors

    starts = range(0, len(rels), _CHUNK)
    if workers == 1:
        for start in starts:
            failed.update(work(start))
            if bar is not None:
                bar.update(min(_CHUNK, len(rels) - start))
        return failed
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scratchgan-decode")
    try:
        futures = {pool.submit(work, start): start for start in starts}
        for future in concurrent.futures.as_completed(futures):
            failed.update(future.result())
            if bar is not None:
                bar.update(min(_CHUNK, len(rels) - futures[future]))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: stop queued chunks, finish running ones
    return failed


def _progress_bar(total, progress, log):
    """A tqdm bar (stderr) when asked, or by default when ``log`` is given and stderr is a terminal."""
    if progress is None:
        progress = log is not None and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="img", desc="decoding", leave=False, dynamic_ncols=True)


def _skipped_line(skipped, total, folder):
    names = "; ".join(f"{shown(rel)} ({why})" for rel, why in skipped[:_MAX_SKIPPED_SHOWN])
    more = f"; and {len(skipped) - _MAX_SKIPPED_SHOWN} more" if len(skipped) > _MAX_SKIPPED_SHOWN else ""
    return (f"skipped {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''} of {total} in "
            f"{shown(folder)}: {names}{more}")


def _build(root, entries, image_size, channels, mode, key, npy, manifest_path, workers, log, progress, labels_file):
    """Decode the folder into a temp .npy beside ``npy``, then rename it and its manifest into place."""
    rels = [rel for rel, _, _ in entries]
    sizes = [size for _, size, _ in entries]
    S, total = image_size, len(entries)
    if log:
        log(f"decoding {total} images from {shown(root)} to {S}x{S} {mode} with {workers} thread"
            f"{'s' if workers > 1 else ''} (once; cached in {shown(npy.parent)}) ...")
    t0 = time.perf_counter()

    def memmap(path, n):
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, channels, S, S))

    # the temp .part.npy becomes ``npy`` only if everything below succeeds; any failure removes it
    with atomic_path(npy, suffix=".part.npy") as tmp:
        out = memmap(tmp, total)
        bar = _progress_bar(total, progress, log)
        try:
            failed = _decode_all(root, rels, sizes, out, S, mode, workers, bar)
        finally:
            if bar is not None:
                bar.close()
        good = [i for i in range(total) if i not in failed]
        skipped = [(rels[i], failed[i]) for i in sorted(failed)]
        if not good:
            names = "; ".join(f"{shown(rel)} ({why})" for rel, why in skipped[:3])
            raise DataError(f"image folder {shown(root)}: none of its {total} image files could be read "
                            f"({names}{'; ...' if total > 3 else ''})")
        if skipped:  # compact the good rows into an array of exactly N_good (skips are rare: one copy)
            with atomic_path(tmp, durable=False, suffix=".part.npy") as tmp_good:  # replaces the full one
                compact = memmap(tmp_good, len(good))
                for j in range(0, len(good), 4096):
                    compact[j:j + 4096] = out[good[j:j + 4096]]
                compact.flush()
                del compact, out  # unmapped before the rename (Windows cannot replace a mapped file)
        else:
            out.flush()
            del out
    seconds = time.perf_counter() - t0
    manifest = {
        "format": MANIFEST_FORMAT, "key": key, "folder": str(root), "image_size": S,
        "channels": channels, "mode": mode, "transform": TRANSFORM_VERSION,
        "n": len(good), "n_image_files": total, "shape": [len(good), channels, S, S],
        "seconds": round(seconds, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": [rels[i] for i in good], "skipped": [list(s) for s in skipped],
    }
    labels, classes, problem = folder_labels(root, entries, manifest["files"], labels_file)
    manifest.update(labels=None if labels is None else labels.tolist(), classes=classes, label_problem=problem)
    with atomic_write(manifest_path, suffix=".part.json") as f:  # renamed in last: it marks the cache complete
        f.write(json.dumps(manifest, indent=1).encode("utf-8"))
    if log:
        if skipped:
            log(_skipped_line(skipped, total, root))
        rate = total / seconds if seconds > 0 else float("inf")
        log(f"decoded {len(good)} images from {shown(root)} in {seconds:.1f} s ({rate:.0f} images/s) -> {shown(npy)}")
    return skipped


# ----------------------------------------------------------------------------- public API

def open_image_folder(folder, image_size=64, channels=3, cache_dir=None, log=None, workers=None, *,
                      progress=None) -> ImageFolder:
    """Decode ``folder`` once (or reuse its cache) -> an ``ImageFolder`` (images, files, skipped, ...).

    Arguments as ``load_image_folder``; this form also says which files were kept and skipped.
    """
    S = _check_size(image_size)
    C, mode = _channels_mode(channels)
    workers = _check_workers(workers)
    root = Path(folder).expanduser()
    entries, others = _scan_with_images(root)
    root = root.resolve()

    cache = Path(cache_dir).expanduser() if cache_dir is not None else data_root() / "folders"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the image cache folder {shown(cache)} ({e.strerror or e}); set "
                        "SCRATCHGAN_DATA or pass cache_dir= a writable folder") from None
    labels_file = _read_labels_file(root)
    key = cache_key(root, S, C, entries, labels_file)
    stem = _cache_stem(root, S, mode)
    npy = cache / f"{stem}-{key[:16]}.npy"
    manifest_path = npy.with_suffix(".json")

    hit = _open_cached(npy, manifest_path, key, (C, S, S))
    if hit is not None:
        images, manifest = hit
        skipped = tuple(tuple(s) for s in manifest.get("skipped", ()))
        if log:
            note = f"; {len(skipped)} unreadable file{'s' if len(skipped) > 1 else ''} left out" if skipped else ""
            log(f"using the cached {len(images)} images of {shown(root)} ({S}x{S} {mode}{note}): {shown(npy)}")
        return ImageFolder(images, tuple(manifest["files"]), skipped, root, npy, True,
                           *_manifest_labels(manifest, root, entries, labels_file))

    leftovers = list(cache.glob(f".{stem}-*.part.*"))
    if leftovers and log:
        log(f"ignoring {len(leftovers)} partial cache file{'s' if len(leftovers) > 1 else ''} of an "
            f"interrupted run in {shown(cache)} (safe to delete unless another run is decoding this folder now)")
    try:
        skipped = _build(root, entries, S, C, mode, key, npy, manifest_path, workers, log, progress, labels_file)
    except OSError as e:
        raise DataError(f"cannot write the image cache {shown(npy)} ({e.strerror or e}); set SCRATCHGAN_DATA "
                        "or pass cache_dir= a writable folder with room for it") from None
    _remove_stale(cache, stem, key, log)
    hit = _open_cached(npy, manifest_path, key, (C, S, S))
    if hit is None:  # only if another process deleted it in between
        raise DataError(f"the image cache {shown(npy)} vanished right after it was written")
    images, manifest = hit
    return ImageFolder(images, tuple(manifest["files"]), tuple(skipped), root, npy, False,
                       *_manifest_labels(manifest, root, entries, labels_file))


def _manifest_labels(manifest, root, entries, labels_file):
    """(labels, classes, problem) as the manifest records them; a cache of an earlier release has none:
    computed from its file list then (the images are what is costly)."""
    if "labels" not in manifest:
        return folder_labels(root, entries, manifest["files"], labels_file)
    labels, classes = manifest["labels"], manifest.get("classes")
    ok = isinstance(labels, list) and len(labels) == len(manifest["files"]) and isinstance(classes, list)
    if not ok:
        return None, None, manifest.get("label_problem")
    return np.array(labels, dtype=np.int64), tuple(classes), None


def _scan_with_images(root):
    """scan_image_folder(root), DataError when it holds no image file."""
    entries, others = scan_image_folder(root)
    if not entries:
        seen = (f"only {len(others)} other file{'s' if len(others) > 1 else ''} "
                f"({', '.join(map(shown, others[:3]))}{', ...' if len(others) > 3 else ''})") if others else "nothing"
        raise DataError(f"image folder {shown(root.resolve())}: no image files ({', '.join(IMAGE_EXTENSIONS)}, "
                        f"searched recursively, hidden files left out); found {seen}")
    return entries, others


def listing_labels(folder):
    """(class names or None, problem line or None) of ``folder`` from its listing and dataset.json alone, as
    the labels would be: a dry run's check (nothing decoded; a class whose images all turn out unreadable
    is found by the real run)."""
    root = Path(folder).expanduser()
    entries, _ = _scan_with_images(root)
    _, classes, problem = folder_labels(root.resolve(), entries, [rel for rel, _, _ in entries],
                                        _read_labels_file(root))
    return classes, problem


def count_image_folder(folder):
    """The number of images under ``folder``, checked as ``open_image_folder`` checks it: the folder is
    listed, nothing is decoded."""
    return len(_scan_with_images(Path(folder).expanduser())[0])


def load_image_folder(folder, image_size=64, channels=3, cache_dir=None, log=None, workers=None, *,
                      progress=None) -> np.ndarray:
    """All images under ``folder`` as a read-only np.memmap, uint8 (N, C, S, S), S = ``image_size``.

    Decoded once (resize the shorter side to S, bicubic, then center-crop S x S; ``channels`` 3 = "RGB"
    or 1 = "L") with ``workers`` threads (default: ``backend.cpu_threads()``, the usable cores) into a
    cached .npy under ``cache_dir`` (default ``data_root()/"folders"``); later calls map that file and
    decode nothing. ``log``: a
    callable for progress lines (start, end with the time, skipped files); ``progress``: a tqdm bar
    (default: when ``log`` is given and stderr is a terminal). Raises DataError for a missing folder,
    no image files, or no readable image. ``open_image_folder`` gives the file names and skips too.
    """
    return open_image_folder(folder, image_size, channels, cache_dir, log, workers, progress=progress).images


# ----------------------------------------------------------------------------- demo folder

def make_demo_folder(out_dir, images, size=64, n=2048, seed=0, *, format="png", per_folder=500):
    """Write ``n`` tinted, upscaled copies of grey images (uint8 (N, 28, 28), e.g. Fashion-MNIST) as an
    image folder: ``out_dir/part-00/000000.png``, ... (``format`` "png" or "jpeg"); returns the paths.

    A stand-in for CelebA offline. Image k is grey image ``idx[k]`` (a seeded choice without
    replacement when n < N) resized to size x size (bicubic) and coloured per image:
    ``pixel = background * (1 - g) + foreground * g`` with g = grey / 255 and two random RGB colours.
    Deterministic in ``seed``. Written to a temp folder beside ``out_dir`` and renamed into place, so an
    interrupted call leaves no half folder; ``out_dir`` must not exist or be empty.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) == 0:
        raise ValueError(f"make_demo_folder expects uint8 grey images (N, H, W) with N > 0, "
                         f"got {images.dtype} {images.shape}")
    size = _check_size(size)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = min(int(n), len(images))
    fmt = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "jpg": ("JPEG", ".jpg")}.get(str(format).lower())
    if fmt is None:
        raise ValueError(f"format must be 'png' or 'jpeg', got {format!r}")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"demo folder {shown(out_dir)} already exists and is not empty; choose a new folder or "
                        "delete it")

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(images), size=n, replace=False)) if n < len(images) else np.arange(n)
    foreground = rng.uniform(0.35, 1.0, size=(n, 3))  # bright-ish garment colour
    background = rng.uniform(0.0, 0.45, size=(n, 3))  # dark-ish backdrop: the garment stays visible
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".part"))
    paths = []
    try:
        for k in range(n):
            grey = Image.fromarray(images[idx[k]]).resize((size, size), Image.Resampling.BICUBIC)
            g = np.asarray(grey, dtype=np.float64)[..., None] / 255.0                  # (S, S, 1)
            rgb = background[k] * (1.0 - g) + foreground[k] * g                        # (S, S, 3)
            img = Image.fromarray(np.round(rgb * 255.0).astype(np.uint8), "RGB")
            rel = Path(f"part-{k // per_folder:02d}") / f"{k:06d}{fmt[1]}"
            (tmp / rel.parent).mkdir(exist_ok=True)
            img.save(tmp / rel, fmt[0], **({"quality": 95} if fmt[0] == "JPEG" else {}))
            paths.append(out_dir / rel)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); os.replace cannot rename onto a folder on every OS
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return paths

