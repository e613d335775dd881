"""Tests of scratchgan.data: the IDX parser, MNIST / Fashion-MNIST loading (local folders, cache,
downloads from a real HTTP server on 127.0.0.1, the bundled digits) and the BatchLoader.

Nothing here touches the internet: every download goes to a local server or to a refused port.
"""
import dataclasses
import functools
import gzip
import http.server
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from scratchgan.backend import cupy_available, get_xp, to_numpy
from scratchgan.data import (
    DATASETS,
    BatchLoader,
    DataError,
    DownloadError,
    load_dataset,
    load_dataset_or_bundled,
    load_mnist_bundled,
    parse_idx,
    read_idx,
)
from scratchgan.data import download as download_module

from datasets import ROOT as SHARED  # noqa: E402  (tests/support/datasets.py: ../shared/datasets, found relative)
from datasets import dataset_dir  # noqa: E402

MNIST_DIR = SHARED / "mnist"
FASHION_DIR = SHARED / "fashion-mnist"


@pytest.fixture
def shared_data():
    """Both real datasets present (a skip that says what to fetch, or a failure under CI=true)."""
    return dataset_dir("mnist"), dataset_dir("fashion-mnist")


needs_shared = pytest.mark.usefixtures("shared_data")

MNIST_TEST_FIRST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
MNIST_TRAIN_FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FASHION_TEST_FIRST_LABELS = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def idx_bytes(array, type_code=0x08):
    """Encode an array as IDX (big-endian), the way the official files are written."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + np.asarray(array, dtype=dtype).tobytes()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own empty download cache (never the user's ~/.cache)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SCRATCHGAN_DATA", str(root))
    return root


def cache_files(root):
    """All files under the cache, hidden temp files included."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


# ============================================================================ IDX parser

@needs_shared
def test_read_idx_real_mnist_test_set():
    images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == MNIST_TEST_FIRST_LABELS
    assert images.max() == 255 and images.min() == 0
    assert images.flags.writeable and images.flags.c_contiguous
    assert read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz")[:10].tolist() == MNIST_TRAIN_FIRST_LABELS


@needs_shared
def test_gzip_is_told_by_magic_bytes_not_by_name(tmp_path):
    packed = (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()
    raw = gzip.decompress(packed)
    (tmp_path / "labels-raw.gz").write_bytes(raw)          # raw IDX behind a .gz name
    (tmp_path / "labels-packed.idx").write_bytes(packed)   # gzip behind a plain name
    a, b = read_idx(tmp_path / "labels-raw.gz"), read_idx(tmp_path / "labels-packed.idx")
    assert np.array_equal(a, b) and a[:10].tolist() == MNIST_TEST_FIRST_LABELS


@pytest.mark.parametrize("type_code,values", [
    (0x08, np.array([[0, 255], [7, 128]], dtype=np.uint8)),
    (0x09, np.array([-128, 0, 127], dtype=np.int8)),
    (0x0B, np.array([[-300, 2], [1000, -1]], dtype=np.int16)),
    (0x0C, np.array([2 ** 31 - 1, -5], dtype=np.int32)),
    (0x0D, np.array([1.5, -2.25], dtype=np.float32)),
    (0x0E, np.array([[1e300]], dtype=np.float64)),
])
def test_parse_idx_all_types_big_endian_to_native(type_code, values):
    out = parse_idx(idx_bytes(values, type_code), "x.idx")
    assert out.shape == values.shape and out.dtype == values.dtype and out.dtype.isnative
    assert np.array_equal(out, values)


def _corruptions():
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    return {
        "empty file": (b"", "not an IDX file"),
        "bad magic (nonzero first bytes)": (b"\x01\x00" + good[2:], "bad magic number"),
        "unknown type code": (good[:2] + b"\x07" + good[3:], "bad magic number"),
        "zero dimensions": (b"\x00\x00\x08\x00", "0 dimensions"),
        "truncated header": (good[:9], "truncated IDX header"),
        "truncated payload": (good[:-1], "truncated IDX payload"),
        "extra bytes": (good + b"\x00\x00", "2 extra bytes"),
        "dims that do not match payload": (good[:4] + struct.pack(">II", 3, 5) + good[12:], "truncated IDX payload"),
        "truncated gzip": (gzip.compress(good * 50)[:-20], "truncated gzip"),
        "corrupt gzip": (gzip.compress(good)[:10] + b"\xff" * 20, "corrupt gzip"),  # invalid deflate block
        "gzip with bad CRC": (gzip.compress(good)[:-8] + b"\x00" * 8, "corrupt gzip"),
    }


@pytest.mark.parametrize("case", list(_corruptions()))
def test_corrupt_idx_files_raise_data_error_naming_the_file(tmp_path, case):
    data, expected = _corruptions()[case]
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        read_idx(path)
    message = str(err.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_read_idx_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


# ============================================================================ local HTTP mirror

class _Server:
    """A real HTTP server on 127.0.0.1 serving a folder; records the paths requested."""

    def __init__(self, root):
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    """mnist/: the real t10k files; bad/: the wrong files under the same names; recompressed/: the
    real content gzipped differently (as a mirror or Debian may do)."""
    root = tmp_path / "www"
    for sub in ("mnist", "bad", "recompressed"):
        (root / sub).mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        data = (MNIST_DIR / name).read_bytes()
        (root / "mnist" / name).write_bytes(data)
        (root / "bad" / name).write_bytes((FASHION_DIR / name).read_bytes())
        (root / "recompressed" / name).write_bytes(gzip.compress(gzip.decompress(data), compresslevel=1, mtime=0))
    srv = _Server(root)
    yield srv
    srv.close()


@pytest.fixture
def refused_url():
    """A URL on a local port that nothing listens on: connection refused, as when offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@needs_shared
def test_download_verifies_and_caches(server, private_cache):
    lines = []
    images, labels = load_dataset("mnist", "test", mirrors=[server.url + "/mnist/"], log=lines.append)
    assert images.shape == (10000, 28, 28) and labels[:10].tolist() == MNIST_TEST_FIRST_LABELS
    assert np.array_equal(images, read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz"))
    assert server.requests == ["/mnist/t10k-images-idx3-ubyte.gz", "/mnist/t10k-labels-idx1-ubyte.gz"]
    assert cache_files(private_cache) == ["mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"]
    assert any("downloading" in line for line in lines)
    # second call: served from the cache, the server is not asked again
    again, _ = load_dataset("mnist", "test", mirrors=[server.url + "/mnist/"])
    assert len(server.requests) == 2 and np.array_equal(again, images)


@needs_shared
def test_download_falls_back_to_the_next_mirror(server):
    lines = []
    images, _ = load_dataset("mnist", "test", mirrors=[server.url + "/missing/", server.url + "/mnist/"],
                             log=lines.append)
    assert images.shape == (10000, 28, 28)
    assert server.requests[:2] == ["/missing/t10k-images-idx3-ubyte.gz", "/mnist/t10k-images-idx3-ubyte.gz"]
    assert any("HTTP 404" in line for line in lines)


@needs_shared
def test_recompressed_download_is_accepted_by_content_checksum(server):
    images, labels = load_dataset("mnist", "test", mirrors=[server.url + "/recompressed/"])
    assert labels[:10].tolist() == MNIST_TEST_FIRST_LABELS and images.shape == (10000, 28, 28)


@needs_shared
def test_checksum_mismatch_raises_and_leaves_nothing_in_cache(server, private_cache):
    with pytest.raises(DownloadError) as err:
        load_dataset("mnist", "test", mirrors=[server.url + "/bad/"])
    message = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "SHA-256 mismatch" in message
    assert server.url + "/bad/t10k-images-idx3-ubyte.gz" in message and "\n" not in message
    assert cache_files(private_cache) == []  # no final file, no temp file


def test_offline_raises_one_line_naming_file_and_the_fix(refused_url, private_cache):
    with pytest.raises(DownloadError) as err:
        load_dataset("mnist", "train", mirrors=[refused_url], timeout=5)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and refused_url in message
    assert "--data-dir" in message and str(private_cache / "mnist") in message
    assert "refused" in message.lower() and "\n" not in message
    assert cache_files(private_cache) == []


def test_interrupted_download_removes_its_temp_file(monkeypatch, private_cache):
    class Response:
        def __init__(self):
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the transfer
            return b"\x1f\x8b" + b"x" * 100

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(download_module.urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(KeyboardInterrupt):
        load_dataset("mnist", "test", mirrors=["http://127.0.0.1:9/"])
    assert cache_files(private_cache) == []


def test_download_off_and_not_cached(private_cache):
    with pytest.raises(DownloadError, match="downloading is off.*--data-dir"):
        load_dataset("mnist", "test", download=False)


@needs_shared
def test_corrupt_cache_file_is_downloaded_again(server, private_cache):
    folder = private_cache / "mnist"
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: .*delete it"):
        load_dataset("mnist", "test", mirrors=[server.url + "/mnist/"], download=False)
    images, _ = load_dataset("mnist", "test", mirrors=[server.url + "/mnist/"])
    assert images.shape == (10000, 28, 28)
    assert (folder / "t10k-images-idx3-ubyte.gz").read_bytes() == (MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes()


# ============================================================================ local folders

@needs_shared
def test_data_dir_with_only_the_test_split():
    images, labels = load_dataset("mnist", "test", data_dir=MNIST_DIR)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.uint8
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "train", data_dir=MNIST_DIR)
    message = str(err.value)
    assert "train images" in message and "train-images-idx3-ubyte" in message and str(MNIST_DIR) in message
    assert "--split test" in message


def test_data_dir_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", "test", data_dir=tmp_path / "nowhere")


@needs_shared
def test_data_dir_accepts_uncompressed_and_dotted_names(tmp_path):
    for stem, dotted in [("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
                         ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte")]:
        (tmp_path / dotted).write_bytes(gzip.decompress((MNIST_DIR / f"{stem}.gz").read_bytes()))
    _, labels = load_dataset("mnist", "test", data_dir=tmp_path)
    assert labels[:10].tolist() == MNIST_TEST_FIRST_LABELS


@needs_shared
def test_data_dir_wrong_file_fails_checksum(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((FASHION_DIR / name).read_bytes())  # Fashion under MNIST's name
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: SHA-256 does not match the official MNIST"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_data_dir_wrong_shapes_are_data_errors(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 28, 27), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected uint8 images of shape \(N, 28, 28\)"):
        load_dataset("mnist", "test", data_dir=tmp_path, verify=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    with pytest.raises(DataError, match="5 labels for 4 images"):
        load_dataset("mnist", "test", data_dir=tmp_path, verify=False)


@needs_shared
def test_fashion_mnist_debian_recompressed_files_are_accepted(tmp_path):
    images, labels = load_dataset("fashion-mnist", "test", data_dir=FASHION_DIR)
    assert images.shape == (10000, 28, 28) and labels[:10].tolist() == FASHION_TEST_FIRST_LABELS


@needs_shared
def test_fashion_mnist_found_in_system_folder_before_downloading(monkeypatch):
    spec = dataclasses.replace(DATASETS["fashion-mnist"], search_dirs=(str(FASHION_DIR),), mirrors=())
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    _, labels = load_dataset("Fashion_MNIST", "test")  # names are forgiving about case and '_'
    assert labels[:10].tolist() == FASHION_TEST_FIRST_LABELS


def test_unknown_dataset_and_split_list_the_choices():
    with pytest.raises(DataError, match="unknown dataset 'cifar'; choose one of: mnist, fashion-mnist, mnist-bundled"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="unknown split 'valid' for MNIST; choose one of: train, test"):
        load_dataset("mnist", "valid")


# ============================================================================ bundled digits

@needs_shared
def test_bundled_mnist_is_the_real_test_set():
    images, labels = load_mnist_bundled()
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.uint8
    assert np.array_equal(images, read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz"))
    assert labels[:10].tolist() == MNIST_TEST_FIRST_LABELS
    same, _ = load_dataset("mnist-bundled", "test")
    assert np.array_equal(same, images)
    with pytest.raises(DataError, match="choose one of: test"):
        load_mnist_bundled("train")
    with pytest.raises(DataError, match="drop --data-dir"):
        load_dataset("mnist-bundled", "test", data_dir=MNIST_DIR)


def test_bundled_fallback_when_offline_logs_one_line(refused_url, private_cache):
    lines = []
    images, labels = load_dataset_or_bundled("mnist", "train", log=lines.append, mirrors=[refused_url], timeout=5)
    assert images.shape == (10000, 28, 28) and labels[:10].tolist() == MNIST_TEST_FIRST_LABELS
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("could not download MNIST (")
    assert lines[0].endswith("training on the bundled 10k MNIST test digits instead")
    with pytest.warns(UserWarning, match="bundled 10k MNIST"):  # no log: still never silent
        load_dataset_or_bundled("mnist", "train", mirrors=[refused_url], timeout=5)


def test_no_bundled_fallback_for_other_failures(refused_url, tmp_path):
    log = []
    with pytest.raises(DownloadError):  # only MNIST has a bundled stand-in
        load_dataset_or_bundled("fashion-mnist", "train", log=log.append, mirrors=[refused_url], timeout=5)
    with pytest.raises(DataError, match="missing in"):  # an explicit data_dir is never silently replaced
        load_dataset_or_bundled("mnist", "train", data_dir=tmp_path, log=log.append)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset_or_bundled("mnits", "train", log=log.append)
    assert log == []


# ============================================================================ BatchLoader

@pytest.fixture(scope="module")
def digits():
    """600 real digits (a small subset keeps the loader tests fast)."""
    images, labels = load_mnist_bundled()
    return images[:600].copy(), labels[:600].copy()


def test_loader_scales_once_to_minus_one_one_in_float32(digits):
    images, _ = digits
    loader = BatchLoader(images, 50, seed=1)
    assert loader.x.dtype == np.float32 and loader.x.shape == (600, 784)
    expected = images.reshape(600, 784).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    assert np.array_equal(loader.x, expected)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == 12
    for x in batches:
        assert x.shape == (50, 784) and x.dtype == np.float32 and x.flags.c_contiguous
        assert x.min() >= -1.0 and x.max() <= 1.0
    assert min(x.min() for x in batches) == -1.0 and max(x.max() for x in batches) == 1.0


def test_loader_float64_and_channel_axis(digits):
    images, _ = digits
    loader = BatchLoader(images, 32, dtype="float64", flatten=False)
    x = next(iter(loader))
    assert x.shape == (32, 1, 28, 28) and x.dtype == np.float64


def test_loader_permutation_contract_and_determinism(digits):
    images, _ = digits
    a, b = BatchLoader(images, 64, seed=3), BatchLoader(images, 64, seed=3)
    assert np.array_equal(a.permutation(2), np.random.default_rng([3, 2]).permutation(600))
    for xa, xb in zip(a.epoch(2), b.epoch(2)):
        assert np.array_equal(xa, xb)
    first = next(a.epoch(0))
    assert not np.array_equal(first, next(a.epoch(1)))                     # new order each epoch
    assert not np.array_equal(first, next(BatchLoader(images, 64, seed=4).epoch(0)))  # and per seed


def test_loader_covers_every_index_once_per_epoch(digits):
    images, _ = digits
    index = np.arange(600)
    loader = BatchLoader(images, 60, labels=index, seed=7)  # labels = sample ids: y says who was served
    for e in range(3):
        seen = np.concatenate([to_numpy(y) for _, y in loader.epoch(e)])
        assert np.array_equal(np.sort(seen), index)
    x, y = next(loader.epoch(0))
    assert y.dtype == np.int64 and np.array_equal(x, loader.x[y])  # each x row is its sample's image
    # an epoch that does not divide: drop_last skips the remainder, drop_last=False serves it
    short = BatchLoader(images, 64, labels=index, drop_last=True)
    assert len(short) == 9 and sum(len(y) for _, y in short.epoch(0)) == 576
    full = BatchLoader(images, 64, labels=index, drop_last=False)
    sizes = [len(y) for _, y in full.epoch(0)]
    assert len(full) == 10 and sizes[-1] == 24 and np.array_equal(
        np.sort(np.concatenate([y for _, y in full.epoch(0)])), index)


def test_loader_resume_mid_epoch_equals_tail_of_full_epoch(digits):
    images, labels = digits
    loader = BatchLoader(images, 40, labels=labels, seed=11)
    full = list(loader.epoch(5))
    resumed = list(BatchLoader(images, 40, labels=labels, seed=11).epoch(5, start_batch=6))
    assert len(resumed) == len(full) - 6
    for (xa, ya), (xb, yb) in zip(full[6:], resumed):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert list(loader.epoch(5, start_batch=len(loader))) == []


def test_loader_iteration_advances_epochs_and_batches_are_copies(digits):
    images, _ = digits
    loader = BatchLoader(images, 100, seed=0)
    e0, e1 = list(loader), list(loader)
    assert np.array_equal(e0[0], next(loader.epoch(0))) and np.array_equal(e1[0], next(loader.epoch(1)))
    before = loader.x.copy()
    e0[0][...] = 0.0  # a caller writing into its batch never touches the dataset
    plain = BatchLoader(images, 100, shuffle=False)
    xb = next(plain.epoch(0))
    xb += 1.0
    assert np.array_equal(loader.x, before) and np.array_equal(plain.x[:100] + 1.0, xb)


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, "positive integer"),
    ({"batch_size": -4}, "positive integer"),
    ({"batch_size": 2.5}, "positive integer"),
    ({"batch_size": 601}, "larger than the dataset"),
    ({"batch_size": 10, "labels": np.zeros(5)}, "labels must have shape"),
    ({"batch_size": 10, "seed": -1}, "non-negative"),
])
def test_loader_rejects_bad_arguments(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchLoader(digits[0], **kwargs)


def test_loader_rejects_bad_images_and_positions(digits):
    with pytest.raises(ValueError, match="uint8"):
        BatchLoader(digits[0].astype(np.float32), 10)
    assert len(BatchLoader(digits[0], 601, drop_last=False)) == 1  # fine without drop_last
    loader = BatchLoader(digits[0], 100)
    with pytest.raises(ValueError, match=r"start_batch must be an integer in \[0, 6\]"):
        next(loader.epoch(0, start_batch=7))
    with pytest.raises(ValueError, match="epoch must be"):
        next(loader.epoch(-1))


@pytest.mark.skipif(not cupy_available(), reason="CuPy or a GPU is not available")
def test_loader_cupy_matches_numpy(digits):
    images, labels = digits
    cp = get_xp("cupy")
    gpu = BatchLoader(images, 64, xp=cp, labels=labels, seed=5)
    cpu = BatchLoader(images, 64, labels=labels, seed=5)
    assert isinstance(gpu.x, cp.ndarray)
    for (xg, yg), (xc, yc) in zip(gpu.epoch(3, start_batch=2), cpu.epoch(3, start_batch=2)):
        assert isinstance(xg, cp.ndarray) and xg.dtype == np.float32 and yg.dtype == np.int64
        assert np.array_equal(to_numpy(xg), xc) and np.array_equal(to_numpy(yg), yc)


def test_loader_uint8_resident_gives_the_same_batches_as_float_resident():
    from scratchgan.data import BatchLoader
    images = np.random.default_rng(3).integers(0, 256, (50, 2, 5, 5), dtype=np.uint8)
    as_float = BatchLoader(images, 8, seed=4, flatten=False, resident="float")
    as_bytes = BatchLoader(images, 8, seed=4, flatten=False, resident="uint8")
    assert as_bytes.x.dtype == np.uint8 and as_float.x.dtype == np.float32
    for a, b in zip(as_float.epoch(1), as_bytes.epoch(1)):
        assert b.dtype == np.float32 and b.shape == (8, 2, 5, 5)
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(as_float.images(7), as_bytes.images(7))
    with pytest.raises(ValueError, match="resident"):
        BatchLoader(images, 8, resident="half")


# ============================================================================ download hardening

def test_every_mirror_is_https():
    """The SHA-256 sums protect the content; HTTPS keeps a network in the middle from even serving
    something else (no plain-http mirror is left)."""
    for spec in DATASETS.values():
        assert spec.mirrors and all(url.startswith("https://") for url in spec.mirrors), spec.mirrors


def test_decompression_is_capped():
    bomb = gzip.compress(b"\0" * 100_000, compresslevel=1)
    with pytest.raises(DataError, match="decompresses to more than 1,000 bytes"):
        from scratchgan.data.idx import decode_bytes
        decode_bytes(bomb, "bomb.gz", max_bytes=1000)
    assert len(decode_bytes(bomb, "bomb.gz", max_bytes=100_000)) == 100_000


def test_a_gzip_bomb_download_is_refused_without_filling_memory(tmp_path, private_cache):
    """A mirror serves a small .gz (under the download size cap) that fails the checksum and would
    decompress to 64 MiB: it is refused, and decompressing it never holds more than the official
    file's size (7.8 MB) in memory."""
    import io
    import tracemalloc
    root = tmp_path / "www" / "bomb"
    root.mkdir(parents=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0) as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(64):
            f.write(chunk)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(buf.getvalue())
    srv = _Server(tmp_path / "www")
    try:
        tracemalloc.start()
        with pytest.raises(DownloadError, match="SHA-256 mismatch"):
            load_dataset("mnist", "test", mirrors=[srv.url + "/bomb/"])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        srv.close()
    assert peak < 32 << 20, f"peak {peak / 2**20:.0f} MiB while refusing the bomb"
    assert cache_files(private_cache) == []
