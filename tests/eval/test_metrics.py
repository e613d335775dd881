"""Tests of scratchgan.eval.metrics: each metric against a reference computed another way, the known
cases (real vs real, one repeated image, noise), determinism, collapse_check and EvalHook.

The evaluator used here is small and quick (2,000 bundled digits, 3 epochs) and lives in a
temporary cache (SCRATCHGAN_DATA), so nothing outside tmp is written.
"""
import itertools

import numpy as np
import pytest

from scratchgan.data import load_mnist_bundled
from scratchgan.eval import metrics
from scratchgan.eval.evaluator import get_evaluator
from scratchgan.gan import models
from scratchgan.run import evaluation

# A float32 result that is exactly 0 or 1 in exact arithmetic, compared relative to the size of the
# quantity it is made from: ~100 float32 ulps (eps = 1.2e-7), whatever BLAS kernel this CPU gets.
FLOAT32_ROUNDING = 1e-5

# ---------------------------------------------------------------------------------- references

def denman_beavers_sqrtm(A, iters=60):
    """sqrt(A) by the Denman-Beavers iteration: Y -> (Y + Z^-1)/2, Z -> (Z + Y^-1)/2, Y -> A^{1/2}.

    Works for the non-symmetric S1 S2 (positive eigenvalues): a different route from metrics', which
    never forms S1 S2 and only takes eigenvalues of the symmetric S1^{1/2} S2 S1^{1/2}.
    """
    Y, Z = A.copy(), np.eye(len(A))
    for _ in range(iters):
        Y, Z = (Y + np.linalg.inv(Z)) / 2.0, (Z + np.linalg.inv(Y)) / 2.0
    return Y


def reference_frechet(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = denman_beavers_sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def brute_force_precision_recall(real, fake, k):
    def radii(x):
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    d = np.sqrt(((fake[:, None, :] - real[None, :, :]) ** 2).sum(-1))  # (N_fake, N_real)
    precision = np.mean([(d[j] <= radii(real)).any() for j in range(len(fake))])
    recall = np.mean([(d[:, i] <= radii(fake)).any() for i in range(len(real))])
    return precision, recall


def correlated(rng, n, dim, scale):
    A = rng.standard_normal((dim, dim)) * scale
    return rng.standard_normal((n, dim)) @ A + rng.standard_normal(dim)


# ---------------------------------------------------------------------------------- Frechet distance

def test_frechet_matches_denman_beavers_reference():
    rng = np.random.default_rng(0)
    for dim in (2, 6, 16):
        f1, f2 = correlated(rng, 300, dim, 1.0), correlated(rng, 400, dim, 0.5)
        ours = metrics.frechet_distance_features(f1, f2)
        ref = reference_frechet(f1, f2)
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-10)  # float64 features and statistics
        assert metrics.frechet_distance_features(f2, f1) == pytest.approx(ours, rel=1e-9)  # symmetric


def test_frechet_identical_gaussians_is_zero():
    rng = np.random.default_rng(1)
    f = correlated(rng, 500, 12, 2.0)
    mu, sigma = metrics.feature_statistics(f)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) < 1e-9 * np.trace(sigma)
    assert metrics.frechet_distance_features(f, f.copy()) < 1e-9 * np.trace(sigma)
    # shifting the mean by d adds exactly ||d||^2
    d = rng.standard_normal(12)
    assert metrics.frechet_distance(mu + d, sigma, mu, sigma) == pytest.approx(d @ d, rel=1e-8)


def test_frechet_closed_form_for_diagonal_covariances():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_is_robust_for_singular_covariances():
    rng = np.random.default_rng(2)
    few = rng.standard_normal((5, 20))            # N < F: rank-deficient covariance
    same = np.tile(rng.standard_normal(20), (50, 1))  # one repeated point: covariance 0
    other = correlated(rng, 200, 20, 1.0)
    for f1, f2 in [(few, other), (same, other), (few, few), (same, same)]:
        fd = metrics.frechet_distance_features(f1, f2)
        assert np.isfinite(fd) and fd >= 0
    assert metrics.frechet_distance_features(same, same) == pytest.approx(0.0, abs=1e-9)  # float64, exactly 0
    # a point mass against N(mu, S): ||mu_point - mu||^2 + tr(S) exactly
    mu, sigma = metrics.feature_statistics(other)
    expected = ((same[0] - mu) ** 2).sum() + np.trace(sigma)
    assert metrics.frechet_distance(same[0], np.zeros((20, 20)), mu, sigma) == pytest.approx(expected, rel=1e-9)


def test_sqrtm_psd_squares_back():
    rng = np.random.default_rng(3)
    A = correlated(rng, 100, 8, 1.0)
    S = np.cov(A, rowvar=False)
    R = metrics.sqrtm_psd(S)
    # float64, entries of size ~1 (a covariance of unit-scale features)
    np.testing.assert_allclose(R @ R, S, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(R, R.T, atol=1e-12)  # float64


# ---------------------------------------------------------------------------------- class metrics

def test_classifier_score_extremes():
    C = 10
    confident_uniform = np.eye(C)[np.arange(1000) % C]
    assert metrics.classifier_score(confident_uniform) == pytest.approx(C, rel=1e-9)
    assert metrics.classifier_score(np.eye(C)[np.zeros(100, dtype=int)]) == pytest.approx(1.0)
    assert metrics.classifier_score(np.full((100, C), 1.0 / C)) == pytest.approx(1.0)
    half = np.eye(C)[np.arange(1000) % 5]  # 5 classes, confidently
    assert metrics.classifier_score(half) == pytest.approx(5.0, rel=1e-9)


def test_mode_coverage_rule_and_kl():
    pred = np.array([0] * 50 + [1] * 40 + [2] * 9 + [3] * 1)  # 100 samples, 10 classes
    cov = metrics.mode_coverage(pred, 10)
    assert cov["class_histogram"] == [50, 40, 9, 1, 0, 0, 0, 0, 0, 0]
    # expected share 0.1 each: covered when share >= 0.01 -> classes 0, 1, 2 and 3 (exactly 1%)
    assert cov["classes_covered"] == 4
    share = np.array([0.5, 0.4, 0.09, 0.01])
    assert cov["class_kl"] == pytest.approx(float((share * np.log(share / 0.1)).sum()), rel=1e-12)
    balanced = metrics.mode_coverage(np.arange(1000) % 10, 10)
    assert balanced["classes_covered"] == 10 and balanced["class_kl"] == pytest.approx(0.0, abs=1e-12)  # float64
    # against a non-uniform reference: a class rare in the real data needs fewer samples
    ref = np.array([0.5] + [0.5 / 9] * 9)
    pred2 = np.array([0] * 95 + [1] * 5)
    assert metrics.mode_coverage(pred2, 10, ref)["classes_covered"] == 2


# ---------------------------------------------------------------------------------- precision / recall

def test_knn_radii_and_precision_recall_match_brute_force():
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((60, 5)), rng.standard_normal((45, 5)) * 1.3 + 0.4
    for k in (1, 3, 5):
        r = metrics.knn_sq_radii(real, k, chunk=7)
        d = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))
        np.testing.assert_allclose(np.sqrt(r), np.sort(d, axis=1)[:, k], rtol=1e-9, atol=1e-9)  # float64
        ours = metrics.precision_recall(real, fake, k, chunk=8)
        assert ours == pytest.approx(brute_force_precision_recall(real, fake, k))


def test_precision_recall_known_cases():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((200, 4))
    assert metrics.precision_recall(real, real.copy()) == (1.0, 1.0)
    assert metrics.precision_recall(real, real + 100.0) == (0.0, 0.0)
    # all fakes one real point: realistic (precision 1), no variety (recall ~ 1/N)
    p, r = metrics.precision_recall(real, np.tile(real[0], (200, 1)))
    assert p == 1.0 and r <= 0.02


def test_feature_spread():
    rng = np.random.default_rng(6)
    f = rng.standard_normal((20000, 3)) * np.array([1.0, 2.0, 2.0])
    assert metrics.feature_spread(f) == pytest.approx(3.0, rel=0.02)
    assert metrics.feature_spread(np.ones((10, 3))) == 0.0


# ---------------------------------------------------------------------------------- collapse_check

def test_collapse_check():
    h = [{"step": s, "classes_covered": 10, "feature_spread": 20.0} for s in (100, 200)]
    assert metrics.collapse_check(h) is None
    assert metrics.collapse_check(h[:1]) is None
    drop = h + [{"step": 300, "classes_covered": 7, "feature_spread": 19.0}]
    text = metrics.collapse_check(drop)
    assert "classes covered fell from 10 to 7" in text and "step 300" in text
    assert metrics.collapse_check(h + [{"step": 300, "classes_covered": 8, "feature_spread": 19.0}]) is None
    spread = h + [{"step": 300, "classes_covered": 10, "feature_spread": 9.0}]
    assert "feature spread" in metrics.collapse_check(spread)
    assert metrics.collapse_check(h + [{"step": 300, "classes_covered": 10, "feature_spread": 11.0}]) is None
    # capped by the real data's spread: a generator noisier than the data may calm down to it
    noisy = [{"step": 1, "feature_spread": 60.0}, {"step": 2, "feature_spread": 25.0}]
    assert metrics.collapse_check(noisy) is not None
    assert metrics.collapse_check(noisy, reference_spread=24.0) is None
    assert metrics.collapse_check(noisy + [{"step": 3, "feature_spread": 10.0}], reference_spread=24.0)


# ---------------------------------------------------------------------------------- with an evaluator

@pytest.fixture(scope="module")
def small_evaluator(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHGAN_DATA", str(tmp_path_factory.mktemp("cache")))
        return get_evaluator("mnist-bundled", kind="mlp", limit=2000, epochs=3, seed=0)


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist_bundled("test")
    return images, labels


def test_real_vs_real_near_zero_and_noise_far(small_evaluator, digits):
    images, _ = digits
    a, b = images[8000:9000], images[9000:10000]
    noise = np.random.default_rng(0).standard_normal((1000, 784)).astype(np.float32)
    ref = metrics.RealReference(small_evaluator, a)
    real = metrics.compare(ref, b)
    gauss = metrics.compare(ref, noise)
    assert real["frechet_distance"] < 0.05 * gauss["frechet_distance"]
    assert real["classes_covered"] == 10 and real["class_kl"] < 0.05
    assert real["precision"] > 0.6 and real["recall"] > 0.6
    assert gauss["recall"] < 0.1
    assert set(metrics.METRIC_KEYS) <= set(real) and real["n"] == 1000


def test_one_repeated_image_collapses_coverage_and_recall(small_evaluator, digits):
    images, _ = digits
    ref = metrics.RealReference(small_evaluator, images[8000:9000])
    repeated = np.repeat(images[9500:9501], 1000, axis=0)
    res = metrics.compare(ref, repeated)
    assert res["classes_covered"] == 1
    assert res["recall"] < 0.01
    # 1000 copies of one image give float32 features that differ only by rounding (BLAS kernels
    # round rows differently by their place in a tile), so the spread is zero up to float32
    # rounding on the scale of the real features' spread, not below an absolute 1e-6.
    assert res["feature_spread"] <= FLOAT32_ROUNDING * metrics.feature_spread(ref.features)
    assert res["classifier_score"] == pytest.approx(1.0, rel=FLOAT32_ROUNDING)


def test_metrics_are_deterministic(small_evaluator, digits):
    images, _ = digits
    fake = np.random.default_rng(1).uniform(-1, 1, (300, 784)).astype(np.float32)
    one = metrics.evaluate_images(small_evaluator, fake, images[:300])
    two = metrics.evaluate_images(small_evaluator, fake, images[:300])
    assert one == two


def test_uint8_and_scaled_images_agree(small_evaluator, digits):
    images, _ = digits
    scaled = images[:200].reshape(200, -1).astype(np.float32) / 127.5 - 1.0
    f1, p1 = small_evaluator.embed(images[:200])
    f2, p2 = small_evaluator.embed(scaled)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(p1, p2)


def test_eval_hook_rows_history_and_collapse_warning(small_evaluator, digits):
    images, _ = digits
    real_x = images[:3000].reshape(3000, -1).astype(np.float32) / 127.5 - 1.0  # like BatchLoader.x
    hook = evaluation.EvalHook(small_evaluator, real_x, n=300, every=50, seed=0)
    assert [s for s in range(0, 201) if hook.due(s)] == [50, 100, 150, 200]
    G = models.mlp_generator(latent_dim=8, hidden=(16, 32), seed=0).to("numpy", "float32")
    row = hook(G, 50)
    assert set(row) == set(metrics.METRIC_KEYS)
    assert all(np.isfinite(v) for v in row.values())
    assert hook.warning is None and len(hook.history) == 1
    assert hook(G, 100) == row  # fixed noise, same G: the same numbers
    # collapse: every z gives the same image
    G[len(G) - 2].W.data[...] = 0.0
    row3 = hook(G, 150)
    real_spread = metrics.feature_spread(small_evaluator.embed(real_x[:300])[0])
    assert row3["feature_spread"] <= FLOAT32_ROUNDING * real_spread and row3["classes_covered"] == 1
    assert hook.warning is not None and "feature spread" in hook.warning and "step 150" in hook.warning
    hook(G, 200)
    assert hook.warning is None  # said once, not at every evaluation
    assert [h["step"] for h in hook.history] == [50, 100, 150, 200]


def test_plot_panels_are_metric_keys():
    assert set(itertools.chain.from_iterable(metrics.PLOT_PANELS)) <= set(metrics.METRIC_KEYS)


def test_hook_rows_fit_metrics_csv_and_loss_plot(small_evaluator, digits, tmp_path):
    """The wiring the trainer uses: hook rows joined to loss rows in metrics.csv, extra plot panels."""
    from scratchgan.run import viz
    images, _ = digits
    hook = evaluation.EvalHook(small_evaluator, images[:500], n=100, every=20, seed=1)
    G = models.mlp_generator(latent_dim=8, hidden=(16, 32), seed=0).to("numpy", "float32")
    with viz.MetricsCSV(tmp_path / "metrics.csv") as csv:
        for step in range(10, 61, 10):
            row = {"step": step, "epoch": 1, "loss_D": 1.0, "loss_G": 0.7}
            if hook.due(step):
                row.update(hook(G, step))
            csv.append(row)
    rows = viz.read_metrics_csv(tmp_path / "metrics.csv")
    assert [r["classes_covered"] is not None for r in rows] == [False, True, False, True, False, True]
    assert rows[1]["frechet_distance"] == pytest.approx(hook.history[0]["frechet_distance"])
    viz.plot_losses(rows, tmp_path / "losses.png", extra_panels=metrics.PLOT_PANELS)
    resumed = evaluation.EvalHook(small_evaluator, images[:500], n=100, every=20, seed=1).load_history(rows)
    assert resumed.history == hook.history
    assert (tmp_path / "losses.png").stat().st_size > 0


def test_make_eval_hook_from_a_run_config(small_evaluator, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path))
    import scratchgan.eval.evaluator as ev_module
    calls = []
    monkeypatch.setattr(ev_module, "get_evaluator", lambda *a, **k: calls.append((a, k)) or small_evaluator)
    config = {"dataset": "mnist-bundled", "data_dir": None, "seed": 2, "eval_every": 500, "latent_dim": 8}
    hook = evaluation.make_eval_hook(config, digits[0][:400], n=100)
    assert calls[0][0] == ("mnist-bundled", None) and hook.every == 500 and hook.n == 100
    assert hook.latent_dim == 8


def test_precision_leaves_out_the_largest_real_balls():
    """One real outlier far from the rest has a ball that holds every fake near the cluster's edge;
    the paper's precision counts those fakes, the evaluator's (OUTLIER_SHARE) does not."""
    rng = np.random.default_rng(7)
    cluster = rng.standard_normal((95, 2)) * 0.1
    outliers = np.array([[50.0, 0.0], [-50.0, 0.0], [0.0, 50.0], [0.0, -50.0], [35.0, 35.0]])
    real = np.concatenate([cluster, outliers])             # 5 of 100 balls are huge (radius ~50-70)
    fake = rng.uniform(-20.0, 20.0, (300, 2))               # "noise" between the cluster and the outliers
    fake = fake[np.abs(fake).max(axis=1) > 2.0]             # none near the cluster
    p_paper, r_paper = metrics.precision_recall(real, fake)
    p_kept, r_kept = metrics.precision_recall(real, fake, outlier_share=0.05)
    assert p_paper > 0.9 and p_kept == 0.0
    assert r_kept == r_paper                                 # recall uses the fakes' balls only
    kept = metrics.kept_balls(metrics.knn_sq_radii(real), 0.05)
    assert kept.sum() == 95 and not kept[95:].any()
    # real against itself: all kept balls' centres are inside their own balls
    assert metrics.precision_recall(real, cluster, outlier_share=0.05)[0] == 1.0
    with pytest.raises(ValueError, match="outlier_share"):
        metrics.precision_recall(real, fake, outlier_share=1.0)
