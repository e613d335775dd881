"""PyTorch parity of whole GAN iterations: scratchgan's GANStep against the DCGAN tutorial's loop.

A small MLP GAN with BatchNorm in G (G: 8 -> 16 -> 32 (BN) -> 12, LeakyReLU 0.2, Tanh; D: 12 -> 16
-> 8 -> 1, LeakyReLU 0.2), float64, the same initial weights and the same z in both. After every
iteration each parameter of G and D, G's running statistics and the step statistics must agree to
a relative 1e-9. Variants: BCE on probabilities (Sigmoid + BCELoss), one-sided label smoothing
0.9 with two D steps per G step.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed: parity tests need pip install torch==2.13.0")
from torch_gan import BETAS, LR, TorchGAN, assert_close  # noqa: E402

from scratchgan import nn, optim  # noqa: E402
from scratchgan.data import load_mnist_bundled  # noqa: E402
from scratchgan.gan import models
from scratchgan.gan.objectives import BCEObjective  # noqa: E402
from scratchgan.gan.step import GANStep, NoiseSource  # noqa: E402

LATENT, G_HIDDEN, D_HIDDEN, IMAGE = 8, (16, 32), (16, 8), 12
BATCH = 16


# ------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def real_batches():
    """Real data: a 3x4 patch from the middle of bundled MNIST digits, scaled to [-1, 1]."""
    images, _ = load_mnist_bundled()
    patch = images[:BATCH * 8, 12:15, 12:16].reshape(-1, IMAGE).astype(np.float64) / 127.5 - 1.0
    assert patch.std() > 0.1  # the patch has ink in it: a real signal, not a constant
    return [patch[i * BATCH:(i + 1) * BATCH].copy() for i in range(8)]


# ------------------------------------------------------------------------------------------ models
def build_ours(loss_on, real_target, seed=3):
    G = models.mlp_generator(latent_dim=LATENT, hidden=G_HIDDEN, out_dim=IMAGE, batchnorm=True,
                             seed=[seed, 1], dtype="float64").to("numpy", "float64")
    D = models.mlp_discriminator(in_dim=IMAGE, hidden=D_HIDDEN, output=loss_on, seed=[seed, 2],
                                 dtype="float64").to("numpy", "float64")
    opt_G = optim.Adam(G.parameters(), lr=LR, betas=BETAS)
    opt_D = optim.Adam(D.parameters(), lr=LR, betas=BETAS)
    noise = NoiseSource(np, BATCH, LATENT, seed=seed, dtype="float64")
    return GANStep(G, D, opt_G, opt_D, BCEObjective(on_logits=loss_on == "logits", real_target=real_target),
                   LATENT, noise)



def assert_models_equal(ours, theirs, step_no):
    assert len(list(ours)) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        tag = f"after iteration {step_no}, layer {i} ({a!r})"
        if isinstance(a, nn.Linear):
            assert_close(a.W.data, b.weight.detach().numpy().T, f"{tag} W")
            assert_close(a.b.data, b.bias.detach().numpy(), f"{tag} b")
        elif isinstance(a, nn.BatchNorm1d):
            assert_close(a.gamma.data, b.weight.detach().numpy(), f"{tag} gamma")
            assert_close(a.beta.data, b.bias.detach().numpy(), f"{tag} beta")
            assert_close(a.running_mean, b.running_mean.numpy(), f"{tag} running_mean")
            assert_close(a.running_var, b.running_var.numpy(), f"{tag} running_var")


def run_parity(real_batches, loss_on="logits", real_target=1.0, d_steps=1, iterations=3):
    ours = build_ours(loss_on, real_target)
    assert any(isinstance(m, nn.BatchNorm1d) for m in ours.G), "the test needs BatchNorm in G"
    theirs = TorchGAN(ours, loss_on, real_target)
    assert_models_equal(ours.G, theirs.G, 0)
    assert_models_equal(ours.D, theirs.D, 0)

    draws = []  # every z our NoiseSource hands out, in order, fed to torch as well
    sample = ours.noise.sample

    def recording_sample():
        z = sample()
        draws.append(z.copy())
        return z

    ours.noise.sample = recording_sample
    batches = iter(real_batches)
    moved = {"G": [], "D": []}
    g0 = ours.G.flat_store().data.copy()
    d0 = ours.D.flat_store().data.copy()
    for it in range(1, iterations + 1):
        reals = [next(batches) for _ in range(d_steps)]
        draws.clear()
        stats = ours.step([r.copy() for r in reals])
        assert len(draws) == d_steps, "one fresh z per D step"
        expected = theirs.iteration(reals, draws)
        assert set(expected) <= set(stats)
        for key, value in expected.items():
            assert np.ndim(stats[key]) == 0
            assert_close(stats[key], value, f"iteration {it}: {key}")
        assert_models_equal(ours.G, theirs.G, it)
        assert_models_equal(ours.D, theirs.D, it)
        moved["G"].append(np.abs(ours.G.flat_store().data - g0).max())
        moved["D"].append(np.abs(ours.D.flat_store().data - d0).max())
    # the comparison is not vacuous: both networks did move (Adam moves each weight ~lr per step)
    assert min(moved["G"]) > 1e-5 and min(moved["D"]) > 1e-5
    assert moved["G"][-1] > moved["G"][0] and moved["D"][-1] > moved["D"][0]
    return ours, theirs


def test_parity_logits(real_batches):
    run_parity(real_batches, loss_on="logits")


def test_parity_probs(real_batches):
    ours, _ = run_parity(real_batches, loss_on="probs")
    assert isinstance(ours.D[len(ours.D) - 1], nn.Sigmoid)


def test_parity_label_smoothing_two_d_steps(real_batches):
    run_parity(real_batches, loss_on="logits", real_target=0.9, d_steps=2)


def test_parity_probs_label_smoothing_two_d_steps(real_batches):
    run_parity(real_batches, loss_on="probs", real_target=0.9, d_steps=2)


def test_torch_twin_detects_a_difference(real_batches):
    """The harness can fail: a torch model with lr 2x ours disagrees after one iteration."""
    ours = build_ours("logits", 1.0)
    theirs = TorchGAN(ours, "logits", 1.0)
    for group in theirs.optD.param_groups:
        group["lr"] = 2 * LR
    draws = []
    sample = ours.noise.sample
    ours.noise.sample = lambda: draws.append(sample()) or draws[-1]
    ours.step([real_batches[0].copy()])
    theirs.iteration([real_batches[0]], draws)
    with pytest.raises(AssertionError, match="relative error"):
        assert_models_equal(ours.D, theirs.D, 1)
