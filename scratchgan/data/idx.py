"""IDX files: the tiny binary format of MNIST and Fashion-MNIST, read with nothing but NumPy.

Layout (all integers big-endian)::

    bytes 0-1   0x00 0x00                magic: always zero
    byte  2     type code                0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                         0x0D float32, 0x0E float64
    byte  3     ndim                     number of dimensions
    4*ndim      uint32 sizes             e.g. 10000, 28, 28
    payload     prod(sizes) items        row-major (C order)

A file may be gzipped; that is told by its first two bytes (1f 8b), never by its name. Every way a
file can be wrong (bad magic, unknown type, missing header bytes, a payload too short or too long,
a broken gzip stream) is a ``DataError`` with one line that names the file: a parser that returns
a silently wrong array would poison a whole training run.
"""
from __future__ import annotations

import gzip
import io
import os
import zlib

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> big-endian NumPy dtype of the payload
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(Exception):
    """A dataset file is missing, corrupt or cannot be fetched; the message says which and what to do."""


def is_gzip(raw: bytes) -> bool:
    """True when ``raw`` starts with the gzip magic bytes 1f 8b."""
    return raw[:2] == GZIP_MAGIC


def decode_bytes(raw: bytes, source="<bytes>", max_bytes=None) -> bytes:
    """The IDX bytes inside ``raw``: gunzipped when it is a gzip stream, else ``raw`` itself.

    A truncated or corrupt gzip stream becomes a DataError naming ``source``, not an
    EOFError / BadGzipFile traceback from deep inside the gzip module. ``max_bytes``: a stream that
    would decompress to more is refused after reading max_bytes + 1 (a gzip bomb never fills memory).
    """
    if not is_gzip(raw):
        return raw
    try:
        if max_bytes is None:
            return gzip.decompress(raw)
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            content = f.read(max_bytes + 1)
        if len(content) > max_bytes:
            raise DataError(f"{source}: decompresses to more than {max_bytes:,} bytes, the size of the file it "
                            "should be; not the dataset file")
        return content
    except EOFError:
        raise DataError(f"{source}: truncated gzip stream (the file ends before the compressed data does; "
                        "delete it and fetch it again)") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; bad CRC, bad header, bad deflate
        raise DataError(f"{source}: corrupt gzip stream ({e})") from None


def parse_idx(data: bytes, source="<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into a new, writable, native-byte-order array.

    Checks the magic number, the type code, that the header is complete and that the payload is
    exactly prod(sizes) items long; any mismatch raises DataError naming ``source``.
    """
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file ({len(data)} bytes, shorter than the 4-byte magic number)")
    zero, type_code, ndim = int.from_bytes(data[0:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in IDX_TYPES:
        raise DataError(f"{source}: not an IDX file (bad magic number 0x{data[:4].hex()}; expected 0x0000 "
                        f"then a type code in {{{', '.join(f'0x{c:02x}' for c in IDX_TYPES)}}} and ndim)")
    if ndim == 0:
        raise DataError(f"{source}: IDX header says 0 dimensions; expected at least 1")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes; {ndim} dimensions need {header_len})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[type_code]
    # Python ints: no overflow however absurd the sizes in a corrupt header are
    count = 1
    for size in shape:
        count *= size
    expected = count * dtype.itemsize
    found = len(data) - header_len
    if found < expected:
        raise DataError(f"{source}: truncated IDX payload (shape {shape} of {dtype.name} needs {expected} bytes "
                        f"after the header, found {found})")
    if found > expected:
        raise DataError(f"{source}: {found - expected} extra bytes after the IDX payload (shape {shape} of "
                        f"{dtype.name} needs exactly {expected}); the file is corrupt or not what its header says")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len).reshape(shape)
    # astype copies: the result owns writable memory in native byte order (frombuffer's is read-only)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path) -> np.ndarray:
    """Read an IDX file, raw or gzipped (told by its magic bytes), into a NumPy array.

    Raises DataError, naming the file, when it cannot be read or is not a valid IDX file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_idx(decode_bytes(raw, path), path)
