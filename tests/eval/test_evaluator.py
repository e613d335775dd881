"""Tests of scratchgan.eval.evaluator (softmax cross-entropy, the classifier, its cache) and of the
`evaluate` command (scratchgan.cli.evaluate).

Evaluators here are small (2,000 images, 1-3 epochs) and cached under a temporary SCRATCHGAN_DATA.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from datasets import dataset_dir  # tests/support/datasets.py: ../shared/datasets, found relative
from tolerances import FLOAT32_EPS

from scratchgan.cli import evaluate as evaluate_cli
from scratchgan.cli import train as train_command
from scratchgan.cli.main import main as cli_main
from scratchgan.data import DataError, load_mnist_bundled
from scratchgan.eval import evaluator, metrics
from scratchgan.eval.evaluator import get_evaluator, softmax_cross_entropy
from scratchgan.gradcheck import check_loss


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------- the loss

@pytest.mark.parametrize("N,C,scale", [(1, 2, 1.0), (7, 10, 1.0), (5, 3, 30.0)])
def test_softmax_cross_entropy_gradcheck(N, C, scale):
    rng = np.random.default_rng(N * 100 + C)
    z = rng.standard_normal((N, C)) * scale
    y = rng.integers(0, C, N)
    assert check_loss(softmax_cross_entropy, z, y) < 1e-7


def test_softmax_cross_entropy_values_and_contract():
    z = np.zeros((4, 10), dtype=np.float32)
    y = np.array([0, 3, 9, 3])
    z_before = z.copy()
    loss, dz = softmax_cross_entropy(z, y)
    assert loss.ndim == 0 and float(loss) == pytest.approx(np.log(10), rel=1e-6)
    assert dz.dtype == np.float32 and dz.shape == z.shape
    # each row sums to 0 up to float32 rounding of the 10 terms it adds (a few ulps of their magnitudes)
    assert np.all(np.abs(dz.sum(axis=1)) <= 10 * FLOAT32_EPS * np.abs(dz).sum(axis=1))
    np.testing.assert_array_equal(z, z_before)  # the input is not modified
    # extreme logits: finite loss and gradient (no exp overflow)
    big = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
    loss, dz = softmax_cross_entropy(big, np.array([1, 1]))
    assert np.isfinite(float(loss)) and float(loss) == pytest.approx(1e4, rel=1e-9) and np.isfinite(dz).all()
    with pytest.raises(ValueError, match="labels must have shape"):
        softmax_cross_entropy(z, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        softmax_cross_entropy(z, np.zeros(4))


def test_softmax_cross_entropy_matches_torch(torch):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((16, 10)) * 3
    y = rng.integers(0, 10, 16)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(y))
    lt.backward()
    loss, dz = softmax_cross_entropy(z, y)
    assert float(loss) == pytest.approx(lt.item(), rel=1e-12, abs=1e-14)  # float64
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-10, atol=1e-14)  # float64; atol: entries near 0


# ---------------------------------------------------------------------------------- the classifier

def test_classifier_shapes_and_features():
    net = evaluator.build_classifier(seed=0).to("numpy", "float32")
    ev = evaluator.Evaluator(net, {})
    assert (ev.in_dim, ev.feature_dim, ev.n_classes) == (784, 128, 10)
    f, p = ev.embed(np.zeros((5, 28, 28), dtype=np.uint8))
    assert f.shape == (5, 128) and p.shape == (5, 10) and f.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert all(m.cache is None for m in net.modules())
    with pytest.raises(ValueError, match="784 pixels"):
        ev.embed(np.zeros((3, 10), dtype=np.float32))


def test_training_is_deterministic_and_learns():
    one = get_evaluator("mnist-bundled", kind="mlp", limit=1500, epochs=2, seed=3, cache=False)
    two = get_evaluator("mnist-bundled", kind="mlp", limit=1500, epochs=2, seed=3, cache=False)
    other = get_evaluator("mnist-bundled", kind="mlp", limit=1500, epochs=2, seed=4, cache=False)
    s1, s2, s3 = one.net.state_dict(), two.net.state_dict(), other.net.state_dict()
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert not all(np.array_equal(s1[k], s3[k]) for k in s1)
    assert one.accuracy == two.accuracy and one.accuracy > 0.7  # 1,500 digits, 2 epochs (~0.8), 2,000 held out
    assert one.info["n_train"] == 1500 and one.info["n_held_out"] == 2000
    f1, f2 = (ev.embed(load_mnist_bundled()[0][:200])[0] for ev in (one, two))
    np.testing.assert_array_equal(f1, f2)


def test_bundled_split_is_disjoint_and_fixed():
    family, tr_x, tr_y, he_x, he_y, trained_on, held_out = evaluator.evaluator_data("mnist-bundled")
    assert family == "mnist" and len(tr_x) == 8000 and len(he_x) == 2000
    images, _ = load_mnist_bundled()
    rows = {im.tobytes() for im in images}
    assert len({im.tobytes() for im in tr_x} & {im.tobytes() for im in he_x}) <= 5  # a few duplicate digits
    assert all(im.tobytes() in rows for im in he_x[:50])
    assert "8000" in trained_on and "2000" in held_out
    again = evaluator.evaluator_data("mnist-bundled")
    np.testing.assert_array_equal(again[3], he_x)


def test_mnist_folder_without_training_images_uses_the_test_split():
    family, tr_x, *_ = evaluator.evaluator_data("mnist", dataset_dir("mnist"))
    assert family == "mnist" and len(tr_x) == 8000  # same data, same cache key as mnist-bundled


def test_fashion_trains_on_train_and_holds_out_test():
    family, tr_x, tr_y, he_x, he_y, trained_on, held_out = evaluator.evaluator_data("fashion-mnist", dataset_dir("fashion-mnist"))
    assert family == "fashion-mnist" and len(tr_x) == 60000 and len(he_x) == 10000
    assert "train" in trained_on and "test" in held_out


def test_cache_reuse_does_not_retrain(isolated_cache, monkeypatch):
    first = get_evaluator("mnist-bundled", limit=2000, epochs=1, seed=0)
    path = Path(first.info["path"])
    assert not first.info["cached"] and path.is_file() and path.parent == isolated_cache / "evaluators"
    assert not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temporaries

    def no_training(*args, **kwargs):
        raise AssertionError("the cached evaluator should have been loaded")
    monkeypatch.setattr(evaluator, "train_classifier", no_training)
    second = get_evaluator("mnist-bundled", limit=2000, epochs=1, seed=0)
    assert second.info["cached"] and second.accuracy == first.accuracy
    s1, s2 = first.net.state_dict(), second.net.state_dict()
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    images = load_mnist_bundled()[0][:100]
    np.testing.assert_array_equal(first.embed(images)[0], second.embed(images)[0])
    # the key holds dataset, data, architecture, epochs and seed: another seed is another file
    with pytest.raises(AssertionError, match="cached evaluator"):
        get_evaluator("mnist-bundled", limit=2000, epochs=1, seed=1)


def test_corrupt_cache_is_retrained(isolated_cache):
    first = get_evaluator("mnist-bundled", limit=1000, epochs=1)
    Path(first.info["path"]).write_bytes(b"PK\x03\x04 not really")
    logs = []
    again = get_evaluator("mnist-bundled", limit=1000, epochs=1, log=logs.append)
    assert not again.info["cached"] and any("unusable" in line for line in logs)
    assert again.accuracy == first.accuracy


def test_unknown_dataset_is_a_data_error():
    with pytest.raises(DataError, match="unknown dataset"):
        get_evaluator("cifar10")


# ---------------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHGAN_DATA", str(out / "cache"))
        code = train_command.train_main(["--dataset", "mnist-bundled", "--split", "test", "--limit", "512", "--epochs", "1",
                               "--g-hidden", "32,64", "--d-hidden", "64,32", "--latent-dim", "16",
                               "--sample-every", "0", "--no-progress", "--out", str(out)])
    assert code == 0
    return out / "checkpoint.npz"


QUICK = ["--evaluator-limit", "2000", "--evaluator-epochs", "1"]


def test_evaluate_writes_json_with_required_keys(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    code = cli_main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--n", "300", "--json", str(out), *QUICK])
    assert code == 0
    res = json.loads(out.read_text())
    required = {"frechet_distance", "classifier_score", "classes_covered", "precision", "recall", "n"}
    assert required <= set(res)
    for ref in ("real_floor", "noise_ceiling"):
        assert required <= set(res[ref]) and res[ref]["n"] == res["n"] == 300
    assert res["real_floor"]["frechet_distance"] < res["noise_ceiling"]["frechet_distance"]
    assert res["real_floor"]["frechet_distance"] < res["frechet_distance"]
    assert res["dataset"] == "mnist-bundled" and res["split"] == "test" and res["epoch"] == 1
    assert 0 < res["evaluator"]["accuracy"] <= 1 and res["note"] is None
    table = capsys.readouterr().out
    assert "Frechet distance (classifier features)" in table and "real floor" in table and "noise ceiling" in table
    # deterministic for a fixed seed (the evaluator now comes from the cache)
    out2 = tmp_path / "again.json"
    assert cli_main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--n", "300", "--json", str(out2),
                     *QUICK]) == 0
    res2 = json.loads(out2.read_text())
    for key in metrics.METRIC_KEYS:
        assert res2[key] == res[key] and res2["real_floor"][key] == res["real_floor"][key]


def test_evaluate_reduces_n_when_the_split_is_small(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    images, labels = load_mnist_bundled()
    monkeypatch.setattr(evaluate_cli, "load_dataset_or_bundled", lambda *a, **k: (images[:500], labels[:500]))
    out = tmp_path / "eval.json"
    assert evaluate_cli.evaluate_main(["--checkpoint", str(tiny_checkpoint), "--n", "400", "--json", str(out),
                                       *QUICK]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 250 and res["n_requested"] == 400 and "reduced to 250" in res["note"]
    assert "(reduced from 400)" in capsys.readouterr().out


def test_evaluate_bad_inputs_exit_2(tiny_checkpoint, tmp_path, capsys):
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("hello")
    from scratchgan.checkpoint import load_checkpoint, save_checkpoint
    other = save_checkpoint(tmp_path / "other.npz", {"w": np.zeros(3)}, {"step": 1})
    arrays, meta = load_checkpoint(tiny_checkpoint)
    folder = save_checkpoint(tmp_path / "folder.npz", arrays,
                             {**meta, "config": {**meta["config"], "dataset": "folder", "data_dir": str(tmp_path)}})
    cases = [
        (["--checkpoint", str(not_a_checkpoint)], "not a scratchgan checkpoint"),
        (["--checkpoint", str(tmp_path / "missing.npz")], "no such checkpoint"),
        (["--checkpoint", str(other)], "holds no model config"),
        (["--checkpoint", str(folder), "--metric", "classifier"], "folder runs get no quality metric"),  # said
        # before loading it (without --metric such a run gets the Inception FID)
        (["--checkpoint", str(tiny_checkpoint), "--dataset", "mnist", "--data-dir", str(tmp_path)], "missing"),
    ]
    for argv, message in cases:
        assert evaluate_cli.evaluate_main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    for argv, message in [(["--checkpoint", str(tiny_checkpoint), "--dataset", "imagenet"], "invalid choice"),
                          (["--checkpoint", str(tiny_checkpoint), "--n", "0"], "positive integer")]:
        with pytest.raises(SystemExit) as exit_info:
            evaluate_cli.evaluate_main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_json_write_failure_names_the_target(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """The results file cannot be written at the end (simulated: os.open of its temp file raises
    EROFS; tests run as root, where chmod blocks nothing): one line names --json's file, not the temp."""
    import errno
    import os
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).endswith(".tmp") and "eval.json" in str(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", read_only)
    target = tmp_path / "eval.json"
    assert evaluate_cli.evaluate_main(["--checkpoint", str(tiny_checkpoint), "--n", "300", "--json", str(target),
                                       *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"scratchgan evaluate: error: --json {target}: cannot write it (Read-only file system); "
                   "results above were not saved"], err


def test_evaluate_chooses_the_evaluator_kind(tiny_checkpoint, tmp_path, capsys):
    """--evaluator cnn (default) / mlp: each measures in its own classifier, recorded in the JSON."""
    results = {}
    for kind in ("cnn", "mlp"):
        out = tmp_path / f"{kind}.json"
        argv = ["--checkpoint", str(tiny_checkpoint), "--n", "200", "--json", str(out), *QUICK]
        if kind == "mlp":
            argv += ["--evaluator", "mlp"]
        assert evaluate_cli.evaluate_main(argv) == 0
        results[kind] = json.loads(out.read_text())
        assert results[kind]["evaluator"]["kind"] == kind
        assert results[kind]["evaluator"]["architecture"].startswith(kind.upper())
    assert results["cnn"]["frechet_distance"] != results["mlp"]["frechet_distance"]
    assert Path(results["cnn"]["evaluator"]["path"]) != Path(results["mlp"]["evaluator"]["path"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.evaluate_main(["--checkpoint", str(tiny_checkpoint), "--evaluator", "inception"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--evaluator" in err[0] and "invalid choice" in err[0], err
    with pytest.raises(SystemExit):
        evaluate_cli.evaluate_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--evaluator {cnn,mlp}" in text and "(default: cnn)" in text.split("--evaluator {cnn,mlp}")[-1][:200]
