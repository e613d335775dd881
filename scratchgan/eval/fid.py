"""Inception FID: the protocol of pytorch-fid, around any feature network, in small steps.

    net = load_network()                                   # (N, 3, 299, 299) in [-1, 1] -> (N, 2048)
    real = real_statistics(net, images, path, "fashion-mnist train")   # cached in the file ``path``
    fake = statistics(features(net, generated))
    fid = frechet_distance(fake, real)
    print(protocol_line(fid, net, n_fake, n_real, "fashion-mnist train", grey=True))
    measure(net, generated, images, "fashion-mnist train", cache=path)  # all of it: {"fid", "line", ...}

The steps, each a function below:

1. ``to_rgb01``: images of any run (uint8 0..255 or floats in [-1, 1]; (N, H, W), (N, 1, H, W),
   (N, 3, H, W) or flat (N, 784)) -> (N, 3, H, W) in [0, 1], grey repeated to 3 channels.
2. ``resize_bilinear``: to 299 x 299 as pytorch-fid's ``resize_input`` (``F.interpolate(x, size=(299, 299),
   mode='bilinear', align_corners=False)``), written as two 1-d interpolation matrices: y = R_H x R_W^T.
3. ``to_network_range``: 2 x - 1, the range pytorch-fid's FIDInceptionV3 takes after its own resize.
4. ``features``: the network's 2048-d pool3 features in batches, float32, with a progress bar.
5. ``statistics``: mu and Sigma (unbiased) in float64; ``frechet_distance``: metrics.py's (the same maths).

The feature network is passed in (any object with ``forward(x)``), so the protocol is tested without the
Inception weights; ``weights_sha256`` on it names the weights in the protocol line and the cache key.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import time

import numpy as np

from ..backend import array_module, to_device, to_numpy
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from . import metrics

SIZE = 299             # Inception-v3's input side
DEFAULT_N = 2000       # generated and real images, each (the table uses this n)
DEFAULT_BATCH = 50     # images per forward (pytorch-fid's default batch size)
STATS_FORMAT = 1
NETWORK_NAME = "Inception-v3 pool3 2048-d"


# ---------------------------------------------------------------------------------- 1. images -> RGB in [0, 1]

def to_rgb01(images, xp=None, dtype=np.float32):
    """(N, 3, H, W) in [0, 1] on ``xp``: uint8 x / 255, floats (x + 1) / 2; one channel repeated 3 times.

    Accepts (N, H, W), (N, 1, H, W), (N, 3, H, W) and flat (N, D) with D a square (grey) or 3 x a square (RGB).
    """
    xp = xp or array_module(images)
    N = images.shape[0]
    if images.ndim == 2:  # flat: (N, H*W) grey or (N, 3*H*W) RGB, channels first as the MLP makes them
        D = images.shape[1]
        side, side3 = math.isqrt(D), math.isqrt(D // 3)
        if side * side == D:
            images = images.reshape(N, 1, side, side)
        elif D % 3 == 0 and 3 * side3 * side3 == D:
            images = images.reshape(N, 3, side3, side3)
        else:
            raise ValueError(f"flat images of {D} values are not square grey or RGB images")
    elif images.ndim == 3:
        images = images.reshape(N, 1, *images.shape[1:])
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W), (N, 1|3, H, W) or flat (N, D), got {tuple(images.shape)}")
    if images.dtype == np.uint8:
        x = to_device(images, xp).astype(dtype) / 255.0
    elif images.dtype.kind == "f":
        x = (to_device(images, xp).astype(dtype) + 1.0) / 2.0
    else:
        raise TypeError(f"images must be uint8 (0..255) or floats in [-1, 1], got {images.dtype}")
    if x.shape[1] == 1:
        x = xp.repeat(x, 3, axis=1)                     # grey x3: (N, 1, H, W) -> (N, 3, H, W)
    return x


# ---------------------------------------------------------------------------------- 2. bilinear resize

def interpolation_matrix(n_in, n_out, xp=np, dtype=np.float32):
    """R (n_out, n_in): 1-d linear interpolation as PyTorch's bilinear with align_corners=False.

    Output i samples the input at s_i = max((i + 1/2) n_in / n_out - 1/2, 0); with j = floor(s_i) and
    l = s_i - j, R[i, j] += 1 - l and R[i, min(j + 1, n_in - 1)] += l (the last row clamps to the edge).
    s_i and l are computed in ``dtype`` (float32 for float32 images), as PyTorch computes them.
    """
    t = np.dtype(dtype).type  # the index arithmetic in the images' precision, as PyTorch's kernel does it
    s = np.maximum(t(n_in / n_out) * (np.arange(n_out).astype(t) + t(0.5)) - t(0.5), t(0.0))
    j = np.floor(s).astype(np.int64)
    lam = s - j.astype(t)
    R = np.zeros((n_out, n_in), dtype=t)
    rows = np.arange(n_out)
    np.add.at(R, (rows, j), 1.0 - lam)
    np.add.at(R, (rows, np.minimum(j + 1, n_in - 1)), lam)
    return to_device(R, xp, dtype)


def resize_bilinear(x, size=SIZE):
    """(N, C, H, W) -> (N, C, size, size): y = R_H x R_W^T, rows then columns (F.interpolate's bilinear)."""
    xp = array_module(x)
    H, W = x.shape[-2:]
    R_H = interpolation_matrix(H, size, xp, x.dtype)
    R_W = interpolation_matrix(W, size, xp, x.dtype)
    N, C = x.shape[:2]
    y = xp.matmul(R_H, x)                               # (size, H) @ (N, C, H, W) -> (N, C, size, W)
    y = y.reshape(N * C * size, W) @ R_W.T              # (N C size, W) @ (W, size) -> (N C size, size)
    return y.reshape(N, C, size, size)


def to_network_range(x01, out=None):
    """[0, 1] -> [-1, 1]: 2 x - 1, the input range of pytorch-fid's FID Inception (``out=x01``: in place)."""
    xp = array_module(x01)
    y = xp.multiply(x01, 2.0, out=out)
    y -= 1.0
    return y


def prepare(images, xp=None, dtype=np.float32):
    """The network's input: grey x3, bilinear to 299, in [-1, 1]; (N, 3, 299, 299) on ``xp``."""
    x = resize_bilinear(to_rgb01(images, xp, dtype))
    return to_network_range(x, out=x)  # in place: the resized batch is this function's own


# ---------------------------------------------------------------------------------- 3. features

class Progress:
    """Images per second while features are computed: a tqdm bar on a terminal's stderr, else one line
    per ~10% (and at the end) through ``log``; nothing when ``log`` is None and stderr is no terminal."""

    def __init__(self, total, desc, log=None, bar=None):
        self.total, self.desc, self.log, self.done, self.t0 = total, desc, log, 0, time.perf_counter()
        self.next_line = max(1, math.ceil(total / 10))
        self.bar = None
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="img", desc=desc, leave=False, dynamic_ncols=True)

    def rate(self):
        return self.done / max(time.perf_counter() - self.t0, 1e-9)

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.log is not None and (self.done >= self.next_line or self.done == self.total):
            self.log(f"{self.desc}: {self.done}/{self.total} images, {self.rate():.2f} images/s")
            while self.next_line <= self.done:
                self.next_line += max(1, math.ceil(self.total / 10))

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _forget_caches(net):
    """Drop the layers' forward caches (inference only): they would hold every activation of the batch."""
    for m in (net.modules() if hasattr(net, "modules") else ()):
        m.cache = None


def features(net, images, xp=None, batch_size=DEFAULT_BATCH, desc="features", log=None, bar=None):
    """(N, F) float32 host features of ``images`` (any form to_rgb01 takes), ``batch_size`` at a time on
    ``xp`` (default: the network's backend, else NumPy), with a Progress of images per second."""
    xp = xp or getattr(net, "xp", None) or np
    N = images.shape[0]
    out = []
    progress = Progress(N, desc, log, bar)
    try:
        for s in range(0, N, batch_size):
            f = net.forward(prepare(images[s:s + batch_size], xp))
            _forget_caches(net)
            out.append(to_numpy(f).astype(np.float32).reshape(f.shape[0], -1))
            progress.update(f.shape[0])
    finally:
        progress.close()
    return np.concatenate(out)


# ---------------------------------------------------------------------------------- 4. statistics, distance

def statistics(feats):
    """(mu (F,), Sigma (F, F)) in float64: the mean and the unbiased covariance (np.cov's, pytorch-fid's)."""
    return metrics.feature_statistics(feats)


def frechet_distance(stats1, stats2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) of two (mu, Sigma): metrics.frechet_distance."""
    return metrics.frechet_distance(*stats1, *stats2)


# ---------------------------------------------------------------------------------- 5. cached real statistics

def weights_sha256(net):
    """The weights' SHA-256 the network names (``net.weights_sha256``), else "unknown"."""
    return str(getattr(net, "weights_sha256", None) or "unknown")


def images_sha256(images):
    """SHA-256 of the images' bytes with their dtype and shape: what a cached statistic was computed from."""
    a = np.ascontiguousarray(to_numpy(images))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.data)
    return h.hexdigest()


def stats_cache_path(root, dataset, split, n, weights, source=""):
    """<root>/fid/<dataset>[-<source>]_<split>_n<n>_w<weights[:16]>_v<format>.npz (``source``: a short tag,
    e.g. the images' shape and an image folder's path hash, so that different real sets keep different files)."""
    tag = f"{dataset}-{source}" if source else dataset
    return root / "fid" / f"{tag}_{split}_n{n}_w{weights[:16]}_v{STATS_FORMAT}.npz"


def _stats_checksum(mu, sigma):
    return hashlib.sha256(np.ascontiguousarray(mu).data.tobytes() + np.ascontiguousarray(sigma).data.tobytes()
                          ).hexdigest()


def load_stats(path, weights, images_hash, n):
    """(mu, Sigma) cached in ``path`` for these weights, images and n; CheckpointError when it is stale or
    damaged (its checksum, its shapes, its key), never a silently wrong statistic."""
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != "scratchgan-fid-statistics" or meta.get("format") != STATS_FORMAT:
        raise CheckpointError(f"{path} is not scratchgan FID statistics of format {STATS_FORMAT}")
    for key, want in (("weights_sha256", weights), ("images_sha256", images_hash), ("n", n)):
        if meta.get(key) != want:
            raise CheckpointError(f"{path} is stale: its {key} is {meta.get(key)!r}, not {want!r}")
    mu, sigma = arrays.get("mu"), arrays.get("sigma")
    if mu is None or sigma is None or mu.ndim != 1 or sigma.shape != mu.shape * 2:
        raise CheckpointError(f"{path} lacks mu (F,) and sigma (F, F)")
    if _stats_checksum(mu, sigma) != meta.get("sha256"):
        raise CheckpointError(f"{path}: its statistics do not match their checksum")
    return mu.astype(np.float64), sigma.astype(np.float64)


def save_stats(path, stats, weights, images_hash, n, described):
    """Write (mu, Sigma) atomically with its key and checksum."""
    mu, sigma = (np.asarray(a, dtype=np.float64) for a in stats)
    save_checkpoint(path, {"mu": mu, "sigma": sigma},
                    {"kind": "scratchgan-fid-statistics", "format": STATS_FORMAT, "weights_sha256": weights,
                     "images_sha256": images_hash, "n": int(n), "images": described,
                     "sha256": _stats_checksum(mu, sigma)})


def real_statistics(net, images, path, described, log=None, bar=None, batch_size=DEFAULT_BATCH):
    """(mu, Sigma) of the real ``images``: from the cache file ``path`` when it holds these images' statistics
    under these weights, else computed and cached (a stale or damaged file is recomputed and replaced)."""
    weights, images_hash, n = weights_sha256(net), images_sha256(images), int(len(images))
    if path is not None and path.exists():
        try:
            stats = load_stats(path, weights, images_hash, n)
            if log:
                log(f"real statistics of {described} loaded from {path}")
            return stats
        except CheckpointError as e:
            if log:
                log(f"FID statistics {path} unusable ({str(e).splitlines()[0]}); computing them again")
    stats = statistics(features(net, images, batch_size=batch_size, desc=f"real ({described})", log=log, bar=bar))
    if path is not None and weights != "unknown":  # a network that does not name its weights is never cached
        save_stats(path, stats, weights, images_hash, n, described)
        if log:
            log(f"real statistics cached in {path}")
    return stats


def choose(n_total, n, seed=0):
    """A seeded choice of ``n`` of ``n_total`` indices, sorted: the same images for the same (n, seed)."""
    if n > n_total:
        raise ValueError(f"{n} images asked for, but there are only {n_total}")
    return np.sort(np.random.default_rng([seed, 0xF1D]).choice(n_total, n, replace=False))


# ---------------------------------------------------------------------------------- 6. the protocol line

def protocol(net, n_fake, n_real, real_source, grey):
    """The protocol in words: network, weights, resize, channels, n and the real images."""
    w = weights_sha256(net)
    weights = getattr(net, "weights_name", None) or (f"weights sha256 {w[:8]}…" if w != "unknown" else
                                                     "unnamed weights")
    channels = "grey x3" if grey else "RGB"
    return (f"{NETWORK_NAME}, {weights}, bilinear to {SIZE}, {channels}; n_fake {n_fake}, n_real {n_real} "
            f"from {real_source}")


def protocol_line(fid, net, n_fake, n_real, real_source, grey):
    """``FID 44.1 (Inception-v3 pool3 2048-d, pytorch-fid weights sha256 6726825d…, bilinear to 299, grey x3;
    n_fake 2000, n_real 2000 from fashion-mnist train)``: every FID printed with its protocol."""
    return f"FID {fid:.1f} ({protocol(net, n_fake, n_real, real_source, grey)})"


def is_grey(images):
    """True for one-channel images in any accepted form ((N, H, W), (N, 1, H, W), flat square)."""
    if images.ndim == 3:
        return True
    if images.ndim == 4:
        return images.shape[1] == 1
    return math.isqrt(images.shape[1]) ** 2 == images.shape[1]


# ---------------------------------------------------------------------------------- 7. putting it together

def arrays_sha256(arrays):
    """SHA-256 of named arrays (names sorted; each name, dtype, shape and bytes): the weights as the network
    holds them, the same whichever file (.pth or .npz) they were read from."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.data)
    return h.hexdigest()


def load_network(backend="numpy", log=None):
    """The FID Inception-v3 with pytorch-fid's weights (fid_weights: downloaded once, checked and cached; or
    ``$SCRATCHGAN_FID_WEIGHTS``) in eval mode on ``backend``. It carries ``weights_sha256`` (arrays_sha256 of
    its weights: the statistics' cache key) and ``weights_name`` (the protocol line's words for them). ``log``:
    the download's and conversion's lines."""
    from . import fid_weights
    from .inception import build_fid_inception, load_fid_state

    net = build_fid_inception()
    arrays, path = fid_weights.load_weights(log=log, net=net)
    load_fid_state(net, arrays)
    net = net.to(backend=backend).eval()
    net.weights_sha256 = arrays_sha256(arrays)
    if os.environ.get(fid_weights.ENV):  # the user's file: what it holds is named by its tensors' hash
        net.weights_name = f"weights {path.name} (tensors sha256 {net.weights_sha256[:8]}…)"
    else:  # the cache holds only the published file (its SHA-256 prefix checked) or its conversion
        net.weights_name = f"pytorch-fid weights sha256 {fid_weights.SHA256_PREFIX}…"
    return net


def measure(net, fake, real, real_source, cache=None, log=None, bar=None, batch_size=DEFAULT_BATCH):
    """The FID of ``fake`` against ``real`` images (any forms to_rgb01 takes) and how it was measured: a dict
    with fid, line (protocol_line), protocol, n_fake, n_real, real, weights_sha256, seconds, seconds_per_image.
    The real statistics come from, or go to, the file ``cache`` (None: not cached)."""
    t0 = time.perf_counter()
    real_stats = real_statistics(net, real, cache, real_source, log=log, bar=bar, batch_size=batch_size)
    t1 = time.perf_counter()
    fake_stats = statistics(features(net, fake, batch_size=batch_size, desc="generated", log=log, bar=bar))
    t2 = time.perf_counter()
    value = frechet_distance(fake_stats, real_stats)
    grey = is_grey(fake)
    return {"fid": value, "line": protocol_line(value, net, len(fake), len(real), real_source, grey),
            "protocol": protocol(net, len(fake), len(real), real_source, grey), "n_fake": int(len(fake)),
            "n_real": int(len(real)), "real": real_source, "weights_sha256": weights_sha256(net),
            "seconds": round(t2 - t0, 2), "seconds_per_image": round((t2 - t1) / max(len(fake), 1), 4)}
