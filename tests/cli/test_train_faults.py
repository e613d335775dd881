"""`scratchgan train`'s own fault cases: every place it writes is checked before the first write (--tensorboard
too), a dry run checks what its real run checks and leaves nothing when refused, a resume with nothing left
to do changes nothing, and a checkpoint never chooses where a run writes or what it reads.

Runs are in process, on bundled digits and tiny networks. The read-only file system is simulated for the
paths under one folder (os.mkdir / os.open / open raise EROFS there: these tests may run as root, for whom
chmod blocks nothing); /sys is a real file system that refuses, where there is one.
"""
from __future__ import annotations

import builtins
import errno
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from commands import one_line

from scratchgan.backend import BackendError, get_xp
from scratchgan.checkpoint import load_checkpoint, save_checkpoint
from scratchgan.cli import train as train_command
from scratchgan.cli.main import main as cli_main
from scratchgan.run import runlog

TINY = ["--dataset", "mnist-bundled", "--limit", "128", "--batch-size", "32", "--g-hidden", "16",
        "--d-hidden", "16", "--latent-dim", "8", "--no-progress", "--sample-every", "0"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user cache; temporary folders (a dry run's) in tmp_path/tmp, where a test can see what is left."""
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR


def train(*argv):
    return cli_main(["train", *argv])


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def read_only_under(monkeypatch, root):
    """Simulate a read-only file system at ``root``: making a folder or opening a file for writing fails EROFS."""
    root = os.path.abspath(root)
    real_open, real_mkdir, real_builtin_open = os.open, os.mkdir, builtins.open

    def under(path):
        return os.path.abspath(os.fspath(path)).startswith(root)

    def ro_open(path, flags, *args, **kwargs):
        if kwargs.get("dir_fd") is None and under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        if under(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    def ro_builtin_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and under(file) and set(mode) & set("wax+"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(file))
        return real_builtin_open(file, mode, *args, **kwargs)
    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    monkeypatch.setattr(builtins, "open", ro_builtin_open)


def cupy_works():
    try:
        get_xp("cupy")
    except BackendError:
        return False
    return True


# ------------------------------------------------------------------------------------------- --dry-run
@pytest.mark.skipif(cupy_works(), reason="CuPy and a GPU are here: the dry run runs")
def test_a_dry_run_on_cupy_without_cupy_leaves_no_folder(tmp_path, capsys):
    """`train --backend cupy --dry-run` without CuPy: one line, exit 2, and no temporary folder made or named."""
    assert train("--backend", "cupy", "--dry-run", "--g-hidden", "8", "--d-hidden", "8", "--no-progress") == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "CuPy is not installed" in lines[0] and "Traceback" not in err, err
    assert out == "" and list((tmp_path / "tmp").iterdir()) == []


def make_npy(path, shape, dtype=np.uint8):
    np.save(path, np.random.default_rng(0).integers(0, 256, shape).astype(dtype))
    return str(path)


DRY_RUN_CASES = {  # each refused by the real run before it trains
    "folder-missing": lambda t: ["--arch", "dcgan", "--dataset", "folder", "--data-dir", str(t / "nonexistent")],
    "folder-empty": lambda t: ["--arch", "dcgan", "--dataset", "folder", "--data-dir", str(t / "empty_folder")],
    "idx-missing": lambda t: ["--dataset", "mnist", "--data-dir", str(t / "nonexistent")],
    "bundled-with-data-dir": lambda t: ["--dataset", "mnist-bundled", "--data-dir", str(t)],
    "npy-missing": lambda t: ["--dataset", "npy", "--data-dir", str(t / "missing.npy")],
    "npy-not-npy": lambda t: ["--dataset", "npy", "--data-dir", str(t / "notes.txt")],
    "npy-not-square": lambda t: ["--dataset", "npy", "--data-dir", make_npy(t / "wide.npy", (40, 28, 20))],
    "npy-conditional": lambda t: ["--dataset", "npy", "--data-dir", make_npy(t / "ok.npy", (40, 28, 28)),
                                  "--conditional"],
    "limit-below-batch": lambda t: ["--dataset", "mnist-bundled", "--limit", "10", "--batch-size", "32"],
    "npy-fewer-than-batch": lambda t: ["--dataset", "npy", "--data-dir", make_npy(t / "few.npy", (20, 28, 28)),
                                       "--batch-size", "32"],
    "eval-every-not-28x28": lambda t: ["--arch", "dcgan", "--dataset", "mnist-bundled", "--image-size", "32",
                                       "--eval-every", "5"],
}


@pytest.mark.parametrize("case", list(DRY_RUN_CASES))
def test_a_dry_run_refuses_what_the_real_run_refuses(tmp_path, capsys, case):
    """A dry run checks the data's paths as its real run does (e.g. `train --arch dcgan --dataset folder
    --data-dir /nonexistent --dry-run`). Each case: the real run and the dry run both end in the same one
    line, exit 2, and write nothing (the dry run makes no temporary folder)."""
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "empty_folder" / "readme.txt").write_text("no pictures yet\n")
    (tmp_path / "notes.txt").write_text("not an array\n")
    args = DRY_RUN_CASES[case](tmp_path)
    small = ["--g-width", "4", "--d-width", "4"] if "dcgan" in args else ["--g-hidden", "8", "--d-hidden", "8"]
    lines = {}
    for kind, extra in (("real", ["--out", str(tmp_path / "real")]), ("dry", ["--dry-run"])):
        capsys.readouterr()
        assert train(*args, *small, "--no-progress", *extra) == 2, (kind, capsys.readouterr())
        lines[kind] = one_line(capsys)
    assert lines["dry"] == lines["real"]
    assert not (tmp_path / "real").exists() and list((tmp_path / "tmp").iterdir()) == []


def test_a_dry_run_reads_a_npy_files_header_not_its_images(tmp_path, capsys, monkeypatch):
    """The .npy header says how many images the real run has (too few for the batch: refused); the images
    themselves are not read: a dry run of good data trains its synthetic steps."""
    data = make_npy(tmp_path / "mine.npy", (40, 28, 28))
    small = ["--g-hidden", "8", "--d-hidden", "8", "--no-progress"]
    assert train("--dataset", "npy", "--data-dir", data, "--dry-run", "--batch-size", "64", *small) == 2
    assert "--batch-size 64 is larger than the 40 training images" in one_line(capsys)
    from scratchgan.data import npy
    monkeypatch.setattr(npy, "load_npy_images", lambda path: pytest.fail("a dry run loaded the images"))
    assert train("--dataset", "npy", "--data-dir", data, "--dry-run", "--batch-size", "8", *small) == 0
    lines = capsys.readouterr().out.splitlines()  # the real run's plan first, its size from the header
    assert "  dataset   npy, split train: 40 images, each 28x28" in lines
    first = next(line for line in lines if line.startswith("dry run: "))
    assert first.startswith("dry run: 3 steps on random images, no dataset read; outputs in ")
    out = Path(first.rsplit(" ", 1)[1])
    assert load_checkpoint(out / "checkpoint.npz")[1]["global_step"] == 3


# ------------------------------------------------------------------------------------------- --tensorboard
@pytest.mark.skipif(not runlog.tensorboard_available(), reason="tensorboardX (the tensorboard extra) not installed")
def test_tensorboard_on_a_read_only_place_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """On a read-only mount, `--tensorboard ro/tb` is refused naming --tensorboard, before config.json is
    written, so the next plain run is not refused as "an earlier run"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro").mkdir()
    with monkeypatch.context() as m:
        read_only_under(m, tmp_path / "ro")
        code = train(*TINY, "--epochs", "1", "--out", "run", "--tensorboard", "ro/tb")
    assert code == 2
    assert one_line(capsys) == ("scratchgan train: error: cannot write ro/tb: Read-only file system; choose another "
                                "--tensorboard")
    assert not (tmp_path / "run").exists() and list((tmp_path / "ro").iterdir()) == []
    assert train(*TINY, "--epochs", "1", "--out", "run") == 0  # the next plain run


@pytest.mark.skipif(not runlog.tensorboard_available(), reason="tensorboardX (the tensorboard extra) not installed")
@pytest.mark.skipif(not os.path.ismount("/sys"), reason="no /sys mount here")
def test_tensorboard_on_a_file_system_that_refuses(tmp_path, capsys):
    code = train(*TINY, "--epochs", "1", "--out", str(tmp_path / "run"), "--tensorboard", "/sys/scratchgan-test-tb")
    line = one_line(capsys)
    assert code == 2 and re.fullmatch(r"scratchgan train: error: cannot write /sys/scratchgan-test-tb: (Operation not "
                                      r"permitted|Permission denied); choose another --tensorboard", line), line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not runlog.tensorboard_available(), reason="tensorboardX (the tensorboard extra) not installed")
def test_a_checkpoint_does_not_choose_where_tensorboard_writes(tmp_path, capsys, monkeypatch):
    """A checkpoint whose config.tensorboard is ../elsewhere/victim_tb: `train --resume` without --tensorboard
    writes no event files there (a checkpoint never chooses where a run writes)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert train(*TINY, "--epochs", "1", "--out", "base") == 0
    arrays, meta = load_checkpoint(work / "base" / "checkpoint.npz")
    meta["config"]["tensorboard"] = "../elsewhere/victim_tb"
    (work / "dl").mkdir()
    save_checkpoint(work / "dl" / "crafted.npz", arrays, meta)
    capsys.readouterr()
    # (dl/ holds the checkpoint alone, not its run: a resume goes into a new --out)
    assert train("--resume", "dl/crafted.npz", "--epochs", "2", "--out", "resumed", "--no-progress") == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "elsewhere").exists()
    assert "the run logged to TensorBoard in ../elsewhere/victim_tb; give --tensorboard again" in out
    assert load_checkpoint(work / "resumed" / "checkpoint.npz")[1]["config"]["tensorboard"] is None
    # given on the command line, it is used
    assert train("--resume", "resumed/checkpoint.npz", "--epochs", "3", "--no-progress", "--tensorboard", "tb") == 0
    assert list((work / "tb").glob("resumed-*/events.out.tfevents.*"))  # a folder of the run's own under tb/


def test_what_a_resume_never_takes_from_a_checkpoint(tmp_path, capsys):
    """The audit of the config keys a resume reads back: where to write and what to delete come from the
    command line only; which files to read, from the command line unless the checkpoint continues its own run
    in place."""
    assert train(*TINY, "--epochs", "1", "--out", str(tmp_path / "base")) == 0
    arrays, meta = load_checkpoint(tmp_path / "base" / "checkpoint.npz")
    meta["config"].update(out=str(tmp_path / "evil"), tensorboard=str(tmp_path / "evil-tb"), overwrite=True,
                          resume=str(tmp_path / "evil.npz"))
    crafted = save_checkpoint(tmp_path / "dl" / "crafted.npz", arrays, meta)
    argv = ["--resume", str(crafted)]
    parser = train_command.make_train_parser("t", "", train_command.MLP_DEFAULTS)
    explicit = vars(train_command.make_train_parser("t", "", train_command.MLP_DEFAULTS, suppress=True).parse_args(argv))
    config, resume = train_command.resolve_config(parser.parse_args(argv), explicit, train_command.MLP_DEFAULTS, log=lambda line: None)
    assert resume == crafted and config["resume"] == str(crafted)
    assert config["out"] == str(crafted.parent) and config["tensorboard"] is None and config["overwrite"] is False
    # data read from a path the checkpoint names: only for its own run in its own folder
    meta["config"].update(dataset="mnist", data_dir="/etc")
    crafted = save_checkpoint(tmp_path / "dl2" / "crafted.npz", arrays, meta)
    capsys.readouterr()
    assert train("--resume", str(crafted), "--epochs", "2", "--no-progress") == 2
    assert one_line(capsys) == (f"scratchgan train: error: {crafted} was trained on --data-dir /etc: give --data-dir "
                                "again (a checkpoint resumed outside its own run folder does not choose which files "
                                "are read)")
    assert sorted(p.name for p in crafted.parent.iterdir()) == ["crafted.npz"]


# ------------------------------------------------------------------------------------------- nothing to do
def test_a_resume_with_nothing_to_do_changes_nothing(tmp_path, capsys):
    """`train --resume --out runs/fmnist --epochs 2` on a 4-epoch checkpoint: one line that it has already done
    more, exit 2, nothing trained and config.json unchanged."""
    run = tmp_path / "run"
    assert train(*TINY, "--epochs", "4", "--out", str(run)) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert train("--resume", "--out", str(run), "--epochs", "2", "--no-progress") == 2
    assert one_line(capsys) == (f"scratchgan train: error: --epochs 2: {run / 'checkpoint.npz'} has already done 4 "
                                "epochs; nothing was changed (to train on, pass --epochs 5 or more)")
    assert snapshot(run) == before
    for extra in (["--epochs", "4"], []):  # exactly done (--epochs given again, or the checkpoint's own 4)
        assert train("--resume", "--out", str(run), "--no-progress", *extra) == 0
        out, err = capsys.readouterr()
        assert err == "" and out == (f"nothing to do: {run / 'checkpoint.npz'} has done all 4 epochs of --epochs 4; "
                                     "nothing was changed (to train on, pass a larger --epochs)\n")
        assert snapshot(run) == before
