"""--snapshot-every (numbered checkpoints) and checkpoint_best.npz (--eval-every): written, resumed,
cleared by --overwrite, refused where wrong; old checkpoints (no "best" in their meta) still resume."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from scratchgan.checkpoint import load_checkpoint, save_checkpoint
from scratchgan.cli import train as train_command
from scratchgan.eval import evaluator
from scratchgan.run import rundir, trainer, viz

TINY = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "32", "--g-hidden", "32,64",
        "--d-hidden", "64,32", "--no-progress", "--sample-every", "0", "--log-every", "4"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    # --eval-every's classifier, small (seconds instead of a minute): trained on 600 digits for one epoch
    monkeypatch.setattr(evaluator, "get_evaluator",
                        functools.partial(evaluator.get_evaluator, limit=600, epochs=1, cache=False))


def arrays_of(path):
    return load_checkpoint(path)[0]


def same_state(a, b):
    a, b = arrays_of(a), arrays_of(b)
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_snapshots_are_kept_and_resume_exactly(tmp_path):
    run = tmp_path / "run"
    assert train_command.train_main([*TINY, "--epochs", "2", "--snapshot-every", "1", "--out", str(run)]) == 0
    assert sorted(p.name for p in run.glob("checkpoint*.npz")) == [
        "checkpoint.npz", "checkpoint_epoch0001.npz", "checkpoint_epoch0002.npz"]
    _, meta = load_checkpoint(run / "checkpoint_epoch0001.npz")
    assert meta["epoch"] == 1 and meta["batch_in_epoch"] == 0 and meta["global_step"] == 8
    assert same_state(run / "checkpoint_epoch0002.npz", run / "checkpoint.npz")
    # resuming from a snapshot (into another folder) retraces the run bit for bit; every 3rd epoch: none at 2
    other = tmp_path / "other"
    assert train_command.train_main([*TINY, "--epochs", "2", "--snapshot-every", "3", "--resume",
                           str(run / "checkpoint_epoch0001.npz"), "--out", str(other)]) == 0
    assert same_state(other / "checkpoint.npz", run / "checkpoint.npz")
    assert not list(other.glob("checkpoint_epoch*.npz"))


def test_overwrite_clears_snapshots_and_best_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    manifest = rundir.Manifest.start(run)  # the earlier run's files, recorded before written as a run records them
    save_checkpoint(manifest.record(run / "checkpoint_epoch0004.npz", 32), {"x": np.zeros(1)}, {})
    (run / "checkpoint_mine.npz").write_bytes(b"user's")
    with pytest.raises(rundir.RunDirError, match="holds an earlier run .*checkpoint_epoch0004.npz"):
        rundir.check(run)
    save_checkpoint(manifest.record(run / "checkpoint_best.npz"), {"x": np.zeros(1)}, {})
    assert {p.name for p in rundir.outputs_in(run)} == {"checkpoint_best.npz", "checkpoint_epoch0004.npz"}
    assert train_command.train_main([*TINY, "--epochs", "1", "--out", str(run), "--overwrite"]) == 0
    assert not (run / "checkpoint_epoch0004.npz").exists() and not (run / "checkpoint_best.npz").exists()
    assert (run / "checkpoint_mine.npz").read_bytes() == b"user's"


def test_snapshot_every_is_checked_and_documented(tmp_path, capsys):
    for value, pattern in (("-1", "0 or more, got -1"), ("abc", "expected a non-negative integer, got 'abc'")):
        with pytest.raises(SystemExit) as e:
            train_command.train_main([*TINY, "--snapshot-every", value, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and "--snapshot-every" in err[0] and pattern in err[0], err
    with pytest.raises(SystemExit):
        train_command.train_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "checkpoint_epochNNNN.npz" in text and "0 = off (default: 0)" in text and "checkpoint_best.npz" in text
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_best_checkpoint_holds_the_lowest_distance_with_its_step(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_command.train_main([*TINY, "--epochs", "1", "--eval-every", "2", "--out", str(run)]) == 0
    rows = [r for r in viz.read_metrics_csv(run / "metrics.csv") if r.get("frechet_distance") not in (None, "")]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    lowest = min(rows, key=lambda r: r["frechet_distance"])
    best = json.loads((run / "config.json").read_text())["best"]
    assert best["step"] == lowest["step"]
    np.testing.assert_allclose(best["frechet_distance"], lowest["frechet_distance"], rtol=1e-6)  # csv: 7 digits
    _, meta = load_checkpoint(run / "checkpoint_best.npz")
    assert meta["global_step"] == best["step"] and meta["best"] == best
    assert load_checkpoint(run / "checkpoint.npz")[1]["best"] == best  # carried by the rolling checkpoint too
    out = capsys.readouterr().out
    assert f"step {best['step']}: lowest Frechet distance so far" in out
    # the best checkpoint is a full training state: it resumes; in another folder, that run keeps its own best
    assert train_command.train_main([*TINY, "--epochs", "2", "--resume", str(run / "checkpoint_best.npz"),
                           "--out", str(tmp_path / "from_best")]) == 0
    own = json.loads((tmp_path / "from_best" / "config.json").read_text())["best"]
    assert own["step"] > best["step"]
    assert load_checkpoint(tmp_path / "from_best" / "checkpoint_best.npz")[1]["global_step"] == own["step"]


def _set_best(path, best):
    arrays, meta = load_checkpoint(path)
    if best is None:
        meta.pop("best", None)  # as checkpoints written before checkpoint_best.npz existed
    else:
        meta["best"] = best
    save_checkpoint(path, arrays, meta)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["rolling checkpoint", "checkpoint_best.npz"])
def test_a_resumed_run_keeps_a_better_best(tmp_path, capsys, where):
    """The best so far travels in the checkpoint's meta, and the one checkpoint_best.npz records is read
    too (it can be newer than the checkpoint resumed): a resumed run does not replace it with a worse one."""
    run = tmp_path / "run"
    assert train_command.train_main([*TINY, "--epochs", "1", "--eval-every", "4", "--out", str(run)]) == 0
    unbeatable = {"frechet_distance": 1e-3, "step": 4}
    _set_best(run / ("checkpoint.npz" if where == "rolling checkpoint" else "checkpoint_best.npz"), unbeatable)
    kept = (run / "checkpoint_best.npz").read_bytes()
    capsys.readouterr()
    assert train_command.train_main([*TINY, "--epochs", "2", "--eval-every", "4", "--resume", "--out", str(run)]) == 0
    assert (run / "checkpoint_best.npz").read_bytes() == kept
    assert "lowest Frechet distance" not in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["best"] == unbeatable
    assert load_checkpoint(run / "checkpoint.npz")[1]["best"] == unbeatable


@pytest.mark.slow
def test_an_old_checkpoint_without_best_resumes_and_finds_one(tmp_path):
    run = tmp_path / "run"
    assert train_command.train_main([*TINY, "--epochs", "1", "--out", str(run)]) == 0
    _set_best(run / "checkpoint.npz", None)
    assert "best" not in load_checkpoint(run / "checkpoint.npz")[1]
    assert train_command.train_main([*TINY, "--epochs", "2", "--eval-every", "4", "--resume", "--out", str(run)]) == 0
    best = json.loads((run / "config.json").read_text())["best"]
    assert best["step"] in (12, 16) and load_checkpoint(run / "checkpoint_best.npz")[1]["global_step"] == best["step"]


def test_lower_best():
    a, b = {"frechet_distance": 2.0, "step": 4}, {"frechet_distance": 1.0, "step": 8}
    assert trainer._lower_best(a, b) == b and trainer._lower_best(b, a) == b
    assert trainer._lower_best(None, a) == a and trainer._lower_best(a, "junk") == a
    assert trainer._lower_best(None, None) is None
