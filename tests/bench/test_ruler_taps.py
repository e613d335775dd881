"""benchmarks/ruler_taps.py on a run trained here: its features tap reproduces the CNN distance that `scratchgan
evaluate` recorded for each snapshot (the same images, the same network), every tap's rank correlation is the
Spearman of the distances it reports against the FIDs it read, each tap is the activation it names, and a
missing snapshot is refused."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ruler_taps.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality_table import spearman  # noqa: E402
from ruler_taps import region_means, tap_features  # noqa: E402

N = 200
FIDS = {1: 90.0, 2: 70.0, 3: 80.0}  # stand-ins: the script ranks whatever FIDs results.jsonl holds


def _scratchgan(*args):
    done = subprocess.run([sys.executable, "-m", "scratchgan", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """quality_table.py's layout: one row's run with three snapshots, each scored by `evaluate` at N."""
    runs = tmp_path_factory.mktemp("taps") / "runs"
    out = runs / "mnist-bundled-bce-s0"
    _scratchgan("train", "--dataset", "mnist-bundled", "--limit", "256", "--epochs", "3", "--batch-size", "32",
                "--snapshot-every", "1", "--sample-every", "0", "--no-progress", "--seed", "0", "--out", str(out))
    scores = {}
    for epoch in FIDS:
        js = out / f"eval_epoch{epoch:04d}.json"
        _scratchgan("evaluate", "--checkpoint", str(out / f"checkpoint_epoch{epoch:04d}.npz"), "--n", str(N),
                    "--json", str(js))
        scores[str(epoch)] = {"frechet_distance": json.loads(js.read_text())["frechet_distance"],
                              "fid": FIDS[epoch]}
    (runs / "results.jsonl").write_text(json.dumps({"row": "bce", "seed": 0, "scores": scores}) + "\n")
    return runs


def _taps(runs, *extra):
    return subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs), "--dataset", "mnist-bundled",
                           "--n", str(N), *extra], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_features_tap_is_evaluates_distance_and_each_rho_is_its_spearman(runs, tmp_path):
    report = tmp_path / "taps.json"
    done = _taps(runs, "--taps", "regions,features", "--json", str(report))  # the whole stages: below
    assert done.returncode == 0, done.stderr
    got = json.loads(report.read_text())
    snaps = got["snapshots"]
    assert sorted(s["epoch"] for s in snaps) == [1, 2, 3]
    features = "features (128, what evaluate uses)"
    assert set(got["spearman"]) == {"conv1 2x2 regions (64)", "conv2 2x2 regions (128)", features}
    for s in snaps:
        assert s["taps"][features] == pytest.approx(s["recorded_cnn_distance"], rel=1e-9)
        assert all(d > 0 for d in s["taps"].values())
    for tap, rho in got["spearman"].items():
        assert rho == pytest.approx(spearman([s["taps"][tap] for s in snaps], [s["fid"] for s in snaps]))
    assert all(v > 0 for v in got["floor"].values())
    assert "Spearman rank correlation with Inception FID over 3 snapshots:" in done.stdout
    assert "| bce | 0 | 2 | 70.0 |" in done.stdout


@pytest.mark.slow
def test_a_scored_snapshot_without_its_checkpoint_is_refused(runs, tmp_path):
    moved = tmp_path / "runs"
    moved.mkdir()
    (moved / "results.jsonl").write_text((runs / "results.jsonl").read_text())
    done = _taps(moved)
    assert done.returncode == 2
    assert "checkpoint_epoch0001.npz is missing (3 snapshots scored in results.jsonl have no checkpoint)" in done.stderr


def test_region_means_split_seven_rows_as_four_and_three():
    a = np.arange(2 * 3 * 7 * 7, dtype=np.float64).reshape(2, 3, 7, 7)
    got = region_means(a)
    assert got.shape == (2, 3 * 4)
    assert got[1, 2] == a[1, 2, :4, :4].mean()        # the first region of channel 2: rows 0-3, columns 0-3
    assert got[0, 3 * 3] == a[0, 0, 4:, 4:].mean()    # the last region of channel 0: rows 4-6, columns 4-6


def test_each_tap_is_the_activation_it_names():
    from scratchgan.eval.evaluator import as_model_input, load_shipped

    evaluator = load_shipped("mnist")
    images = np.random.default_rng(0).uniform(-1, 1, (5, 784)).astype(np.float32)
    taps = tap_features(evaluator, images)
    x, acts = as_model_input(images, np, np.float32), []
    for layer in evaluator.body:
        x = layer.forward(x)
        if type(layer).__name__ == "LeakyReLU":
            acts.append(np.asarray(x, dtype=np.float64))
    conv1, conv2, features = acts
    assert conv1.shape == (5, 16, 14, 14) and conv2.shape == (5, 32, 7, 7)
    np.testing.assert_array_equal(taps["conv1 whole (3136)"], conv1.reshape(5, -1))
    np.testing.assert_array_equal(taps["conv2 2x2 regions (128)"], region_means(conv2))
    np.testing.assert_array_equal(taps["features (128, what evaluate uses)"], features)
    np.testing.assert_array_equal(evaluator.features(images), features)  # what evaluate embeds
    assert list(tap_features(evaluator, images, kinds=("features",))) == ["features (128, what evaluate uses)"]


def test_an_unknown_tap_kind_is_refused(tmp_path):
    done = _taps(tmp_path, "--taps", "whole,logits")
    assert done.returncode == 2
    assert "--taps takes some of whole, regions, features, comma-separated, not 'whole,logits'" in done.stderr
