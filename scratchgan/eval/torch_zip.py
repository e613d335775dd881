"""Read a PyTorch state_dict file (``torch.save``) as NumPy arrays, without torch and without running its pickle.

A ``torch.save`` file is one of two layouts:
  zip (torch >= 1.6):  PREFIX/data.pkl (the object, tensors as persistent ids), PREFIX/data/KEY (each
                       storage's raw bytes), PREFIX/byteorder ("little"), PREFIX/version
  legacy (older):      five pickles in a row (magic number, protocol, system info, the object, the storage
                       keys), then each storage as an int64 element count and its raw bytes
Either way the object is a pickle. A pickle is a program: its GLOBAL opcode imports any callable and REDUCE
calls it, so a crafted file can run ``os.system``. ``_Unpickler.find_class`` admits only the names a state
dict needs (as ``torch.load(weights_only=True)`` does), each mapped to a NumPy stand-in, never to torch:
  collections.OrderedDict                      the dict itself
  torch.FloatStorage, torch.LongStorage, ...   a storage type: its NumPy dtype
  torch._utils._rebuild_tensor_v2              (storage, offset, size, stride, ...) -> an array
  torch._utils._rebuild_parameter              (tensor, requires_grad, hooks) -> the same array
Anything else is refused with one line (TorchFileError); a tensor is a strided view of its storage,
copied: ``as_strided(storage[offset:], size, stride)``.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..data.idx import shown


class TorchFileError(ValueError):
    """The file is not a state dict this reader accepts (one line, naming the file)."""


# torch's legacy storage classes (what torch.save pickles as a tensor's storage type) -> NumPy dtypes
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",  # no NumPy dtype: read as uint16, widened to float32 (exact)
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy file (torch/serialization.py)


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co.: only its element type matters."""

    def __init__(self, name):
        self.name = name
        kind = _STORAGE_DTYPES[name]
        self.dtype = np.dtype(np.uint16 if kind == "bfloat16" else kind)
        self.bfloat16 = kind == "bfloat16"


class _Storage:
    """A storage named in the pickle: its key, element type and length (the bytes are read separately)."""

    def __init__(self, key, storage_type, numel):
        self.key, self.type, self.numel = key, storage_type, numel


class _Tensor:
    """A tensor as the pickle describes it: (storage, offset, size, stride); ``array`` rebuilds it."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage, self.offset = storage, int(storage_offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        if any(s < 0 for s in self.size + self.stride) or self.offset < 0:
            raise pickle.UnpicklingError(f"a tensor with negative size, stride or offset "
                                         f"({self.size}, {self.stride}, {self.offset})")

    def array(self, data):
        """The elements ``data[offset + sum_i idx_i stride_i]`` (data: the storage's flat array), copied."""
        size, stride, offset = self.size, self.stride, self.offset
        if all(size):
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= data.size:
                raise TorchFileError(f"a tensor of size {size}, stride {stride} and offset {offset} reaches past "
                                     f"its storage of {data.size} elements")
            base = data[offset:]
        else:
            base = data[:0]  # an empty tensor reads nothing
        view = np.lib.stride_tricks.as_strided(base, shape=size, strides=tuple(s * data.itemsize for s in stride),
                                               writeable=False)
        array = np.array(view, copy=True, order="C")
        if self.storage.type.bfloat16:  # bfloat16 is float32's upper half: shift it back
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor whose storage is not a storage")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """An ``nn.Parameter``: just its tensor."""
    return data


class _Unpickler(pickle.Unpickler):
    """Rebuilds only dicts of tensors: ``find_class`` is the allowlist, ``persistent_load`` names storages."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (only tensors and dicts are read)")

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, numel[, view metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:60]!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (a pre-1.0 torch format) are not supported")
        return _Storage(str(pid[2]), pid[1], int(pid[4]))


def _load(f):
    return _Unpickler(f).load()


def _tensors(obj, path, storage_data):
    """The loaded object as {name: array}: a (nested) dict of tensors, names joined with dots.
    ``storage_data(storage)`` is a storage's flat array."""
    if isinstance(obj, _Tensor):
        return {path: obj.array(storage_data(obj.storage))}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TorchFileError(f"a key that is not a string ({type(k).__name__})")
            out.update(_tensors(v, f"{path}.{k}" if path else k, storage_data))
        return out
    raise TorchFileError(f"{path or 'the file'} holds a {type(obj).__name__}, not a tensor")


def _storage_array(raw, storage, byteorder):
    """A storage's bytes -> its flat array of ``numel`` elements, in native byte order."""
    native = storage.type.dtype
    dtype = native.newbyteorder("<" if byteorder == "little" else ">")
    if len(raw) < storage.numel * dtype.itemsize:
        raise TorchFileError(f"storage {storage.key!r} holds {len(raw)} bytes, fewer than its {storage.numel} "
                             "elements")
    return np.frombuffer(raw, dtype=dtype, count=storage.numel).astype(native, copy=False)


def _read_zip(f):
    with zipfile.ZipFile(f) as zf:
        names = set(zf.namelist())
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise TorchFileError("a zip file without one PREFIX/data.pkl: not a torch.save file")
        prefix = pkl[0][:-len("data.pkl")]
        byteorder = "little"  # files older than the byteorder record were written little-endian
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise TorchFileError(f"unknown byte order {byteorder[:20]!r}")
        obj = _load(io.BytesIO(zf.read(pkl[0])))
        cache = {}

        def storage_data(storage):
            if storage.key not in cache:
                member = f"{prefix}data/{storage.key}"
                if member not in names:
                    raise TorchFileError(f"storage {storage.key!r} is missing from the archive")
                cache[storage.key] = _storage_array(zf.read(member), storage, byteorder)
            return cache[storage.key]

        return _tensors(obj, "", storage_data)


def _read_legacy(f):
    try:
        magic = _load(f)
    except pickle.UnpicklingError:
        magic = None
    if magic != _LEGACY_MAGIC:
        raise TorchFileError("neither a zip nor a legacy torch.save file")
    _load(f)  # the protocol version
    info = _load(f)  # {"protocol_version", "little_endian", "type_sizes"}
    byteorder = "little" if not isinstance(info, dict) or info.get("little_endian", True) else "big"
    obj = _load(f)
    keys = _load(f)  # the storages' keys, in the order their bytes follow
    seen = {}  # key -> a _Storage naming it (type and length)

    def collect(o):
        if isinstance(o, _Tensor):
            seen[o.storage.key] = o.storage
        elif isinstance(o, dict):
            for v in o.values():
                collect(v)
    collect(obj)
    data = {}
    for key in keys:
        key = str(key)
        if key not in seen:
            raise TorchFileError(f"storage {key!r} belongs to no tensor")
        storage = seen[key]
        head = f.read(8)  # the element count, int64 in the writer's byte order
        if len(head) != 8:
            raise TorchFileError("truncated storage data")
        count = struct.unpack("<q" if byteorder == "little" else ">q", head)[0]
        if count != storage.numel:
            raise TorchFileError(f"storage {key!r} holds {count} elements, its tensors say {storage.numel}")
        raw = f.read(count * storage.type.dtype.itemsize)
        data[key] = _storage_array(raw, storage, byteorder)

    def storage_data(storage):
        if storage.key not in data:
            raise TorchFileError(f"storage {storage.key!r} is missing from the file")
        return data[storage.key]

    return _tensors(obj, "", storage_data)


def read_state_dict(path):
    """{name: NumPy array} from a ``torch.save``d state dict at ``path`` (zip or legacy layout), loading only
    tensors and dicts. TorchFileError (one line, naming the file) for anything else or a damaged file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            zipped = zipfile.is_zipfile(f)
            f.seek(0)
            return _read_zip(f) if zipped else _read_legacy(f)
    except TorchFileError as e:
        raise TorchFileError(f"{shown(path)}: {e}") from None
    except OSError as e:
        raise TorchFileError(f"{shown(path)}: cannot read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, struct.error) as e:
        raise TorchFileError(f"{shown(path)}: not a state dict this reader accepts ({' '.join(str(e).split())})") \
            from None
