"""The commands' outputs and users' files: `sample --out`, `interpolate --out`, `evaluate --json` and `export
--out` refuse to replace an existing file unless --overwrite (the user's bytes stay as they were), replace it
with --overwrite (a symlink itself, never the file it points to); and a reader that has gone (`scratchgan -h |
head -1`, output into a closed pipe) gives no BrokenPipeError traceback, in any command.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from commands import call

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import evaluate as evaluate_cli
from scratchgan.cli import export
from scratchgan.cli import sample as sample_cli
from scratchgan.cli import train as train_command

REPO = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "mnist-bundled", "--limit", "128", "--batch-size", "32", "--g-hidden", "32,64",
        "--d-hidden", "64,32", "--no-progress", "--sample-every", "0", "--epochs", "1", "--latent-dim", "16"]
QUICK_EVAL = ["--n", "100", "--evaluator", "mlp", "--evaluator-limit", "600", "--evaluator-epochs", "1"]
USER_BYTES = b"the user's own file, not an output of scratchgan\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    old = os.environ.get("SCRATCHGAN_DATA")
    os.environ["SCRATCHGAN_DATA"] = str(tmp / "empty-cache")
    try:
        assert train_command.train_main([*TINY, "--out", str(tmp / "mlp")]) == 0
    finally:
        if old is None:
            del os.environ["SCRATCHGAN_DATA"]
        else:
            os.environ["SCRATCHGAN_DATA"] = old
    return tmp / "mlp" / "checkpoint.npz"


def refused(main, argv, capsys, pattern):
    code, err = call(main, argv, capsys)
    assert code == 2 and len(err) == 1, err
    assert re.search(pattern, err[0]), err[0]


def plant(*paths):
    for path in paths:
        path.write_bytes(USER_BYTES + path.name.encode())


def untouched(*paths):
    return all(path.read_bytes() == USER_BYTES + path.name.encode() for path in paths)


# ---------------------------------------------------------------------------------- refusals, --overwrite
def test_sample_out_refuses_existing_files_and_overwrite_replaces_them(checkpoint, tmp_path, capsys):
    npy, png = tmp_path / "trip.npy", tmp_path / "trip.png"
    plant(png)
    argv = ["--checkpoint", str(checkpoint), "--n", "4", "--out", str(tmp_path / "trip")]
    refused(sample_cli.sample_main, argv, capsys, r"--out: .*trip\.png exists; add --overwrite to replace .*trip\.npy "
                                                  r"and .*trip\.png")
    assert untouched(png) and not npy.exists()  # nothing written, not even the file that was not there
    plant(npy)
    refused(sample_cli.sample_main, argv, capsys, r"trip\.npy exists; add --overwrite")
    assert untouched(npy, png)
    assert call(sample_cli.sample_main, [*argv, "--overwrite"], capsys)[0] == 0
    assert np.load(npy).shape == (4, 28, 28) and png.read_bytes().startswith(b"\x89PNG")


def test_sample_outdir_refuses_the_files_beside_the_folder(checkpoint, tmp_path, capsys):
    plant(tmp_path / "fake.npy")
    refused(sample_cli.sample_main, ["--checkpoint", str(checkpoint), "--seeds", "0-3", "--outdir",
                                     str(tmp_path / "fake")], capsys, r"--outdir: .*fake\.npy exists; add --overwrite")
    assert untouched(tmp_path / "fake.npy") and not (tmp_path / "fake").exists()
    refused(sample_cli.sample_main, ["--checkpoint", str(checkpoint), "--n", "2", "--out", str(tmp_path / "x"),
                                     "--resume"], capsys, r"--resume finishes an interrupted --outdir")


def test_overwrite_replaces_a_symlink_never_the_file_it_points_to(checkpoint, tmp_path, capsys):
    elsewhere = tmp_path / "pictures"
    elsewhere.mkdir()
    plant(elsewhere / "holiday.png")
    (tmp_path / "s.png").symlink_to(elsewhere / "holiday.png")
    argv = ["--checkpoint", str(checkpoint), "--n", "4", "--out", str(tmp_path / "s")]
    refused(sample_cli.sample_main, argv, capsys, r"s\.png exists; add --overwrite")
    assert call(sample_cli.sample_main, [*argv, "--overwrite"], capsys)[0] == 0
    assert untouched(elsewhere / "holiday.png")
    assert not (tmp_path / "s.png").is_symlink() and (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")


def test_interpolate_refuses_existing_files_and_overwrite_replaces_them(checkpoint, tmp_path, capsys):
    gif, png = tmp_path / "walk.gif", tmp_path / "walk.png"
    plant(png)
    argv = ["--checkpoint", str(checkpoint), "--seeds", "0,1", "--steps", "2", "--out", str(gif)]
    refused(sample_cli.interpolate_main, argv, capsys, r"walk\.png exists; add --overwrite to replace .*walk\.gif")
    assert untouched(png) and not gif.exists()
    plant(gif)
    png.unlink()
    refused(sample_cli.interpolate_main, argv, capsys, r"walk\.gif exists; add --overwrite")
    assert untouched(gif) and not png.exists()
    assert call(sample_cli.interpolate_main, [*argv, "--overwrite"], capsys)[0] == 0
    assert gif.read_bytes().startswith(b"GIF8") and png.read_bytes().startswith(b"\x89PNG")


def test_evaluate_json_refuses_an_existing_file_before_any_work(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    results = tmp_path / "results.json"
    plant(results)
    argv = ["--checkpoint", str(checkpoint), *QUICK_EVAL, "--json", str(results)]
    refused(evaluate_cli.evaluate_main, argv, capsys, r"--json: .*results\.json exists; add --overwrite")
    assert untouched(results) and not (tmp_path / "cache").exists()  # refused before the evaluator was made
    assert call(evaluate_cli.evaluate_main, [*argv, "--overwrite"], capsys)[0] == 0
    assert np.isfinite(json.loads(results.read_text())["frechet_distance"])


def test_export_overwrite_replaces_another_file_but_never_the_checkpoint(checkpoint, tmp_path, capsys):
    other = tmp_path / "G.npz"
    plant(other)
    refused(export.export_main, ["--checkpoint", str(checkpoint), "--out", str(other)], capsys,
            r"exists and is not an exported generator; choose another --out, or add --overwrite")
    assert untouched(other)
    assert call(export.export_main, ["--checkpoint", str(checkpoint), "--out", str(other), "--overwrite"],
                capsys)[0] == 0
    assert load_checkpoint(other)[1]["kind"] == "generator"
    copy = tmp_path / "copy.npz"
    copy.write_bytes(checkpoint.read_bytes())
    refused(export.export_main, ["--checkpoint", str(copy), "--out", str(copy), "--overwrite"], capsys,
            r"is the checkpoint being exported")
    assert copy.read_bytes() == checkpoint.read_bytes()


# ---------------------------------------------------------------------------------- a reader that has gone
def run_into_closed_pipe(args, cwd, close="stdout"):
    """`python -m scratchgan ARGS` whose stdout (or stderr) is a pipe nobody reads any more, as in
    `scratchgan -h | head -1` once head has its line: (exit code, the other stream)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = dict(os.environ, PYTHONPATH=str(REPO), SCRATCHGAN_DATA=str(cwd / "cache"))
    streams = {"stdout": write_end, "stderr": subprocess.PIPE} if close == "stdout" else \
        {"stdout": subprocess.PIPE, "stderr": write_end}
    try:
        p = subprocess.run([sys.executable, "-m", "scratchgan", *map(str, args)], cwd=cwd, env=env, text=True,
                           timeout=120, **streams)
    finally:
        os.close(write_end)
    return p.returncode, p.stderr if close == "stdout" else p.stdout


def test_every_help_into_a_closed_pipe_is_quiet(tmp_path):
    for args in (["-h"], ["--help"], ["--version"], ["train", "--help"], ["sample", "--help"], ["evaluate", "--help"],
                 ["export", "--help"], ["interpolate", "--help"], ["train", "--arch", "dcgan", "-h"]):
        code, err = run_into_closed_pipe(args, tmp_path)
        assert (code, err) == (0, ""), args


def test_outputs_into_a_closed_pipe_are_quiet_and_the_work_is_done(checkpoint, tmp_path):
    ckpt = str(checkpoint)
    cases = {
        "sample": (["sample", "--checkpoint", ckpt, "--seeds", "0-3", "--outdir", "fake"], ["fake.npy", "fake.png"]),
        "interpolate": (["interpolate", "--checkpoint", ckpt, "--seeds", "0,1", "--steps", "2", "--out", "w.gif"],
                        ["w.gif", "w.png"]),
        "export": (["export", "--checkpoint", ckpt, "--out", "G.npz"], ["G.npz"]),
        "evaluate": (["evaluate", "--checkpoint", ckpt, *QUICK_EVAL, "--json", "e.json"], ["e.json"]),
    }
    for name, (args, outputs) in cases.items():
        code, err = run_into_closed_pipe(args, tmp_path)
        assert (code, err) == (0, ""), name
        assert all((tmp_path / out).is_file() for out in outputs), name
    assert len(list((tmp_path / "fake").glob("*.png"))) == 4


def test_an_error_into_a_closed_stderr_still_exits_2(checkpoint, tmp_path):
    for args in (["sample", "--checkpoint", str(checkpoint), "--n", "0", "--out", "x"], ["bogus"],
                 ["export", "--checkpoint", str(tmp_path / "missing.npz"), "--out", "G.npz"]):
        code, out = run_into_closed_pipe(args, tmp_path, close="stderr")
        assert (code, out) == (2, ""), args
