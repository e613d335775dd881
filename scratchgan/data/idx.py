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

A gzipped file is decompressed no further than its header declares (``load_idx_bytes``): the
payload goes straight into an array of the declared size, so a stream that holds more (a gzip bomb)
never fills memory. Verified downloads are capped tighter, at the official file's size (mnist.py).

File names reach messages through ``shown``: a name with an escape code or a newline in it is
printed as Python's repr would write it, so it can never drive the terminal or fake a log line.
"""
from __future__ import annotations

import gzip
import io
import os
import stat
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


_CHUNK = 1 << 20   # bytes decompressed per read into the payload array
_PROBE = 1 << 20   # bytes read past a gzipped payload to count extra bytes (and reach the CRC check)


class DataError(Exception):
    """A dataset file is missing, corrupt or cannot be fetched; the message says which and what to do."""


class TooLarge(DataError):
    """A gzip stream that decompresses to more than the cap it was read with."""


def shown(name) -> str:
    """A file name as it may be printed: unchanged when every character is printable, else Python's
    repr of it ('x\\n\\x1b[2J.png'), so escape codes and newlines in a name never reach the terminal raw."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    return text if text.isprintable() else repr(text)


def _file_kind(mode) -> str:
    """What a file that is not a regular file is, in words."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


class NotRegularFile(OSError):
    """A path that is a FIFO, a socket, a device or a folder where a data file was expected."""

    def __init__(self, path, mode):
        self.kind = _file_kind(mode)
        super().__init__(f"{shown(path)} is {self.kind}, not a regular file")


def open_regular(path):
    """Open ``path`` for reading (binary) only when it is a regular file (symlinks followed).

    Reading a FIFO blocks until something writes to it, and a device can be endless: both would hang
    a run. Checked before opening (opening a socket fails, opening some devices acts), and again on
    the open file itself, opened without blocking, so a file swapped for a FIFO in between is still
    caught. Raises NotRegularFile (an OSError) otherwise.
    """
    mode = os.stat(path).st_mode  # before opening: opening a socket fails, opening a device may act
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
                 | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_file(path, what="a data file") -> bytes:
    """The bytes of the regular file ``path``; DataError naming it when it cannot be read, is not a
    regular file, or does not fit in memory (checked against its size, not by a traceback)."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            try:
                return f.read()
            except MemoryError:
                raise DataError(f"{shown(path)}: {size:,} bytes, more than this machine can hold in memory; "
                                f"expected {what}") from None
    except NotRegularFile as e:
        raise DataError(f"{e}; expected {what}") from None
    except OSError as e:
        raise DataError(f"{shown(path)}: cannot read ({e.strerror or e})") from None


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
    source = shown(source)
    try:
        if max_bytes is None:
            return gzip.decompress(raw)
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            content = f.read(max_bytes + 1)
        if len(content) > max_bytes:
            raise TooLarge(f"{source}: decompresses to more than {max_bytes:,} bytes, the size of the file it "
                           "should be; not the dataset file")
        return content
    except EOFError:
        raise DataError(f"{source}: truncated gzip stream (the file ends before the compressed data does; "
                        "delete it and fetch it again)") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; bad CRC, bad header, bad deflate
        raise DataError(f"{source}: corrupt gzip stream ({e})") from None


def _header(data: bytes, source):
    """(payload dtype, shape, header length, item count) from the first bytes of an IDX file.

    Checks the magic number, the type code and that the header is complete; DataError otherwise.
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
    # Python ints: no overflow however absurd the sizes in a corrupt header are
    count = 1
    for size in shape:
        count *= size
    return IDX_TYPES[type_code], shape, header_len, count


def _short_payload(source, shape, dtype, expected, found):
    return DataError(f"{source}: truncated IDX payload, shorter than its header says (shape {shape} of {dtype.name} "
                     f"needs {expected} bytes after the header, found {found})")


def _long_payload(source, shape, dtype, expected, extra):
    return DataError(f"{source}: {extra} extra bytes after the IDX payload, longer than its header says (shape "
                     f"{shape} of {dtype.name} needs exactly {expected}); the file is corrupt or its header wrong")


def parse_idx(data: bytes, source="<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into a new, writable, native-byte-order array.

    Checks the magic number, the type code, that the header is complete and that the payload is
    exactly prod(sizes) items long; any mismatch raises DataError naming ``source``.
    """
    source = shown(source)
    dtype, shape, header_len, count = _header(data, source)
    expected = count * dtype.itemsize
    found = len(data) - header_len
    if found < expected:
        raise _short_payload(source, shape, dtype, expected, found)
    if found > expected:
        raise _long_payload(source, shape, dtype, expected, found - expected)
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len).reshape(shape)
    # astype copies: the result owns writable memory in native byte order (frombuffer's is read-only)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _allocate(count, dtype, shape, source):
    """An empty array for the payload a header declares; DataError naming the file when it cannot be had."""
    try:
        return np.empty(count, dtype=dtype)
    except (MemoryError, ValueError):  # ValueError: larger than any array NumPy can index
        raise DataError(f"{source}: its IDX header declares shape {shape} of {dtype.name} "
                        f"({count * dtype.itemsize:,} bytes), more than this machine can hold; the header is "
                        "corrupt or the file too large") from None


def _read_gzip_stream(f, source):
    """The IDX array inside the open gzip stream ``f``, decompressed no further than its header says."""
    head = f.read(4)
    if len(head) == 4:
        head += f.read(4 * head[3])
    dtype, shape, _, count = _header(head, source)
    expected = count * dtype.itemsize
    array = _allocate(count, dtype, shape, source)
    payload = memoryview(array.view(np.uint8))  # the decompressed bytes land here, no intermediate copy
    filled = 0
    while filled < expected:
        n = f.readinto(payload[filled:filled + _CHUNK])
        if not n:
            break
        filled += n
    if filled < expected:
        raise _short_payload(source, shape, dtype, expected, filled)
    # read on past the payload: to the end of a stream that ends soon (so its CRC and length are
    # checked), never more than _PROBE bytes of one that does not
    extra = len(f.read(_PROBE + 1))
    if extra:
        counted = f"{extra:,}" if extra <= _PROBE else f"more than {_PROBE:,}"
        raise _long_payload(source, shape, dtype, expected, counted)
    if not dtype.isnative:
        array.byteswap(inplace=True)
    return array.view(dtype.newbyteorder("=")).reshape(shape)


def load_idx_bytes(raw: bytes, source="<bytes>") -> np.ndarray:
    """The array in ``raw``, an IDX file's bytes, raw or gzipped (told by the magic bytes).

    A gzip stream is decompressed straight into an array of the size its header declares, and no
    further: a file whose data is shorter or longer than its header says is a DataError naming
    ``source``, and a stream that would decompress to gigabytes is refused after the header's size.
    """
    source = shown(source)
    if not is_gzip(raw):
        return parse_idx(raw, source)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            return _read_gzip_stream(f, source)
    except EOFError:
        raise DataError(f"{source}: truncated gzip stream (the file ends before the compressed data does; "
                        "delete it and fetch it again)") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; bad CRC, bad header, bad deflate
        raise DataError(f"{source}: corrupt gzip stream ({e})") from None


def read_idx(path) -> np.ndarray:
    """Read an IDX file, raw or gzipped (told by its magic bytes), into a NumPy array.

    Raises DataError, naming the file, when it cannot be read, is not a regular file or is not a
    valid IDX file (a gzipped one is decompressed no further than its header declares).
    """
    path = os.fspath(path)
    return load_idx_bytes(read_file(path, "an IDX file"), path)
