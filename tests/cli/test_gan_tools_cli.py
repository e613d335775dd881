"""The GAN tools' flags end to end on the bundled digits (tiny networks, a few steps): each trains, its state
is in the checkpoint, and a run stopped after epoch 1 and resumed to epoch 2 ends bit for bit where an
uninterrupted 2-epoch run ends. Bad values and refused combinations: one line, exit 2.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from datasets import dataset_dir
from PIL import Image

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import sample as sample_cli
from scratchgan.cli import train as train_command
from scratchgan.gan import models
from scratchgan.gan.generator_file import load_generator
from scratchgan.gan.step import generate
from scratchgan.run import viz

REPO = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "16", "--g-hidden", "8,16",
        "--d-hidden", "16,8", "--latent-dim", "4", "--no-progress", "--sample-every", "0", "--log-every", "2"]
DCGAN_TINY = ["--dataset", "mnist-bundled", "--limit", "32", "--batch-size", "16", "--g-width", "2",
              "--d-width", "2", "--latent-dim", "4", "--no-progress", "--sample-every", "0", "--log-every", "1"]


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))


def train(argv, capsys, dcgan=False):
    defaults = train_command.DCGAN_DEFAULTS if dcgan else train_command.MLP_DEFAULTS
    try:
        code = train_command.train_main(argv, prog="test", defaults=defaults)
    except SystemExit as e:  # argparse's errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_same_checkpoint(a, b):
    arrays_a, meta_a = load_checkpoint(a)
    arrays_b, meta_b = load_checkpoint(b)
    assert set(arrays_a) == set(arrays_b)
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)
    for key in ("global_step", "noise", "opt_G_t", "opt_D_t"):
        assert meta_a[key] == meta_b[key], key
    return arrays_a, meta_a


RESUME_CASES = {  # every flag is in one of them (R1 and spectral norm exclude each other)
    "spectral-norm": (["--spectral-norm"], False, ("D/0.u", "D/0.v", "D/2.u")),
    "ema-diffaugment-r1": (["--ema", "0.9", "--diffaugment", "color,translation,cutout", "--r1", "2",
                            "--dropout", "0.3"], False, ("G_ema/params", "csv:r1", "csv:grad_norm_x")),
    "all-dcgan": (["--spectral-norm", "--ema", "0.9", "--diffaugment", "translation,cutout,color"], True,
                  ("D/0.u", "D/2.u", "G_ema/params")),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_flag_trains_and_resumes_exactly(case, tmp_path, capsys):
    flags, dcgan, keys = RESUME_CASES[case]
    base = (DCGAN_TINY if dcgan else TINY) + flags
    code, _, err = train([*base, "--epochs", "2", "--out", str(tmp_path / "straight")], capsys, dcgan)
    assert code == 0, err
    code, _, err = train([*base, "--epochs", "1", "--out", str(tmp_path / "split")], capsys, dcgan)
    assert code == 0, err
    code, out, err = train(["--epochs", "2", "--resume", str(tmp_path / "split" / "checkpoint.npz")], capsys, dcgan)
    assert code == 0, err
    arrays, meta = assert_same_checkpoint(tmp_path / "straight" / "checkpoint.npz",
                                          tmp_path / "split" / "checkpoint.npz")
    assert meta["epoch"] == 2
    header = (tmp_path / "split" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in keys:  # "csv:NAME": a column of metrics.csv; else an array of the checkpoint
        if key.startswith("csv:"):
            assert key[4:] in header, (key, header)
            continue
        assert key in arrays, (key, sorted(arrays))
        assert np.isfinite(arrays[key]).all()


BAD = [
    ("sn-with-gp", ["--spectral-norm", "--loss", "wgan-gp"], r"does not go through sigma\(W\)"),
    ("ema-one", ["--ema", "1"], r"--ema.*\[0, 1\).*1"),
    ("diffaugment-unknown", ["--diffaugment", "translation,flip"], r"--diffaugment 'translation,flip': unknown 'flip'"),
    ("r1-negative", ["--r1", "-1"], r"--r1.*-1"),
    ("r1-with-sn", ["--r1", "1", "--spectral-norm"], r"R1 penalty cannot use this critic.*sigma\(W\)"),
    ("r1-on-probs", ["--r1", "1", "--loss-on", "probs"], r"R1 penalty cannot use this critic.*Sigmoid"),
]


@pytest.mark.parametrize("flags, pattern", [pytest.param(f, p, id=i) for i, f, p in BAD])
def test_bad_values_one_line_exit_2(flags, pattern, tmp_path, capsys):
    code, _, err = train([*TINY, "--epochs", "1", "--out", str(tmp_path / "o"), *flags], capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, lines
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_sample_and_evaluate_use_the_ema_generator(tmp_path, capsys):
    code, out, err = train([*TINY, "--epochs", "1", "--ema", "0.5", "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert "sample grids and evaluations use the EMA generator" in out
    path = tmp_path / "run" / "checkpoint.npz"
    arrays, meta = load_checkpoint(path)
    assert sample_cli.sample_main(["--checkpoint", str(path), "--n", "6", "--out", str(tmp_path / "s")]) == 0
    out, err = capsys.readouterr()
    assert "using the EMA generator" in out and err == ""
    G, _ = models.build_gan(meta["config"], np)
    G.load_state_dict({k[2:]: v for k, v in arrays.items() if k.startswith("G/")})
    z = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    live = generate(G, z).reshape(6, 28, 28)
    G.flat_store().data[...] = arrays["G_ema/params"]
    averaged = generate(G, z).reshape(6, 28, 28)
    images = np.load(tmp_path / "s.npy")
    np.testing.assert_array_equal(images, averaged)
    assert not np.allclose(images, live)
    # the epoch's sample grid is the EMA generator's, from the fixed noise
    grid = np.asarray(Image.open(tmp_path / "run" / "samples" / "epoch_001.png"))
    G.flat_store().data[...] = arrays["G_ema/params"]
    viz.save_image_grid(generate(G, arrays["fixed_noise"]), tmp_path / "ema.png", image_shape=(28, 28), scale=2)
    np.testing.assert_array_equal(grid, np.asarray(Image.open(tmp_path / "ema.png")))
    G2, _, _ = load_generator(path, np, log=print)  # what `scratchgan evaluate` measures (and says)
    assert "using the EMA generator" in capsys.readouterr().out
    np.testing.assert_array_equal(G2.flat_store().data, arrays["G_ema/params"])


def test_r1_refuses_the_dcgan_critic(tmp_path, capsys):
    code, _, err = train([*DCGAN_TINY, "--epochs", "1", "--out", str(tmp_path / "o"), "--r1", "1"], capsys, dcgan=True)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(r"R1 penalty cannot use this critic: layer 0 is Conv2d", err), err


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, capsys):
    """docs/objectives.md's tools command as written, on the shared Fashion-MNIST files, shrunk by later flags
    (argparse: the last value wins) to 64 images, tiny networks and one epoch."""
    guide = (REPO / "docs" / "objectives.md").read_text()
    lines = [ln for ln in guide.splitlines() if ln.startswith("python examples/mnist_mlp.py") and "--diffaugment" in ln]
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0])[2:]
    for flag in ("--ema", "--diffaugment", "--r1"):
        assert flag in argv
    shrink = ["--data-dir", str(dataset_dir("fashion-mnist")), "--limit", "64", "--batch-size", "16", "--g-hidden",
              "8,16", "--d-hidden", "16,8", "--epochs", "1", "--no-progress", "--sample-every", "0", "--log-every", "2",
              "--split", "test", "--out", str(tmp_path / "tools")]
    code, out, err = train(argv + shrink, capsys)
    assert code == 0, err
    arrays, meta = load_checkpoint(tmp_path / "tools" / "checkpoint.npz")
    assert meta["config"]["dataset"] == "fashion-mnist" and meta["config"]["loss"] == "hinge"
    assert "G_ema/params" in arrays and "r1" in (tmp_path / "tools" / "metrics.csv").read_text().splitlines()[0]


def test_help_lists_the_tools_with_their_defaults(capsys):
    with pytest.raises(SystemExit):
        train_command.make_train_parser("test", "d").parse_args(["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for flag in ("--spectral-norm", "--r1", "--ema", "--diffaugment"):
        assert re.search(re.escape(flag) + r"\b.{0,400}?\(default: [^)]+\)", text), flag
