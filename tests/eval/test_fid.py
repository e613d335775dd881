"""Tests of scratchgan.eval.fid, the FID protocol around any feature network: the images' forms, the
bilinear resize against PyTorch's F.interpolate, the features in batches with their progress lines, the
Frechet distance against float64 references with known answers, the cached real statistics (stale and
damaged files recomputed) and the protocol line.

The feature network here is a small one (tests/support/feature_nets.py: a fixed random projection of 8x8
average pools), so nothing waits for the Inception weights; tests/cli/test_evaluate_fid.py runs the real one.
"""
import numpy as np
import pytest
from feature_nets import PooledProjection
from tolerances import FLOAT32_EPS, assert_close

from scratchgan.eval import fid
from scratchgan.eval import metrics


# ---------------------------------------------------------------------------------- images

def test_every_form_of_a_grey_image_gives_the_same_rgb_in_0_1():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    as_float = (u8.astype(np.float32) / 127.5 - 1.0)              # the loader's [-1, 1]
    want = np.repeat(u8[:, None].astype(np.float64) / 255.0, 3, axis=1)
    for images in (u8, u8[:, None], u8.reshape(4, 784), as_float, as_float[:, None], as_float.reshape(4, 784)):
        x = fid.to_rgb01(images)
        assert x.shape == (4, 3, 28, 28) and x.dtype == np.float32
        assert_close(x, want, 8 * FLOAT32_EPS)


def test_rgb_images_keep_their_channels_and_flat_rgb_is_channels_first():
    u8 = np.random.default_rng(1).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    for images in (u8, u8.reshape(2, -1)):
        assert_close(fid.to_rgb01(images), u8 / 255.0, 8 * FLOAT32_EPS)
    assert fid.is_grey(u8[:, :1]) and fid.is_grey(u8.reshape(2, -1)[:, :1024]) and not fid.is_grey(u8)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 8, 8), np.uint8), np.zeros((2, 50), np.float32),
                                 np.zeros((2, 8, 8), np.int32)])
def test_images_that_are_not_images_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        fid.to_rgb01(bad)


# ---------------------------------------------------------------------------------- the resize

@pytest.mark.parametrize("hw", [(28, 28), (32, 32), (64, 64), (17, 23)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_resize_equals_pytorch_fids_resize_input(torch, hw, dtype):
    """pytorch-fid's resize_input: F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)."""
    x = np.random.default_rng(hw[0] * hw[1]).random((2, 3, *hw)).astype(dtype)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear",
                                           align_corners=False).numpy()
    got = fid.resize_bilinear(x)
    assert got.dtype == np.dtype(dtype) and got.shape == (2, 3, 299, 299)
    assert_close(got, want, 1e-12 if dtype == "float64" else 16 * FLOAT32_EPS)


def test_interpolation_rows_are_weights_summing_to_one_and_keep_a_constant_image():
    for n_in in (1, 2, 17, 28, 299, 512):
        R = fid.interpolation_matrix(n_in, 299, dtype=np.float64)
        assert R.shape == (299, n_in) and (R >= 0).all()
        np.testing.assert_allclose(R.sum(axis=1), 1.0, rtol=1e-14)  # float64
    R = fid.interpolation_matrix(299, 299, dtype=np.float64)
    np.testing.assert_array_equal(R, np.eye(299))                    # same size: the identity


def test_prepare_gives_the_networks_range():
    x = fid.prepare(np.array([[[0, 255], [255, 0]]], dtype=np.uint8))
    assert x.shape == (1, 3, 299, 299) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0


# ---------------------------------------------------------------------------------- features

def test_features_in_batches_equal_one_batch_and_report_images_per_second():
    images = np.random.default_rng(2).integers(0, 256, (23, 28, 28), dtype=np.uint8)
    net, lines = PooledProjection(), []
    f = fid.features(net, images, batch_size=5, desc="fake", log=lines.append, bar=False)
    assert f.shape == (23, 16) and f.dtype == np.float32
    assert net.calls == [5, 5, 5, 5, 3]
    assert_close(f, fid.features(PooledProjection(), images, batch_size=23, bar=False), 64 * FLOAT32_EPS)
    # no terminal: one line per ~10% (each batch here is more than 10%) and one at the end
    assert len(lines) == 5 and lines[-1].startswith("fake: 23/23 images, ") and lines[-1].endswith(" images/s")


def test_progress_lines_come_about_every_tenth():
    lines = []
    p = fid.Progress(1000, "real", log=lines.append, bar=False)
    for _ in range(100):
        p.update(10)
    assert [line.split(":")[1].split("/")[0].strip() for line in lines] == [str(k * 100) for k in range(1, 11)]


# ---------------------------------------------------------------------------------- Frechet distance

def test_frechet_of_identical_sets_is_zero_and_of_a_shifted_set_the_squared_shift():
    rng = np.random.default_rng(3)
    f = rng.standard_normal((500, 12)) @ rng.standard_normal((12, 12))
    d = rng.standard_normal(12)
    s = fid.statistics(f)
    assert s[0].dtype == np.float64 and s[1].dtype == np.float64
    assert fid.frechet_distance(s, s) == pytest.approx(0.0, abs=1e-9 * np.trace(s[1]))  # float64
    assert fid.frechet_distance(s, fid.statistics(f + d)) == pytest.approx(d @ d, rel=1e-8)


def test_frechet_of_diagonal_gaussians_has_its_closed_form():
    """N(m1, diag a) vs N(m2, diag b): |m1 - m2|^2 + sum (sqrt(a) - sqrt(b))^2, in float64."""
    rng = np.random.default_rng(4)
    m1, m2, a, b = rng.standard_normal(30), rng.standard_normal(30), rng.random(30) + 0.1, rng.random(30) + 0.1
    want = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fid.frechet_distance((m1, np.diag(a)), (m2, np.diag(b))) == pytest.approx(want, rel=1e-12)


def test_frechet_is_pytorch_fids_formula_on_random_features():
    """pytorch-fid: mu, np.cov(rowvar=False), then |d|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)); sqrtm of
    the non-symmetric product by eigendecomposition here (its eigenvalues are real and >= 0)."""
    rng = np.random.default_rng(5)
    f1 = rng.standard_normal((400, 20)) @ rng.standard_normal((20, 20))
    f2 = rng.standard_normal((300, 20)) @ rng.standard_normal((20, 20)) + 0.5
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w = np.linalg.eigvals(s1 @ s2)
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(w.real.clip(0)).sum()
    assert fid.frechet_distance(fid.statistics(f1), fid.statistics(f2)) == pytest.approx(want, rel=1e-9)


# ---------------------------------------------------------------------------------- cached real statistics

def _real(tmp_path, n=12, seed=6):
    images = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return images, fid.stats_cache_path(tmp_path, "mnist", "train", n, "ab" * 32)


def test_real_statistics_are_cached_and_loaded(tmp_path):
    images, path = _real(tmp_path)
    assert path.name == "mnist_train_n12_wabababababababab_v1.npz"
    net, lines = PooledProjection(), []
    first = fid.real_statistics(net, images, path, "mnist train", log=lines.append, bar=False)
    assert path.exists() and net.calls and any("cached in" in line for line in lines)
    net2, lines = PooledProjection(), []
    again = fid.real_statistics(net2, images, path, "mnist train", log=lines.append, bar=False)
    assert net2.calls == [] and any("loaded from" in line for line in lines)
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])


def test_a_stale_or_damaged_cache_is_recomputed_never_trusted(tmp_path):
    images, path = _real(tmp_path)
    mu, sigma = fid.real_statistics(PooledProjection(), images, path, "mnist train", bar=False)
    cases = {
        "other images": lambda: fid.save_stats(path, (mu, sigma), "ab" * 32, fid.images_sha256(images[::-1]), 12, "x"),
        "other weights": lambda: fid.save_stats(path, (mu, sigma), "cd" * 32, fid.images_sha256(images), 12, "x"),
        "wrong numbers": lambda: _tamper(path, mu, sigma),
        "truncated": lambda: path.write_bytes(path.read_bytes()[:200]),
        "not a zip": lambda: path.write_bytes(b"hello"),
    }
    for what, spoil in cases.items():
        spoil()
        net, lines = PooledProjection(), []
        got = fid.real_statistics(net, images, path, "mnist train", log=lines.append, bar=False)
        assert net.calls, what
        assert any("unusable" in line for line in lines), what
        np.testing.assert_array_equal(got[0], mu, err_msg=what)
        fid.load_stats(path, "ab" * 32, fid.images_sha256(images), 12)  # replaced by a good file


def _tamper(path, mu, sigma):
    """The statistics changed, the checksum of the old ones kept: a file damaged inside a valid zip."""
    good = fid.load_checkpoint(path)[1]
    fid.save_checkpoint(path, {"mu": mu + 1.0, "sigma": sigma}, good)


def test_a_network_without_named_weights_is_never_cached(tmp_path):
    images, path = _real(tmp_path)
    fid.real_statistics(PooledProjection(weights_sha256=None), images, path, "mnist train", bar=False)
    assert not path.exists()


def test_choose_is_seeded_and_refuses_more_than_there_are():
    np.testing.assert_array_equal(fid.choose(100, 10), fid.choose(100, 10))
    assert len(set(fid.choose(100, 10).tolist())) == 10
    with pytest.raises(ValueError, match="only 5"):
        fid.choose(5, 6)


# ---------------------------------------------------------------------------------- the protocol line

def test_the_protocol_line_says_everything_the_number_depends_on():
    net = PooledProjection(weights_sha256="12345678" + "0" * 56)
    net.weights_name = "pytorch-fid weights sha256 6726825d…"  # as load_network names the published weights
    line = fid.protocol_line(44.1234, net, 2000, 2000, "fashion-mnist train", grey=True)
    assert line == ("FID 44.1 (Inception-v3 pool3 2048-d, pytorch-fid weights sha256 6726825d…, bilinear to 299, "
                    "grey x3; n_fake 2000, n_real 2000 from fashion-mnist train)")
    assert "RGB; n_fake 64, n_real 100 from cifar10 test)" in fid.protocol_line(3.0, net, 64, 100, "cifar10 test",
                                                                                 grey=False)
    assert "2048-d, weights sha256 12345678…, bilinear" in fid.protocol_line(3.0, PooledProjection(
        weights_sha256="12345678" + "0" * 56), 64, 100, "cifar10 test", grey=False)


def test_fid_reuses_the_metrics_maths():
    rng = np.random.default_rng(7)
    f1, f2 = rng.standard_normal((50, 5)), rng.standard_normal((60, 5)) + 1.0
    assert fid.frechet_distance(fid.statistics(f1), fid.statistics(f2)) == metrics.frechet_distance_features(f1, f2)
