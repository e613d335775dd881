"""The conditional DCGAN as a user runs it, in child processes: `train --arch dcgan --conditional` on a
labelled image folder (class sub-folders) and on the bundled digits, then `sample --label NAME-or-INDEX`,
the grid with one row per class, `interpolate`, `export` and `scratchgan.load_generator(...).generate(label=)`
from both files; every fault one line and exit 2."""
from __future__ import annotations

import json

import numpy as np
import pytest
from commands import env_for, run
from PIL import Image

CLASSES = ("cat", "dog", "emu")
NETS = ["--image-size", "28", "--channels", "1", "--batch-size", "16", "--g-width", "4", "--d-width", "4",
        "--latent-dim", "8", "--no-progress", "--sample-every", "0"]
TINY = [*NETS, "--epochs", "1"]


def labelled_folder(root, names=CLASSES, per_class=12):
    """Grey squares of a brightness per class, in one sub-folder per class."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 70 * k, 20, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(root / name / f"{i:02d}.png")
    return root


def ok(args, tmp):
    code, out, err = run(args, tmp, module=True)
    assert code == 0, err
    return out + err


def refused(args, tmp, text):
    code, out, err = run(args, tmp, module=True)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conddcgan")
    data = labelled_folder(tmp / "pets")
    ok(["train", "--arch", "dcgan", "--conditional", "--dataset", "folder", "--data-dir", str(data), *TINY,
        "--out", str(tmp / "run")], tmp)
    ok(["export", "--checkpoint", str(tmp / "run" / "checkpoint.npz"), "--out", str(tmp / "G.npz")], tmp)
    return tmp


def test_train_records_the_class_names_and_writes_one_grid_row_per_class(folder_run):
    config = json.loads((folder_run / "run" / "config.json").read_text())
    assert config["conditional"] and config["num_classes"] == 3 and config["class_names"] == list(CLASSES)
    with Image.open(folder_run / "run" / "samples" / "epoch_001.png") as im:
        # 3 rows (one per class) of 10 tiles of 28 px with 2 px padding, scaled 2x
        assert im.size == (2 * (2 + 10 * 30), 2 * (2 + 3 * 30))


@pytest.mark.parametrize("source", ["run/checkpoint.npz", "G.npz"], ids=["checkpoint", "export"])
def test_sample_label_by_name_or_index(folder_run, tmp_path, source):
    path = str(folder_run / source)
    ok(["sample", "--checkpoint", path, "--label", "dog", "--n", "4", "--out", str(tmp_path / "dog")], tmp_path)
    ok(["sample", "--checkpoint", path, "--label", "1", "--n", "4", "--out", str(tmp_path / "one")], tmp_path)
    ok(["sample", "--checkpoint", path, "--label", "emu", "--n", "4", "--out", str(tmp_path / "emu")], tmp_path)
    dog = np.load(tmp_path / "dog.npy")
    assert dog.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(dog, np.load(tmp_path / "one.npy"))  # "dog" is class 1: sorted names
    assert not np.array_equal(dog, np.load(tmp_path / "emu.npy"))      # the same noise in another class
    refused(["sample", "--checkpoint", path, "--label", "cow", "--out", str(tmp_path / "x")], tmp_path,
            "--label cow: this generator knows no class 'cow'; its classes are cat, dog, emu")
    refused(["sample", "--checkpoint", path, "--label", "3", "--out", str(tmp_path / "x")], tmp_path,
            "knows classes 0 to 2")


def test_sample_without_label_and_interpolate_give_one_row_per_class(folder_run, tmp_path):
    path = str(folder_run / "G.npz")
    ok(["sample", "--checkpoint", path, "--seeds", "0-3", "--out", str(tmp_path / "all")], tmp_path)
    assert np.load(tmp_path / "all.npy").shape == (12, 1, 28, 28)  # every seed in every class
    with Image.open(tmp_path / "all.png") as im:
        assert im.size == (2 * (2 + 4 * 30), 2 * (2 + 3 * 30))
    ok(["interpolate", "--checkpoint", str(folder_run / "run" / "checkpoint.npz"), "--seeds", "0,1", "--steps", "3",
        "--out", str(tmp_path / "walk.gif")], tmp_path)
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == 4
    ok(["interpolate", "--checkpoint", path, "--seeds", "0,1", "--steps", "3", "--label", "cat",
        "--out", str(tmp_path / "cat.gif")], tmp_path)
    with Image.open(tmp_path / "walk.png") as both, Image.open(tmp_path / "cat.png") as one:
        assert both.size[1] > one.size[1]  # three rows against one


def test_load_generator_generates_by_class_name(folder_run):
    import scratchgan
    G, config = scratchgan.load_generator(str(folder_run / "G.npz"))
    assert G.num_classes == 3 and G.class_names == list(CLASSES)
    by_name = G.generate(3, seed=5, label="emu")
    assert by_name.dtype == np.uint8 and by_name.shape == (3, 28, 28)
    np.testing.assert_array_equal(by_name, G.generate(3, seed=5, label=2))
    with pytest.raises(scratchgan.errors.SettingError, match="no class 'cow'"):
        G.generate(1, label="cow")


def test_a_resume_on_another_class_count_is_refused(folder_run, tmp_path):
    import shutil
    shutil.copytree(folder_run / "pets", tmp_path / "pets")
    labelled_folder(tmp_path / "pets", names=("fox",))  # a fourth class
    refused(["train", "--arch", "dcgan", "--conditional", "--dataset", "folder", "--data-dir", str(tmp_path / "pets"),
             *NETS, "--epochs", "2", "--resume", str(folder_run / "run" / "checkpoint.npz"),
             "--out", str(tmp_path / "run2")], tmp_path,
            "was trained on 3 classes, and --dataset folder has 4")


def test_labelling_faults_are_one_line(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8), "L").save(flat / f"{i}.png")
    base = ["train", "--arch", "dcgan", "--conditional", "--dataset", "folder", *TINY]
    refused([*base, "--data-dir", str(flat), "--out", str(tmp_path / "a")], tmp_path,
            "--conditional needs class labels, and --dataset folder has none (put each class's images in a sub-folder")
    (flat / "dataset.json").write_text(json.dumps({"labels": [["0.png", 0], ["1.png", 1], ["2.png", 1]]}))
    refused([*base, "--data-dir", str(flat), "--out", str(tmp_path / "b")], tmp_path,
            "gives no label for 1 of the 4 images (first: 3.png)")
    pets = labelled_folder(tmp_path / "pets")
    refused([*base, "--data-dir", str(pets), "--limit", "16", "--out", str(tmp_path / "c")], tmp_path,
            "--limit 16 keeps no image of 1 of the 3 classes (first: emu)")
    # the same folders train unconditionally as before: the labels are never read
    ok(["train", "--arch", "dcgan", "--dataset", "folder", "--data-dir", str(flat), *TINY, "--batch-size", "4",
        "--out", str(tmp_path / "d")], tmp_path)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_conditional_dcgan_on_the_bundled_digits(tmp_path):
    ok(["train", "--arch", "dcgan", "--conditional", "--dataset", "mnist-bundled", "--limit", "64", *TINY,
        "--out", str(tmp_path / "run")], tmp_path)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["num_classes"] == 10 and "class_names" not in config
    ok(["sample", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), "--label", "7", "--n", "2",
        "--out", str(tmp_path / "seven")], tmp_path)
    assert np.load(tmp_path / "seven.npy").shape == (2, 1, 28, 28)
    assert env_for(tmp_path)["SCRATCHGAN_DATA"].endswith("empty-cache")


def test_a_dry_run_lists_the_folders_classes_and_refuses_what_the_real_run_would(tmp_path):
    pets = labelled_folder(tmp_path / "pets")
    ok(["train", "--arch", "dcgan", "--conditional", "--dataset", "folder", "--data-dir", str(pets), *TINY,
        "--dry-run", "--out", str(tmp_path / "dry")], tmp_path)
    config = json.loads((tmp_path / "dry" / "config.json").read_text())
    assert config["class_names"] == list(CLASSES) and config["num_classes"] == 3
    assert not (tmp_path / "empty-cache").exists(), "the dry run decoded the folder"
    refused(["train", "--arch", "dcgan", "--conditional", "--dataset", "folder", "--data-dir", str(pets / "cat"),
             *TINY, "--dry-run", "--out", str(tmp_path / "dry2")], tmp_path, "--dataset folder has none")
