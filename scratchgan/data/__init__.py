"""Datasets and batches: the IDX parser, MNIST / Fashion-MNIST (local, cached or downloaded, always
verified), the bundled 10k MNIST test digits, and the device-resident BatchLoader.

    images, labels = load_dataset("mnist", split="train")          # uint8 (N, 28, 28), uint8 (N,)
    loader = BatchLoader(images, 64, xp=get_xp("cupy"), seed=0)     # float32 in [-1, 1], on the GPU
    for x in loader.epoch(e, start_batch=b): ...                    # (64, 784) batches, resumable
    faces = load_image_folder("img_align_celeba", image_size=64)    # uint8 (N, 3, 64, 64), cached memmap
"""
from .download import DownloadError
from .folder import IMAGE_EXTENSIONS, ImageFolder, load_image_folder, make_demo_folder, open_image_folder
from .idx import DataError, parse_idx, read_idx
from .loader import BatchLoader
from .transforms import resize_square
from .mnist import (
    DATASET_NAMES,
    DATASETS,
    SPLITS,
    cache_dir,
    data_root,
    download_dataset,
    load_dataset,
    load_dataset_or_bundled,
    load_mnist_bundled,
)

__all__ = [
    "DataError", "DownloadError", "read_idx", "parse_idx",
    "load_dataset", "load_dataset_or_bundled", "load_mnist_bundled", "download_dataset",
    "cache_dir", "data_root", "DATASETS", "DATASET_NAMES", "SPLITS",
    "BatchLoader",
    "load_image_folder", "open_image_folder", "ImageFolder", "make_demo_folder", "IMAGE_EXTENSIONS",
    "resize_square",
]
