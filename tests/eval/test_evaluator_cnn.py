"""The CNN evaluator (scratchgan.eval.evaluator_cnn): its network, its cache next to the MLP's, and sanity
checks of the metrics in its features that no GAN is tuned to (scratchgan.eval.corruptions).

One CNN evaluator is trained for the whole module on 4,000 of the bundled MNIST digits (2 epochs, 62
Adam steps: seconds), scored on the 2,000 held out; the metrics compare 600 images with 600 disjoint
held-out ones (class subsets: 300 images drawn from the 4,000 digits it did not train on). The curves of
the fully trained Fashion-MNIST evaluator are printed by benchmarks/evaluator_sanity.py (README).
"""
from pathlib import Path

import numpy as np
import pytest
from tolerances import assert_close

from scratchgan.checkpoint import load_checkpoint, save_checkpoint
from scratchgan.data import load_mnist_bundled
from scratchgan.eval import corruptions, evaluator, metrics
from scratchgan.eval.evaluator import get_evaluator
from scratchgan.eval.evaluator_cnn import build_cnn_classifier, describe_cnn

N = 600  # images per set: the reference, and each compared set
LIMIT = 4000  # digits the module's evaluator trains on
N_CLASS = 300  # images per class-subset set


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHGAN_DATA", str(tmp_path_factory.mktemp("cache")))
        return get_evaluator("mnist-bundled", kind="cnn", limit=LIMIT, epochs=2, seed=0)


@pytest.fixture(scope="module")
def sets(cnn):
    """Three disjoint real sets from the 2,000 digits the evaluator held out, and the reference."""
    _, tr_x, tr_y, he_x, he_y, _, _ = evaluator.evaluator_data("mnist-bundled")
    order = np.random.default_rng(0).permutation(len(he_x))
    a, b, c = order[:N], order[N:2 * N], order[2 * N:3 * N]
    return {"ref": metrics.RealReference(cnn, he_x[a]), "fresh": he_x[b], "fresh2": he_x[c],
            "pool": (tr_x[LIMIT:], tr_y[LIMIT:])}  # digits the evaluator never saw


def fd(sets, images):
    return metrics.compare(sets["ref"], images)["frechet_distance"]


# ---------------------------------------------------------------------------------- the network

def test_cnn_shapes_features_and_description():
    net = build_cnn_classifier(seed=0).to("numpy", "float32")
    ev = evaluator.Evaluator(net, {})
    assert (ev.in_dim, ev.feature_dim, ev.n_classes) == (784, 128, 10)
    kinds = [type(m).__name__ for m in net]
    assert kinds.count("Conv2d") == 2 and kinds.count("BatchNorm2d") == 2 and "Flatten" in kinds
    assert net[-2].__class__.__name__ == "LeakyReLU" and net[-3].in_features == 32 * 7 * 7
    f, p = ev.embed(np.zeros((5, 28, 28), dtype=np.uint8))
    assert f.shape == (5, 128) and p.shape == (5, 10) and f.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert all(m.cache is None for m in net.modules())
    with pytest.raises(ValueError, match="784 pixels"):
        ev.embed(np.zeros((3, 10), dtype=np.float32))
    assert describe_cnn() == "CNN 1x28x28 -> conv16/2 -> conv32/2 -> 1568 -> 128 -> 10 (features: 128)"
    with pytest.raises(ValueError, match="unknown evaluator kind"):
        evaluator.build_network("resnet")


def test_cnn_trains_deterministically_and_reports_held_out_accuracy(cnn):
    assert cnn.info["kind"] == "cnn" and cnn.info["architecture"].startswith("CNN")
    assert cnn.info["n_train"] == LIMIT and cnn.info["n_held_out"] == 2000
    assert cnn.accuracy > 0.85  # 62 steps on 4,000 digits (0.89); chance is 0.1
    assert "CNN" in cnn.describe() and "held-out accuracy" in cnn.describe()
    again = get_evaluator("mnist-bundled", kind="cnn", limit=1000, epochs=1, seed=0, cache=False)
    twice = get_evaluator("mnist-bundled", kind="cnn", limit=1000, epochs=1, seed=0, cache=False)
    s1, s2 = again.net.state_dict(), twice.net.state_dict()
    assert any("running_mean" in k for k in s1)  # BatchNorm's buffers travel with the weights
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)


# ---------------------------------------------------------------------------------- the cache

def test_cache_keys_hold_the_kind_and_old_mlp_files_still_load(isolated_cache, monkeypatch):
    mlp = get_evaluator("mnist-bundled", kind="mlp", limit=1000, epochs=1)
    cnn = get_evaluator("mnist-bundled", kind="cnn", limit=1000, epochs=1)
    p_mlp, p_cnn = Path(mlp.info["path"]), Path(cnn.info["path"])
    assert p_mlp != p_cnn and "_mlp784-256-128-10_" in p_mlp.name and "_cnn1x28x28-16-32-128-10_" in p_cnn.name
    assert not cnn.info["cached"] and not mlp.info["cached"]
    # an evaluator file of an earlier release: same name, no "kind" in its info -> loads as the MLP
    arrays, meta = load_checkpoint(p_mlp)
    del meta["info"]["kind"]
    save_checkpoint(p_mlp, arrays, meta)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached evaluator should have been loaded")
    monkeypatch.setattr(evaluator, "train_classifier", no_training)
    old = get_evaluator("mnist-bundled", kind="mlp", limit=1000, epochs=1)
    assert old.info["cached"] and old.info["kind"] == "mlp" and old.accuracy == mlp.accuracy
    images = load_mnist_bundled()[0][:50]
    np.testing.assert_array_equal(old.embed(images)[0], mlp.embed(images)[0])
    assert get_evaluator("mnist-bundled", kind="cnn", limit=1000, epochs=1).info["cached"]
    # a file of the other kind under the CNN's name is never used as a CNN: trained again
    p_cnn.write_bytes(p_mlp.read_bytes())
    monkeypatch.undo()
    monkeypatch.setenv("SCRATCHGAN_DATA", str(isolated_cache))
    logs = []
    fresh = get_evaluator("mnist-bundled", kind="cnn", limit=1000, epochs=1, log=logs.append)
    assert not fresh.info["cached"] and any("holds a mlp evaluator, not a cnn" in line for line in logs)
    with pytest.raises(ValueError, match="unknown evaluator kind"):
        get_evaluator("mnist-bundled", kind="vgg")


# ---------------------------------------------------------------------------------- sanity of the metrics

def test_fresh_real_subset_stays_near_the_floor(cnn, sets):
    floor = fd(sets, sets["fresh"])
    other = fd(sets, sets["fresh2"])
    noise = fd(sets, np.random.default_rng(1).uniform(-1, 1, (N, 784)).astype(np.float32))
    assert abs(floor - other) < 0.5 * max(floor, other)  # two fresh subsets: the same floor
    assert max(floor, other) < 0.02 * noise


@pytest.mark.parametrize("name", list(corruptions.CORRUPTIONS))
def test_distance_grows_monotonically_with_each_corruption(cnn, sets, name):
    corrupt, levels = corruptions.CORRUPTIONS[name]
    curve = [fd(sets, sets["fresh"])] + [fd(sets, corrupt(sets["fresh"], level)) for level in levels]
    assert all(b > a for a, b in zip(curve, curve[1:])), f"{name}: {curve}"
    assert curve[-1] > 3 * curve[0], f"{name}: {curve}"


def test_distance_grows_as_classes_are_dropped(cnn, sets):
    images, labels = sets["pool"]
    curve = [fd(sets, corruptions.keep_classes(images, labels, k, N_CLASS)) for k in (10, 7, 4, 2, 1)]
    assert all(b > a for a, b in zip(curve, curve[1:])), curve


def test_noise_has_no_precision_and_one_class_loses_coverage(cnn, sets):
    noise = np.random.default_rng(2).uniform(-1, 1, (N, 784)).astype(np.float32)
    assert metrics.compare(sets["ref"], noise)["precision"] < 0.05
    images, labels = sets["pool"]
    real = metrics.compare(sets["ref"], sets["fresh"])
    one = metrics.compare(sets["ref"], corruptions.keep_classes(images, labels, 1, N_CLASS))
    # a class is covered from 1% of the images: a few misread digits may cover one or two more
    assert real["classes_covered"] == 10 and one["classes_covered"] <= 3
    assert one["class_kl"] > 1.5 and real["class_kl"] < 0.1  # one class exactly: log(10) = 2.3
    assert one["recall"] < 0.5 * real["recall"]


# ---------------------------------------------------------------------------------- the corruptions

def test_corruptions_keep_shape_range_and_level_zero():
    x = load_mnist_bundled()[0][:20]
    base = corruptions.as_float_images(x)
    for name, (corrupt, levels) in corruptions.CORRUPTIONS.items():
        np.testing.assert_array_equal(corrupt(x, 0), base, err_msg=name)
        for level in levels:
            y = corrupt(x, level)
            assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= -1 and y.max() <= 1, name
    g = corruptions.gaussian_kernel(1.5)
    assert len(g) == 11 and abs(float(g.sum()) - 1.0) < 8 * np.finfo(np.float32).eps
    blurred = corruptions.gaussian_blur(x, 1.0)
    assert np.abs(np.diff(blurred, axis=2)).mean() < np.abs(np.diff(base, axis=2)).mean()
    sp = corruptions.salt_and_pepper(x, 0.1)
    hit = sp != base
    assert 0.05 < hit.mean() < 0.1 and set(np.unique(sp[hit])) <= {-1.0, 1.0}
    st = corruptions.horizontal_stripes(np.full((1, 8, 3), 127, dtype=np.uint8), 0.5)
    assert (st[0, [0, 1, 4, 5]] > st[0, [2, 3, 6, 7]]).all()
    with pytest.raises(ValueError):
        corruptions.salt_and_pepper(x, 1.5)
    with pytest.raises(ValueError):
        corruptions.gaussian_blur(x[0], 1.0)


def test_cnn_evaluator_trains_and_embeds_on_the_fake_device(fake_xp):
    """No NumPy call reaches device arrays (tests/support/fake_device.py): training and embedding on the guarded
    stand-in give the host's numbers (the reference code on both sides)."""
    from scratchgan import fast
    images, labels = load_mnist_bundled()
    x, y = images[:256], labels[:256]
    with fast.disabled():
        host = evaluator.train_classifier(x, y, kind="cnn", epochs=1, batch_size=64, seed=1)
        dev = evaluator.train_classifier(x, y, kind="cnn", epochs=1, batch_size=64, seed=1, backend=fake_xp)
        f_host, p_host = evaluator.Evaluator(host, {}).embed(images[300:340])
        f_dev, p_dev = evaluator.Evaluator(dev, {}).embed(images[300:340])
    s_host, s_dev = host.state_dict(), dev.state_dict()
    for name in s_host:  # float32 arithmetic, summed in another order on the stand-in's BLAS calls
        assert_close(s_dev[name], s_host[name], rtol=1e-5, err_msg=name)
    assert_close(f_dev, f_host, rtol=1e-4)
    assert_close(p_dev, p_host, rtol=1e-4)
