"""--dataset npy --data-dir FILE.npy (scratchgan/data/npy.py): a user's own image array, checked.

uint8 (N, H, W) / (N, C, H, W) as they are, floats in [0, 1] or [-1, 1] mapped to 0..255; every bad
array (dtype, rank, channels, non-square, NaN, range, pickled objects, not a .npy) is one line, exit 2
from the CLI, before anything is written.
"""
import re

import numpy as np
import pytest

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli.main import main as cli_main
from scratchgan.data import DataError
from scratchgan.data.npy import check_images, load_npy_images


def save(tmp_path, name, array, **kwargs):
    path = tmp_path / name
    np.save(path, array, **kwargs)
    return path


def test_uint8_arrays_are_taken_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(5, 8, 8), (5, 1, 8, 8), (5, 3, 8, 8)]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(load_npy_images(save(tmp_path, "x.npy", x)), x)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_floats_in_either_range_map_back_to_the_same_grey_levels(tmp_path, dtype):
    levels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    unit = (levels / 255.0).astype(dtype)             # [0, 1]
    signed = (levels / 127.5 - 1.0).astype(dtype)     # [-1, 1], the range the loader scales to
    assert np.array_equal(load_npy_images(save(tmp_path, "u.npy", unit)), levels)
    assert np.array_equal(load_npy_images(save(tmp_path, "s.npy", signed)), levels)


@pytest.mark.parametrize("array, match", [
    (np.zeros((4, 8, 8), np.int32), r"dtype int32 is not supported; expected uint8 .* or float"),
    (np.zeros((4, 8, 8), bool), r"dtype bool is not supported"),
    (np.zeros((4, 64), np.uint8), r"expected images of shape \(N, H, W\) or \(N, C, H, W\), got 2 dimensions"),
    (np.zeros((2, 4, 1, 8, 8), np.uint8), r"got 5 dimensions"),
    (np.zeros((4, 8, 8, 3), np.uint8), r"expected 1 or 3 channels .*\(channels last\?"),
    (np.zeros((4, 8, 6), np.uint8), r"8x6 pixels are not square"),
    (np.zeros((0, 8, 8), np.uint8), r"holds no images"),
    (np.full((4, 8, 8), np.nan, np.float32), r"256 values are NaN or infinite"),
    (np.full((4, 8, 8), 2.0, np.float32), r"span \[2, 2\]; expected \[0, 1\] or \[-1, 1\]"),
    (np.linspace(-3, 1, 256).reshape(4, 8, 8), r"span \[-3, 1\]"),
])
def test_bad_arrays_are_one_line_data_errors(tmp_path, array, match):
    path = save(tmp_path, "bad.npy", array)
    with pytest.raises(DataError, match=match) as e:
        load_npy_images(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_pickled_object_arrays_are_refused_never_loaded(tmp_path):
    path = save(tmp_path, "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled object array.*never loads"):
        load_npy_images(path)


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.npy", "does not exist"),
    (lambda p: p, "is a folder"),
    (lambda p: (p / "text.npy").write_bytes(b"not numpy at all") and p / "text.npy", "text.npy: not a .npy file"),
])
def test_missing_folder_or_garbage_file(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        load_npy_images(make(tmp_path))


def test_npz_and_truncated_npy_files(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"two\.npz: an \.npz archive"):
        load_npy_images(tmp_path / "two.npz")
    whole = save(tmp_path, "whole.npy", np.zeros((50, 8, 8), np.uint8)).read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.npy: (not a readable \.npy file|cannot read)"):
        load_npy_images(tmp_path / "cut.npy")


def test_check_images_works_on_arrays_too():
    assert check_images(np.ones((2, 3, 4, 4), np.float32)).max() == 255


# ------------------------------------------------------------------------------------------- the CLI
TINY_MLP = ["--g-hidden", "8", "--d-hidden", "8", "--batch-size", "4", "--epochs", "1", "--no-progress",
            "--sample-every", "0"]
TINY_DCGAN = ["--arch", "dcgan", "--g-width", "2", "--d-width", "2", "--latent-dim", "4", "--batch-size", "4",
              "--epochs", "1", "--no-progress", "--sample-every", "0"]


def test_mlp_and_dcgan_train_on_an_npy_array(tmp_path):
    x = np.random.default_rng(1).random((8, 3, 20, 20)).astype(np.float32)  # RGB floats in [0, 1], 20x20
    path = save(tmp_path, "mine.npy", x)
    out = tmp_path / "mlp"
    assert cli_main(["train", "--dataset", "npy", "--data-dir", str(path), *TINY_MLP, "--out", str(out)]) == 0
    config = load_checkpoint(out / "checkpoint.npz")[1]["config"]
    assert config["image_size"] == 3 * 20 * 20 and config["image_shape"] == [3, 20, 20]
    out = tmp_path / "dcgan"
    assert cli_main(["train", "--dataset", "npy", "--data-dir", str(path), *TINY_DCGAN, "--image-size", "32",
                     "--out", str(out)]) == 0
    config = load_checkpoint(out / "checkpoint.npz")[1]["config"]
    assert (config["resolution"], config["channels"], config["image_shape"]) == (32, 3, [3, 32, 32])


@pytest.mark.parametrize("args, match", [
    (lambda p: ["--data-dir", str(p / "int.npy")], r"int\.npy: dtype int64 is not supported"),
    (lambda p: ["--data-dir", str(p / "flat.npy")], r"flat\.npy: expected images of shape .* got 2 dimensions"),
    (lambda p: [], r"--dataset npy needs --data-dir FILE\.npy"),
    (lambda p: ["--data-dir", str(p / "side20.npy"), "--arch", "dcgan"],
     r"images of 20x20 pixels; the DCGAN makes 28, 32, 64, 128: pass --image-size"),
])
def test_cli_bad_arrays_exit_2_with_one_line(tmp_path, capsys, args, match):
    save(tmp_path, "int.npy", np.zeros((8, 8, 8), np.int64))
    save(tmp_path, "flat.npy", np.zeros((8, 64), np.uint8))
    save(tmp_path, "side20.npy", np.zeros((8, 20, 20), np.uint8))
    code = cli_main(["train", "--dataset", "npy", *args(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("scratchgan train: error: ")
    assert re.search(match, err[0]), err[0]
    assert not (tmp_path / "o").exists()


def test_fit_images_converts_channels_and_resizes_each_plane():
    from PIL import Image

    from scratchgan.data.transforms import fit_images
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 3, 20, 20), dtype=np.uint8)
    assert np.array_equal(fit_images(rgb, 20, 3), rgb)
    grey = fit_images(rgb, 20, 1)
    assert grey.shape == (3, 1, 20, 20)
    for x, g in zip(rgb, grey):  # Pillow's ITU-R 601 luma, L = (299 R + 587 G + 114 B) / 1000
        assert np.array_equal(g[0], np.asarray(Image.fromarray(x.transpose(1, 2, 0)).convert("L")))
    assert np.array_equal(fit_images(grey, 20, 3), np.repeat(grey, 3, axis=1))
    big = fit_images(rgb, 32, 3)
    assert big.shape == (3, 3, 32, 32) and big.dtype == np.uint8
    expected = np.asarray(Image.fromarray(rgb[1, 2]).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(big[1, 2], expected)
    with pytest.raises(ValueError, match="fit_images expects uint8"):
        fit_images(rgb.astype(np.float32), 32, 3)
