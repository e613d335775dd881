"""`scratchgan train --arch mlp|dcgan` (the installed package trains both networks, through the same
code as the two examples), --version, --dry-run, and a user's own IDX files under --data-dir.

Every bad combination is one line on stderr and exit 2, before anything is written.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from scratchgan import __version__
from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import train as train_command
from scratchgan.cli.main import main as cli_main

REPO = Path(__file__).resolve().parents[2]
TINY_MLP = ["--g-hidden", "8", "--d-hidden", "8", "--latent-dim", "4", "--limit", "64", "--batch-size", "16",
            "--epochs", "1", "--no-progress", "--sample-every", "0"]
TINY_DCGAN = ["--g-width", "2", "--d-width", "2", "--latent-dim", "4", "--limit", "64", "--batch-size", "16",
              "--epochs", "1", "--no-progress", "--sample-every", "0"]


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))


def help_blocks(text):
    """{--flag: its whole help text on one line} from argparse's --help output."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-\w, )?(--[\w-]+)", line)
        if m:
            current = m.group(2)
            blocks[current] = line
        elif current and line.startswith("      "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_train_help_states_both_architectures_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--help"])
    assert e.value.code == 0
    blocks = help_blocks(capsys.readouterr().out)
    # --out's default is a numbered folder named after the architecture (runs/00012-mlp-...), the same rule for both
    assert "(default: --name's folder, else a new numbered one, runs/00012-mlp-fashion-mnist-bce)" in blocks["--out"]
    for flag, key in [("--dataset", "dataset"), ("--batch-size", "batch_size"), ("--sample-every", "sample_every")]:
        assert train_command.MLP_DEFAULTS[key] != train_command.DCGAN_DEFAULTS[key]
        assert (f"(default: {train_command.MLP_DEFAULTS[key]} for --arch mlp, {train_command.DCGAN_DEFAULTS[key]} for --arch dcgan)"
                in blocks[flag]), blocks[flag]
    for flag in ("--image-size", "--channels", "--g-width", "--d-width"):
        assert "(--arch dcgan only)" in blocks[flag]
    for flag in ("--g-hidden", "--d-hidden", "--no-batchnorm", "--dropout"):
        assert "(--arch mlp only)" in blocks[flag]
    for flag in ("--conditional", "--embedding-dim"):  # both architectures: the DCGAN's D is a projection one
        assert "only)" not in blocks[flag]
    assert "projection discriminator" in blocks["--conditional"]
    assert "(default: mlp)" in blocks["--arch"]
    assert "128" in blocks["--image-size"] and "cifar10" in blocks["--dataset"] and "npy" in blocks["--dataset"]
    for flag, block in blocks.items():  # every flag says its default, --help and --version excepted
        assert "default" in block or flag in ("--help", "--version"), block


@pytest.mark.parametrize("defaults, prog", [(train_command.MLP_DEFAULTS, "mnist_mlp.py"), (train_command.DCGAN_DEFAULTS, "dcgan.py")])
def test_the_examples_help_keeps_one_default_each_and_has_the_new_flags(defaults, prog, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        train_command.train_main(["--help"], prog=prog, defaults=defaults)
    blocks = help_blocks(capsys.readouterr().out)
    assert "--arch" not in blocks
    assert f"(default: {defaults['batch_size']})" in blocks["--batch-size"]
    assert f"(default: {defaults['dataset']})" in blocks["--dataset"]
    for flag in ("--dry-run", "--tensorboard", "--version"):
        assert flag in blocks


def _same_run(tmp_path, a_args, b_args, b_defaults, b_prog):
    """Train with `scratchgan train A` and with the example's entry B; return both checkpoints."""
    assert cli_main(["train", *a_args, "--out", str(tmp_path / "a")]) == 0
    assert train_command.train_main([*b_args, "--out", str(tmp_path / "b")], prog=b_prog, defaults=b_defaults) == 0
    return load_checkpoint(tmp_path / "a" / "checkpoint.npz"), load_checkpoint(tmp_path / "b" / "checkpoint.npz")


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_scratchgan_train_runs_the_examples_code(tmp_path, arch):
    """`scratchgan train --arch A` with the example's defaults trains bit for bit what the example trains."""
    tiny = TINY_DCGAN if arch == "dcgan" else TINY_MLP
    defaults = train_command.ARCH_DEFAULTS[arch]
    data = ["--dataset", "mnist-bundled"]
    (arrays_a, meta_a), (arrays_b, meta_b) = _same_run(tmp_path, ["--arch", arch, *data, *tiny], [*data, *tiny],
                                                       defaults, f"{arch}.py")
    assert sorted(arrays_a) == sorted(arrays_b)
    for key in arrays_a:
        assert np.array_equal(arrays_a[key], arrays_b[key]), key
    for key in meta_b["config"]:  # every setting of the example's run (environment: timings only)
        if key not in ("out", "environment"):
            assert meta_a["config"][key] == meta_b["config"][key], key
    assert meta_a["config"]["arch"] == arch and meta_a["global_step"] == meta_b["global_step"] == 64 // 16


def test_dcgan_resumes_without_repeating_arch(tmp_path):
    out = tmp_path / "d"
    assert cli_main(["train", "--arch", "dcgan", "--dataset", "mnist-bundled", *TINY_DCGAN, "--out", str(out)]) == 0
    assert cli_main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["config"]["arch"] == "dcgan" and meta["global_step"] == 2 * 64 // 16


@pytest.mark.parametrize("args, pattern", [
    (["--arch", "dcgan", "--g-hidden", "8"], r"--g-hidden is a flag of --arch mlp; this run is --arch dcgan"),
    (["--image-size", "32"], r"--image-size is a flag of --arch dcgan; this run is --arch mlp"),
    (["--no-batchnorm", "--arch", "dcgan"], r"--no-batchnorm is a flag of --arch mlp"),
    (["--dataset", "folder", "--data-dir", "."], r"--dataset folder is for --arch dcgan"),
    (["--arch", "gan"], r"argument --arch: invalid choice: 'gan'"),
    (["--arch", "dcgan", "--image-size", "100"], r"--image-size: invalid choice: 100"),
    (["--dry-run", "--resume"], r"--dry-run starts a fresh run on random images; drop --resume"),
])
def test_bad_combinations_exit_2_with_one_line(tmp_path, capsys, args, pattern):
    try:
        code = cli_main(["train", "--dataset", "mnist-bundled", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    except SystemExit as e:  # argparse's errors exit from inside parse_args
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and re.search(pattern, err[0]), err
    assert err[0].startswith("scratchgan train: error: ")
    assert not (tmp_path / "o").exists()


def test_a_bad_arch_value_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scratchgan", "train", "--arch", "gan"], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ------------------------------------------------------------------------------------------- --version
def test_version_on_the_command_and_on_the_examples(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    commands = {
        "scratchgan": [sys.executable, "-m", "scratchgan", "--version"],
        "scratchgan train": [sys.executable, "-m", "scratchgan", "train", "--version"],
        "mnist_mlp.py": [sys.executable, str(REPO / "examples" / "mnist_mlp.py"), "--version"],
        "dcgan.py": [sys.executable, str(REPO / "examples" / "dcgan.py"), "--version"],
    }
    procs = {k: subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and err == "", (name, err)
        assert out.strip() == f"scratchgan {__version__}", (name, out)
    assert not list(tmp_path.iterdir()), "--version wrote something"


# ------------------------------------------------------------------------------------------- --dry-run
def test_dry_run_reads_no_data_and_writes_a_temporary_run(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise AssertionError("--dry-run touched the network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert cli_main(["train", "--dataset", "fashion-mnist", "--dry-run", "--g-hidden", "8", "--d-hidden", "8",
                     "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "plan of the real run (then the dry run trains its steps on random images):"  # first, the plan
    dry = next(line for line in lines if line.startswith("dry run: "))
    assert dry.startswith("dry run: 3 steps on random images, no dataset read; outputs in ")
    out = Path(dry.rsplit(" ", 1)[1])
    assert out.parent == tmp_path / "tmp" and out.name.startswith("scratchgan-dry-run-")
    _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["global_step"] == 3 and meta["config"]["dataset"] == "synthetic"
    assert meta["config"]["image_shape"] == [28, 28]


def test_dry_run_into_out_takes_the_datasets_shape_for_the_dcgan(tmp_path):
    out = tmp_path / "dry"
    assert cli_main(["train", "--arch", "dcgan", "--dataset", "cifar10", "--dry-run", "--g-width", "2",
                     "--d-width", "2", "--batch-size", "4", "--d-steps", "2", "--no-progress", "--out", str(out)]) == 0
    _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["config"]["image_shape"] == [3, 32, 32] and meta["global_step"] == 3
    assert not (tmp_path / "empty-cache").exists(), "--dry-run read or downloaded data"
    # the run's own settings only (--conditional is both architectures' now)
    assert "g_hidden" not in meta["config"] and "dropout" not in meta["config"]


def test_a_dry_runs_checkpoint_is_not_resumed(tmp_path, capsys):
    out = tmp_path / "dry"
    assert cli_main(["train", "--dry-run", "--g-hidden", "8", "--d-hidden", "8", "--batch-size", "4",
                     "--no-progress", "--out", str(out)]) == 0
    before = (out / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert cli_main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a --dry-run's checkpoint" in err[0], err
    assert (out / "checkpoint.npz").read_bytes() == before


# ------------------------------------------------------------------------------------------- own IDX files
def idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def test_your_own_idx_files_train_with_one_line_saying_they_are_not_official(tmp_path, capsys):
    rng = np.random.default_rng(0)
    own = tmp_path / "own"
    own.mkdir()
    (own / "train-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 256, (32, 28, 28))))
    (own / "train-labels-idx1-ubyte").write_bytes(idx_bytes(rng.integers(0, 10, 32)))
    out = tmp_path / "run"
    assert cli_main(["train", "--data-dir", str(own), *TINY_MLP, "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "official" in line]
    assert len(lines) == 1, lines
    assert re.match(r"train-images-idx3-ubyte, train-labels-idx1-ubyte in .*own are not the official MNIST files "
                    r"\(SHA-256 differs\); training on them as given", lines[0]), lines[0]
    assert load_checkpoint(out / "checkpoint.npz")[1]["global_step"] == 32 // 16
    # a file that is not IDX at all is still refused, in one line
    (own / "train-images-idx3-ubyte").write_bytes(b"garbage" * 10)
    assert cli_main(["train", "--data-dir", str(own), *TINY_MLP, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an IDX file" in err[0], err
