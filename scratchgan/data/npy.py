"""Your own images as one ``.npy`` file: checked, then brought to the uint8 the loader scales.

Accepted arrays (``np.load(path, allow_pickle=False)``: an object array, which would need pickle to
load, is refused, never unpickled):

    uint8  (N, H, W) or (N, C, H, W), C in {1, 3}        pixel values 0..255, taken as they are
    float  same shapes, every value in [0, 1] or [-1, 1]  the range is told by the minimum: a float
                                                          array with a value below 0 is read as [-1, 1]
    H == W (square images; the DCGAN resizes them to --image-size)

A float array is mapped to 0..255 with ``round(255 x)`` ([0, 1]) or ``round(127.5 (x + 1))``
([-1, 1]): the loader's ``x / 127.5 - 1`` then gives back the values to within half a grey level.
Everything else (another dtype, another rank, a channel count other than 1 or 3, empty images
(0x0 pixels or 0 channels), non-square images, NaN or Inf, floats outside both ranges, an empty
array, a file that is not a .npy or not a regular file) is a DataError with one line naming the file
(repr-escaped when its name holds control characters), what was found and what is expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .idx import DataError, NotRegularFile, open_regular, shown

_FLOATS = (np.float16, np.float32, np.float64)


def load_npy_images(path):
    """uint8 images (N, H, W) or (N, C, H, W) from the .npy file ``path``; DataError when it is not one."""
    path = Path(path).expanduser()
    name = shown(path)
    if path.is_dir():
        raise DataError(f"{name} is a folder; --dataset npy needs --data-dir FILE.npy, one array file")
    try:
        with open_regular(path) as f:  # a FIFO would block the read below forever
            magic = f.read(6)
    except FileNotFoundError:
        raise DataError(f"{name} does not exist; --dataset npy needs --data-dir FILE.npy") from None
    except NotRegularFile as e:
        raise DataError(f"{e}; --dataset npy needs --data-dir FILE.npy, one array file") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror or ' '.join(str(e).split())})") from None
    if magic != b"\x93NUMPY":  # np.load would take anything else for a pickle (or an .npz archive)
        what = "an .npz archive (save one array with np.save)" if magic[:2] == b"PK" else "not a .npy file"
        raise DataError(f"{name}: {what}; --dataset npy reads one array written by np.save(path, images)")
    try:
        # mmap: the checks below read the header and one pass over the values, no second copy in memory
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as e:  # object arrays: "Object arrays cannot be loaded when allow_pickle=False"
        if "pickle" in str(e) or "Python objects" in str(e):
            raise DataError(f"{name} holds Python objects (a pickled object array), which scratchgan never "
                            "loads; save a numeric array: np.save(path, images.astype(np.uint8))") from None
        raise DataError(f"{name}: not a readable .npy file ({' '.join(str(e).split())})") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read ({e.strerror or ' '.join(str(e).split())})") from None
    return check_images(array, name)


def check_images(array, source="array"):
    """Check an image array and return it as uint8 (see the module docstring); DataError otherwise."""
    shape = array.shape
    source = shown(source)
    if array.ndim not in (3, 4):
        raise DataError(f"{source}: expected images of shape (N, H, W) or (N, C, H, W), got {array.ndim} "
                        f"dimensions {shape}")
    if 0 in shape[1:]:  # before the channel and square checks: a 0x0 image is square, and trains on nothing
        what = "0 channels" if array.ndim == 4 and shape[1] == 0 else f"{shape[-2]}x{shape[-1]} pixels"
        raise DataError(f"{source}: holds empty images (shape {shape}: {what}); each image needs 1 or 3 channels "
                        "and at least 1x1 pixels")
    if array.ndim == 4 and shape[1] not in (1, 3):
        raise DataError(f"{source}: expected 1 or 3 channels in (N, C, H, W), got shape {shape} (channels last? "
                        "use np.moveaxis(images, -1, 1))")
    if shape[0] == 0:
        raise DataError(f"{source}: holds no images (shape {shape})")
    if shape[-1] != shape[-2]:
        raise DataError(f"{source}: images of {shape[-2]}x{shape[-1]} pixels are not square; crop them to H == W")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.type not in _FLOATS:
        raise DataError(f"{source}: dtype {array.dtype} is not supported; expected uint8 (0..255) or float "
                        "(in [0, 1] or [-1, 1])")
    x = np.asarray(array, dtype=np.float64)  # float16's range check and rounding done exactly
    finite = np.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        raise DataError(f"{source}: {bad:,} values are NaN or infinite; images must be finite")
    low, high = float(x.min()), float(x.max())
    if low >= 0.0 and high <= 1.0:
        scaled = np.rint(x * 255.0)
    elif low >= -1.0 and high <= 1.0:
        scaled = np.rint((x + 1.0) * 127.5)
    else:
        raise DataError(f"{source}: float values span [{low:g}, {high:g}]; expected [0, 1] or [-1, 1] "
                        "(or uint8 0..255)")
    return scaled.astype(np.uint8)


def count_npy_images(path):
    """The number of images of a .npy file, checked as ``load_npy_images`` checks it, on the header and the
    first image only."""
    path = Path(path).expanduser()
    if path.is_dir() or not path.exists():
        load_npy_images(path)  # its one line for a folder or a missing file
    try:
        with open_regular(path) as f:  # a FIFO named x.npy would block the read forever
            magic = f.read(6)
    except OSError:
        load_npy_images(path)  # its one line (names escaped) for a FIFO, a device or an unreadable file
        raise
    if magic != b"\x93NUMPY":
        load_npy_images(path)  # its one line for what the file is instead (nothing more is read)
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError):
        load_npy_images(path)  # raises its own line for the same file
        raise
    check_images(array[:1], str(path))  # ranks, channels, square, dtype; the values of the first image
    return len(array)
