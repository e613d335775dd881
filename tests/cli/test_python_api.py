"""The engine from Python (docs/python.md): ``scratchgan.load_generator`` -> ``G.generate``, the images of
`scratchgan sample --seeds` byte for byte; ``scratchgan.train``, the run of `scratchgan train` with the same
flags, its settings checked by the flag table, callbacks at each logged step that may stop it resumably.

Tiny networks on the bundled digits, trained once per module with ``scratchgan.train`` itself.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from commands import REPO, env_for, run
from PIL import Image

import scratchgan
from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import train as train_command
from scratchgan.errors import SettingError

TINY = {"dataset": "mnist-bundled", "limit": 256, "batch_size": 32, "g_hidden": [16, 32], "d_hidden": "16",
        "latent_dim": 8, "epochs": 1, "sample_every": 0, "log_every": 2, "progress": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"mlp", "cond", "rgb"}: the checkpoints of a tiny MLP, conditional MLP and RGB DCGAN, by scratchgan.train."""
    tmp = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHGAN_DATA", str(tmp / "empty-cache"))
        scratchgan.train({**TINY, "out": tmp / "mlp"}, log=lambda line: None)
        scratchgan.train({**TINY, "conditional": True, "out": tmp / "cond"}, log=lambda line: None)
        scratchgan.train({"arch": "dcgan", "dataset": "mnist-bundled", "limit": 64, "batch_size": 32, "g_width": 4,
                          "d_width": 4, "latent_dim": 8, "epochs": 1, "progress": False, "sample_every": 0,
                          "channels": 3, "resolution": 28, "out": tmp / "rgb"}, log=lambda line: None)
    return {name: tmp / name / "checkpoint.npz" for name in ("mlp", "cond", "rgb")}


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))


def sample_pngs(checkpoint, seeds, tmp, *flags):
    """{name: PNG bytes} that `python -m scratchgan sample --seeds SEEDS --outdir` writes, in a child process."""
    outdir = tmp / "pngs"
    code, out, err = run(["sample", "--checkpoint", str(checkpoint), "--seeds", seeds, "--outdir", str(outdir),
                          "--out", str(tmp / "grid"), *flags], tmp, module=True)
    assert code == 0, err
    return {p.name: p.read_bytes() for p in sorted(outdir.iterdir())}


def png_bytes(picture):
    """``picture`` (uint8 (H, W) or (H, W, 3)) as `scratchgan sample` encodes a PNG (Pillow, default settings)."""
    f = io.BytesIO()
    Image.fromarray(picture).save(f, format="PNG")
    return f.getvalue()


# ---------------------------------------------------------------------------------- load_generator, generate
@pytest.mark.parametrize("name, shape", [("mlp", (4, 28, 28)), ("rgb", (4, 28, 28, 3))])
def test_generate_gives_the_pngs_of_sample_seeds_byte_for_byte(runs, tmp_path, name, shape):
    pngs = sample_pngs(runs[name], "3-6", tmp_path, "--truncation", "0.7")
    G, config = scratchgan.load_generator(runs[name])
    assert config["latent_dim"] == 8 and G.num_classes is None
    images = G.generate(4, seed=3, truncation=0.7)
    assert images.dtype == np.uint8 and images.shape == shape
    assert list(pngs) == [f"seed{s:04d}_0000.png" for s in range(3, 7)]
    for image, (png_name, data) in zip(images, pngs.items()):
        with Image.open(io.BytesIO(data)) as im:
            assert np.array_equal(np.asarray(im), image), png_name
        assert png_bytes(image) == data, png_name
    assert np.array_equal(G.generate(seed=[3, 4, 5, 6], truncation=0.7), images)  # a list of seeds: the same
    assert np.array_equal(G.generate(seed="5", truncation=0.7)[0], images[2])     # a seed, whatever else is asked
    assert not np.array_equal(G.generate(4, seed=3), images)                       # truncation 1: other images


def test_generate_with_a_label_gives_the_pngs_of_sample_label(runs, tmp_path):
    pngs = sample_pngs(runs["cond"], "0,7", tmp_path, "--label", "4")
    G, _ = scratchgan.load_generator(runs["cond"])
    assert G.num_classes == 10
    images = G.generate(seed=[0, 7], label=4)
    assert [png_bytes(image) for image in images] == list(pngs.values())
    every = G.generate(12, seed=0)  # without a label: the classes in turn
    assert np.array_equal(every[4], G.generate(seed=[4], label=4)[0])
    assert np.array_equal(every[11], G.generate(seed=[11], label=1)[0])
    assert np.array_equal(G.generate(3, seed=0, label=[2, 2, 5])[2], G.generate(seed=[2], label=5)[0])


@pytest.mark.parametrize("which, kwargs, setting, why", [
    ("mlp", {"label": 3}, "label", "needs a conditional generator"),
    ("mlp", {"truncation": 1.5}, "truncation", r"must be a number in \(0, 1\], got 1.5"),
    ("mlp", {"truncation": 0}, "truncation", r"in \(0, 1\]"),
    ("mlp", {"truncation": "high"}, "truncation", r"in \(0, 1\]"),
    ("mlp", {"n": 0}, "n", "must be a positive integer, got 0"),
    ("mlp", {"n": 3, "seed": "0-9"}, "n", "seed lists 10 seeds"),
    ("mlp", {"seed": "9-1"}, "seed", "goes downwards"),
    ("mlp", {"seed": -1}, "seed", "0 or more"),
    ("cond", {"label": 10}, "label", "from 0 to 9"),
    ("cond", {"n": 2, "label": [1, 2, 3]}, "label", r"one per image \(2\)"),
])
def test_generate_refuses_what_it_cannot_make_naming_the_argument(runs, which, kwargs, setting, why):
    G, _ = scratchgan.load_generator(runs[which])
    with pytest.raises(SettingError, match=why) as caught:
        G.generate(**{"n": 2, **kwargs})
    assert caught.value.setting == setting and str(caught.value).startswith(setting + " ")


def test_load_generator_refuses_a_file_that_is_no_checkpoint(tmp_path):
    bad = tmp_path / "notes.npz"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(scratchgan.checkpoint.CheckpointError, match="notes.npz"):
        scratchgan.load_generator(bad)


# ---------------------------------------------------------------------------------- train
@pytest.mark.parametrize("config, setting, why", [
    ({"batchsize": 32}, "batchsize", "is not a setting of scratchgan.train; .* batch_size,"),
    ({"batch_size": 0}, "batch_size", "must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "batch_size", "expected a positive integer, got '2.5'"),
    ({"lr": "fast"}, "lr", "expected a number, got 'fast'"),
    ({"loss": "mse"}, "loss", "must be one of bce, wgan, wgan-gp, lsgan, hinge, got 'mse'"),
    ({"spectral_norm": "yes"}, "spectral_norm", "is True or False, got 'yes'"),
    ({"epochs": True}, "epochs", "takes a value, not True"),
    ({"version": True}, "version", "is not a setting"),
])
def test_train_refuses_a_setting_the_flag_table_refuses_naming_its_key(tmp_path, config, setting, why):
    with pytest.raises(SettingError, match=why) as caught:
        scratchgan.train({**TINY, "out": tmp_path / "run", **config})
    assert caught.value.setting == setting
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_train_refuses_as_the_command_does(tmp_path):
    with pytest.raises(scratchgan.errors.UserError, match="--g-width is a flag of --arch dcgan"):
        scratchgan.train({**TINY, "g_width": 8, "out": tmp_path / "run"})
    assert not (tmp_path / "run").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("a user's file")
    scratchgan.train({**TINY, "out": tmp_path / "used"}, log=lambda line: None)
    before = {p: p.read_bytes() for p in (tmp_path / "used").rglob("*") if p.is_file()}
    with pytest.raises(scratchgan.run.rundir.RunDirError, match="holds an earlier run .*--resume"):
        scratchgan.train({**TINY, "out": tmp_path / "used"})  # an earlier run's folder
    assert {p: p.read_bytes() for p in (tmp_path / "used").rglob("*") if p.is_file()} == before


def test_train_makes_the_run_of_the_command_with_the_same_flags(tmp_path):
    argv = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "32", "--g-hidden", "16,32",
            "--d-hidden", "16", "--latent-dim", "8", "--epochs", "1", "--sample-every", "0", "--log-every", "2",
            "--no-progress", "--out", str(tmp_path / "cli")]
    assert train_command.command_main(argv) == 0
    rows = []
    folder, last = scratchgan.train({**TINY, "out": str(tmp_path / "py")}, callbacks=[rows.append])
    assert folder == tmp_path / "py"
    cli_arrays, cli_meta = load_checkpoint(tmp_path / "cli" / "checkpoint.npz")
    py_arrays, py_meta = load_checkpoint(folder / "checkpoint.npz")
    assert sorted(cli_arrays) == sorted(py_arrays)
    assert all(np.array_equal(cli_arrays[k], py_arrays[k]) for k in cli_arrays)  # the same run, bit for bit
    cli_config, py_config = (json.loads((tmp_path / n / "config.json").read_text()) for n in ("cli", "py"))
    assert {**cli_config, "out": None, "provenance": None} == {**py_config, "out": None, "provenance": None}
    cli_files, py_files = (sorted(json.loads((tmp_path / n / "manifest.json").read_text())["files"])
                           for n in ("cli", "py"))
    assert cli_files == py_files and "checkpoint.npz" in py_files
    logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [r["step"] for r in logged] == [2, 4, 6, 8]
    assert last == logged[-1] and rows[-1]["loss_D"] == pytest.approx(last["loss_D"], rel=1e-6)


def test_a_callback_stops_the_run_resumably(tmp_path):
    whole, _ = scratchgan.train({**TINY, "out": tmp_path / "whole"}, log=lambda line: None)
    lines = []
    folder, last = scratchgan.train({**TINY, "out": tmp_path / "cut"}, callbacks=lambda row: row["step"] >= 4,
                                    log=lines.append)
    assert last["step"] == 4 and "stopped at step 4 by a callback" in lines[-1]
    _, meta = load_checkpoint(folder / "checkpoint.npz")
    assert meta["global_step"] == 4
    folder, last = scratchgan.train({"resume": True, "out": folder}, log=lambda line: None)
    assert last["step"] == 8
    a, _ = load_checkpoint(whole / "checkpoint.npz")
    b, _ = load_checkpoint(folder / "checkpoint.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)  # stopped and resumed = uninterrupted


def test_import_loads_no_wing_and_load_generator_not_the_command_line():
    code = ("import sys, scratchgan\n"
            "loaded = lambda wing: any(m.startswith('scratchgan.' + wing) for m in sys.modules)\n"
            "assert not any(loaded(w) for w in ('gan', 'run', 'cli')), sorted(sys.modules)\n"
            "scratchgan.load_generator\n"
            "assert loaded('gan') and not loaded('run') and not loaded('cli')\n"
            "assert scratchgan.train.__module__ == 'scratchgan.cli.api'\n"
            "assert {'load_generator', 'train'} <= set(dir(scratchgan))\n")
    done = subprocess.run([sys.executable, "-c", code], env=env_for(REPO), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_examples_of_docs_python_md_run_as_written(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python.md").read_text(), re.S)
    assert len(blocks) == 2 and "scratchgan.load_generator(" in blocks[0] and "scratchgan.train(" in blocks[1]
    monkeypatch.chdir(tmp_path)
    scratchgan.train({**TINY, "out": "runs/mine"}, log=lambda line: None)  # the run the first example reads
    for block in blocks:
        exec(compile(block, "docs/python.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Generator(mlp, unconditional" in out and "(16, 28, 28)" in out
    assert 'stopped at step 12 by a callback' in out and "runs/from_python 12" in out
    assert json.loads((tmp_path / "runs" / "from_python" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 16
