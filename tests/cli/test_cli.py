"""The command lines: examples/mnist_mlp.py and `python -m scratchgan train|sample`.

Every user mistake ends in exit code 2 and ONE line on stderr, never a traceback. The error cases
run as real subprocesses (sys.executable), started together so their import times overlap. Nothing
here touches the network: SCRATCHGAN_DATA points at an empty temporary folder, and each run names
its data (--dataset mnist-bundled or --data-dir), except the offline-fallback test, whose mirrors
point at a closed port on 127.0.0.1.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from commands import EXAMPLE, env_for, finish, launch, run
from datasets import dataset_dir  # tests/support/datasets.py: ../shared/datasets, found relative
from PIL import Image
from tolerances import scale

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import sample as sample_cli
from scratchgan.cli import flags
from scratchgan.cli import train as train_command
from scratchgan.data import mnist
from scratchgan.gan import models
from scratchgan.gan.step import generate

TINY = ["--g-hidden", "32,64", "--d-hidden", "64,32", "--limit", "256", "--batch-size", "32",
        "--no-progress", "--sample-every", "0"]
ISSUE_FLAGS = ["--backend", "--dtype", "--dataset", "--data-dir", "--split", "--epochs", "--batch-size", "--lr",
               "--beta1", "--latent-dim", "--label-smoothing", "--seed", "--out", "--sample-every", "--resume"]



# ---------------------------------------------------------------------------------- error paths
def _shared_mnist():
    folder = dataset_dir("mnist")
    assert not (folder / "train-images-idx3-ubyte.gz").exists(), "the case needs a folder without train images"
    return str(folder)


def _no_cupy():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the 'CuPy missing' message cannot be provoked here")
    return "cupy"


# (id, entry point, argv builder(tmp) -> args, regex the one stderr line must match)
SAFE = ["--dataset", "mnist-bundled", "--epochs", "1"]  # if a case wrongly trained, it is short and offline
CASES = [
    ("epochs-negative", "example", lambda t: [*TINY, "--out", "o", "--epochs", "-1"], r"--epochs.*positive.*-1"),
    ("epochs-zero", "module", lambda t: ["train", *TINY, "--out", "o", "--epochs", "0"], r"--epochs.*positive.*0"),
    ("batch-size-abc", "example", lambda t: [*SAFE, *TINY, "--out", "o", "--batch-size", "abc"],
     r"--batch-size.*'abc'"),
    ("lr-negative", "module", lambda t: ["train", *SAFE, *TINY, "--out", "o", "--lr", "-1"], r"--lr.*positive.*-1"),
    ("dataset-unknown", "example", lambda t: [*TINY, "--out", "o", "--dataset", "nope"], r"--dataset.*'nope'"),
    ("label-smoothing-1.5", "example", lambda t: [*SAFE, *TINY, "--out", "o", "--label-smoothing", "1.5"],
     r"--label-smoothing.*\[0, 1\).*1\.5"),
    ("data-dir-missing", "example", lambda t: [*TINY, "--out", "o", "--epochs", "1", "--data-dir", "/nonexistent"],
     r"/nonexistent does not exist"),
    ("data-dir-without-train", "example",
     lambda t: [*TINY, "--out", "o", "--epochs", "1", "--data-dir", _shared_mnist(), "--split", "train"],
     r"train images .*missing.*--split test"),
    ("cupy-not-installed", "example", lambda t: [*SAFE, *TINY, "--out", "o", "--backend", _no_cupy()],
     r"CuPy is not installed.*pip install"),
    ("resume-missing", "example", lambda t: [*SAFE, *TINY, "--out", "o", "--resume", str(t / "nothere.npz")],
     r"cannot resume: .*nothere\.npz does not exist"),
    ("resume-garbage", "module", lambda t: ["train", *SAFE, *TINY, "--out", "o", "--resume", str(t / "garbage.npz")],
     r"garbage\.npz is not a scratchgan checkpoint"),
    ("resume-truncated", "example", lambda t: [*SAFE, *TINY, "--out", "o", "--resume", str(t / "truncated.npz")],
     r"truncated\.npz is truncated or corrupt"),
    ("resume-other-architecture", "example",
     lambda t: ["--out", str(t / "tiny"), "--epochs", "2", "--resume", "--g-hidden", "32,48", "--no-progress"],
     r"tiny/checkpoint\.npz was made for another architecture"),
    ("sample-garbage", "module", lambda t: ["sample", "--checkpoint", "garbage.npz", "--out", "s"],
     r"^scratchgan sample: error: garbage\.npz is not a scratchgan checkpoint"),
    ("sample-no-checkpoint", "module", lambda t: ["sample", "--out", "s"],
     r"^scratchgan sample: error: .*required: --checkpoint"),
]


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory):
    """Every error case started at once (they overlap their ~1 s of imports), keyed by id."""
    tmp = tmp_path_factory.mktemp("errors")
    (tmp / "garbage.npz").write_bytes(b"this is not a checkpoint\n" * 40)
    # a real tiny checkpoint (for the other-architecture case) and a truncated copy of it
    old = os.environ.get("SCRATCHGAN_DATA")
    os.environ["SCRATCHGAN_DATA"] = str(tmp / "empty-cache")
    try:
        assert train_command.train_main([*SAFE, *TINY, "--out", str(tmp / "tiny")]) == 0
    finally:
        if old is None:
            del os.environ["SCRATCHGAN_DATA"]
        else:
            os.environ["SCRATCHGAN_DATA"] = old
    checkpoint = (tmp / "tiny" / "checkpoint.npz").read_bytes()
    (tmp / "truncated.npz").write_bytes(checkpoint[: len(checkpoint) // 2])
    procs = {}
    for case_id, entry, build, _ in CASES:
        try:
            args = build(tmp)
        except pytest.skip.Exception as e:
            procs[case_id] = e
            continue
        procs[case_id] = launch(args, tmp, module=entry == "module")
    results = {}
    for case_id, proc in procs.items():
        results[case_id] = proc if isinstance(proc, BaseException) else finish(proc)
    return tmp, checkpoint, results


@pytest.mark.parametrize("case_id, pattern", [pytest.param(c[0], c[3], id=c[0]) for c in CASES])
def test_user_errors_exit_2_with_one_line(error_runs, case_id, pattern):
    tmp, _, results = error_runs
    result = results[case_id]
    if isinstance(result, BaseException):
        pytest.skip(str(result))
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2, f"exit code {code}; stderr: {err!r}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert re.search(pattern, lines[0]), f"{lines[0]!r} does not match {pattern!r}"
    assert lines[0].startswith(("mnist_mlp.py: error: ", "scratchgan train: error: ", "scratchgan sample: error: "))
    assert not (tmp / "o").exists(), "a failing run wrote outputs"


def test_failed_resume_leaves_the_checkpoint_alone(error_runs):
    tmp, checkpoint, results = error_runs
    assert results["resume-other-architecture"][0] == 2
    assert (tmp / "tiny" / "checkpoint.npz").read_bytes() == checkpoint


def test_bundled_digits_default_to_their_test_split(tmp_path, monkeypatch, capsys):
    """--dataset mnist-bundled trains on the bundled test digits without --split; asking for their
    train split explicitly is an error (there is none), not a silent substitution."""
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))
    out = tmp_path / "run"
    assert train_command.train_main(["--dataset", "mnist-bundled", "--split", "train", *TINY, "--epochs", "1",
                           "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown split 'train'" in err[0] and "test" in err[0]
    assert train_command.train_main(["--dataset", "mnist-bundled", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    _, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["config"]["split"] == "test" and meta["global_step"] == 256 // 32


# ---------------------------------------------------------------------------------- --help
def test_example_help_lists_every_flag_with_its_default(tmp_path):
    env = env_for(tmp_path)
    env["COLUMNS"] = "100"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    # one block per option: its "  --flag ..." line and the more-indented help lines below it
    blocks, current = {}, None
    for line in proc.stdout.splitlines():
        m = re.match(r"^  (-\w, )?(--[\w-]+)", line)
        if m:
            current = m.group(2)
            blocks[current] = line
        elif current and line.startswith("      "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    for flag in ISSUE_FLAGS:
        assert flag in blocks, f"{flag} missing from --help"
        text = " ".join(blocks[flag].split())
        assert "default" in text, f"{flag}: no default in {text!r}"
        value = train_command.MLP_DEFAULTS[flag[2:].replace("-", "_")]
        if flag == "--out":  # a new numbered folder (runs/00012-mlp-fashion-mnist-bce), said in words
            value = flags.BY_KEY["out"].shown
        assert f"(default: {value})" in text, f"{flag}: default {value!r} not shown in {text!r}"


# ---------------------------------------------------------------------------------- train, then sample
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    code, out, err = run(["train", "--dataset", "mnist-bundled", *TINY, "--epochs", "1", "--out", "out"], tmp,
                         module=True)
    assert code == 0, err
    assert "Traceback" not in err
    return tmp


def test_train_then_sample(trained):
    tmp = trained
    assert (tmp / "out" / "checkpoint.npz").is_file() and (tmp / "out" / "samples" / "epoch_001.png").is_file()
    procs = {
        "s": launch(["sample", "--checkpoint", "out/checkpoint.npz", "--n", "10", "--out", "tmp/s"], tmp, True),
        "s0": launch(["sample", "--checkpoint", "out/checkpoint.npz", "--n", "10", "--out", "tmp/s0.npy",
                      "--seed", "0"], tmp, True),
        "s1": launch(["sample", "--checkpoint", "out/checkpoint.npz", "--n", "10", "--out", "tmp/s1",
                      "--seed", "1"], tmp, True),
    }
    for name, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 0, f"{name}: {err}"
        assert err == "", f"{name} wrote to stderr: {err!r}"
    s = np.load(tmp / "tmp" / "s.npy")
    assert s.dtype == np.float32 and s.shape == (10, 28, 28)
    assert s.min() >= -1.0 and s.max() <= 1.0 and s.std() > 0
    with Image.open(tmp / "tmp" / "s.png") as im:
        assert im.format == "PNG" and im.width > 28 and im.height > 28
    s0, s1 = np.load(tmp / "tmp" / "s0.npy"), np.load(tmp / "tmp" / "s1.npy")
    assert (tmp / "tmp" / "s0.png").is_file()
    assert np.array_equal(s, s0), "the same --seed (0, the default) gave other images"
    assert not np.array_equal(s, s1), "--seed 1 gave the same images as --seed 0"
    # the images are G(z) in eval mode (running BatchNorm statistics) for z ~ N(0, I) seeded by --seed
    arrays, meta = load_checkpoint(tmp / "out" / "checkpoint.npz")
    G, _ = models.build_mlp_gan(meta["config"], np)
    G.load_state_dict({k[2:]: v for k, v in arrays.items() if k.startswith("G/")})
    z = np.random.default_rng(1).standard_normal((10, meta["config"]["latent_dim"])).astype(np.float32)
    expected = generate(G, z).reshape(10, 28, 28)  # float32: a few ulps of the images' size (1, tanh)
    np.testing.assert_allclose(s1, expected, rtol=0, atol=1e-6 * scale(expected))


def test_sample_in_process_is_deterministic(trained, tmp_path):
    checkpoint = str(trained / "out" / "checkpoint.npz")
    assert sample_cli.sample_main(["--checkpoint", checkpoint, "--n", "4", "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert sample_cli.sample_main(["--checkpoint", checkpoint, "--n", "4", "--out", str(tmp_path / "b"), "--seed", "3"]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


# ---------------------------------------------------------------------------------- offline fallback
@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that is bound but never listens: connecting is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_offline_mnist_falls_back_to_the_bundled_digits(tmp_path, monkeypatch, capsys, closed_port):
    """--dataset mnist, no --data-dir, nothing cached, every mirror unreachable: one line says so and
    the run trains on the bundled digits."""
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("SCRATCHGAN_DATA", str(cache))
    mirrors = (f"http://127.0.0.1:{closed_port}/a/", f"http://127.0.0.1:{closed_port}/b/")
    offline = dataclasses.replace(mnist.MNIST, mirrors=mirrors, search_dirs=())
    monkeypatch.setitem(mnist.DATASETS, "mnist", offline)
    out = tmp_path / "run"
    code = train_command.train_main(["--dataset", "mnist", *TINY, "--epochs", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""
    lines = captured.out.splitlines()
    mentions = [line for line in lines if "download" in line]
    assert len(mentions) == 1, mentions
    assert any(line.startswith("training mnist-bundled (") and "split test" in line for line in lines), lines
    assert re.search(r"could not download MNIST \(.*refused.*from all 2 mirrors\); training on the bundled "
                     r"10k MNIST test digits instead", mentions[0]), mentions[0]
    _, meta = load_checkpoint(out / "checkpoint.npz")
    # the run records what it really trained on, so `evaluate` and --resume use the bundled digits too
    assert meta["global_step"] == 256 // 32
    assert (meta["config"]["dataset"], meta["config"]["split"]) == ("mnist-bundled", "test")
    # nothing half-downloaded was left in the cache
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_the_mirrors_of_the_offline_test_are_the_ones_used(monkeypatch, tmp_path):
    """Guard for the test above: the loader reads its mirrors from mnist.DATASETS (so the patch
    there takes effect) and MNIST has no system folders that could hide the download."""
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path))
    sentinel = dataclasses.replace(mnist.MNIST, mirrors=())
    monkeypatch.setitem(mnist.DATASETS, "mnist", sentinel)
    with pytest.raises(mnist.DownloadError, match="no mirror configured"):
        mnist.load_dataset("mnist", "train")
    assert mnist.MNIST.search_dirs == ()


def test_sample_help_gives_the_shapes_of_both_architectures(tmp_path, monkeypatch, capsys):
    """`sample --help` says (N, 28, 28) for MLP checkpoints and (N, C, H, W) for DCGAN ones, as written."""
    with pytest.raises(SystemExit):
        sample_cli.sample_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(N, 28, 28) from an MLP checkpoint" in text and "(N, C, H, W) from a DCGAN one" in text
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))
    out = tmp_path / "dcgan"
    assert train_command.train_main(["--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "32", "--g-width", "4",
                           "--d-width", "4", "--latent-dim", "8", "--epochs", "1", "--no-progress",
                           "--sample-every", "0", "--out", str(out)], prog="dcgan.py", defaults=train_command.DCGAN_DEFAULTS) == 0
    assert sample_cli.sample_main(["--checkpoint", str(out / "checkpoint.npz"), "--n", "3", "--out", str(tmp_path / "s")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (3, 1, 28, 28)
