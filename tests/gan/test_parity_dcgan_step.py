"""PyTorch parity of whole DCGAN iterations: Conv2d / ConvTranspose2d / BatchNorm2d in a GAN step.

A small 28x28 DCGAN (models.dcgan_generator / dcgan_discriminator at width 4, float64) against the
same network in PyTorch with the same initial weights and the same z, running the DCGAN tutorial's
iteration (test_parity_gan_step.TorchGAN). After each of 3 iterations every parameter, every
BatchNorm2d running statistic and the step statistics agree to a relative 1e-9.
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

LATENT, WIDTH, SIZE, BATCH = 8, 4, 28, 8


def build_ours(seed=5):
    G = models.dcgan_generator(LATENT, SIZE, 1, width=WIDTH, seed=[seed, 1], dtype="float64").to("numpy", "float64")
    D = models.dcgan_discriminator(SIZE, 1, width=WIDTH, seed=[seed, 2], dtype="float64").to("numpy", "float64")
    noise = NoiseSource(np, BATCH, LATENT, seed=seed, dtype="float64")
    return GANStep(G, D, optim.Adam(G.parameters(), lr=LR, betas=BETAS), optim.Adam(D.parameters(), lr=LR, betas=BETAS),
                   BCEObjective(on_logits=True), LATENT, noise)


def _copy(dst, src):
    assert dst.dtype == torch.float64  # a float32 twin would round our float64 values on the way in
    with torch.no_grad():
        dst.copy_(torch.from_numpy(np.array(src)))


def conv_twin(ours):
    """torch.nn.Sequential with our conv net's layers and current values (PyTorch's weight layouts)."""
    layers = []
    for layer in ours:
        if isinstance(layer, nn.Conv2d):
            t = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                layer.padding, bias=layer.has_bias, dtype=torch.float64)
            _copy(t.weight, layer.W.data)
        elif isinstance(layer, nn.ConvTranspose2d):
            t = torch.nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                         layer.padding, layer.output_padding, bias=layer.has_bias,
                                         dtype=torch.float64)
            _copy(t.weight, layer.W.data)
        elif isinstance(layer, nn.BatchNorm2d):
            t = torch.nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum, dtype=torch.float64)
            for name, value in (("weight", layer.gamma.data), ("bias", layer.beta.data),
                                ("running_mean", layer.running_mean), ("running_var", layer.running_var)):
                _copy(getattr(t, name), value)
        elif isinstance(layer, nn.Reshape):
            t = torch.nn.Unflatten(1, layer.shape)
        elif isinstance(layer, nn.Flatten):
            t = torch.nn.Flatten()
        elif isinstance(layer, nn.LeakyReLU):
            t = torch.nn.LeakyReLU(layer.negative_slope)
        elif isinstance(layer, nn.ReLU):
            t = torch.nn.ReLU()
        elif isinstance(layer, nn.Tanh):
            t = torch.nn.Tanh()
        else:
            raise AssertionError(f"no torch twin for {layer!r}")
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and layer.has_bias:
            _copy(t.bias, layer.b.data)
        layers.append(t)
    return torch.nn.Sequential(*layers).double().train()


class TorchDCGAN(TorchGAN):
    """TorchGAN's tutorial iteration over conv twins (BCE on logits, real label 1)."""

    def __init__(self, ours):
        self.G, self.D = conv_twin(ours.G), conv_twin(ours.D)
        self.criterion, self.prob, self.real_target = torch.nn.BCEWithLogitsLoss(), torch.sigmoid, 1.0
        self.optG = torch.optim.Adam(self.G.parameters(), lr=LR, betas=BETAS)
        self.optD = torch.optim.Adam(self.D.parameters(), lr=LR, betas=BETAS)


def assert_conv_models_equal(ours, theirs, it):
    compared = 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        tag = f"after iteration {it}, layer {i} ({a!r})"
        if isinstance(a, (nn.Conv2d, nn.ConvTranspose2d)):
            assert_close(a.W.data, b.weight.detach().numpy(), f"{tag} W")
            compared += 1
        elif isinstance(a, nn.BatchNorm2d):
            assert_close(a.gamma.data, b.weight.detach().numpy(), f"{tag} gamma")
            assert_close(a.beta.data, b.bias.detach().numpy(), f"{tag} beta")
            assert_close(a.running_mean, b.running_mean.numpy(), f"{tag} running_mean")
            assert_close(a.running_var, b.running_var.numpy(), f"{tag} running_var")
            compared += 1
    assert compared >= 4


def test_dcgan_steps_match_pytorch():
    images, _ = load_mnist_bundled()
    reals = [(images[i * BATCH:(i + 1) * BATCH, None].astype(np.float64) / 127.5 - 1.0) for i in range(3)]
    ours = build_ours()
    theirs = TorchDCGAN(ours)
    draws = []
    sample = ours.noise.sample
    ours.noise.sample = lambda: draws.append(sample().copy()) or draws[-1]
    g0 = ours.G.flat_store().data.copy()
    for it, real in enumerate(reals, start=1):
        draws.clear()
        stats = ours.step([real.copy()])
        expected = theirs.iteration([real], draws)
        for key, value in expected.items():
            assert_close(stats[key], value, f"iteration {it}: {key}")
        assert_conv_models_equal(ours.G, theirs.G, it)
        assert_conv_models_equal(ours.D, theirs.D, it)
    assert np.abs(ours.G.flat_store().data - g0).max() > 1e-5  # the networks did move
