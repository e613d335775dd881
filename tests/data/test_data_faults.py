"""Bad data files end well: your own IDX files larger than the official set, a FIFO or a device in an
image folder, file names with escape codes, empty images, CIFAR-10 batch files of the wrong size.

Each case is what a user ran: the command-line ones as real subprocesses (`python -m scratchgan
train`, a tiny run) that must end in exit 0, or exit 2 with ONE line on stderr and no traceback.
Nothing touches the network: SCRATCHGAN_DATA points at an empty folder and every run names its data.
"""
from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchgan.data import DataError, folder as folder_mod, load_mnist_bundled, open_image_folder, read_idx

REPO = Path(__file__).resolve().parents[2]
MLP = ["--g-hidden", "8", "--d-hidden", "8", "--batch-size", "16", "--epochs", "1", "--limit", "64",
       "--no-progress", "--sample-every", "0"]
DCGAN = ["--arch", "dcgan", "--g-width", "2", "--d-width", "2", "--latent-dim", "4", "--batch-size", "2",
         "--epochs", "1", "--limit", "8", "--no-progress", "--sample-every", "0"]
ESCAPES = "x\n\x1b[2J\x1b[31mFAKE: all good.png"  # clears the screen and prints a fake line, if printed raw
CIFAR_BATCH = 10_000 * 3_073  # bytes of one CIFAR-10 batch file


def launch(args, tmp):
    """Start `python -m scratchgan train ARGS` in ``tmp`` (this checkout's package, an empty data cache)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCRATCHGAN_DATA": str(tmp / "cache")}
    return subprocess.Popen([sys.executable, "-m", "scratchgan", "train", *args], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="backslashreplace")


def finish(proc, timeout=120):
    """(exit code, stdout, stderr); a run still going after ``timeout`` s is killed and fails the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running after {timeout} s: killed")
    return proc.returncode, out, err


def assert_one_line_error(rc, err, *words):
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, (rc, err)
    assert "Traceback" not in err and lines[0].startswith("scratchgan train: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def idx_file(path, header_shape, payload, compresslevel=1):
    """A gzipped uint8 IDX file whose header says ``header_shape``, followed by ``payload`` bytes as given."""
    header = bytes([0, 0, 0x08, len(header_shape)]) + b"".join(int(n).to_bytes(4, "big") for n in header_shape)
    with gzip.open(path, "wb", compresslevel=compresslevel) as f:
        f.write(header)
        f.write(payload)
    return path


def image_folder(root, n=4, size=30):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------ IDX (MNIST format)

def test_own_gzipped_idx_files_larger_than_the_official_set_train(tmp_path):
    """60,001 images (47,040,800 bytes of IDX content, more than the official 47,040,016): the size cap
    of the verified download does not apply to your own files; their header's size does."""
    n = 60_001
    digits, labels = load_mnist_bundled()
    images = np.zeros((n, 28, 28), np.uint8)
    images[: len(digits)] = digits
    images[len(digits):, 10:18, 10:18] = 255  # the rest: a square, quick to compress
    own = tmp_path / "own"
    own.mkdir()
    idx_file(own / "train-images-idx3-ubyte.gz", images.shape, images.tobytes())
    idx_file(own / "train-labels-idx1-ubyte.gz", (n,), np.resize(labels, n).tobytes())
    rc, out, err = finish(launch(["--dataset", "mnist", "--data-dir", "own", *MLP, "--out", "run"], tmp_path))
    assert rc == 0, err
    assert "are not the official MNIST files" in out and "training mnist (64 images" in out
    assert (tmp_path / "run" / "checkpoint.npz").is_file()


def test_own_idx_data_shorter_or_longer_than_its_header_is_one_line_naming_the_file(tmp_path):
    """A labels file larger than the official one whose data does not match its header: one line naming
    it and saying which way it is off (not a complaint about the official size)."""
    cases = {"short": (70_000, 65_000), "long": (61_000, 62_000)}  # (labels the header declares, labels present)
    procs = {}
    for name, (declared, present) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        idx_file(folder / "train-images-idx3-ubyte.gz", (16, 28, 28), bytes(16 * 784))
        idx_file(folder / "train-labels-idx1-ubyte.gz", (declared,), bytes(present))
        procs[name] = launch(["--dataset", "mnist", "--data-dir", name, *MLP, "--out", f"run-{name}"], tmp_path)
    rc, _, err = finish(procs["short"])
    assert_one_line_error(rc, err, "short/train-labels-idx1-ubyte.gz", "truncated IDX payload",
                          "shorter than its header says", "needs 70000 bytes", "found 65000")
    rc, _, err = finish(procs["long"])
    assert_one_line_error(rc, err, "long/train-labels-idx1-ubyte.gz", "1,000 extra bytes",
                          "longer than its header says")
    assert not (tmp_path / "run-short").exists() and not (tmp_path / "run-long").exists()


def test_a_gzipped_idx_file_is_decompressed_no_further_than_its_header_declares(tmp_path):
    """16 images declared, 64 MiB of zeros behind them: refused after the header's size plus a 1 MiB
    look past it, without ever holding the 64 MiB."""
    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 0x08, 3]) + b"".join(n.to_bytes(4, "big") for n in (16, 28, 28)))
        for _ in range(64):
            f.write(bytes(1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"more than 1,048,576 extra bytes after the IDX payload") as e:
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert peak < 8 << 20, f"peak {peak / 2**20:.0f} MiB while refusing it"


def test_empty_idx_images_are_refused_in_one_line(tmp_path):
    """A header of (5, 0, 0) (0x0-pixel images) or (0, 28, 28) (no images): one line naming the file."""
    procs = {}
    for name, shape in {"pixels": (5, 0, 0), "none": (0, 28, 28)}.items():
        folder = tmp_path / name
        folder.mkdir()
        idx_file(folder / "train-images-idx3-ubyte.gz", shape, b"")
        idx_file(folder / "train-labels-idx1-ubyte.gz", (shape[0],), bytes(shape[0]))
        procs[name] = launch(["--dataset", "mnist", "--data-dir", name, *MLP, "--out", f"run-{name}"], tmp_path)
    rc, _, err = finish(procs["pixels"])
    assert_one_line_error(rc, err, "pixels/train-images-idx3-ubyte.gz", "holds empty images", "0x0 pixels")
    rc, _, err = finish(procs["none"])
    assert_one_line_error(rc, err, "none/train-images-idx3-ubyte.gz", "holds no images")


# ------------------------------------------------------------------------------------------ image folders

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_an_image_is_skipped_never_read(tmp_path):
    """`pipe.png`, a FIFO nobody writes to, in the folder: reading it would block forever. The run
    skips it, says why, and trains on the rest; the timeout turns a regression into a failure."""
    folder = image_folder(tmp_path / "imgs")
    os.mkfifo(folder / "pipe.png")
    proc = launch(["--dataset", "folder", "--data-dir", "imgs", "--image-size", "28", *DCGAN, "--out", "run"],
                  tmp_path)
    rc, out, err = finish(proc, timeout=60)
    assert rc == 0, err
    skipped = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1 and "pipe.png (a FIFO, not a regular file)" in skipped[0], out
    assert "training folder (4 images" in out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_as_the_npy_file_is_refused_not_read(tmp_path):
    """--data-dir pipe.npy, a FIFO: the real run and the dry run (which reads the header) refuse it in one
    line instead of waiting forever for a writer."""
    os.mkfifo(tmp_path / "pipe.npy")
    procs = [launch(["--dataset", "npy", "--data-dir", "pipe.npy", *MLP, "--out", f"run{i}", *extra], tmp_path)
             for i, extra in enumerate(([], ["--dry-run"]))]
    try:
        for proc in procs:
            rc, _, err = finish(proc, timeout=60)
            assert_one_line_error(rc, err, "pipe.npy is a FIFO, not a regular file")
    finally:
        for proc in procs:  # a run left waiting on the FIFO when the first one failed
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX") or os.name != "posix", reason="needs POSIX sockets and devices")
def test_devices_and_sockets_are_skipped_and_symlinked_files_are_followed(tmp_path, monkeypatch):
    """Only regular files are read: a device and a socket with image names are skipped with what they are.
    Symlinks to regular files are followed, inside the folder and out of it (reading changes nothing)."""
    folder = image_folder(tmp_path / "imgs")
    Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "outside.png")
    os.symlink(os.devnull, folder / "null.png")          # a character device
    os.symlink("0.png", folder / "link_inside.png")
    os.symlink(tmp_path / "outside.png", folder / "link_outside.png")
    monkeypatch.chdir(folder)  # a short relative path: AF_UNIX names are limited to ~100 bytes
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind("sock.png")
        result = open_image_folder(folder, 28, cache_dir=tmp_path / "cache", workers=1)
    finally:
        server.close()
    reasons = dict(result.skipped)
    assert reasons == {"null.png": "a character device, not a regular file",
                       "sock.png": "a socket, not a regular file"}
    assert list(result.files) == ["0.png", "1.png", "2.png", "3.png", "link_inside.png", "link_outside.png"]
    np.testing.assert_array_equal(result.images[4], result.images[0])
    assert tuple(result.images[5][:, 14, 14]) == (200, 10, 10)


def test_a_0x0_image_is_refused_as_empty():
    """Pillow 13 will not open a 0x0 file at all; an image object of 0x0 pixels handed to the transform
    is refused with a reason that says so (not a ZeroDivisionError from the resize)."""
    with pytest.raises(ValueError, match=r"empty image \(0x0 pixels\)") as e:
        folder_mod.transform_image(Image.new("RGB", (0, 0)), 28, "RGB")
    assert folder_mod._reason(e.value, 100) == "empty image (0x0 pixels)"


# ------------------------------------------------------------------------------------------- file names

@pytest.mark.skipif(os.name != "posix", reason="newlines and escape codes in file names: POSIX file systems")
def test_file_names_with_escape_codes_are_printed_escaped(tmp_path):
    """A junk image whose name clears the screen and prints a fake line, .npy files whose names turn the
    terminal red or break the line: every name comes out repr-escaped, in the log and in the one-line errors."""
    folder = image_folder(tmp_path / "imgs")
    (folder / ESCAPES).write_bytes(b"not an image")
    bad_npy, odd_npy = "bad\x1b[31m.npy", "odd\x1b[0m\n.npy"
    (tmp_path / bad_npy).write_bytes(b"not numpy at all")
    np.save(tmp_path / odd_npy, np.zeros((8, 20, 20), np.uint8))  # 20x20: no DCGAN size, and no --image-size
    run = launch(["--dataset", "folder", "--data-dir", "imgs", "--image-size", "28", *DCGAN, "--out", "run"],
                 tmp_path)
    fail = launch(["--dataset", "npy", "--data-dir", bad_npy, *DCGAN, "--out", "run-npy"], tmp_path)
    odd = launch(["--dataset", "npy", "--data-dir", odd_npy, *DCGAN, "--out", "run-odd"], tmp_path)
    rc, out, err = finish(run)
    assert rc == 0, err
    assert "\x1b" not in out + err and not any(line.startswith("FAKE") for line in (out + err).splitlines())
    skipped = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1 and f"{ESCAPES!r} (not an image Pillow can read)" in skipped[0], out
    rc, out, err = finish(fail)
    line = assert_one_line_error(rc, err, repr(bad_npy), "not a .npy file")
    assert "\x1b" not in out + line
    rc, out, err = finish(odd)
    line = assert_one_line_error(rc, err, repr(odd_npy), "images of 20x20 pixels")
    assert "\x1b" not in out + line


# ------------------------------------------------------------------------------------------------- .npy

def test_empty_npy_images_are_refused_in_one_line(tmp_path):
    """(N, 1, 0, 0) for the DCGAN at --image-size 28, (N, 0, 0) for the MLP: refused, never trained on."""
    np.save(tmp_path / "zero_pixels.npy", np.zeros((64, 1, 0, 0), np.uint8))
    np.save(tmp_path / "zero_grey.npy", np.zeros((64, 0, 0), np.float32))
    dcgan = launch(["--dataset", "npy", "--data-dir", "zero_pixels.npy", "--image-size", "28", *DCGAN,
                    "--out", "run-dcgan"], tmp_path)
    mlp = launch(["--dataset", "npy", "--data-dir", "zero_grey.npy", *MLP, "--out", "run-mlp"], tmp_path)
    rc, _, err = finish(dcgan)
    assert_one_line_error(rc, err, "zero_pixels.npy", "holds empty images", "0x0 pixels")
    rc, _, err = finish(mlp)
    assert_one_line_error(rc, err, "zero_grey.npy", "holds empty images", "0x0 pixels")
    assert not (tmp_path / "run-dcgan").exists() and not (tmp_path / "run-mlp").exists()


# --------------------------------------------------------------------------------------------- CIFAR-10

def cifar_folder(root, sizes):
    """An extracted cifar-10-batches-bin/ of sparse, all-zero batch files of the given sizes (no disk used)."""
    folder = root / "cifar" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, size in sizes.items():
        with open(folder / name, "wb") as f:
            f.truncate(size)
    return root / "cifar"


def test_a_cifar10_batch_file_of_the_wrong_size_is_one_line_naming_it(tmp_path):
    """One record too many in data_batch_2.bin (a whole number of records, labels all valid): it used to
    be taken as given; now each batch file must be exactly 10,000 records."""
    sizes = {f"data_batch_{i}.bin": CIFAR_BATCH for i in range(1, 6)}
    sizes["data_batch_2.bin"] = CIFAR_BATCH + 3_073
    cifar_folder(tmp_path, sizes)
    rc, _, err = finish(launch(["--dataset", "cifar10", "--data-dir", "cifar", *DCGAN, "--out", "run"], tmp_path))
    assert_one_line_error(rc, err, "data_batch_2.bin: 30,733,073 bytes", "exactly 30,730,000 bytes",
                          "10,000 records")
    assert not (tmp_path / "run").exists()


def test_a_30_gb_cifar10_batch_file_is_refused_before_it_is_read(tmp_path):
    """30 GB (sparse) data_batch_1.bin: its size is checked before a byte is read, so the message names
    the file, not an out-of-memory error blamed on --batch-size."""
    cifar_folder(tmp_path, {"data_batch_1.bin": 30 * 10 ** 9})
    rc, _, err = finish(launch(["--dataset", "cifar10", "--data-dir", "cifar", *DCGAN, "--out", "run"], tmp_path),
                        timeout=60)
    line = assert_one_line_error(rc, err, "data_batch_1.bin: 30,000,000,000 bytes, too long",
                                 "exactly 30,730,000 bytes")
    assert "memory" not in line
