"""Image resizing for the DCGAN on MNIST-like data, done once on the host with Pillow; generated images back to
uint8 pixels (``to_uint8``: the grids, the PNGs of `scratchgan sample` and ``G.generate``)."""
from __future__ import annotations

import numpy as np
from PIL import Image


def resize_square(images, size, channels=1):
    """uint8 (N, H, W) grayscale images -> uint8 (N, channels, size, size), resized with Pillow's
    bicubic filter (antialiased when shrinking); channels=3 repeats the gray value (no copy when 1)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"resize_square expects uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if images.shape[1:] == (size, size):
        out = images[:, None]
    else:
        out = np.empty((len(images), 1, size, size), dtype=np.uint8)
        for i, img in enumerate(images):
            out[i, 0] = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))
    return np.repeat(out, 3, axis=1) if channels == 3 else out


def fit_images(images, size, channels):
    """uint8 (N, H, W) or (N, C, H, W) square images -> uint8 (N, channels, size, size): RGB to grey as
    Pillow's convert("L") (L = R 299/1000 + G 587/1000 + B 114/1000), grey to RGB by repetition, then each
    plane resized with Pillow's bicubic filter (antialiased when shrinking) when the size differs."""
    images = np.asarray(images)
    if images.ndim == 3:
        return resize_square(images, size, channels)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1] not in (1, 3):
        raise ValueError(f"fit_images expects uint8 images (N, H, W) or (N, 1|3, H, W), got {images.dtype} {images.shape}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if images.shape[1] == 3 and channels == 1:
        planes = [np.asarray(Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).convert("L"))
                  for img in images]
        images = np.stack(planes)[:, None] if planes else images[:, :1]
    elif images.shape[1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=1)
    if images.shape[2:] == (size, size):
        return np.ascontiguousarray(images)
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, img in enumerate(images):
        for c in range(channels):
            out[i, c] = np.asarray(Image.fromarray(img[c]).resize((size, size), Image.Resampling.BICUBIC))
    return out


def to_uint8(x, value_range=(-1.0, 1.0)):
    """Map value_range linearly onto 0..255, rounding to the nearest and clipping; NaN (a diverged G) becomes 0."""
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
    y = (np.asarray(x, dtype=np.float64) - lo) * (255.0 / (hi - lo))
    y = np.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)
