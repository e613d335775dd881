"""Image resizing for the DCGAN on MNIST-like data, done once on the host with Pillow."""
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
