"""BatchLoader: the whole dataset on the backend once, minibatches by index, stateless shuffling.

The images are converted to floats in [-1, 1] (the range of a tanh generator) and copied to the
device ONE time; a batch is then a single gather ``x[idx]`` on the device, with no per-step host
work or host-to-device copy. The order of epoch ``e`` is a pure function of ``(seed, e)``:

    perm_e = numpy.random.default_rng([seed, e]).permutation(N)

so a run resumed from a checkpoint at (epoch, batch) sees exactly the batches it would have seen,
and a NumPy and a CuPy run see the same ones.
"""
from __future__ import annotations

import numpy as np

from ..backend import backend_name, get_xp, resolve_dtype, to_device


class BatchLoader:
    """Minibatches of uint8 images scaled to [-1, 1], on the backend ``xp``.

    ``images``: uint8 (N, H, W) or (N, C, H, W) on the host. ``flatten=True`` gives batches of shape
    (B, C*H*W) (e.g. (B, 784) for MNIST, for MLPs); ``flatten=False`` gives (B, C, H, W), with C = 1
    added for (N, H, W) input (for conv nets). With ``labels`` (N,) each batch is ``(x, y)``, y int64.
    ``len(loader)`` is the number of batches per epoch; ``loader.epoch(e, start_batch)`` yields the
    batches of epoch ``e`` from ``start_batch`` on; iterating the loader itself runs epoch 0, 1, ...
    in turn.
    """

    def __init__(self, images, batch_size, xp=np, dtype="float32", seed=0, shuffle=True, drop_last=True,
                 labels=None, flatten=True, resident="auto"):
        self.xp = get_xp(xp)
        self.dtype = resolve_dtype(dtype)
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"BatchLoader expects uint8 images (0..255), got {images.dtype}")
        if images.ndim not in (3, 4) or len(images) == 0:
            raise ValueError(f"BatchLoader expects images of shape (N, H, W) or (N, C, H, W) with N > 0, "
                             f"got {images.shape}")
        if 0 in images.shape[1:]:  # 0x0 pixels or 0 channels: a network of input size 0 would "train"
            raise ValueError(f"BatchLoader got empty images (shape {images.shape}); each image needs at least one "
                             "channel and 1x1 pixels")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        n = len(images)
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} images) and "
                             "drop_last=True would leave no batch; use a smaller batch_size or drop_last=False")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},) to match the images, got {labels.shape}")

        self.num_samples = n
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._next_epoch = 0  # for plain `for x in loader`

        if images.ndim == 3:
            images = images[:, None]  # (N, H, W) -> (N, 1, H, W): one channel
        shape = (n, -1) if flatten else images.shape
        # ``resident``: what lives on the device for the whole run. "float": the scaled images, so a
        # batch is a bare gather (MNIST: 188 MB in float32). "uint8": the raw bytes, 4x smaller, each
        # batch scaled after its gather (a 64x64 RGB CelebA would be 10 GB in float32, 2.5 GB in uint8).
        # "auto" keeps floats up to 2 GiB.
        if resident == "auto":
            resident = "float" if n * images[0].size * self.dtype.itemsize <= 2 * 1024 ** 3 else "uint8"
        if resident not in ("float", "uint8"):
            raise ValueError(f"resident must be 'auto', 'float' or 'uint8', got {resident!r}")
        self.resident = resident
        # Copy the uint8 bytes (4x fewer than float32) to the device once, then scale there. The
        # arithmetic stays in self.dtype: a Python float keeps a float32 array float32 (no float64
        # upcast); x / 127.5 - 1 maps 0 -> -1 and 255 -> 1 exactly.
        x = to_device(np.ascontiguousarray(images.reshape(shape)), self.xp)
        self.x = self._scale(x) if resident == "float" else x
        self.y = None if labels is None else to_device(labels, self.xp, dtype=np.int64)

    def _scale(self, x_uint8):
        x = x_uint8.astype(self.dtype)
        x /= 127.5
        x -= 1.0
        return x

    def images(self, count):
        """The first ``count`` images as floats in [-1, 1] (e.g. the real half of real_vs_fake.png)."""
        x = self.x[:count]
        return self._scale(x) if self.resident == "uint8" else x

    def __len__(self):
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __repr__(self):
        return (f"BatchLoader(N={self.num_samples}, batch_size={self.batch_size}, batches={len(self)}, "
                f"shape={tuple(self.x.shape[1:])}, dtype={self.dtype.name}, backend={backend_name(self.xp)}, "
                f"shuffle={self.shuffle}, seed={self.seed})")

    def permutation(self, epoch):
        """The host order of epoch ``epoch``: a pure function of (seed, epoch)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_samples)

    def epoch(self, epoch, start_batch=0):
        """Yield the batches of epoch ``epoch``, from batch ``start_batch`` on (to resume mid-epoch).

        Each batch is a new contiguous array on the backend (callers may modify it in place).
        """
        n_batches = len(self)
        if isinstance(start_batch, bool) or not isinstance(start_batch, (int, np.integer)) \
                or not 0 <= start_batch <= n_batches:
            raise ValueError(f"start_batch must be an integer in [0, {n_batches}], got {start_batch!r}")
        order = self.permutation(epoch)
        # one host-to-device copy per epoch; the gathers below run on the device
        order = to_device(order, self.xp, dtype=np.int64) if self.shuffle else None
        B = self.batch_size
        for b in range(int(start_batch), n_batches):
            if order is None:
                sl = slice(b * B, (b + 1) * B)
                x = self.x[sl].copy()
                y = None if self.y is None else self.y[sl].copy()
            else:
                idx = order[b * B:(b + 1) * B]
                x = self.x[idx]                                   # (B, D) gather: a new array
                y = None if self.y is None else self.y[idx]
            if self.resident == "uint8":
                x = self._scale(x)
            yield x if y is None else (x, y)

    def __iter__(self):
        """One epoch: 0 the first time, then 1, 2, ... (use ``epoch(e, start_batch)`` to resume)."""
        e = self._next_epoch
        self._next_epoch += 1
        return self.epoch(e)
