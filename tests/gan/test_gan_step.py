"""GANStep: the statistics it returns, what each half-step may touch, dtypes, seeded determinism."""
from __future__ import annotations

import numpy as np
import pytest

from scratchgan import nn
from scratchgan.cli.train import MLP_DEFAULTS
from scratchgan.data import BatchLoader, load_mnist_bundled
from scratchgan.gan.models import build_step
from scratchgan.gan.objectives import BCEObjective

BATCH = 32
STAT_KEYS = {"loss_D", "loss_G", "D_x", "D_G_z", "D_G_z_after"}


@pytest.fixture(scope="module")
def images():
    """Real data: the first 256 of the bundled MNIST test digits, uint8 (N, 28, 28)."""
    images, _ = load_mnist_bundled()
    return images[:256]


@pytest.fixture(scope="module")
def batches(images):
    loader = BatchLoader(images, BATCH, seed=0)
    return list(loader.epoch(0))  # 8 float32 (32, 784) batches in [-1, 1]


def config(**overrides):
    c = dict(MLP_DEFAULTS, g_hidden="32,64", d_hidden="64,32", latent_dim=16, batch_size=BATCH,
             image_size=784)
    c.update(overrides)
    return c


def make_step(**overrides):
    return build_step(config(**overrides), np)


def bn_layers(G):
    return [m for m in G if isinstance(m, nn.BatchNorm1d)]


def bn_state(G):
    return [(m.running_mean.copy(), m.running_var.copy()) for m in bn_layers(G)]


def flat(model):
    return model.flat_store().data.copy()


# ---------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("loss_on", ["logits", "probs"])
def test_stats_are_0d_arrays_with_the_right_keys(batches, loss_on):
    step = make_step(loss_on=loss_on)
    for real in batches[:3]:
        stats = step.step([real])
        assert STAT_KEYS <= set(stats), sorted(stats)
        for key, value in stats.items():
            assert isinstance(value, np.ndarray) and value.ndim == 0, f"{key}: {type(value)} {np.shape(value)}"
            assert value.dtype == np.float32, f"{key} is {value.dtype}"
            assert np.isfinite(value)
        for key in ("D_x", "D_G_z", "D_G_z_after"):
            assert 0.0 <= float(stats[key]) <= 1.0, f"{key} = {float(stats[key])}"
        assert float(stats["loss_D"]) > 0 and float(stats["loss_G"]) > 0


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


@pytest.mark.parametrize("loss_on, smoothing", [("logits", 0.0), ("logits", 0.1), ("probs", 0.1)])
def test_stats_match_a_manual_recomputation(batches, loss_on, smoothing):
    """loss_D = BCE(D(x), real label) + BCE(D(G(z)), 0) and D(x), D(G(z)) as mean probabilities,
    recomputed in float64 from a twin built with the same seed; loss_G through the updated D."""
    step = make_step(loss_on=loss_on, label_smoothing=smoothing)
    twin = make_step(loss_on=loss_on, label_smoothing=smoothing)
    real = batches[0]
    # the twin's D and G before the step, and the z the step will draw
    z = twin.noise.sample()
    fake = twin.G.forward(z)
    out_real = twin.D.forward(real.copy()).astype(np.float64)
    out_fake = twin.D.forward(fake).astype(np.float64)

    stats = step.step([real.copy()])

    y = 1.0 - smoothing
    if loss_on == "logits":
        def bce(out, target):  # -[t log s(out) + (1 - t) log(1 - s(out))]
            return float(np.mean(-(target * _log_sigmoid(out) + (1 - target) * _log_sigmoid(-out))))

        def prob(out):
            return float(np.mean(1.0 / (1.0 + np.exp(-out))))
    else:
        def bce(out, target):
            return float(np.mean(-(target * np.log(out) + (1 - target) * np.log1p(-out))))

        def prob(out):
            return float(np.mean(out))
    loss_real, loss_fake = bce(out_real, y), bce(out_fake, 0.0)
    assert float(stats["loss_D"]) == pytest.approx(loss_real + loss_fake, rel=1e-5)
    assert float(stats["D_x"]) == pytest.approx(prob(out_real), rel=1e-5)
    assert float(stats["D_G_z"]) == pytest.approx(prob(out_fake), rel=1e-5)
    # loss_G: -log D(G(z)) (target 1, never smoothed) through the D the step just updated
    out_after = step.D.forward(fake).astype(np.float64)
    assert float(stats["loss_G"]) == pytest.approx(bce(out_after, 1.0), rel=1e-5)
    assert float(stats["D_G_z_after"]) == pytest.approx(prob(out_after), rel=1e-5)
    # and the D update did change D(G(z)): the two are different numbers
    assert float(stats["D_G_z_after"]) != float(stats["D_G_z"])


# ---------------------------------------------------------------------------------- what each half touches
def test_g_step_leaves_d_alone_and_d_step_leaves_g_alone(batches):
    step = make_step()
    step.step([batches[0]])  # past the first step: Adam state non-zero everywhere
    g_before, d_before, bn_before = flat(step.G), flat(step.D), bn_state(step.G)
    opt_g_m = step.opt_G.m.copy()

    fake, _ = step.d_step(batches[1])
    assert np.array_equal(flat(step.G), g_before), "the D step changed G's parameters"
    assert not np.array_equal(flat(step.D), d_before), "the D step did not update D"
    assert np.array_equal(step.opt_G.m, opt_g_m) and step.opt_G.t == 1
    bn_after_d = bn_state(step.G)
    for (m0, v0), (m1, v1) in zip(bn_before, bn_after_d):
        assert not np.array_equal(m0, m1) and not np.array_equal(v0, v1), "G(z) in train mode moves BN stats"

    d_mid, g_mid = flat(step.D), flat(step.G)
    opt_d_m, opt_d_v = step.opt_D.m.copy(), step.opt_D.v.copy()
    step.g_step(fake)
    assert np.array_equal(flat(step.D), d_mid), "the G step changed D's parameters"
    assert np.array_equal(step.opt_D.m, opt_d_m) and np.array_equal(step.opt_D.v, opt_d_v)
    assert step.opt_D.t == 2 and step.opt_G.t == 2
    assert not np.array_equal(flat(step.G), g_mid), "the G step did not update G"
    for (m1, v1), (m2, v2) in zip(bn_after_d, bn_state(step.G)):
        assert np.array_equal(m1, m2) and np.array_equal(v1, v2), "the G step ran G forward again"


@pytest.mark.parametrize("d_steps", [1, 2])
def test_batchnorm_running_stats_move_once_per_d_step(batches, d_steps):
    """One iteration updates G's running statistics exactly as d_steps train-mode forwards of G do."""
    step, twin = make_step(), make_step()
    assert len(bn_layers(step.G)) == 1  # g_hidden 32,64: BN after the second hidden Linear
    before = bn_state(step.G)
    step.step(batches[:d_steps])
    for _ in range(d_steps):
        twin.G.forward(twin.noise.sample())
    for (m, v), (tm, tv), (m0, v0) in zip(bn_state(step.G), bn_state(twin.G), before):
        assert not np.array_equal(m, m0)
        assert np.array_equal(m, tm) and np.array_equal(v, tv)
    # the twin after one more forward is different: the count is exact, not "at least once"
    twin.G.forward(twin.noise.sample())
    assert not np.array_equal(bn_state(step.G)[0][0], bn_state(twin.G)[0][0])


def test_d_steps_use_their_own_batches_and_fresh_noise(batches):
    two, one = make_step(), make_step()
    two.step(batches[:2])
    assert two.noise.draws == 2 and two.opt_D.t == 2 and two.opt_G.t == 1
    one.step(batches[:1])
    assert one.noise.draws == 1 and one.opt_D.t == 1 and one.opt_G.t == 1


# ---------------------------------------------------------------------------------- dtypes
def test_float32_is_kept_everywhere(batches):
    step = make_step()
    for real in batches[:2]:
        stats = step.step([real])
    for model in (step.G, step.D):
        for name, p in model.named_parameters():
            assert p.data.dtype == np.float32 and p.grad.dtype == np.float32, name
        for name, b in model.named_buffers():
            assert b.dtype == np.float32, name
    for opt in (step.opt_G, step.opt_D):
        assert opt.m.dtype == np.float32 and opt.v.dtype == np.float32
    assert all(v.dtype == np.float32 for v in stats.values())
    assert step.noise.sample().dtype == np.float32


def test_float64_run_stays_float64(images):
    step = make_step(dtype="float64")
    real = next(BatchLoader(images, BATCH, dtype="float64").epoch(0))
    stats = step.step([real])
    assert all(v.dtype == np.float64 for v in stats.values())
    assert step.G.flat_store().data.dtype == np.float64 and step.opt_D.v.dtype == np.float64


# ---------------------------------------------------------------------------------- determinism
def _run(steps, batches, **overrides):
    step = make_step(**overrides)
    for real in batches[:steps]:
        stats = step.step([real])
    return step, stats


def test_same_config_gives_bit_identical_runs(batches):
    a, stats_a = _run(5, batches)
    b, stats_b = _run(5, batches)
    for x, y in ((a.G, b.G), (a.D, b.D)):
        sa, sb = x.state_dict(), y.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(sa[k], sb[k]), k
    assert np.array_equal(a.opt_G.m, b.opt_G.m) and np.array_equal(a.opt_D.v, b.opt_D.v)
    assert {k: float(v) for k, v in stats_a.items()} == {k: float(v) for k, v in stats_b.items()}


def test_another_seed_gives_another_run(batches):
    a, _ = _run(2, batches, seed=0)
    b, _ = _run(2, batches, seed=1)
    assert not np.array_equal(flat(a.G), flat(b.G))
    assert not np.array_equal(flat(a.D), flat(b.D))


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("n", [BATCH - 1, BATCH + 1])
def test_wrong_real_batch_size_raises(batches, n):
    step = make_step()
    real = np.concatenate([batches[0], batches[1]])[:n]
    d_before = flat(step.D)
    with pytest.raises(ValueError, match=f"{n}.*{BATCH}"):
        step.step([real])
    assert np.array_equal(flat(step.D), d_before)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5])
def test_objective_rejects_real_labels_outside_0_1(target):
    with pytest.raises(ValueError, match="real label"):
        BCEObjective(real_target=target)
