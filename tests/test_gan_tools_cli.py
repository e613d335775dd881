"""The GAN tools' flags end to end on the bundled digits (tiny networks, a few steps): each trains, its state
is in the checkpoint, and a run stopped after epoch 1 and resumed to epoch 2 ends bit for bit where an
uninterrupted 2-epoch run ends. Bad values and refused combinations: one line, exit 2.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from scratchgan import cli
from scratchgan.checkpoint import load_checkpoint

TINY = ["--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "16", "--g-hidden", "8,16",
        "--d-hidden", "16,8", "--latent-dim", "4", "--no-progress", "--sample-every", "0", "--log-every", "2"]
DCGAN_TINY = ["--dataset", "mnist-bundled", "--limit", "32", "--batch-size", "16", "--g-width", "2",
              "--d-width", "2", "--latent-dim", "4", "--no-progress", "--sample-every", "0", "--log-every", "1"]


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))


def train(argv, capsys, dcgan=False):
    defaults = cli.DCGAN_DEFAULTS if dcgan else cli.MLP_DEFAULTS
    code = cli.train_main(argv, prog="test", defaults=defaults)
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


RESUME_CASES = {
    "spectral-norm": (["--spectral-norm"], False, ("D/0.u", "D/0.v", "D/2.u")),
    "spectral-norm-dcgan": (["--spectral-norm"], True, ("D/0.u", "D/2.u")),
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
    for key in keys:
        assert key in arrays, (key, sorted(arrays))
        assert np.isfinite(arrays[key]).all()


BAD = [
    ("sn-with-gp", ["--spectral-norm", "--loss", "wgan-gp"], r"does not go through sigma\(W\)"),
]


@pytest.mark.parametrize("flags, pattern", [pytest.param(f, p, id=i) for i, f, p in BAD])
def test_bad_values_one_line_exit_2(flags, pattern, tmp_path, capsys):
    code, _, err = train([*TINY, "--epochs", "1", "--out", str(tmp_path / "o"), *flags], capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, lines
    assert re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_help_lists_the_tools_with_their_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.make_train_parser("test", "d").parse_args(["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for flag in ("--spectral-norm",):
        assert re.search(re.escape(flag) + r"[^-]*?\(default: [^)]+\)", text), flag
