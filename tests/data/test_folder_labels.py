"""Labels of image folders: class sub-folders (torchvision's ImageFolder: classes sorted by name, the label
the position) or StyleGAN's dataset.json; kept in the cache's manifest; every labelling that cannot be used
is one line, raised only when the labels are asked for (an unconditional run never reads them)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from scratchgan.data import DataError, open_image_folder, registry

S = 8


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "data"))


def save(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (10, 10), dtype=np.uint8), "L").save(path)
    return path


def classes_dir(tmp_path, names=("dog", "cat", "emu"), per_class=3):
    root = tmp_path / "classes"
    for k, name in enumerate(names):
        for i in range(per_class):
            save(root / name / ("deep" if i == 2 else "") / f"{i}.png", 10 * k + i)
    return root


def open_folder(root, tmp_path):
    return open_image_folder(root, S, 1, cache_dir=tmp_path / "cache", workers=1)


def test_class_subfolders_are_sorted_and_numbered(tmp_path):
    folder = open_folder(classes_dir(tmp_path), tmp_path)
    labels, classes = folder.checked_labels()
    assert classes == ("cat", "dog", "emu")  # sorted by name, not by creation
    assert labels.dtype == np.int64 and len(labels) == len(folder.images) == 9
    for rel, label in zip(folder.files, labels):  # a file in a nested folder belongs to its top-level class
        assert rel.split("/")[0] == classes[label]


def test_labels_are_kept_in_the_cache(tmp_path):
    root = classes_dir(tmp_path)
    first = open_folder(root, tmp_path)
    manifest = json.loads(first.cache_path.with_suffix(".json").read_text())
    assert manifest["classes"] == ["cat", "dog", "emu"] and manifest["labels"] == first.labels.tolist()
    again = open_folder(root, tmp_path)
    assert again.from_cache and again.classes == first.classes
    np.testing.assert_array_equal(again.labels, first.labels)


def test_an_image_at_the_top_makes_the_folder_unlabelled_as_before(tmp_path):
    root = classes_dir(tmp_path)
    save(root / "loose.png", 99)
    folder = open_folder(root, tmp_path)
    assert folder.checked_labels() == (None, None) and len(folder.images) == 10


def test_a_class_whose_images_are_all_unreadable_is_refused_only_when_labels_are_asked(tmp_path):
    root = classes_dir(tmp_path)
    (root / "bad").mkdir()
    (root / "bad" / "broken.png").write_bytes(b"not a png")
    folder = open_folder(root, tmp_path)
    assert len(folder.images) == 9 and folder.num_skipped == 1  # an unconditional run goes on
    with pytest.raises(DataError, match=r"class 0 \(bad\) has no readable image"):
        folder.checked_labels()


def dataset_json(tmp_path, doc, files=("a.png", "sub/b.png", "c.png")):
    root = tmp_path / "stylegan"
    for i, rel in enumerate(files):
        save(root / rel, i)
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def test_dataset_json_gives_the_labels(tmp_path):
    root = dataset_json(tmp_path, {"labels": [["a.png", 1], ["sub/b.png", 0], ["c.png", 1]]})
    labels, classes = open_folder(root, tmp_path).checked_labels()
    assert labels.tolist() == [1, 1, 0] and classes == ("0", "1")  # files sorted: a.png, c.png, sub/b.png


def test_dataset_json_with_class_names_and_null_labels(tmp_path):
    root = dataset_json(tmp_path, {"labels": [["a.png", 2], ["sub/b.png", 0], ["c.png", 1]],
                                   "classes": ["cat", "dog", "emu"]})
    assert open_folder(root, tmp_path).checked_labels()[1] == ("cat", "dog", "emu")
    (root / "dataset.json").write_text(json.dumps({"labels": None}))  # dataset_tool's unlabelled dataset
    again = open_folder(root, tmp_path)
    assert not again.from_cache, "a changed dataset.json makes a new cache"
    assert again.checked_labels() == (None, None)


@pytest.mark.parametrize("doc, match", [
    ({"labels": [["a.png", 0], ["sub/b.png", 1], ["c.png", 1], ["gone.png", 0]]},
     r"lists 1 file that is not an image file of the folder \(first: gone.png\)"),
    ({"labels": [["a.png", 0], ["c.png", 1]]}, r"gives no label for 1 of the 3 images \(first: sub/b.png\)"),
    ({"labels": [["a.png", 0], ["sub/b.png", "1"], ["c.png", 1]]}, r"the label of sub/b.png is \"1\", not an integer"),
    ({"labels": [["a.png", 0], ["sub/b.png", 1.5], ["c.png", 1]]}, r"the label of sub/b.png is 1.5, not an integer"),
    ({"labels": [["a.png", -1], ["sub/b.png", 1], ["c.png", 1]]}, r"the label of a.png is -1, out of range"),
    ({"labels": [["a.png", 0], ["sub/b.png", 2], ["c.png", 1]], "classes": ["x", "y"]},
     r"the label of sub/b.png is 2, out of range: labels are 0 to 1"),
    ({"labels": [["a.png", 0], ["sub/b.png", 2], ["c.png", 2]]}, r"class 1 \(1\) has no readable image"),
    ({"labels": [["a.png", 0], ["a.png", 1]]}, "lists a.png twice"),
    ({"labels": {"a.png": 0}}, "must be a list of \\[file, label\\] pairs"),
    ({"label": []}, "has no \"labels\" key"),
])
def test_dataset_json_faults_are_one_line(tmp_path, doc, match):
    folder = open_folder(dataset_json(tmp_path, doc), tmp_path)
    assert len(folder.images) == 3  # the images load all the same: only the labels are refused
    with pytest.raises(DataError, match=match) as e:
        folder.checked_labels()
    assert "\n" not in str(e.value) and "dataset.json" in str(e.value)


def test_dataset_json_that_is_not_json(tmp_path):
    root = dataset_json(tmp_path, {})
    (root / "dataset.json").write_text("{labels: ")
    with pytest.raises(DataError, match="is not JSON"):
        open_folder(root, tmp_path).checked_labels()


def test_the_registry_hands_the_labels_and_the_reason_for_none(tmp_path):
    loaded = registry.load("folder", registry.Request(data_dir=str(classes_dir(tmp_path)), size=S, channels=1))
    assert loaded.classes == ("cat", "dog", "emu") and loaded.labels.shape == (9,) and loaded.no_labels is None
    bad = dataset_json(tmp_path, {"labels": [["a.png", 0]]})
    loaded = registry.load("folder", registry.Request(data_dir=str(bad), size=S, channels=1), limit=2)
    assert loaded.labels is None and "gives no label" in loaded.no_labels and len(loaded.images) == 2
