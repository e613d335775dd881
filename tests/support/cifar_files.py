"""A small CIFAR-10 binary tarball in the official layout, made of random records."""
import io
import tarfile

import numpy as np

from scratchgan.data import cifar10


PER_BATCH = 2  # records per batch file of the small tarball


def records(seed, n=PER_BATCH):
    """(bytes, images (n, 3, 32, 32), labels (n,)) of n random CIFAR-10 records."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    raw = b"".join(bytes([int(y)]) + x.tobytes() for x, y in zip(images, labels))  # label byte, R, G, B planes
    return raw, images, labels


def make_tarball(path):
    """A cifar-10-binary.tar.gz in the official layout; returns {batch name: (images, labels)}."""
    content = {}
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(["batches.meta.txt", *cifar10.SPLITS["train"], *cifar10.SPLITS["test"]]):
            if name.endswith(".txt"):
                raw = "\n".join(cifar10.CLASSES).encode()
            else:
                raw, images, labels = records(i)
                content[name] = images, labels
            info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return content
