"""data/registry.py: the one table of training datasets, and --limit applied there once."""
from __future__ import annotations

import numpy as np
import pytest

from scratchgan.cli import flags
from scratchgan.data import DataError, registry
from scratchgan.gan import checkpoint_schema


def test_every_dataset_a_flag_or_a_checkpoint_names_is_in_the_registry():
    dataset = flags.BY_KEY["dataset"]
    assert set(dataset.choices) | set(dataset.dcgan_choices) == set(registry.BY_NAME) - {"synthetic"}
    assert set(checkpoint_schema.DATASETS) == set(registry.BY_NAME)


def test_limit_keeps_the_first_images_and_their_labels():
    whole = registry.load("mnist-bundled", registry.Request(split="test"))
    first = registry.load("mnist-bundled", registry.Request(split="test"), limit=5)
    assert first.images.shape == (5, 28, 28) and first.labels.shape == (5,)
    np.testing.assert_array_equal(first.images, whole.images[:5])
    np.testing.assert_array_equal(first.labels, whole.labels[:5])
    assert (first.name, first.split) == ("mnist-bundled", "test")


def test_count_checks_the_paths_and_never_exceeds_the_limit(tmp_path):
    assert registry.count("mnist", registry.Request()) is None  # the cache or a download: not known here
    assert registry.count("mnist", registry.Request(), limit=7) == 7
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        registry.count("cifar10", registry.Request(data_dir=str(tmp_path / "none")))
    np.save(tmp_path / "x.npy", np.zeros((12, 8, 8), np.uint8))
    assert registry.count("npy", registry.Request(data_dir=str(tmp_path / "x.npy"))) == 12
    assert registry.count("npy", registry.Request(data_dir=str(tmp_path / "x.npy")), limit=5) == 5


def test_synthetic_images_have_the_asked_shape_and_labels_only_when_asked():
    request = registry.Request(size=8, channels=3, count=6, seed=1)
    loaded = registry.load("synthetic", request)
    assert loaded.images.shape == (6, 3, 8, 8) and loaded.images.dtype == np.uint8 and loaded.labels.shape == (6,)
    request.labelled = False
    assert registry.load("synthetic", request).labels is None


def test_an_unknown_dataset_is_one_line_naming_the_choices():
    with pytest.raises(DataError, match="unknown dataset 'svhn'; choose one of: mnist, "):
        registry.load("svhn", registry.Request())
