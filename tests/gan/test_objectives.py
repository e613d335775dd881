"""The GAN objectives (bce, wgan, wgan-gp, lsgan, hinge): gradient checks of every D and G loss,
their statistics, the per-objective defaults behind the flags, weight clipping, instance noise,
gradient norms in the logs, RMSprop against torch.optim.RMSprop, and one full step of each
objective on real Fashion-MNIST images without NaN.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import dataset_dir  # tests/support/datasets.py: ../shared/datasets, found relative
from layer_cases import record_error

from scratchgan import nn, optim
from scratchgan.cli import flags
from scratchgan.cli import train as train_command
from scratchgan.cli.train import MLP_DEFAULTS
from scratchgan.data import BatchLoader, load_dataset
from scratchgan.gan import objectives
from scratchgan.gan.models import build_step
from scratchgan.gan.objectives import BCEObjective
from scratchgan.gan.step import NoiseSource
from scratchgan.gradcheck import numerical_gradient, relative_error
from scratchgan.run.trainer import Trainer

TABLE = "Objectives: dL/dout vs central differences (relative error)"
TOL = 1e-7
BATCH = 32


@pytest.fixture(autouse=True)
def no_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "scratchgan-cache"))


def all_objectives():
    return [pytest.param(objectives.make_objective(name), id=name) for name in objectives.NAMES] + [
        pytest.param(BCEObjective(on_logits=False, real_target=0.9), id="bce-probs-smoothed"),
        pytest.param(objectives.LSGANObjective(real_target=0.9), id="lsgan-smoothed")]


def scores(obj, seed=0, shape=(7, 1)):
    """D outputs in the objective's domain, away from the hinge's kinks at +-1."""
    rng = np.random.default_rng((seed, 0x0B))
    if isinstance(obj, BCEObjective) and not obj.on_logits:
        return rng.uniform(0.05, 0.95, size=shape)
    out = rng.normal(0.0, 2.0, size=shape)
    return np.where(np.abs(np.abs(out) - 1.0) < 1e-2, out + 0.1, out)


@pytest.mark.parametrize("obj", all_objectives())
@pytest.mark.parametrize("which", ["d_real", "d_fake", "g"])
def test_loss_gradients_match_central_differences(obj, which):
    fn = getattr(obj, which)
    out = scores(obj, seed=hash(which) % 1000)
    loss, dout = fn(out)
    assert loss.ndim == 0 and dout.shape == out.shape and dout.dtype == out.dtype
    numeric = numerical_gradient(lambda: fn(out)[0], out)
    err = relative_error(dout, numeric)
    record_error(TABLE, getattr(obj, "name", "?"), which, "float64", err)
    assert err < TOL, f"{which}: {err:.2e}"


@pytest.mark.parametrize("obj", all_objectives())
def test_float32_in_float32_out_and_input_untouched(obj):
    out = scores(obj, seed=3).astype(np.float32)
    before = out.copy()
    for fn in (obj.d_real, obj.d_fake, obj.g):
        loss, dout = fn(out)
        assert loss.dtype == np.float32 and dout.dtype == np.float32
    stat = obj.probability(out)
    assert stat.ndim == 0 and stat.dtype == np.float32
    np.testing.assert_array_equal(out, before)


def test_loss_values_are_the_formulas():
    out = np.array([[-2.0], [0.5], [1.5]])
    w = objectives.WGANObjective()
    assert float(w.d_real(out)[0]) == pytest.approx(-out.mean())
    assert float(w.d_fake(out)[0]) == pytest.approx(out.mean())
    assert float(w.g(out)[0]) == pytest.approx(-out.mean())
    ls = objectives.LSGANObjective()
    assert float(ls.d_real(out)[0]) == pytest.approx(0.5 * np.mean((out - 1) ** 2))
    assert float(ls.d_fake(out)[0]) == pytest.approx(0.5 * np.mean(out ** 2))
    h = objectives.HingeObjective()
    assert float(h.d_real(out)[0]) == pytest.approx(np.mean(np.maximum(0, 1 - out)))
    assert float(h.d_fake(out)[0]) == pytest.approx(np.mean(np.maximum(0, 1 + out)))
    assert float(h.g(out)[0]) == pytest.approx(-out.mean())
    assert float(w.probability(out)) == pytest.approx(out.mean())  # critics report the mean score


def test_make_objective_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="unknown objective"):
        objectives.make_objective("gan")
    with pytest.raises(ValueError, match="loss_on probs is for the bce objective only"):
        objectives.make_objective("wgan", on_logits=False)
    with pytest.raises(ValueError, match="label_smoothing is for the bce or lsgan objective"):
        objectives.make_objective("hinge", real_target=0.9)
    with pytest.raises(ValueError, match="positive"):
        objectives.make_objective("wgan-gp", gp_lambda=0.0)
    assert objectives.make_objective("wgan-gp", gp_lambda=5.0).gp_lambda == 5.0


# ---------------------------------------------------------------------------------- defaults and flags
def resolved(argv):
    parser = train_command.make_train_parser("t", "t")
    args = parser.parse_args(argv)
    explicit = vars(train_command.make_train_parser("t", "t", suppress=True).parse_args(argv))
    return train_command.resolve_config(args, explicit, MLP_DEFAULTS, print)[0]


def test_each_objective_brings_its_papers_defaults():
    c = resolved(["--loss", "wgan"])
    assert (c["optimizer"], c["lr"], c["clip"], c["d_steps"], c["gp_lambda"]) == ("rmsprop", 5e-5, 0.01, 5, 0.0)
    c = resolved(["--loss", "wgan-gp"])
    assert (c["optimizer"], c["lr"], c["beta1"], c["beta2"], c["d_steps"], c["gp_lambda"], c["clip"]) == \
        ("adam", 1e-4, 0.0, 0.9, 5, 10.0, 0.0)
    for loss in ("bce", "lsgan", "hinge"):
        c = resolved(["--loss", loss])
        assert (c["optimizer"], c["lr"], c["beta1"], c["beta2"], c["d_steps"]) == ("adam", 2e-4, 0.5, 0.999, 1)


def test_explicit_flags_beat_the_objectives_defaults():
    c = resolved(["--loss", "wgan-gp", "--lr", "3e-4", "--beta1", "0.5", "--d-steps", "2", "--gp-lambda", "5"])
    assert (c["lr"], c["beta1"], c["beta2"], c["d_steps"], c["gp_lambda"]) == (3e-4, 0.5, 0.9, 2, 5.0)
    c = resolved(["--loss", "wgan", "--clip", "0.05", "--optimizer", "adam"])
    assert (c["clip"], c["optimizer"], c["lr"]) == (0.05, "adam", 5e-5)


def step_config(**overrides):
    c = dict(MLP_DEFAULTS, g_hidden="32,64", d_hidden="64,32", latent_dim=16, batch_size=BATCH, image_size=784)
    loss = overrides.get("loss", "bce")
    c.update(flags.loss_defaults(loss))
    c.update(overrides)
    return c


@pytest.fixture(scope="module")
def fashion():
    """1,024 real Fashion-MNIST test images and labels."""
    images, labels = load_dataset("fashion-mnist", split="test", data_dir=dataset_dir("fashion-mnist"))
    return images[:1024], labels[:1024]


@pytest.mark.parametrize("loss", objectives.NAMES)
def test_each_objective_trains_a_few_steps_on_real_images_without_nan(fashion, loss):
    config = step_config(loss=loss)
    step = build_step(config, np)
    assert type(step.opt_D) is (optim.RMSprop if loss == "wgan" else optim.Adam)
    loader = BatchLoader(fashion[0], BATCH, seed=0)
    batches = loader.epoch(0)
    d = config["d_steps"]
    keys = {"D": ("D_x", "D_G_z", "D_G_z_after"), "C": ("C_x", "C_G_z", "C_G_z_after")}[step.objective.score]
    for _ in range(4):
        stats = step.step([next(batches) for _ in range(d)])
        assert {"loss_D", "loss_G", *keys} <= set(stats)
        for key, value in stats.items():
            assert value.ndim == 0 and value.dtype == np.float32, key
            assert math.isfinite(float(value)), f"{loss}: {key} = {float(value)}"
    assert ("gp" in stats) == (loss == "wgan-gp") and ("wasserstein" in stats) == loss.startswith("wgan")
    assert np.all(np.isfinite(step.G.flat_store().data)) and np.all(np.isfinite(step.D.flat_store().data))
    if loss == "wgan":  # weight clipping after every critic update
        assert np.abs(step.D.flat_store().data).max() <= 0.01
    if loss == "wgan-gp":
        terms = abs(float(stats["C_x"])) + abs(float(stats["C_G_z"])) + float(stats["gp"])  # what loss_D adds up
        assert float(stats["loss_D"]) == pytest.approx(
            -float(stats["wasserstein"]) + float(stats["gp"]), rel=1e-4, abs=1e-5 * terms)


def test_gradient_penalty_can_regularise_any_objective(fashion):
    step = build_step(step_config(loss="bce", gp_lambda=1.0), np)
    stats = step.step([BatchLoader(fashion[0], BATCH, seed=0).epoch(0).__next__()])
    assert float(stats["gp"]) > 0 and "D_x" in stats


def test_instance_noise_reaches_d_and_is_annealed_linearly(fashion, tmp_path):
    images = fashion[0][:256]
    step = build_step(step_config(), np)
    seen = []
    forward = step.D.forward
    step.D.forward = lambda x: (seen.append(x.copy()), forward(x))[1]
    loader = BatchLoader(images, BATCH, seed=0)
    real = next(loader.epoch(0))
    step.instance_noise = 0.5
    step.step([real])
    noise = seen[0] - real
    assert 0.4 < noise.std() < 0.6 and abs(noise.mean()) < 0.05  # D saw x + 0.5 N(0, 1)
    assert step.noise.draws == 1, "instance noise has its own stream: z is unchanged"

    step = build_step(step_config(), np)
    trainer = Trainer(step, BatchLoader(images, BATCH, seed=0), tmp_path / "run", step_config(),
                      sample_every=0, log_every=2, progress=False, log=lambda m: None, instance_noise=0.2)
    trainer.write_summaries = lambda fake: None
    trainer.fit(2)
    rows = __import__("scratchgan.run.viz", fromlist=["x"]).read_metrics_csv(tmp_path / "run" / "metrics.csv")
    total = 2 * len(trainer.loader)
    for row in rows:  # sigma used by step t (1-based) is sigma_0 (1 - (t - 1) / T)
        assert row["instance_noise"] == pytest.approx(0.2 * (1 - (row["step"] - 1) / total))
        assert row["grad_norm_G"] > 0 and row["grad_norm_D"] > 0


def test_grad_norms_are_the_norms_of_the_flat_buffers(fashion, tmp_path):
    step = build_step(step_config(loss="wgan-gp"), np)
    loader = BatchLoader(fashion[0][:320], BATCH, seed=0)
    trainer = Trainer(step, loader, tmp_path, step_config(loss="wgan-gp"), d_steps=5, progress=False,
                      log=lambda m: None)
    batches = loader.epoch(0)
    stats = trainer._with_grad_norms(step.step([next(batches) for _ in range(5)]))
    assert float(stats["grad_norm_G"]) == pytest.approx(np.sqrt((step.G.flat_store().grad.astype(np.float64) ** 2).sum()),
                                                        rel=1e-5)
    assert float(stats["grad_norm_D"]) == pytest.approx(np.sqrt((step.D.flat_store().grad.astype(np.float64) ** 2).sum()),
                                                        rel=1e-5)


def test_noise_source_extra_streams_resume_exactly():
    a = NoiseSource(np, 4, 3, seed=7, dtype="float32")
    a.start_epoch(2)
    for _ in range(3):
        a.sample()
        a.extra("gp_alpha", (4, 1), "uniform")
        a.extra("instance_noise", (4, 5))
    b = NoiseSource(np, 4, 3, seed=7, dtype="float32")
    b.restore(a.state())
    np.testing.assert_array_equal(a.sample(), b.sample())
    np.testing.assert_array_equal(a.extra("gp_alpha", (4, 1), "uniform"), b.extra("gp_alpha", (4, 1), "uniform"))
    np.testing.assert_array_equal(a.extra("instance_noise", (4, 5)), b.extra("instance_noise", (4, 5)))
    u = a.extra("gp_alpha", (1000, 1), "uniform")
    assert u.min() >= 0 and u.max() < 1


def test_wgan_gp_run_with_instance_noise_resumes_exactly_mid_epoch(fashion, tmp_path):
    """The penalty's alphas and the instance noise come from checkpointed streams (and sigma from the
    step count): a run stopped in the middle of epoch 2 and resumed equals the uninterrupted run."""
    from scratchgan.run.trainer import TrainingInterrupted
    images = fashion[0][:320]  # 10 batches of 32 = 2 iterations of 5 critic steps per epoch
    argv = ["--g-hidden", "16,32", "--d-hidden", "32,16", "--latent-dim", "8", "--batch-size", "32",
            "--loss", "wgan-gp", "--instance-noise", "0.1"]

    def trainer(out):
        config = resolved(argv + ["--out", str(out)])
        config.update(image_size=784, image_shape=[28, 28], num_images=len(images))
        t = Trainer(build_step(config, np), BatchLoader(images, 32, seed=0), out, config, sample_every=0,
                    log_every=1, d_steps=config["d_steps"], progress=False, log=lambda m: None,
                    instance_noise=config["instance_noise"])
        t.write_summaries = lambda fake: None
        return t

    whole = trainer(tmp_path / "whole")
    whole.fit(2)
    first = trainer(tmp_path / "split")
    step = first.step.step

    def stop_after_third(batches):
        stats = step(batches)
        if first.global_step + 1 == 3:
            first._stop_requested = True
        return stats
    first.step.step = stop_after_third
    with pytest.raises(TrainingInterrupted, match="interrupted at step 3"):
        first.fit(2)
    resumed = trainer(tmp_path / "split")
    resumed.fit(2, resume_from=tmp_path / "split" / "checkpoint.npz")
    assert resumed.global_step == whole.global_step == 4
    np.testing.assert_array_equal(whole.step.G.flat_store().data, resumed.step.G.flat_store().data)
    np.testing.assert_array_equal(whole.step.D.flat_store().data, resumed.step.D.flat_store().data)


# ---------------------------------------------------------------------------------- RMSprop
@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"centered": True},
                                    {"centered": True, "momentum": 0.5, "weight_decay": 0.01}],
                         ids=["default", "momentum", "centered", "all"])
def test_rmsprop_matches_torch_over_10_steps(torch, kwargs):
    model = nn.Sequential(nn.Linear(7, 5, seed=0), nn.LeakyReLU(0.2), nn.Linear(5, 2, seed=1)).to("numpy", "float64")
    params_t = [torch.tensor(p.data.copy(), requires_grad=True) for p in model.parameters()]
    ours = optim.RMSprop(model.parameters(), lr=1e-2, **kwargs)
    theirs = torch.optim.RMSprop(params_t, lr=1e-2, **kwargs)
    assert (ours.alpha, ours.eps) == (theirs.defaults["alpha"], theirs.defaults["eps"]) == (0.99, 1e-8)
    rng = np.random.default_rng(0)
    for _ in range(10):
        for p, t in zip(model.parameters(), params_t):
            g = rng.standard_normal(p.data.shape)
            p.grad[...] = g
            t.grad = torch.from_numpy(g.copy())
        ours.step()
        theirs.step()
    worst = max(relative_error(p.data, t.detach().numpy()) for p, t in zip(model.parameters(), params_t))
    record_error("PyTorch parity (relative error)", "RMSprop", "/".join(kwargs) or "default", "float64", worst)
    assert worst < 1e-12


def test_rmsprop_state_round_trip_and_float32():
    lin = nn.Linear(300, 1000, seed=0).to("numpy", "float32")  # big enough for the threaded parts
    opt = optim.RMSprop(lin.parameters(), lr=1e-3, momentum=0.9, centered=True)
    lin.W.grad[...] = 1.0
    opt.step()
    assert lin.W.data.dtype == np.float32 and opt.square_avg.dtype == np.float32
    state = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in opt.state_dict().items()}
    other = optim.RMSprop(lin.parameters(), lr=1e-3, momentum=0.9, centered=True)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.square_avg, opt.square_avg)
    np.testing.assert_array_equal(other.buf, opt.buf)
    assert other.t == 1
