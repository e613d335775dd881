"""`scratchgan sample` (--outdir, --seeds, --truncation), `scratchgan interpolate` and `scratchgan export`.

Tiny networks on the bundled digits, trained once per module in-process; every bad input ends in exit
code 2 and one line on stderr.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from commands import call
from PIL import Image
from tolerances import FLOAT32_EPS, assert_close

from scratchgan.checkpoint import load_checkpoint, save_checkpoint
from scratchgan.cli import evaluate as evaluate_cli
from scratchgan.cli import export
from scratchgan.cli import sample as sample_cli
from scratchgan.cli import train as train_command
from scratchgan.cli.main import main as cli_main
from scratchgan.gan import generator_file, latent
from scratchgan.gan.step import generate
from scratchgan.run import viz

TINY = ["--dataset", "mnist-bundled", "--limit", "128", "--batch-size", "32", "--g-hidden", "32,64",
        "--d-hidden", "64,32", "--no-progress", "--sample-every", "0", "--epochs", "1", "--latent-dim", "16"]
RTOL = 64 * FLOAT32_EPS  # G(z) in float32, batch of 1 against a larger batch: BLAS may sum in another order


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"mlp", "cond", "rgb"}: checkpoints of a tiny MLP, a tiny conditional MLP and a tiny RGB DCGAN."""
    tmp = tmp_path_factory.mktemp("runs")
    old = os.environ.get("SCRATCHGAN_DATA")
    os.environ["SCRATCHGAN_DATA"] = str(tmp / "empty-cache")
    try:
        assert train_command.train_main([*TINY, "--out", str(tmp / "mlp")]) == 0
        assert train_command.train_main([*TINY, "--conditional", "--out", str(tmp / "cond")]) == 0
        assert train_command.train_main(["--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "32", "--g-width", "4",
                               "--d-width", "4", "--latent-dim", "8", "--epochs", "1", "--no-progress",
                               "--sample-every", "0", "--channels", "3", "--image-size", "28",
                               "--out", str(tmp / "rgb")], prog="dcgan.py", defaults=train_command.DCGAN_DEFAULTS) == 0
    finally:
        if old is None:
            del os.environ["SCRATCHGAN_DATA"]
        else:
            os.environ["SCRATCHGAN_DATA"] = old
    return {name: tmp / name / "checkpoint.npz" for name in ("mlp", "cond", "rgb")}


def refused(main, argv, capsys, pattern):
    code, err = call(main, argv, capsys)
    assert code == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    assert re.search(pattern, err[0]), err[0]


def generator(path):
    G, config, _ = generator_file.load_generator(path, np)
    return G, config


# ---------------------------------------------------------------------------------- sample --outdir / --seeds
def test_outdir_writes_one_grey_png_per_image_named_by_seed_and_index(runs, tmp_path, capsys):
    fake = tmp_path / "fake"
    code, err = call(cli_main, ["sample", "--checkpoint", str(runs["mlp"]), "--n", "5", "--seed", "7",
                                "--outdir", str(fake)], capsys)
    assert code == 0, err
    names = sorted(p.name for p in fake.iterdir())
    assert names == [f"seed0007_{i:04d}.png" for i in range(5)]
    images = np.load(tmp_path / "fake.npy")  # the .npy and the grid beside the folder, not in it
    assert images.shape == (5, 28, 28) and (tmp_path / "fake.png").is_file()
    for i, name in enumerate(names):
        with Image.open(fake / name) as im:
            assert im.mode == "L" and im.size == (28, 28)
            assert np.array_equal(np.asarray(im), viz.make_grid(images[i:i + 1], padding=0))
    G, config = generator(runs["mlp"])
    z = np.random.default_rng(7).standard_normal((5, 16)).astype(np.float32)
    assert_close(images, generate(G, z).reshape(5, 28, 28), rtol=RTOL)


def test_outdir_rgb_pngs_for_an_rgb_model(runs, tmp_path, capsys):
    code, err = call(sample_cli.sample_main, ["--checkpoint", str(runs["rgb"]), "--seeds", "0-2",
                                              "--outdir", str(tmp_path / "rgb"), "--out", str(tmp_path / "x")], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "x.npy").shape == (3, 3, 28, 28)
    for s in range(3):
        with Image.open(tmp_path / "rgb" / f"seed{s:04d}_0000.png") as im:
            assert im.mode == "RGB" and im.size == (28, 28)


def test_seeds_give_the_same_image_whatever_else_is_listed(runs, tmp_path, capsys):
    ckpt = str(runs["mlp"])
    for name, seeds in (("a", "5"), ("b", "3,5,9"), ("c", "0-9")):
        assert call(sample_cli.sample_main, ["--checkpoint", ckpt, "--seeds", seeds, "--out", str(tmp_path / name)],
                    capsys)[0] == 0
    a, b, c = (np.load(tmp_path / f"{n}.npy") for n in "abc")
    assert a.shape == (1, 28, 28) and b.shape == (3, 28, 28) and c.shape == (10, 28, 28)
    assert_close(b[1], a[0], rtol=RTOL)
    assert_close(c[5], a[0], rtol=RTOL)
    assert_close(c[3], b[0], rtol=RTOL)
    assert not np.array_equal(b[0], b[1])
    # seed 5 is the first image of --seed 5
    assert call(sample_cli.sample_main, ["--checkpoint", ckpt, "--seed", "5", "--n", "3", "--out", str(tmp_path / "d")],
                capsys)[0] == 0
    assert_close(np.load(tmp_path / "d.npy")[0], a[0], rtol=RTOL)


def test_truncation_is_psi_times_z(runs, tmp_path, capsys):
    ckpt = str(runs["mlp"])
    assert call(sample_cli.sample_main, ["--checkpoint", ckpt, "--seeds", "0-3", "--truncation", "0.5",
                                         "--out", str(tmp_path / "t")], capsys)[0] == 0
    assert call(sample_cli.sample_main, ["--checkpoint", ckpt, "--seeds", "0-3", "--out", str(tmp_path / "u")],
                capsys)[0] == 0
    G, _ = generator(runs["mlp"])
    z = (0.5 * latent.seed_noise(range(4), 16)).astype(np.float32)
    t = np.load(tmp_path / "t.npy")
    assert_close(t, generate(G, z).reshape(4, 28, 28), rtol=RTOL)
    assert not np.allclose(t, np.load(tmp_path / "u.npy"))


def test_conditional_seeds_draw_every_class(runs, tmp_path, capsys):
    code, err = call(sample_cli.sample_main, ["--checkpoint", str(runs["cond"]), "--seeds", "4,8",
                                              "--outdir", str(tmp_path / "c")], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(names) == 20 and "seed0008_0003_class3.png" in names and "seed0004_0009_class9.png" in names
    images = np.load(tmp_path / "c.npy")
    G, _ = generator(runs["cond"])
    z = latent.seed_noise([8], 16).astype(np.float32)
    assert_close(images[3 * 2 + 1], generate(G, z, np.array([3])).reshape(28, 28), rtol=RTOL)  # row 3, seed 8
    code, err = call(sample_cli.sample_main, ["--checkpoint", str(runs["cond"]), "--seeds", "4,8", "--label", "2",
                                              "--outdir", str(tmp_path / "l")], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["seed0004_0000.png", "seed0008_0000.png"]


def test_sample_refuses_bad_inputs(runs, tmp_path, capsys):
    ckpt = str(runs["mlp"])
    (tmp_path / "afile").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.png").write_text("x")
    main = sample_cli.sample_main
    out = ["--out", str(tmp_path / "s")]
    refused(main, ["--checkpoint", ckpt, "--seeds", "5-2", *out], capsys, r"--seeds: range 5-2 goes downwards")
    refused(main, ["--checkpoint", ckpt, "--seeds", "abc", *out], capsys, r"--seeds: expected seeds .*'abc'")
    refused(main, ["--checkpoint", ckpt, "--truncation", "-1", *out], capsys, r"--truncation: must be in \(0, 1\]")
    refused(main, ["--checkpoint", ckpt, "--truncation", "0", *out], capsys, r"--truncation: must be in \(0, 1\]")
    refused(main, ["--checkpoint", ckpt, "--truncation", "1.5", *out], capsys, r"--truncation: must be in \(0, 1\]")
    refused(main, ["--checkpoint", ckpt, "--outdir", str(tmp_path / "afile")], capsys, r"afile is a file, not a folder")
    refused(main, ["--checkpoint", ckpt, "--outdir", str(tmp_path / "afile" / "sub")], capsys, r"lies under .*afile")
    refused(main, ["--checkpoint", ckpt, "--outdir", str(tmp_path / "full")], capsys, r"full is not empty")
    refused(main, ["--checkpoint", ckpt, "--seeds", "0-3", "--n", "4", *out], capsys, r"--seeds .* without --n")
    refused(main, ["--checkpoint", ckpt, "--seeds", "0-3", "--seed", "1", *out], capsys, r"without --n and --seed")
    refused(main, ["--checkpoint", ckpt], capsys, r"give --out FILE .* or --outdir DIR")
    refused(main, ["--checkpoint", ckpt, "--label", "3", *out], capsys, r"--label needs a conditional checkpoint")
    refused(main, ["--checkpoint", str(runs["cond"]), "--label", "10", *out], capsys, r"classes 0 to 9")
    refused(main, ["--checkpoint", str(tmp_path / "afile"), *out], capsys, r"is not a scratchgan checkpoint")
    assert not (tmp_path / "s.npy").exists() and sorted(p.name for p in (tmp_path / "full").iterdir()) == ["old.png"]


# ---------------------------------------------------------------------------------- interpolate
def test_interpolate_writes_a_gif_and_a_strip_through_the_seeds(runs, tmp_path, capsys):
    code, err = call(cli_main, ["interpolate", "--checkpoint", str(runs["mlp"]), "--seeds", "0,5,9", "--steps", "4",
                                "--out", str(tmp_path / "walk.gif")], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == 9  # (3 - 1) x 4 + 1
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("L")))
    with Image.open(tmp_path / "walk.png") as strip:
        assert strip.size == (2 * (2 + 9 * 30), 2 * 32)  # one row of 9 tiles of 28 + 2 padding, scale 2
    # frame 4 (seed 5's z) shows what `sample --seeds 5` makes, upscaled
    assert call(sample_cli.sample_main, ["--checkpoint", str(runs["mlp"]), "--seeds", "5", "--outdir",
                                         str(tmp_path / "s5")], capsys)[0] == 0
    with Image.open(tmp_path / "s5" / "seed0005_0000.png") as im:
        single = np.asarray(im).astype(int)
    scale = frames[4].shape[0] // 28
    shrunk = frames[4][::scale, ::scale].astype(int)
    assert np.abs(shrunk - single).max() <= 1  # the same image, up to the last bit of rounding


def test_interpolate_walks_every_class_of_a_conditional_model(runs, tmp_path, capsys):
    code, err = call(sample_cli.interpolate_main, ["--checkpoint", str(runs["cond"]), "--seeds", "1,2", "--steps", "3",
                                                   "--out", str(tmp_path / "w.gif")], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "w.png") as strip:
        assert strip.size == (2 * (2 + 4 * 30), 2 * (2 + 10 * 30))  # 4 frames across, one row per class
    with Image.open(tmp_path / "w.gif") as gif:
        assert gif.n_frames == 4


def test_interpolate_refuses_bad_inputs(runs, tmp_path, capsys):
    ckpt = str(runs["mlp"])
    main = sample_cli.interpolate_main
    gif = ["--out", str(tmp_path / "w.gif")]
    refused(main, ["--checkpoint", ckpt, "--seeds", "3", *gif], capsys, r"needs two seeds or more")
    refused(main, ["--checkpoint", ckpt, "--seeds", "9-3", *gif], capsys, r"--seeds: range 9-3 goes downwards")
    refused(main, ["--checkpoint", ckpt, "--seeds", "0,1", "--out", str(tmp_path / "w.png")], capsys, r"ending in \.gif")
    (tmp_path / "d.gif").mkdir()
    refused(main, ["--checkpoint", ckpt, "--seeds", "0,1", "--out", str(tmp_path / "d.gif")], capsys, r"is a folder")
    refused(main, ["--checkpoint", ckpt, "--seeds", "0-9", "--steps", "500", *gif], capsys, r"4501 frames, more than")
    refused(main, ["--checkpoint", ckpt, "--seeds", "0,1", "--steps", "0", *gif], capsys, r"--steps: must be a positive")
    refused(main, ["--checkpoint", ckpt, "--seeds", "0,1", "--truncation", "0", *gif], capsys, r"--truncation")
    refused(main, ["--checkpoint", ckpt, "--seeds", "0,1", "--label", "1", *gif], capsys, r"--label needs a conditional")
    assert not (tmp_path / "w.gif").exists()


# ---------------------------------------------------------------------------------- export
def test_export_writes_the_generator_alone_and_sample_and_evaluate_read_it(runs, tmp_path, capsys, monkeypatch):
    G_path = tmp_path / "G.npz"
    code, err = call(cli_main, ["export", "--checkpoint", str(runs["mlp"]), "--out", str(G_path)], capsys)
    assert code == 0, err
    arrays, meta = load_checkpoint(G_path)
    full, full_meta = load_checkpoint(runs["mlp"])
    assert meta["kind"] == "generator" and meta["config"] == full_meta["config"]
    assert sorted(arrays) == sorted(k for k in full if k.startswith("G/"))  # no D/, opt_*/, fixed_noise
    assert any(k.endswith("running_var") for k in arrays)  # the BatchNorm buffers travel with the weights
    for k, v in arrays.items():
        assert np.array_equal(v, full[k]), k
    assert G_path.stat().st_size < runs["mlp"].stat().st_size / 3
    # sample from the export = sample from the checkpoint, bit for bit
    for name, ckpt in (("from_export", G_path), ("from_checkpoint", runs["mlp"])):
        assert call(sample_cli.sample_main, ["--checkpoint", str(ckpt), "--seeds", "0-7", "--truncation", "0.7",
                                             "--out", str(tmp_path / name)], capsys)[0] == 0
    assert np.array_equal(np.load(tmp_path / "from_export.npy"), np.load(tmp_path / "from_checkpoint.npy"))
    assert call(sample_cli.interpolate_main, ["--checkpoint", str(G_path), "--seeds", "0,1", "--steps", "2",
                                              "--out", str(tmp_path / "w.gif")], capsys)[0] == 0
    # evaluate takes it too (a small evaluator: quick, and cached in this test's folder)
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    code, err = call(evaluate_cli.evaluate_main, ["--checkpoint", str(G_path), "--n", "100", "--evaluator-limit",
                                                  "600", "--evaluator-epochs", "1", "--json", str(tmp_path / "e.json")],
                     capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "e.json").read_text())
    assert results["checkpoint"] == str(G_path) and np.isfinite(results["frechet_distance"])
    assert results["global_step"] == full_meta["global_step"]  # the export keeps the step it was taken at
    # exporting again over an earlier export is fine
    assert call(export.export_main, ["--checkpoint", str(runs["mlp"]), "--out", str(G_path)], capsys)[0] == 0


def test_export_refuses_bad_inputs(runs, tmp_path, capsys):
    G_path = tmp_path / "G.npz"
    assert call(export.export_main, ["--checkpoint", str(runs["mlp"]), "--out", str(G_path)], capsys)[0] == 0
    (tmp_path / "garbage.npz").write_bytes(b"not a checkpoint" * 10)
    other = tmp_path / "other.npz"
    other.write_bytes(runs["cond"].read_bytes())
    before = other.read_bytes()
    main = export.export_main
    out = ["--out", str(tmp_path / "new.npz")]
    refused(main, ["--checkpoint", str(tmp_path / "missing.npz"), *out], capsys, r"missing\.npz: no such checkpoint")
    refused(main, ["--checkpoint", str(tmp_path / "garbage.npz"), *out], capsys, r"is not a scratchgan checkpoint")
    refused(main, ["--checkpoint", str(G_path), *out], capsys, r"G\.npz is already an exported generator")
    refused(main, ["--checkpoint", str(runs["mlp"]), "--out", str(other)], capsys, r"exists and is not an exported")
    refused(main, ["--checkpoint", str(other), "--out", str(other)], capsys, r"is the checkpoint being exported")
    refused(main, ["--checkpoint", str(runs["mlp"]), "--out", str(tmp_path)], capsys, r"is a folder")
    refused(main, ["--checkpoint", str(runs["mlp"])], capsys, r"required: --out")
    evaluator_like = tmp_path / "meta_only.npz"
    save_checkpoint(evaluator_like, {"net/W": np.zeros(3)}, {"kind": "scratchgan-evaluator"})
    refused(main, ["--checkpoint", str(evaluator_like), *out], capsys, r"holds no model config")
    assert other.read_bytes() == before and not (tmp_path / "new.npz").exists()
    # a generator with NaN weights is not exported
    arrays, meta = load_checkpoint(runs["mlp"])
    arrays["G/0.W"] = np.full_like(arrays["G/0.W"], np.nan)
    save_checkpoint(tmp_path / "nan.npz", arrays, meta)
    refused(main, ["--checkpoint", str(tmp_path / "nan.npz"), *out], capsys, r"NaN/Inf in G/0\.W")


def test_train_resume_refuses_an_export(runs, tmp_path, capsys):
    G_path = tmp_path / "G.npz"
    assert call(export.export_main, ["--checkpoint", str(runs["mlp"]), "--out", str(G_path)], capsys)[0] == 0
    refused(train_command.train_main, [*TINY, "--resume", str(G_path), "--out", str(tmp_path / "r")], capsys,
            r"cannot resume: .*G\.npz is an exported generator")
    assert not (tmp_path / "r").exists()


def test_help_documents_the_new_commands_and_flags(capsys):
    for main, words in ((sample_cli.sample_main, ["--outdir DIR", "--seeds LIST", "--truncation PSI", "z <- PSI z",
                                                  "seed0007_0000.png", "(default: 64)"]),
                        (sample_cli.interpolate_main, ["--steps", "slerp", "(default: 16)", "one row per class"]),
                        (export.export_main, ["--checkpoint", "--out", "no optimizer state"])):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        for w in words:
            assert w in text, (main.__name__, w)
    assert cli_main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "export" in text and "interpolate" in text
