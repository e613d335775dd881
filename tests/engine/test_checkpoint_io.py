"""Checkpoint round trips, atomicity under failure and clear errors for bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

from scratchgan.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "G/0.W": rng.standard_normal((5, 3)).astype(np.float32),
        "G/0.b": rng.standard_normal(3),                                  # float64
        "opt_G/m": rng.standard_normal(7).astype(np.float32),
        "opt_G/t": np.array(12, dtype=np.int64),                         # 0-d
        "rng/state": rng.integers(0, 2**31, size=4, dtype=np.int32),
        "file": np.arange(3),            # would collide with np.savez's own parameter name
        "allow_pickle": np.ones(2, dtype=np.uint8),
    }


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_round_trip_arrays_and_meta(tmp_path):
    arrays = _state()
    meta = {"step": 1200, "epoch": 3, "config": {"lr": 2e-4, "betas": [0.5, 0.999]},
            "loss": np.float32(0.5), "name": "mnist_mlp"}
    path = save_checkpoint(tmp_path / "sub" / "ckpt.npz", arrays, meta)
    assert path.exists() and _leftovers(path.parent) == []
    loaded, meta2 = load_checkpoint(path)
    assert list(loaded) == list(arrays)
    for k, a in arrays.items():
        assert loaded[k].dtype == a.dtype and loaded[k].shape == a.shape
        np.testing.assert_array_equal(loaded[k], a)
    assert meta2 == {**meta, "loss": 0.5}
    assert isinstance(loaded["G/0.W"], np.ndarray)  # in memory, not a lazy NpzFile view


def test_file_is_a_plain_npz(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", {"a.b/c": np.arange(4.0)}, {"x": 1})
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"a.b/c", "__meta__"}
        assert json.loads(str(npz["__meta__"])) == {"x": 1}
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.zeros(3)}, {"step": 1})
    save_checkpoint(path, {"w": np.ones(3)}, {"step": 2})
    arrays, meta = load_checkpoint(path)
    np.testing.assert_array_equal(arrays["w"], np.ones(3))
    assert meta == {"step": 2} and _leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failure_midway_keeps_old_checkpoint(tmp_path, monkeypatch, exc):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.zeros(3)}, {"step": 1})
    before = path.read_bytes()

    real_write_array = np.lib.format.write_array
    calls = []

    def write_then_fail(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"\x93NUMPY partial")  # some bytes really reach the temp file first
            raise exc
        return real_write_array(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(type(exc)):
        save_checkpoint(path, {"w": np.ones(1000), "v": np.ones(1000), "u": np.ones(3)}, {"step": 2})
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    arrays, meta = load_checkpoint(path)
    assert meta == {"step": 1}


def test_unserializable_value_keeps_old_checkpoint(tmp_path):
    class Exploding:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("cannot serialize")

    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.zeros(3)}, {"step": 1})
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot serialize"):
        save_checkpoint(path, {"w": np.ones(3), "bad": Exploding()}, {"step": 2})
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(path, {"w": np.array([None, 1], dtype=object)}, {"step": 2})
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(path, {"w": np.ones(3)}, {"step": object()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, {"__meta__": np.ones(3)}, {})
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_atomic_write_interrupted_in_block(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as f:
            f.write(b"new but unfinished")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.npz"):
        load_checkpoint(tmp_path / "nope.npz")


def test_not_an_npz(tmp_path):
    p = tmp_path / "notes.npz"
    p.write_text("hello, I am text")
    with pytest.raises(CheckpointError, match=r"notes\.npz is not a scratchgan checkpoint"):
        load_checkpoint(p)
    e = tmp_path / "empty.npz"
    e.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.npz is empty"):
        load_checkpoint(e)
    a = tmp_path / "array.npy"
    np.save(a, np.arange(3))
    with pytest.raises(CheckpointError, match=r"array\.npy is not a scratchgan checkpoint"):
        load_checkpoint(a)


def test_npz_without_meta(tmp_path):
    p = tmp_path / "foreign.npz"
    np.savez(p, w=np.ones(3))
    with pytest.raises(CheckpointError, match=r"foreign\.npz is not a scratchgan checkpoint.*__meta__"):
        load_checkpoint(p)


@pytest.mark.parametrize("keep", [0.5, 0.9, 10])
def test_truncated(tmp_path, keep):
    good = save_checkpoint(tmp_path / "good.npz", _state(), {"step": 5})
    data = good.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(CheckpointError, match=r"cut\.npz is truncated or corrupt") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)


def test_bad_meta_json(tmp_path):
    p = tmp_path / "badmeta.npz"
    np.savez(p, w=np.ones(3), __meta__=np.array("{not json"))
    with pytest.raises(CheckpointError, match=r"badmeta\.npz has corrupt metadata"):
        load_checkpoint(p)
    np.savez(p, w=np.ones(3), __meta__=np.array("[1, 2]"))
    with pytest.raises(CheckpointError, match=r"badmeta\.npz has corrupt metadata"):
        load_checkpoint(p)


def test_new_file_gets_normal_permissions(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", {"w": np.zeros(1)}, {})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_flipped_byte_is_caught_by_crc(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", {"w": np.arange(1000.0)}, {})
    data = bytearray(path.read_bytes())
    data[2000] ^= 0xFF  # inside w's array data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"c\.npz is truncated or corrupt.*CRC"):
        load_checkpoint(path)


def test_a_full_disk_names_the_target_and_keeps_the_old_file(tmp_path, monkeypatch):
    """ENOSPC in the middle of a checkpoint write (simulated: np.lib.format.write_array writes part of
    an array, then raises the OSError a full disk gives, which has no file name): the error names the
    checkpoint, not its temp file; the old checkpoint is byte for byte intact; no temp file is left."""
    import errno
    path = save_checkpoint(tmp_path / "checkpoint.npz", {"w": np.arange(4.0)}, {"step": 1})
    before = path.read_bytes()
    real = np.lib.format.write_array

    def full_disk(fp, array, *args, **kwargs):
        fp.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(np.lib.format, "write_array", full_disk)
    with pytest.raises(OSError) as err:
        save_checkpoint(path, {"w": np.arange(1000.0)}, {"step": 2})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    monkeypatch.setattr(np.lib.format, "write_array", real)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    assert load_checkpoint(path)[1] == {"step": 1}


def test_an_unwritable_folder_names_the_target_not_the_temp_file(tmp_path, monkeypatch):
    """os.open of the temp file refused (simulated EROFS; tests run as root, where chmod blocks nothing)."""
    import errno
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OSError) as err:
        with atomic_write(tmp_path / "results.json") as f:
            f.write(b"{}")
    assert err.value.errno == errno.EROFS and err.value.filename == str(tmp_path / "results.json")
