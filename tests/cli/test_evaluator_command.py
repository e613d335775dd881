"""`scratchgan evaluator` (train an evaluator into a file, as the shipped ones were made), `evaluate` and
`train --eval-every` with the shipped rulers (no training, a modified file refused in one line), and the one
line, said before any work, for runs that get no metric (CIFAR-10, image folders, .npy)."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from scratchgan.checkpoint import save_checkpoint
from scratchgan.cli import evaluate as evaluate_cli
from scratchgan.cli import train as train_command
from scratchgan.eval import evaluator, shipped

from commands import env_for, one_line

TINY = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "32", "--g-hidden", "16,32",
        "--d-hidden", "16", "--latent-dim", "8", "--no-progress", "--sample-every", "0"]


def scratchgan(args, tmp):
    p = subprocess.run([sys.executable, "-m", "scratchgan", *map(str, args)], cwd=tmp, env=env_for(tmp),
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise AssertionError("the shipped ruler must be used: nothing is trained")
    monkeypatch.setattr(evaluator, "train_classifier", refuse)


def test_the_command_rebuilds_a_file_bit_for_bit(tmp_path):
    args = ["evaluator", "--dataset", "mnist", "--limit", "300", "--epochs", "2"]
    code, out, err = scratchgan([*args, "--out", "one.npz"], tmp_path)
    assert code == 0 and err == "", err
    assert "evaluator epoch 2/2: mean loss" in out and "\r" not in out + err  # not a terminal: a line per epoch
    assert f"SHA-256 {shipped.sha256_of(tmp_path / 'one.npz')}" in out
    assert "shipped" not in out  # not the shipped recipe (--limit, --epochs): nothing to compare with
    assert scratchgan([*args, "--out", "two.npz"], tmp_path)[0] == 0
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    code, out, err = scratchgan([*args, "--out", "one.npz"], tmp_path)  # the user's file is kept
    assert code == 2 and err.strip().splitlines() == [
        "scratchgan evaluator: error: --out: one.npz exists; add --overwrite to replace one.npz, or choose "
        "another --out"]
    code, _, err = scratchgan([*args, "--out", "x.npz", "--data-dir", "somewhere"], tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bundled test digits" in err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHGAN_DATA", str(out / "cache"))
        assert train_command.train_main([*TINY, "--epochs", "1", "--out", str(out / "run")]) == 0
    return out / "run" / "checkpoint.npz"


def test_evaluate_and_eval_every_use_the_shipped_ruler(tiny_run, tmp_path, no_training, capsys):
    target = tmp_path / "e.json"
    assert evaluate_cli.evaluate_main(["--checkpoint", str(tiny_run), "--n", "200", "--json", str(target)]) == 0
    used = json.loads(target.read_text())["evaluator"]
    assert used["shipped"] and used["path"] == str(shipped.FOLDER / "cnn-mnist.npz")
    assert "shipped with scratchgan" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()  # no cache folder needed
    out = tmp_path / "run"
    assert train_command.train_main([*TINY, "--epochs", "1", "--eval-every", "8", "--out", str(out)]) == 0
    assert "shipped with scratchgan" in (out / "log.txt").read_text()


def test_a_modified_shipped_file_is_one_line_and_exit_2(tiny_run, tmp_path, no_training, monkeypatch, capsys):
    copy = tmp_path / "weights"
    shutil.copytree(shipped.FOLDER, copy)
    data = bytearray((copy / "cnn-mnist.npz").read_bytes())
    data[-4096] ^= 0x40
    (copy / "cnn-mnist.npz").write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "FOLDER", copy)
    assert evaluate_cli.evaluate_main(["--checkpoint", str(tiny_run), "--n", "200"]) == 2
    line = one_line(capsys)
    assert line.startswith("scratchgan evaluate: error: the shipped mnist evaluator ") and "was modified" in line
    code = train_command.train_main([*TINY, "--epochs", "1", "--eval-every", "8", "--out", str(tmp_path / "r")])
    assert code == 2 and "was modified" in one_line(capsys)


def _no_metric_line(line, dataset):
    assert f"{dataset} runs get no quality metric from the classifier" in line
    assert "--metric fid" in line and "--eval-metric fid" in line  # the Inception FID measures them


@pytest.mark.parametrize("dataset", ["npy", "cifar10", "folder"])
def test_eval_every_says_up_front_which_runs_get_no_metric(tmp_path, dataset, capsys):
    """Refused before the data is read: the data named here does not even exist."""
    arch = ["--arch", "dcgan"] if dataset == "folder" else []
    code = train_command.command_main([*arch, "--dataset", dataset, "--data-dir", str(tmp_path / "nowhere"),
                                       "--eval-every", "32", "--out", str(tmp_path / "run")])
    assert code == 2
    line = one_line(capsys)
    assert line.startswith("scratchgan train: error: --eval-every: ")
    _no_metric_line(line, dataset)
    assert not (tmp_path / "run").exists()


def test_evaluate_says_up_front_that_a_cifar_run_gets_no_metric(tmp_path, capsys):
    """Said from the checkpoint's header, before its generator is loaded (this file has none)."""
    path = save_checkpoint(tmp_path / "checkpoint.npz", {"w": np.zeros(2)}, {"config": {"dataset": "cifar10"}})
    assert evaluate_cli.evaluate_main(["--checkpoint", str(path), "--metric", "classifier"]) == 2  # (else: FID)
    line = one_line(capsys)
    assert line.startswith("scratchgan evaluate: error: cifar10 runs get no quality metric")
    _no_metric_line(line, "cifar10")
    assert f"scratchgan evaluate {path} --metric fid" in line
