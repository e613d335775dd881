"""Known corruptions of real images, to check that a quality metric ranks them as the eye does.

Each takes uint8 images (N, H, W) (or floats in [-1, 1]) and returns float32 images (N, H, W) in
[-1, 1], the range a tanh generator produces; ``level`` 0 leaves the images as they are. Seeded where
random. They run on the host (NumPy): they prepare test data, like the data loaders, and are no part of
any training step.

- gaussian_blur(x, sigma):   convolve with a normalised Gaussian of std ``sigma`` pixels (separable,
                             radius ceil(3 sigma), edges reflected): the blur of an over-smooth G;
- additive_noise(x, std):    x + std * n, n ~ N(0, 1) per pixel, clipped to [-1, 1];
- salt_and_pepper(x, p):     each pixel, with probability p, set to -1 or +1 (even odds): speckle;
- horizontal_stripes(x, a):  x + a * s(row), s = +1, +1, -1, -1, ... (period 4 rows), clipped: the
                             stripe artefacts seen in WGAN-GP samples;
- keep_classes(x, y, k, n):  n images drawn from the first k classes only (mode dropping).
"""
from __future__ import annotations

import math

import numpy as np


def as_float_images(images):
    """uint8 (x / 127.5 - 1) or float images -> float32 (N, H, W) in [-1, 1] (a new array)."""
    x = np.asarray(images)
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / np.float32(127.5)) - np.float32(1.0)
    if x.dtype.kind != "f":
        raise TypeError(f"images must be uint8 or floats in [-1, 1], got {x.dtype}")
    return x.astype(np.float32, copy=True)


def gaussian_kernel(sigma):
    """The normalised 1-D Gaussian g[i] ~ exp(-i^2 / (2 sigma^2)), i = -r..r, r = ceil(3 sigma)."""
    r = max(1, math.ceil(3.0 * sigma))
    i = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(i * i) / (2.0 * sigma * sigma))
    return (g / g.sum()).astype(np.float32)


def gaussian_blur(images, sigma):
    """Blur each image with a Gaussian of std ``sigma`` pixels: rows, then columns (it is separable)."""
    x = as_float_images(images)
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x
    g = gaussian_kernel(sigma)
    r = len(g) // 2
    for axis in (1, 2):  # y[.., i, ..] = sum_k g[k] x[.., i + k - r, ..], edges reflected
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        xp_ = np.pad(x, pad, mode="reflect" if r < x.shape[axis] else "edge")
        n = x.shape[axis]
        x = sum(g[k] * np.take(xp_, np.arange(k, k + n), axis=axis) for k in range(len(g)))
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


def additive_noise(images, std, seed=0):
    """x + std * n, n ~ N(0, 1) per pixel (seeded), clipped to [-1, 1]."""
    x = as_float_images(images)
    n = np.random.default_rng([seed, 0xA0]).standard_normal(x.shape).astype(np.float32)
    return np.clip(x + np.float32(std) * n, -1.0, 1.0)


def salt_and_pepper(images, p, seed=0):
    """Each pixel, with probability p, replaced by -1 (pepper) or +1 (salt), even odds (seeded)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"salt-and-pepper probability must be in [0, 1], got {p}")
    x = as_float_images(images)
    rng = np.random.default_rng([seed, 0x5A])
    hit = rng.random(x.shape) < p
    salt = rng.random(x.shape) < 0.5
    x[hit] = np.where(salt[hit], np.float32(1.0), np.float32(-1.0))
    return x


def horizontal_stripes(images, amplitude, period=4):
    """x + a * s(row), s = +1 for the first half of each ``period`` rows and -1 for the rest, clipped."""
    x = as_float_images(images)
    rows = np.arange(x.shape[1])
    s = np.where((rows % period) < period // 2, 1.0, -1.0).astype(np.float32)  # (H,)
    return np.clip(x + np.float32(amplitude) * s[None, :, None], -1.0, 1.0)


def keep_classes(images, labels, k, n, seed=0):
    """``n`` images (drawn without replacement, seeded) from those whose label is among the first k classes."""
    labels = np.asarray(labels)
    classes = np.unique(labels)[: int(k)]
    pool = np.flatnonzero(np.isin(labels, classes))
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} images in the first {k} classes, fewer than n = {n}")
    idx = np.sort(np.random.default_rng([seed, 0xC7, int(k)]).choice(pool, n, replace=False))
    return images[idx]


CORRUPTIONS = {  # name -> (function, levels from mild to strong), for the sanity curves
    "gaussian blur (sigma, px)": (gaussian_blur, (0.5, 1.0, 1.5, 2.0)),
    "additive noise (std)": (additive_noise, (0.1, 0.2, 0.4, 0.8)),
    "salt and pepper (p)": (salt_and_pepper, (0.02, 0.05, 0.1, 0.2)),
    "horizontal stripes (amplitude)": (horizontal_stripes, (0.1, 0.2, 0.4, 0.8)),
}

__all__ = ["as_float_images", "gaussian_kernel", "gaussian_blur", "additive_noise", "salt_and_pepper",
           "horizontal_stripes", "keep_classes", "CORRUPTIONS"]
