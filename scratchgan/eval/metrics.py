"""Sample-quality metrics in the feature space of the evaluator classifier (scratchgan.eval.evaluator).

All of them compare N generated images with N real ones, on the host in float64:

- Frechet distance (classifier features): ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}) between
  Gaussians fitted to the two feature sets. The formula of FID, but in our small classifier's 128-d
  feature space, NOT Inception-v3's: the numbers are not comparable with published FID values.
- classifier score: exp(E_x KL(p(y|x) || p(y))), the Inception-score recipe with our classifier;
  1 (every image the same class, or no image confidently any class) up to the number of classes.
- mode coverage: the histogram of predicted classes; a class counts as covered when it receives at
  least COVERAGE_THRESHOLD (10%) of its expected share, the share it has among real images (1% of
  the samples for 10 balanced classes); and KL(generated class distribution || real one).
- precision and recall (Kynkaanniemi et al. 2019): each real feature vector gets a ball reaching
  its k-th nearest real neighbour (k = 3); precision = fraction of generated samples inside some
  real ball (are the fakes realistic?), recall = fraction of real samples inside some ball around
  the generated ones (is the variety of the real data covered?). The evaluator leaves out the
  OUTLIER_SHARE (5%) of real balls with the largest radii when it counts precision: an outlier's
  ball is huge (its k-th neighbour is far away) and swallows whatever lands near it. In the CNN's
  features those few balls held 26% of uniform-noise images; without them 0.8%, while a fresh real
  subset's precision goes from 0.865 to 0.829 (benchmarks/RESULTS.md). The same paper drops half of
  the balls for its realism score, for the same reason.
- feature spread: sqrt(trace of the feature covariance), the RMS distance to the mean; a collapsing
  generator's spread falls (used by collapse_check).

evaluation.py runs them periodically during training on samples from fixed noise (EvalHook).
"""
from __future__ import annotations

import math

import numpy as np

COVERAGE_THRESHOLD = 0.1
DEFAULT_K = 3
OUTLIER_SHARE = 0.05  # the share of real k-NN balls, the largest, that precision leaves out
METRIC_KEYS = ("frechet_distance", "classifier_score", "classes_covered", "class_kl", "precision", "recall",
               "feature_spread")
COVERAGE_RULE = (f"a class is covered when its share of the images (by the evaluator's predicted class) "
                 f"is at least {COVERAGE_THRESHOLD:g} x its share among the real reference images")


# ---------------------------------------------------------------------------------- Frechet distance

def feature_statistics(features):
    """(mu (F,), sigma (F, F)) of features (N, F): mean and unbiased covariance, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (N, F) with N >= 2, got {f.shape}")
    mu = f.mean(axis=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)  # (F, N) @ (N, F) -> (F, F)
    return mu, sigma


def sqrtm_psd(A):
    """The symmetric square root of a symmetric positive semi-definite matrix: V sqrt(max(w, 0)) V^T.

    Rounding can leave tiny negative eigenvalues in a PSD matrix; they are clipped to 0.
    """
    A = np.asarray(A, dtype=np.float64)
    w, V = np.linalg.eigh((A + A.T) / 2.0)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T  # (F, F) * (F,) @ (F, F) -> (F, F)


def trace_sqrt_product(sigma1, sigma2):
    """tr((S1 S2)^{1/2}) = tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = sum_i sqrt(lambda_i).

    S1 S2 is similar to the symmetric PSD matrix M = S1^{1/2} S2 S1^{1/2} (same eigenvalues), so we
    need only M's eigenvalues (eigvalsh: real, stable) instead of a general, possibly complex sqrtm.
    """
    s1h = sqrtm_psd(sigma1)
    M = s1h @ np.asarray(sigma2, dtype=np.float64) @ s1h  # (F, F) @ (F, F) @ (F, F) -> (F, F)
    w = np.linalg.eigvalsh((M + M.T) / 2.0)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}), the squared 2-Wasserstein distance
    between N(mu1, S1) and N(mu2, S2); >= 0 (rounding below zero is clipped)."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(float(fd), 0.0)


def frechet_distance_features(features1, features2):
    """The Frechet distance between Gaussians fitted to two feature sets (N1, F) and (N2, F)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# ---------------------------------------------------------------------------------- class-based metrics

def classifier_score(probs, eps=1e-12):
    """exp(mean_x KL(p(y|x) || p(y))), p(y) = mean_x p(y|x): the Inception-score recipe."""
    p = np.asarray(probs, dtype=np.float64)
    p_y = p.mean(axis=0, keepdims=True)                        # (1, C): the marginal
    kl = (p * (np.log(p + eps) - np.log(p_y + eps))).sum(axis=1)  # (N,)
    return float(np.exp(kl.mean()))


def class_distribution(predicted, n_classes):
    """Share of each class among predicted labels (N,) -> (C,) summing to 1."""
    counts = np.bincount(np.asarray(predicted), minlength=n_classes)[:n_classes]
    return counts / max(counts.sum(), 1)


def mode_coverage(predicted, n_classes, reference=None, threshold=COVERAGE_THRESHOLD, eps=1e-12):
    """Histogram of predicted classes, classes covered, and KL(generated || reference) of the classes.

    ``reference``: the class distribution of real images (C,); default uniform. A class c counts as
    covered when share[c] >= threshold * reference[c] (and at least one image falls in it).
    """
    predicted = np.asarray(predicted)
    counts = np.bincount(predicted, minlength=n_classes)[:n_classes]
    share = counts / max(counts.sum(), 1)
    q = np.full(n_classes, 1.0 / n_classes) if reference is None else np.asarray(reference, dtype=np.float64)
    covered = (share >= threshold * q * (1.0 - 1e-9)) & (counts > 0)  # tolerance: 0.01 == 0.1 * 0.1
    nz = share > 0
    kl = float((share[nz] * (np.log(share[nz]) - np.log(np.maximum(q[nz], eps)))).sum())
    return {"class_histogram": counts.tolist(), "classes_covered": int(covered.sum()), "class_kl": max(kl, 0.0)}


# ---------------------------------------------------------------------------------- precision / recall

def pairwise_sq_distances(a, b):
    """||a_i - b_j||^2 for a (M, F), b (N, F) -> (M, N), via ||a||^2 + ||b||^2 - 2 a b^T, clipped >= 0."""
    d = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :]
    d -= 2.0 * (a @ b.T)  # (M, F) @ (F, N) -> (M, N)
    return np.maximum(d, 0.0, out=d)


def knn_sq_radii(features, k=DEFAULT_K, chunk=1024):
    """Squared distance from each row to its k-th nearest OTHER row (N,)."""
    f = np.asarray(features, dtype=np.float64)
    n = len(f)
    if not 1 <= k < n:
        raise ValueError(f"k-NN radii need 1 <= k < N, got k={k} with N={n}")
    radii = np.empty(n)
    for start in range(0, n, chunk):
        d = pairwise_sq_distances(f[start:start + chunk], f)
        rows = np.arange(d.shape[0])
        d[rows, start + rows] = 0.0  # the point itself: exactly 0, so it is the 0-th neighbour
        radii[start:start + chunk] = np.partition(d, k, axis=1)[:, k]
    return radii


def kept_balls(radii, outlier_share):
    """(N,) bool: the real balls precision counts, all but the ``outlier_share`` with the largest radii."""
    if not 0.0 <= outlier_share < 1.0:
        raise ValueError(f"outlier_share must be in [0, 1), got {outlier_share}")
    if outlier_share == 0.0:
        return np.ones(len(radii), dtype=bool)
    return radii <= np.quantile(radii, 1.0 - outlier_share)


def precision_recall(real, fake, k=DEFAULT_K, real_radii=None, chunk=1024, outlier_share=0.0):
    """Improved precision and recall (Kynkaanniemi et al. 2019) of ``fake`` features against ``real``.

    precision = P_fake[ exists i in K: ||f - r_i|| <= NN_k(r_i) ]
    recall    = P_real[ exists j: ||r - f_j|| <= NN_k(f_j) ]   (NN_k: distance to the k-th nearest neighbour)
    K: every real point (the paper's definition, outlier_share = 0), or all but the ``outlier_share``
    with the largest balls (kept_balls; the evaluator uses OUTLIER_SHARE). Recall is unchanged by it.
    ``real_radii``: precomputed knn_sq_radii(real, k), to reuse across comparisons.
    """
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    r_real = knn_sq_radii(real, k, chunk) if real_radii is None else real_radii
    r_fake = knn_sq_radii(fake, k, chunk)
    # a ball left out gets radius -1: no squared distance is <= it
    r_kept = np.where(kept_balls(r_real, outlier_share), r_real, -1.0)
    fake_in_real = np.zeros(len(fake), dtype=bool)
    real_in_fake = np.zeros(len(real), dtype=bool)
    for start in range(0, len(fake), chunk):
        d = pairwise_sq_distances(fake[start:start + chunk], real)      # (c, N_real)
        fake_in_real[start:start + chunk] = (d <= r_kept[None, :]).any(axis=1)
        real_in_fake |= (d <= r_fake[start:start + chunk, None]).any(axis=0)
    return float(fake_in_real.mean()), float(real_in_fake.mean())


def feature_spread(features):
    """sqrt(trace(cov(features))): the RMS distance of the samples to their mean."""
    f = np.asarray(features, dtype=np.float64)
    return float(math.sqrt(max(((f - f.mean(axis=0)) ** 2).sum(axis=1).mean(), 0.0)))


# ---------------------------------------------------------------------------------- putting it together

class RealReference:
    """What the metrics need of the real images, computed once: features, Gaussian, classes, radii."""

    def __init__(self, evaluator, images, k=DEFAULT_K, outlier_share=OUTLIER_SHARE):
        self.evaluator, self.k, self.outlier_share = evaluator, int(k), float(outlier_share)
        self.features, self.probs = evaluator.embed(images)
        self.n = len(self.features)
        self.mu, self.sigma = feature_statistics(self.features)
        self.class_dist = class_distribution(self.probs.argmax(axis=1), evaluator.n_classes)
        self.radii = knn_sq_radii(self.features, self.k)
        self.spread = feature_spread(self.features)


def compare(reference, images=None, *, features=None, probs=None):
    """All metrics of ``images`` (or their precomputed features and probs) against a RealReference.

    Returns a dict: frechet_distance, classifier_score, classes_covered, class_kl, class_histogram,
    precision, recall, feature_spread, n.
    """
    if features is None:
        features, probs = reference.evaluator.embed(images)
    mu, sigma = feature_statistics(features)
    precision, recall = precision_recall(reference.features, features, reference.k, reference.radii,
                                         outlier_share=reference.outlier_share)
    result = {"frechet_distance": frechet_distance(mu, sigma, reference.mu, reference.sigma),
              "classifier_score": classifier_score(probs)}
    result.update(mode_coverage(probs.argmax(axis=1), reference.evaluator.n_classes, reference.class_dist))
    result.update({"precision": precision, "recall": recall, "feature_spread": feature_spread(features),
                   "n": int(len(features))})
    return result


def evaluate_images(evaluator, images, real_images, k=DEFAULT_K):
    """One-shot: metrics of ``images`` against ``real_images`` (both uint8 or in [-1, 1])."""
    return compare(RealReference(evaluator, real_images, k), images)


# ---------------------------------------------------------------------------------- during training

def collapse_check(history, coverage_drop=3, spread_fraction=0.5, reference_spread=None):
    """A warning text if the LAST entry of ``history`` shows a sharp fall, else None.

    ``history``: dicts with "step" and any of "classes_covered", "feature_spread" (EvalHook rows).
    Flags: classes covered fell by >= ``coverage_drop`` below its best so far; or the feature spread of
    the fixed-noise samples fell below ``spread_fraction`` x its running max. With ``reference_spread``
    (the real images' spread) that max is capped at it, so a generator that starts out noisier than
    the data is not flagged for merely becoming data-like.
    """
    if len(history) < 2:
        return None
    last, earlier = history[-1], history[:-1]
    step = last.get("step", len(history) - 1)
    problems = []
    cov_now = last.get("classes_covered")
    cov_before = [h["classes_covered"] for h in earlier if h.get("classes_covered") is not None]
    if cov_now is not None and cov_before and max(cov_before) - cov_now >= coverage_drop:
        problems.append(f"classes covered fell from {max(cov_before)} to {cov_now}")
    spread_now = last.get("feature_spread")
    spread_before = [h["feature_spread"] for h in earlier if h.get("feature_spread") is not None]
    if spread_now is not None and spread_before:
        best = max(spread_before)
        if reference_spread is not None:
            best = min(best, float(reference_spread))
        if best > 0 and spread_now < spread_fraction * best:
            problems.append(f"feature spread of the fixed-noise samples fell to {spread_now:.3g}, "
                            f"{100 * spread_now / best:.0f}% of its running max {best:.3g}")
    if not problems:
        return None
    return f"possible mode collapse at step {step}: " + "; ".join(problems)


# The panels the trainer's loss plot can add for these metrics (viz.plot_losses(extra_panels=...)).
PLOT_PANELS = (("frechet_distance",), ("classes_covered",), ("precision", "recall"), ("feature_spread",))
