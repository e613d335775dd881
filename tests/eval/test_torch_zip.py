"""scratchgan.eval.torch_zip: torch.save files read as NumPy arrays, without torch and without running code.

PyTorch writes the files (both layouts: zip and the legacy stream); the reader's arrays must equal torch's
tensors exactly, whatever their dtype, strides or offsets. Crafted pickles that would call a function
are refused before anything runs.
"""
import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from scratchgan.eval.torch_zip import TorchFileError, read_state_dict

from layer_cases import import_torch as _torch


def _state(torch):
    """A state dict of several dtypes, with non-contiguous, offset and empty tensors sharing storages."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 7, generator=g, dtype=torch.float64)
    conv = torch.nn.Conv2d(3, 4, 3)
    return collections.OrderedDict(
        f32=torch.randn(3, 4, generator=g), f64=base, f16=torch.randn(5, generator=g).half(),
        bf16=torch.randn(5, generator=g).bfloat16(), i64=torch.arange(-3, 10), i32=torch.arange(5, dtype=torch.int32),
        i16=torch.arange(4, dtype=torch.int16), i8=torch.arange(-2, 3, dtype=torch.int8),
        u8=torch.arange(7, dtype=torch.uint8), flags=torch.tensor([True, False, True]), scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3), transposed=base.t(), offset=base[2:, 1:6:2], row=base[4],
        channels_last=torch.randn(2, 3, 4, 5, generator=g).to(memory_format=torch.channels_last),
        param=conv.weight,  # an nn.Parameter
    )


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reads_what_torch_saved(tmp_path, layout):
    torch = _torch()
    state = _state(torch)
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=layout == "zip")
    got = read_state_dict(path)
    assert list(got) == list(state)
    for name, tensor in state.items():
        tensor = tensor.detach()
        expected = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        assert got[name].dtype == expected.dtype, name
        assert got[name].shape == expected.shape, name
        assert got[name].flags.c_contiguous and got[name].flags.writeable, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)


def test_reads_a_module_state_dict_and_nested_dicts(tmp_path):
    torch = _torch()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4))
    torch.save({"model": net.state_dict()}, tmp_path / "nested.pth")
    got = read_state_dict(tmp_path / "nested.pth")
    assert sorted(got) == sorted(f"model.{k}" for k in net.state_dict())
    np.testing.assert_array_equal(got["model.0.weight"], net[0].weight.detach().numpy())
    assert got["model.1.num_batches_tracked"].dtype == np.int64


class _RunsSystem:
    """Pickles as os.system(command): what a crafted checkpoint would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _crafted_zip(path, obj):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_pickle_that_calls_os_system_is_refused(tmp_path, layout):
    marker = tmp_path / "ran"
    payload = {"weight": _RunsSystem(f"touch {marker}")}
    path = tmp_path / "evil.pth"
    if layout == "zip":
        _crafted_zip(path, payload)
    else:
        buf = io.BytesIO()
        for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, payload, []):
            pickle.dump(part, buf, protocol=2)
        path.write_bytes(buf.getvalue())
    with pytest.raises(TorchFileError) as e:
        read_state_dict(path)
    message = str(e.value)
    assert "\n" not in message and "evil.pth" in message
    assert "refused to load" in message and "system" in message
    assert not marker.exists()


def test_other_objects_and_damaged_files_are_one_clear_line(tmp_path):
    _crafted_zip(tmp_path / "list.pth", {"w": [1, 2, 3]})  # allowed opcodes, but not a tensor
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    _crafted_zip(tmp_path / "builtins.pth", {"w": collections.Counter("ab")})  # a harmless class, still refused
    with zipfile.ZipFile(tmp_path / "empty.pth", "w") as zf:
        zf.writestr("archive/version", "3\n")
    for name, words in [("list.pth", "holds a list, not a tensor"), ("junk.pth", "neither a zip nor a legacy"),
                        ("builtins.pth", "refused to load collections.Counter"),
                        ("empty.pth", "without one PREFIX/data.pkl"), ("missing.pth", "cannot read")]:
        with pytest.raises(TorchFileError) as e:
            read_state_dict(tmp_path / name)
        assert words in str(e.value) and "\n" not in str(e.value), (name, str(e.value))


def test_a_tensor_past_its_storage_is_refused(tmp_path):
    torch = _torch()
    path = tmp_path / "short.pth"
    torch.save({"w": torch.arange(12, dtype=torch.float32)}, path)
    with zipfile.ZipFile(path) as zf:  # cut the storage to 8 elements: the tensor's 12 no longer fit
        members = {n: zf.read(n) for n in zf.namelist()}
    storage = next(n for n in members if "/data/" in n)
    members[storage] = members[storage][:32]
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(TorchFileError, match="fewer than its 12 elements"):
        read_state_dict(path)
