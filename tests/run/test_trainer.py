"""The training loop: its outputs, the checkpoint, exact resume (epoch end and mid-epoch), the NaN
watchdog, seeded determinism. Tiny MLPs on small real subsets: bundled MNIST digits for the Trainer
used directly, Fashion-MNIST from ../shared/datasets through ``train_command.train_main``.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import sys

import numpy as np
import pytest
from datasets import dataset_dir  # tests/support/datasets.py: ../shared/datasets, found relative
from PIL import Image

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import train as train_command
from scratchgan.cli.train import MLP_DEFAULTS
from scratchgan.data import BatchLoader, load_mnist_bundled
from scratchgan.gan.models import build_step
from scratchgan.gan.step import GANStep
from scratchgan.run import viz
from scratchgan.run.trainer import STAT_KEYS, Trainer, TrainingDiverged, TrainingInterrupted

N_IMAGES, BATCH = 256, 32
STEPS_PER_EPOCH = N_IMAGES // BATCH  # 8
TINY = ["--g-hidden", "32,64", "--d-hidden", "64,32", "--latent-dim", "16", "--limit", str(N_IMAGES),
        "--batch-size", str(BATCH), "--no-progress"]
CSV_COLUMNS = ["step", "epoch", "loss_D", "loss_G", "D_x", "D_G_z", "D_G_z_after"]  # then any extra stats
REAL_PLOT_LOSSES = viz.plot_losses


@pytest.fixture(autouse=True)
def no_download_cache(tmp_path, monkeypatch):
    """Nothing reads or writes the user's cache; every run names its data explicitly."""
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "scratchgan-cache"))


@pytest.fixture(autouse=True)
def fast_loss_plots(monkeypatch):
    """matplotlib costs ~0.5 s per epoch: only the reference run draws losses.png for real."""
    calls = []
    monkeypatch.setattr(viz, "plot_losses", lambda rows, path, *a, **k: calls.append((len(rows), path)))
    return calls


def fashion_args():
    return ["--dataset", "fashion-mnist", "--data-dir", str(dataset_dir("fashion-mnist"))]


def train(out, *extra, log_every=2, sample_every=3):
    """train_command.train_main on 256 Fashion-MNIST images with tiny networks; returns the exit code."""
    argv = [*fashion_args(), "--split", "test", *TINY, "--out", str(out), "--log-every", str(log_every),
            "--sample-every", str(sample_every), *extra]
    return train_command.train_main(argv)


def arrays_of(path):
    arrays, meta = load_checkpoint(path)
    return arrays, meta


def assert_same_arrays(a_path, b_path):
    a, meta_a = arrays_of(a_path)
    b, meta_b = arrays_of(b_path)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), f"{key} differs"
    for key in ("epoch", "batch_in_epoch", "global_step", "noise", "opt_G_t", "opt_D_t"):
        assert meta_a[key] == meta_b[key], key


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# ---------------------------------------------------------------------------------- one full run
@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """2 uninterrupted epochs through train_command.train_main (16 steps), seed 0."""
    out = tmp_path_factory.mktemp("reference") / "run"
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("SCRATCHGAN_DATA")
    os.environ["SCRATCHGAN_DATA"] = str(cache)
    plot, viz.plot_losses = viz.plot_losses, REAL_PLOT_LOSSES
    try:
        assert train(out, "--epochs", "2") == 0
    finally:
        viz.plot_losses = plot
        if old is None:
            del os.environ["SCRATCHGAN_DATA"]
        else:
            os.environ["SCRATCHGAN_DATA"] = old
    return out


def test_outputs_exist(reference_run):
    out = reference_run
    steps = 2 * STEPS_PER_EPOCH
    expected_steps = sorted({*range(3, steps + 1, 3), STEPS_PER_EPOCH, steps})  # sample_every 3 + epoch ends
    frames = sorted(p.name for p in (out / "samples").glob("step_*.png"))
    # one file per grid: an epoch end's grid is samples/epoch_XXX.png only
    assert frames == [f"step_{s:07d}.png" for s in expected_steps if s % STEPS_PER_EPOCH]
    assert sorted(p.name for p in (out / "samples").glob("epoch_*.png")) == ["epoch_001.png", "epoch_002.png"]
    for name in ("samples/epoch_001.png", "samples/epoch_002.png", "losses.png", "real_vs_fake.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 28 and im.height > 28, name
    with Image.open(out / "progress.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == len(expected_steps) > 1
    rows = csv_rows(out / "metrics.csv")
    assert rows[0][:len(CSV_COLUMNS)] == CSV_COLUMNS and set(STAT_KEYS) <= set(rows[0])
    assert all(len(r) == len(rows[0]) for r in rows)
    assert [int(r[0]) for r in rows[1:]] == list(range(2, steps + 1, 2))  # steps / log_every rows
    assert [int(r[1]) for r in rows[1:]] == [1] * 4 + [2] * 4
    for r in rows[1:]:
        values = [float(v) for v in r[2:]]
        assert all(np.isfinite(values))
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 0 and config["epochs"] == 2 and config["g_hidden"] == "32,64"
    assert config["dataset"] == "fashion-mnist" and config["split"] == "test" and config["num_images"] == N_IMAGES
    assert config["image_shape"] == [28, 28]
    assert (out / "checkpoint.npz").is_file()
    assert not list(out.glob(".*tmp")), "a temporary file was left behind"


def test_checkpoint_content(reference_run):
    arrays, meta = arrays_of(reference_run / "checkpoint.npz")
    g_keys = {k for k in arrays if k.startswith("G/")}
    d_keys = {k for k in arrays if k.startswith("D/")}
    # G: Linear(16,32) LReLU Linear(32,64) BN(64) LReLU Linear(64,784) Tanh; D: 784->64->32->1
    assert g_keys == {"G/0.W", "G/0.b", "G/2.W", "G/2.b", "G/3.gamma", "G/3.beta", "G/3.running_mean",
                      "G/3.running_var", "G/5.W", "G/5.b"}
    assert d_keys == {"D/0.W", "D/0.b", "D/2.W", "D/2.b", "D/4.W", "D/4.b"}
    assert arrays["G/0.W"].shape == (16, 32) and arrays["D/0.W"].shape == (784, 64)
    n_g = sum(arrays[k].size for k in g_keys if "running" not in k)
    n_d = sum(arrays[k].size for k in d_keys)
    for name, n in (("opt_G", n_g), ("opt_D", n_d)):
        assert arrays[f"{name}/m"].shape == (n,) and arrays[f"{name}/v"].shape == (n,)
        assert np.all(arrays[f"{name}/v"] >= 0) and np.any(arrays[f"{name}/v"] > 0)
    assert arrays["fixed_noise"].shape == (64, 16)
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert all(np.all(np.isfinite(a)) for a in arrays.values())
    # the running variance moved away from its initial 1: BN statistics are saved, not just weights
    assert not np.allclose(arrays["G/3.running_var"], 1.0)
    assert meta["epoch"] == 2 and meta["global_step"] == 16 and meta["batch_in_epoch"] == 0
    assert meta["noise"] == {"epoch": 1, "draws": STEPS_PER_EPOCH}
    assert meta["opt_G_t"] == 16 and meta["opt_D_t"] == 16
    assert meta["config"]["g_hidden"] == "32,64" and meta["dtype"] == "float32" and meta["backend"] == "numpy"


# ---------------------------------------------------------------------------------- resume, via the CLI
def test_resume_at_epoch_end_is_bit_identical(reference_run, tmp_path, capsys):
    """1 epoch, then --resume to 2 epochs == 2 epochs in one go. The resume names only --out,
    --epochs and --resume: every other setting (data, sizes, seed, ...) comes from the checkpoint."""
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    arrays, meta = arrays_of(out / "checkpoint.npz")
    assert meta["epoch"] == 1 and meta["global_step"] == STEPS_PER_EPOCH
    capsys.readouterr()
    assert train_command.train_main(["--out", str(out), "--epochs", "2", "--resume", "--no-progress"]) == 0
    assert f"resumed from {out / 'checkpoint.npz'} at epoch 2, step {STEPS_PER_EPOCH}" in capsys.readouterr().out
    assert_same_arrays(reference_run / "checkpoint.npz", out / "checkpoint.npz")
    assert csv_rows(out / "metrics.csv") == csv_rows(reference_run / "metrics.csv")
    frames = sorted(p.name for p in (out / "samples").glob("step_*.png"))
    assert frames == sorted(p.name for p in (reference_run / "samples").glob("step_*.png"))


def test_same_seed_same_run_other_seed_other_run(reference_run, tmp_path):
    assert train(tmp_path / "same", "--epochs", "2") == 0
    assert_same_arrays(reference_run / "checkpoint.npz", tmp_path / "same" / "checkpoint.npz")
    assert csv_rows(tmp_path / "same" / "metrics.csv") == csv_rows(reference_run / "metrics.csv")
    assert train(tmp_path / "other", "--epochs", "2", "--seed", "1") == 0
    a, _ = arrays_of(reference_run / "checkpoint.npz")
    b, _ = arrays_of(tmp_path / "other" / "checkpoint.npz")
    for key in ("G/0.W", "G/5.W", "D/0.W", "D/4.W", "fixed_noise", "opt_D/m", "opt_D/v"):
        assert not np.array_equal(a[key], b[key]), key


def test_resume_with_dropout_at_epoch_end_is_bit_identical(tmp_path):
    """Dropout masks follow (seed, epoch, layer): a run resumed at an epoch end is exact too."""
    assert train(tmp_path / "full", "--epochs", "2", "--dropout", "0.3") == 0
    assert train(tmp_path / "split", "--epochs", "1", "--dropout", "0.3") == 0
    assert train(tmp_path / "split", "--epochs", "2", "--resume") == 0
    assert_same_arrays(tmp_path / "full" / "checkpoint.npz", tmp_path / "split" / "checkpoint.npz")
    _, meta = arrays_of(tmp_path / "split" / "checkpoint.npz")
    assert meta["config"]["dropout"] == 0.3 and meta["global_step"] == 2 * STEPS_PER_EPOCH


# ---------------------------------------------------------------------------------- the Trainer directly
@pytest.fixture(scope="module")
def digits():
    images, _ = load_mnist_bundled()
    return images[:N_IMAGES]


def make_trainer(images, out, d_steps=1, log_every=1, sample_every=0, seed=0, dropout=0.0, logs=None):
    config = dict(MLP_DEFAULTS, g_hidden="32,64", d_hidden="64,32", latent_dim=16, batch_size=BATCH,
                  image_size=784, seed=seed, d_steps=d_steps, dropout=dropout, out=str(out))
    step = build_step(config, np)
    loader = BatchLoader(images, BATCH, seed=seed)
    log = (logs.append if logs is not None else lambda message: None)
    return Trainer(step, loader, out, config, sample_every=sample_every, log_every=log_every,
                   image_shape=(28, 28), d_steps=d_steps, progress=False, log=log)


def hook_after_call(trainer, k, action):
    """Run ``action(trainer)`` right after the k-th call of trainer.step.step (1-based, counted over
    the trainer's whole life); returns the growing list of call numbers, for checks."""
    original = trainer.step.step
    calls = []

    def step(real_batches):
        stats = original(real_batches)
        calls.append(len(calls) + 1)
        if len(calls) == k:
            action(trainer)
        return stats

    trainer.step.step = step
    return calls


def hook_before_call(trainer, k, action):
    original = trainer.step.step
    calls = []

    def step(real_batches):
        calls.append(len(calls) + 1)
        if len(calls) == k:
            action(trainer)
        return original(real_batches)

    trainer.step.step = step
    return calls


_references = {}


@pytest.fixture
def reference_trainer_run(digits, tmp_path_factory):
    """Uninterrupted 2-epoch Trainer runs, one per d_steps, made once and shared."""
    def get(d_steps):
        if d_steps not in _references:
            out = tmp_path_factory.mktemp(f"trainer_ref_d{d_steps}")
            make_trainer(digits, out, d_steps=d_steps).fit(2)
            _references[d_steps] = out
        return _references[d_steps]
    return get


@pytest.mark.parametrize("d_steps, k", [(1, 5), (1, 11), (2, 3)])
def test_mid_epoch_stop_then_resume_is_bit_identical(digits, tmp_path, reference_trainer_run, d_steps, k):
    reference = reference_trainer_run(d_steps)
    iters = STEPS_PER_EPOCH // d_steps
    trainer = make_trainer(digits, tmp_path, d_steps=d_steps)
    hook_after_call(trainer, k, lambda t: setattr(t, "_stop_requested", True))
    with pytest.raises(TrainingInterrupted, match=f"interrupted at step {k}"):
        trainer.fit(2)
    _, meta = arrays_of(tmp_path / "checkpoint.npz")
    assert meta["global_step"] == k
    assert meta["epoch"] == (k - 1) // iters and meta["batch_in_epoch"] == d_steps * (k - meta["epoch"] * iters)
    assert meta["noise"]["draws"] == d_steps * (k - meta["epoch"] * iters)
    assert len(csv_rows(tmp_path / "metrics.csv")) == 1 + k  # log_every 1

    resumed = make_trainer(digits, tmp_path, d_steps=d_steps)
    calls = hook_after_call(resumed, 10**9, lambda t: None)
    result = resumed.fit(2, resume_from=tmp_path / "checkpoint.npz")
    assert result == {"epoch": 2, "global_step": 2 * iters}
    assert len(calls) == 2 * iters - k, "the resumed run redid or skipped steps"
    assert_same_arrays(reference / "checkpoint.npz", tmp_path / "checkpoint.npz")
    assert csv_rows(tmp_path / "metrics.csv") == csv_rows(reference / "metrics.csv")


def test_mid_epoch_resume_with_dropout_is_bit_identical(digits, tmp_path):
    make_trainer(digits, tmp_path / "full", dropout=0.3).fit(1)
    trainer = make_trainer(digits, tmp_path / "split", dropout=0.3)
    hook_after_call(trainer, 3, lambda t: setattr(t, "_stop_requested", True))
    with pytest.raises(TrainingInterrupted):
        trainer.fit(1)
    make_trainer(digits, tmp_path / "split", dropout=0.3).fit(1, resume_from=tmp_path / "split" / "checkpoint.npz")
    assert_same_arrays(tmp_path / "full" / "checkpoint.npz", tmp_path / "split" / "checkpoint.npz")


@pytest.mark.skipif(sys.platform == "win32", reason="os.kill(SIGINT) to oneself is POSIX")
def test_ctrl_c_saves_after_the_step_in_flight(digits, tmp_path, reference_trainer_run):
    """A real SIGINT during step 6: the step finishes, a checkpoint at step 6 is written, and the
    previous SIGINT handler is back afterwards."""
    reference = reference_trainer_run(1)
    logs = []
    trainer = make_trainer(digits, tmp_path, logs=logs)
    hook_before_call(trainer, 6, lambda t: os.kill(os.getpid(), signal.SIGINT))
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 6"):
        trainer.fit(2)
    assert signal.getsignal(signal.SIGINT) is before
    assert any("Ctrl-C" in line for line in logs)
    _, meta = arrays_of(tmp_path / "checkpoint.npz")
    assert meta["global_step"] == 6
    make_trainer(digits, tmp_path).fit(2, resume_from=tmp_path / "checkpoint.npz")
    assert_same_arrays(reference / "checkpoint.npz", tmp_path / "checkpoint.npz")


# ---------------------------------------------------------------------------------- the NaN watchdog
def poison_D(trainer):
    """Put a NaN into one of D's weights (the loss of the next step is NaN)."""
    trainer.step.D[0].W.data[0, 0] = np.nan


@pytest.mark.parametrize("log_every, k, named", [(1, 11, 11), (1, 16, 16), (4, 10, 12), (100, 10, 16)])
def test_watchdog_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path, log_every, k, named):
    """NaN at step k (epoch 2): TrainingDiverged names the first checked step >= k (k itself with
    log_every 1; the epoch end when no logged step comes first) and the epoch-1 checkpoint is
    left byte for byte as it was."""
    trainer = make_trainer(digits, tmp_path, log_every=log_every)
    checkpoint = tmp_path / "checkpoint.npz"
    saved = {}

    def poison(t):
        saved["bytes"] = checkpoint.read_bytes()
        saved["mtime"] = checkpoint.stat().st_mtime_ns
        poison_D(t)

    hook_before_call(trainer, k, poison)
    with pytest.raises(TrainingDiverged) as excinfo:
        trainer.fit(3)
    message = str(excinfo.value)
    assert f"at step {named};" in message
    assert "nan" in message and "loss_D" in message
    assert f"(step {STEPS_PER_EPOCH})" in message, message  # names the last good checkpoint
    assert checkpoint.read_bytes() == saved["bytes"]
    assert checkpoint.stat().st_mtime_ns == saved["mtime"]
    _, meta = arrays_of(checkpoint)
    assert meta["global_step"] == STEPS_PER_EPOCH
    csv_path = tmp_path / "metrics.csv"
    logged = [int(r[0]) for r in csv_rows(csv_path)[1:]] if csv_path.exists() else []
    assert logged == list(range(log_every, named, log_every)), "a NaN row was logged"
    assert not (tmp_path / "samples" / "epoch_002.png").exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_watchdog_before_any_checkpoint(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, log_every=1)
    hook_before_call(trainer, 3, poison_D)
    with pytest.raises(TrainingDiverged, match="at step 3;.*none yet"):
        trainer.fit(1)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_watchdog_through_the_cli_exits_3(tmp_path, monkeypatch, capsys):
    original = GANStep.step
    calls = []

    def step(self, real_batches):
        calls.append(1)
        if len(calls) == 4:
            self.D[0].W.data[...] = np.inf
        return original(self, real_batches)

    monkeypatch.setattr(GANStep, "step", step)
    assert train(tmp_path / "run", "--epochs", "1", log_every=1) == train_command.EXIT_DIVERGED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at step 4" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_trainer_rejects_fewer_batches_than_d_steps(digits, tmp_path):
    with pytest.raises(ValueError, match="fewer than the 9 D steps"):
        make_trainer(digits, tmp_path, d_steps=9)


def test_watchdog_checks_what_is_saved_not_only_the_losses(digits, tmp_path):
    """An optimizer moment that overflows to inf while the losses stay finite (what --lr 1e6 does to
    Adam's v) is caught before the epoch-end save: TrainingDiverged names the buffer, how many values
    and the step; the epoch-1 checkpoint is kept byte for byte and no epoch-2 samples are written."""
    trainer = make_trainer(digits, tmp_path, log_every=100)
    checkpoint = tmp_path / "checkpoint.npz"
    saved = {}

    def poison(t):
        saved["bytes"] = checkpoint.read_bytes()
        t.step.opt_G.v[:5] = np.inf

    hook_after_call(trainer, 11, poison)
    with pytest.raises(TrainingDiverged) as excinfo:
        trainer.fit(2)
    message = str(excinfo.value)
    assert "opt_G/v (5 of" in message and f"by step {2 * STEPS_PER_EPOCH}" in message, message
    assert f"Last good checkpoint: {checkpoint} (step {STEPS_PER_EPOCH})" in message, message
    assert checkpoint.read_bytes() == saved["bytes"]
    assert not (tmp_path / "samples" / "epoch_002.png").exists()


def test_watchdog_checks_the_state_before_a_ctrl_c_save(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path, log_every=100)

    def poison_and_stop(t):
        t.step.D[0].W.data[0, 0] = np.inf  # the loss of this step was finite: only the weights are bad
        t._stop_requested = True
    hook_after_call(trainer, 3, poison_and_stop)
    with pytest.raises(TrainingDiverged, match=r"by step 3: NaN/Inf in D weights \(1 of"):
        trainer.fit(1)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_absurd_final_losses_give_a_warning(digits, tmp_path):
    trainer = make_trainer(digits, tmp_path)
    trainer.last_stats = {"loss_D": 3.8e19, "loss_G": 0.5, "D_x": 1.0}
    assert "loss_D = 3.8e+19" in trainer.divergence_warning() and "--lr" in trainer.divergence_warning()
    trainer.last_stats = {"loss_D": 1.3, "loss_G": -2e5}
    assert trainer.divergence_warning() is None


@pytest.mark.skipif(sys.platform == "win32", reason="os.kill(SIGINT) to oneself is POSIX")
def test_a_second_ctrl_c_aborts_at_once_with_a_message(tmp_path, monkeypatch, capsys):
    """Two Ctrl-C during step 11 (epoch 2): the second aborts in the step, and the one line says so and
    names the last good checkpoint (it used to print just 'mnist_mlp.py: '). Both handlers are restored."""
    original = GANStep.step
    calls = []

    def step(self, real_batches):
        calls.append(1)
        if len(calls) == STEPS_PER_EPOCH + 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, real_batches)

    monkeypatch.setattr(GANStep, "step", step)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    assert train(out, "--epochs", "2") == train_command.EXIT_INTERRUPTED
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(rf"mnist_mlp\.py: aborted at once by a second Ctrl-C at step {STEPS_PER_EPOCH + 2}; "
                        rf"last good checkpoint: .*checkpoint\.npz \(step {STEPS_PER_EPOCH}\)", err[0]), err[0]
    _, meta = arrays_of(out / "checkpoint.npz")
    assert meta["global_step"] == STEPS_PER_EPOCH
    assert not (out / ".lock").exists()
