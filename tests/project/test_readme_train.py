"""Every command of docs/training.md's "From the installed package: `scratchgan train`" block runs as written,
with tiny sizes appended (argparse keeps the last value of a flag) and its inputs made here: the CIFAR-10
tarball is a small one in the official layout served from the cache with its checksum pinned (no
network), my_images.npy and img_align_celeba/ are written by the test.
"""
from __future__ import annotations

import hashlib
import re
import shlex
import tempfile
from pathlib import Path

import numpy as np
import pytest
from cifar_files import make_tarball  # the small tarball in the official layout

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli.main import main as cli_main
from scratchgan.data import cifar10, load_mnist_bundled, make_demo_folder

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "training.md"
SECTION = "## From the installed package: `scratchgan train`"
TINY = {"dcgan": ["--g-width", "2", "--d-width", "2"],
        "mlp": ["--g-hidden", "8", "--d-hidden", "8"]}
SHORT = ["--latent-dim", "4", "--epochs", "1", "--limit", "8", "--batch-size", "4", "--no-progress",
         "--sample-every", "0"]


def commands():
    section = GUIDE.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.strip()]


def test_the_block_shows_every_new_input_and_convenience():
    text = " ".join(" ".join(c) for c in commands())
    for words in ("--arch dcgan", "--dataset cifar10", "--dataset npy", "--data-dir my_idx", "--image-size 128",
                  "--tensorboard",
                  "--dry-run", "--version"):
        assert words in text, words


@pytest.mark.parametrize("argv", [pytest.param(a, marks=[pytest.mark.slow] if "128" in a else [],
                                              id=" ".join(a[1:6])) for a in commands()])
def test_readme_command_runs(argv, tmp_path, monkeypatch, capsys):
    assert argv[0] == "scratchgan"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # --dry-run's temporary folder: under tmp_path
    args = argv[1:]
    if "--tensorboard" in args:
        pytest.importorskip("tensorboardX")
    if "cifar10" in args:  # the cached tarball, as a first run would have downloaded it
        tarball = tmp_path / "cache" / "cifar10" / cifar10.ARCHIVE
        tarball.parent.mkdir(parents=True)
        make_tarball(tarball)
        monkeypatch.setattr(cifar10, "SHA256", hashlib.sha256(tarball.read_bytes()).hexdigest())
        monkeypatch.setattr(cifar10, "SIZE", tarball.stat().st_size)
    if "my_images.npy" in args:
        np.save("my_images.npy", np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8))
    if "my_idx" in args:  # MNIST's format, not MNIST's files
        Path("my_idx").mkdir()
        rng = np.random.default_rng(1)
        for stem, array in [("train-images-idx3-ubyte", rng.integers(0, 256, (16, 28, 28))),
                            ("train-labels-idx1-ubyte", rng.integers(0, 10, 16))]:
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
            Path("my_idx", stem).write_bytes(header + array.astype(np.uint8).tobytes())
    if "img_align_celeba" in args:
        make_demo_folder("img_align_celeba", load_mnist_bundled()[0][:16], size=32, n=16)
    if args and args[0] == "train":
        arch = "dcgan" if "dcgan" in args else "mlp"
        args = [*args, *TINY[arch], *SHORT]
    assert cli_main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    if args == ["--version"]:
        assert out.startswith("scratchgan ")
        return
    found = re.search(r"outputs in (\S+)", out).group(1)
    _, meta = load_checkpoint(Path(found) / "checkpoint.npz")
    if "--image-size" in args:
        assert meta["config"]["image_shape"] == [3, 128, 128]
    if "cifar10" in args:
        assert meta["config"]["image_shape"] == [3, 32, 32]
    if "my_idx" in args:
        assert "are not the official MNIST files" in out
    if "--tensorboard" in args:  # the flag alone: the run's own OUT/tb; with DIR: the run's folder under DIR
        given = args[args.index("--tensorboard") + 1]
        tb = Path(found) / "tb" if given.startswith("--") else Path(given)
        assert list(tb.glob("events.out.tfevents.*" if given.startswith("--") else "*/events.out.tfevents.*"))
