"""The evaluator weights shipped with the package (scratchgan.eval.shipped): the procedure that makes them is
reproducible, the files are the recorded ones (SHA-256) with the held-out accuracy their metadata says, a
modified file is refused, and the default rulers come from them without reading data or training."""
import io
import shutil

import numpy as np
import pytest

from scratchgan.checkpoint import CheckpointError, read_meta
from scratchgan.data import load_dataset
from scratchgan.eval import evaluator, shipped
from scratchgan.eval.evaluator import (TrainingData, TrainingProgress, fit_evaluator, get_evaluator,
                                       load_evaluator_file, save_evaluator)

from datasets import dataset_dir


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _slice():
    """A few hundred bundled digits: the shipped MNIST recipe's data, cut short."""
    return TrainingData("mnist-bundled", limit=300)


def test_the_procedure_is_reproducible_and_its_file_round_trips(tmp_path):
    data = _slice()
    nets, files = [], []
    for run in (1, 2):
        net, info = fit_evaluator(data, kind="cnn", epochs=2, seed=0)
        info = {k: v for k, v in info.items() if k not in evaluator.TIMING_KEYS}
        files.append(save_evaluator(tmp_path / f"run{run}.npz", net, info))
        nets.append(net)
    one, two = (n.state_dict() for n in nets)
    assert one.keys() == two.keys() and len(one) >= 8
    for name in one:  # bit for bit, every weight and BatchNorm buffer
        assert np.array_equal(one[name], two[name]), name
    assert files[0].read_bytes() == files[1].read_bytes()
    other, _ = fit_evaluator(data, kind="cnn", epochs=2, seed=1)
    assert not np.array_equal(other.state_dict()["1.W"], one["1.W"])  # the seed matters: the check can fail
    loaded, info = load_evaluator_file(files[0], "cnn")
    assert info["n_train"] == 300 and info["trained_on"].startswith("the first 300 of mnist test")
    assert "train_seconds" not in info
    for name, value in loaded.state_dict().items():
        assert np.array_equal(value, one[name]), name
    images = data.held_x[:64]
    assert np.array_equal(evaluator.Evaluator(loaded, {}).predict(images),
                          evaluator.Evaluator(nets[0], {}).predict(images))


def test_the_hash_check_refuses_a_modified_file(tmp_path, monkeypatch):
    for family, (name, _) in shipped.FILES.items():
        shutil.copy(shipped.FOLDER / name, tmp_path / name)
    monkeypatch.setattr(shipped, "FOLDER", tmp_path)
    assert shipped.verified_path("mnist") == tmp_path / "cnn-mnist.npz"  # the copy is intact
    data = bytearray((tmp_path / "cnn-mnist.npz").read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    (tmp_path / "cnn-mnist.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"shipped mnist evaluator .* was modified; reinstall") as e:
        get_evaluator("mnist-bundled")
    assert "\n" not in str(e.value) and "scratchgan evaluator --dataset mnist" in str(e.value)
    (tmp_path / "cnn-fashion-mnist.npz").unlink()
    with pytest.raises(CheckpointError, match="cannot be read"):
        get_evaluator("fashion-mnist")


@pytest.mark.parametrize("family", sorted(shipped.FILES))
def test_the_shipped_files_are_the_recorded_ones_with_their_accuracy(family):
    name, recorded = shipped.FILES[family]
    path = shipped.FOLDER / name
    assert shipped.sha256_of(path) == recorded
    assert 0.5e6 < path.stat().st_size < 2e6  # about 1 MB
    info = read_meta(path)["info"]
    assert (info["kind"], info["seed"], info["dataset"]) == ("cnn", 0, family)
    if family == "mnist":
        data = TrainingData("mnist-bundled")
        held_x, held_y = data.held_x, data.held_y
        assert info["trained_on"] == "mnist test: 8000 of its 10000 images (fixed split, seed 0)"
        assert info["held_out"] == "the other 2000 mnist test images" and info["n_train"] == 8000
    else:
        held_x, held_y = load_dataset("fashion-mnist", "test", dataset_dir("fashion-mnist"))
        assert info["trained_on"] == "fashion-mnist train (60000 images)" and info["n_train"] == 60000
        assert info["held_out"] == "fashion-mnist test (10000 images)"
    assert len(held_y) == info["n_held_out"]
    ruler = evaluator.load_shipped(family)
    acc = float((ruler.predict(held_x) == held_y).mean())
    # recomputed here: within one image of the recorded value (another BLAS may round one logit otherwise)
    assert abs(acc - info["accuracy"]) <= 1 / len(held_y) + 1e-12, (acc, info["accuracy"])
    assert info["accuracy"] > (0.95 if family == "mnist" else 0.88)


def test_the_default_rulers_read_no_data_and_train_nothing(isolated_cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a shipped ruler must not read data or train")
    monkeypatch.setattr(evaluator, "evaluator_data", refuse)
    monkeypatch.setattr(evaluator, "train_classifier", refuse)
    one, two = get_evaluator("mnist"), get_evaluator("mnist-bundled")
    assert one.info["shipped"] and one.info["path"] == two.info["path"]  # one ruler for both names
    assert "shipped with scratchgan" in one.describe()
    assert get_evaluator("fashion-mnist", "/no/such/folder").info["path"].endswith("cnn-fashion-mnist.npz")
    assert not isolated_cache.exists()  # no cache folder is made
    for other in ({"kind": "mlp"}, {"seed": 1}, {"epochs": 3}, {"limit": 100}):  # any other: trained, as before
        with pytest.raises(AssertionError, match="must not"):
            get_evaluator("mnist-bundled", **other)


def test_training_shows_a_bar_on_a_terminal_and_a_line_per_epoch_otherwise(monkeypatch):
    lines = []
    with TrainingProgress(4, 2, log=lines.append, bar=False) as progress:
        for epoch in range(2):
            for _ in range(2):
                progress.step(np.asarray(0.5), np.asarray(3), 4)
            progress.end_epoch(epoch)
    assert len(lines) == 2 and lines[1].startswith("evaluator epoch 2/2: mean loss 0.5000, training accuracy 75.00%")
    screen = io.StringIO()
    monkeypatch.setattr("sys.stderr", screen)
    lines.clear()
    with TrainingProgress(20, 1, log=lines.append, bar=True) as progress:
        for _ in range(20):
            progress.step(np.asarray(0.25), np.asarray(2), 4)
        progress.end_epoch(0)
    assert not lines  # the bar says it
    text = screen.getvalue()
    assert "training the evaluator" in text and "20/20" in text and "loss 0.2500, accuracy 50.0%" in text


def test_a_wheel_carries_the_shipped_files():
    """pyproject.toml's package data names every shipped file, so an installed package has its rulers."""
    import fnmatch
    from pathlib import Path
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["scratchgan"]
    for name, _ in shipped.FILES.values():
        relative = (shipped.FOLDER / name).relative_to(root / "scratchgan").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
