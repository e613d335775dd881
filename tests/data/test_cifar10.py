"""CIFAR-10 (scratchgan/data/cifar10.py): the binary records parsed with NumPy alone, the tarball
downloaded from a real HTTP server on 127.0.0.1, SHA-256 checked, cached atomically; the bad cases end
in one line (exit 2 from the CLI). Nothing touches the internet: the test builds a small tarball in
the official layout (2 records per batch file instead of 10,000) and pins its checksum and record
count in place of the official ones.
"""
import functools
import hashlib
import http.server
import pickle
import tarfile
import threading

import numpy as np
import pytest
from cifar_files import PER_BATCH, make_tarball

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli.main import main as cli_main
from scratchgan.data import DataError, DownloadError, cifar10


@pytest.fixture
def tarball(tmp_path, monkeypatch):
    """The small tarball, its content, and its SHA-256/size pinned as the 'official' ones."""
    path = tmp_path / "www" / cifar10.ARCHIVE
    path.parent.mkdir()
    content = make_tarball(path)
    data = path.read_bytes()
    monkeypatch.setattr(cifar10, "SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(cifar10, "SIZE", len(data))
    monkeypatch.setattr(cifar10, "BATCH_RECORDS", PER_BATCH)  # the exact size a --data-dir batch file must have
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    return path, content


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; records the paths asked for."""
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    (tmp_path / "www").mkdir(exist_ok=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url, httpd.requests = f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def cache_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------- records
def test_a_record_is_a_label_byte_then_the_red_green_blue_planes():
    image = np.zeros((3, 32, 32), np.uint8)
    image[0, 0, 1], image[1, 2, 3], image[2, 31, 31] = 10, 20, 30  # R at (0, 1), G at (2, 3), B at (31, 31)
    raw = bytes([7]) + bytes(image[0].ravel()) + bytes(image[1].ravel()) + bytes(image[2].ravel())
    images, labels = cifar10.parse_batch(raw)
    assert images.shape == (1, 3, 32, 32) and images.dtype == np.uint8 and labels.tolist() == [7]
    assert images[0, 0, 0, 1] == 10 and images[0, 1, 2, 3] == 20 and images[0, 2, 31, 31] == 30
    assert int(images.sum()) == 60


@pytest.mark.parametrize("raw, match", [(b"", "0 bytes"), (b"\x01" * (cifar10.RECORD + 5), "not a whole number"),
                                        (bytes([12]) + b"\x00" * 3072, "label 12 out of range")])
def test_bad_batch_bytes_are_one_line_errors(raw, match):
    with pytest.raises(DataError, match=match) as e:
        cifar10.parse_batch(raw, "x.bin")
    assert "\n" not in str(e.value) and str(e.value).startswith("x.bin")


# ------------------------------------------------------------------------------------------- download
def test_download_verifies_caches_and_never_unpickles(tarball, server, tmp_path, monkeypatch):
    _, content = tarball

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle was used")
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, no_pickle)
    lines = []
    images, labels = cifar10.load_cifar10("train", mirrors=[server.url], log=lines.append)
    assert server.requests == [f"/{cifar10.ARCHIVE}"] and "downloading" in lines[0]
    expected = [content[name] for name in cifar10.SPLITS["train"]]
    assert images.shape == (5 * PER_BATCH, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images, np.concatenate([x for x, _ in expected]))
    assert np.array_equal(labels, np.concatenate([y for _, y in expected]))
    assert cache_files(tmp_path) == [cifar10.ARCHIVE]  # no temp file left
    test_images, test_labels = cifar10.load_cifar10("test", mirrors=[server.url])  # from the cache
    assert len(server.requests) == 1
    assert np.array_equal(test_images, content["test_batch.bin"][0])
    assert np.array_equal(test_labels, content["test_batch.bin"][1])


def test_checksum_mismatch_is_refused_and_nothing_is_cached(tarball, server, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "SHA256", "0" * 64)
    with pytest.raises(DownloadError, match=r"SHA-256 mismatch.*--data-dir") as e:
        cifar10.load_cifar10("train", mirrors=[server.url])
    assert "\n" not in str(e.value)
    assert cache_files(tmp_path) == []


def test_a_download_larger_than_the_official_file_is_cut_off(tarball, server, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "SIZE", 100)
    with pytest.raises(DownloadError, match="more than the official 100 bytes"):
        cifar10.load_cifar10("train", mirrors=[server.url])
    assert cache_files(tmp_path) == []


def test_truncated_tarball_in_data_dir_is_one_line(tarball, tmp_path):
    path, _ = tarball
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 40):
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        (folder / cifar10.ARCHIVE).write_bytes(data[:cut])
        with pytest.raises(DataError, match="truncated or corrupt tarball") as e:
            cifar10.load_cifar10("train", data_dir=folder)
        assert "\n" not in str(e.value)


def test_data_dir_takes_your_own_tarball_or_extracted_folder_and_says_so(tarball, tmp_path, monkeypatch):
    path, content = tarball
    monkeypatch.setattr(cifar10, "SHA256", "0" * 64)  # the test's tarball is not the official one
    lines = []
    images, _ = cifar10.load_cifar10("test", data_dir=path.parent, log=lines.append)
    assert np.array_equal(images, content["test_batch.bin"][0])
    assert len(lines) == 1 and "not the official" in lines[0]
    extracted = tmp_path / "extracted" / cifar10.FOLDER  # as `tar xzf` leaves it
    extracted.mkdir(parents=True)
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            (extracted / member.name.split("/")[-1]).write_bytes(tar.extractfile(member).read())
    images, labels = cifar10.load_cifar10("test", data_dir=tmp_path / "extracted")
    assert np.array_equal(labels, content["test_batch.bin"][1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither cifar-10-binary.tar.gz nor"):
        cifar10.load_cifar10("test", data_dir=tmp_path / "empty")


# ------------------------------------------------------------------------------------------- the CLI
TINY_DCGAN = ["--g-width", "2", "--d-width", "2", "--latent-dim", "4", "--batch-size", "5", "--epochs", "1",
              "--no-progress", "--sample-every", "0"]


def test_dcgan_trains_on_cifar10_at_32x32x3_and_the_mlp_at_3072(tarball, server, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "MIRRORS", (server.url,))
    out = tmp_path / "dcgan"
    assert cli_main(["train", "--arch", "dcgan", "--dataset", "cifar10", *TINY_DCGAN, "--out", str(out)]) == 0
    _, meta = load_checkpoint(out / "checkpoint.npz")
    config = meta["config"]
    assert (config["resolution"], config["channels"], config["image_shape"]) == (32, 3, [3, 32, 32])
    assert meta["global_step"] == 5 * PER_BATCH // 5
    out = tmp_path / "mlp"
    assert cli_main(["train", "--dataset", "cifar10", "--g-hidden", "8", "--d-hidden", "8", "--batch-size", "5",
                     "--epochs", "1", "--no-progress", "--sample-every", "0", "--out", str(out)]) == 0
    assert load_checkpoint(out / "checkpoint.npz")[1]["config"]["image_size"] == 3072


def test_cli_checksum_mismatch_and_truncated_tarball_exit_2_with_one_line(tarball, server, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setattr(cifar10, "MIRRORS", (server.url,))
    monkeypatch.setattr(cifar10, "SHA256", "f" * 64)
    args = ["train", "--arch", "dcgan", "--dataset", "cifar10", *TINY_DCGAN]
    assert cli_main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scratchgan train: error: could not download cifar-10-binary.tar.gz")
    assert "SHA-256 mismatch" in err[0]
    path, _ = tarball
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / cifar10.ARCHIVE).write_bytes(path.read_bytes()[:300])
    assert cli_main([*args, "--data-dir", str(tmp_path / "cut"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or corrupt tarball" in err[0], err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
