"""DiffAugment (scratchgan/gan/diffaugment.py): each op's input gradient against central differences in float64
with its random draws fixed, the whole policy likewise (images and the MLP's flat batches), the ops against
Zhao et al.'s PyTorch code (forward and autograd), seeded resumable draws, and the G step's gradient through
the augmentation (directional check over G's parameters).
"""
from __future__ import annotations

import numpy as np
import pytest
from fake_device import xp as fake_xp
from layer_cases import make_input, random_like, record_error

from scratchgan.cli import train as train_command
from scratchgan.gan import diffaugment as da
from scratchgan.gan import models
from scratchgan.gan.step import NoiseSource
from scratchgan.gradcheck import directional_check, numerical_gradient, relative_error

TABLE = "DiffAugment: analytic vs central differences (relative error)"
N, C, H, W = 3, 3, 8, 8


def op_cases():
    rng = np.random.default_rng(5)
    r = rng.uniform(size=(N, 1, 1, 1))
    tx, ty = np.array([-1, 0, 3]), np.array([2, -3, 0])
    mask = da.cutout_mask((N, C, H, W), np.array([0, 4, 8]), np.array([7, 1, 4]), (4, 4), np.float64, np)
    return {
        "brightness": (lambda x: da.brightness_forward(x, r), lambda dy: da.brightness_backward(dy, r)),
        "saturation": (lambda x: da.saturation_forward(x, r), lambda dy: da.saturation_backward(dy, r)),
        "contrast": (lambda x: da.contrast_forward(x, r), lambda dy: da.contrast_backward(dy, r)),
        "translation": (lambda x: da.translate(x, tx, ty), lambda dy: da.translation_backward(dy, tx, ty)),
        "cutout": (lambda x: da.cutout_forward(x, mask), lambda dy: da.cutout_backward(dy, mask)),
    }


def check(forward, backward, x, dy):
    analytic = backward(dy.copy())
    numeric = numerical_gradient(lambda: (forward(x) * dy).sum(), x)
    return relative_error(analytic, numeric)


@pytest.mark.parametrize("name", sorted(op_cases()))
def test_each_op_input_gradient(name):
    forward, backward = op_cases()[name]
    x, dy = make_input((N, C, H, W), seed=1), random_like((N, C, H, W), seed=2)
    y = forward(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    err = check(forward, backward, x, dy)
    record_error(TABLE, name, "x", "float64", err)
    assert err < 1e-7, err
    assert np.abs(backward(dy)).sum() > 0


def fixed_draws(seed=0):
    """A draw function giving the same values for each (name, call number) on every pass: the random choices
    fixed, as central differences need."""
    calls = {}

    def draw(name, shape, kind):
        k = calls[name] = calls.get(name, 0) + 1
        tag = int.from_bytes(name.encode()[:8], "little")
        return np.random.default_rng((seed, tag, k)).random(shape)

    def reset():
        calls.clear()
    return draw, reset


@pytest.mark.parametrize("policy", ["translation,cutout,color", "color,translation", "cutout"])
@pytest.mark.parametrize("shape", [(N, C, H, W), (N, 49)], ids=["images", "flat-7x7"])
def test_whole_policy_input_gradient(policy, shape):
    draw, reset = fixed_draws()
    aug = da.DiffAugment(policy, draw)
    x, dy = make_input(shape, seed=3), random_like(shape, seed=4)
    reset()
    y, cache = aug.forward(x)
    assert y.shape == x.shape
    analytic = aug.backward(dy, cache)

    def loss():
        reset()
        return (aug.forward(x)[0] * dy).sum()

    err = relative_error(analytic, numerical_gradient(loss, x))
    record_error(TABLE, f"policy {policy}", f"x {shape}", "float64", err)
    assert err < 1e-7, err


def test_the_ops_really_change_the_images():
    x = make_input((N, C, H, W), seed=1)
    for name, (forward, _) in op_cases().items():
        assert not np.allclose(forward(x), x), name
    y = da.translate(x, np.array([1, 0, 0]), np.array([0, 0, -2]))
    np.testing.assert_array_equal(y[0, :, :-1], x[0, :, 1:])  # shifted up by one row, zero at the bottom
    assert (y[0, :, -1] == 0).all()
    np.testing.assert_array_equal(y[1], x[1])
    np.testing.assert_array_equal(y[2, :, :, 2:], x[2, :, :, :-2])


def test_against_zhaos_pytorch_code(torch):
    """Zhao et al.'s DiffAugment_pytorch.py (rand_translation's grid/clamp/pad gather, rand_cutout's scatter,
    the color ops) with the same draws: forward, and the input gradient by autograd."""
    F = torch.nn.functional
    x = make_input((N, C, H, W), seed=6)
    dy = random_like((N, C, H, W), seed=7)
    rng = np.random.default_rng(8)
    r = rng.uniform(size=(N, 1, 1, 1))
    tx, ty = rng.integers(-1, 2, N), rng.integers(-1, 2, N)
    ox, oy = rng.integers(0, H + 1, N), rng.integers(0, W + 1, N)
    size = (4, 4)

    def zhao(xt):
        xt = xt + (torch.from_numpy(r) - 0.5)
        m = xt.mean(dim=1, keepdim=True)
        xt = (xt - m) * (torch.from_numpy(r) * 2) + m
        m = xt.mean(dim=[1, 2, 3], keepdim=True)
        xt = (xt - m) * (torch.from_numpy(r) + 0.5) + m
        gb, gx, gy = torch.meshgrid(torch.arange(N), torch.arange(H), torch.arange(W), indexing="ij")
        gx = torch.clamp(gx + torch.from_numpy(tx).view(N, 1, 1) + 1, 0, H + 1)
        gy = torch.clamp(gy + torch.from_numpy(ty).view(N, 1, 1) + 1, 0, W + 1)
        x_pad = F.pad(xt, [1, 1, 1, 1, 0, 0, 0, 0])
        xt = x_pad.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)
        gb, gx, gy = torch.meshgrid(torch.arange(N), torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
        gx = torch.clamp(gx + torch.from_numpy(ox).view(N, 1, 1) - size[0] // 2, min=0, max=H - 1)
        gy = torch.clamp(gy + torch.from_numpy(oy).view(N, 1, 1) - size[1] // 2, min=0, max=W - 1)
        mask = torch.ones(N, H, W, dtype=xt.dtype)
        mask[gb, gx, gy] = 0
        return xt * mask.unsqueeze(1)

    xt = torch.from_numpy(x).requires_grad_(True)
    yt = zhao(xt)
    (yt * torch.from_numpy(dy)).sum().backward()
    mask = da.cutout_mask(x.shape, ox, oy, size, np.float64, np)
    h = da.contrast_forward(da.saturation_forward(da.brightness_forward(x, r), r), r)
    y = da.cutout_forward(da.translate(h, tx, ty), mask)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-13)  # float64
    d = da.translation_backward(da.cutout_backward(dy, mask), tx, ty)
    dx = da.brightness_backward(da.saturation_backward(da.contrast_backward(d, r), r), r)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-13)  # float64


def test_draws_are_seeded_and_resumable():
    def run(noise, n):
        aug = da.DiffAugment("translation,cutout,color", noise.extra)
        return [aug.forward(make_input((4, 1, 28, 28), "float32"))[0] for _ in range(n)]

    a = NoiseSource(np, 4, 2, seed=7, dtype="float32")
    first = run(a, 3)
    b = NoiseSource(np, 4, 2, seed=7, dtype="float32")
    b.restore(a.state())  # a resumed run continues where the stream left off
    c = NoiseSource(np, 4, 2, seed=7, dtype="float32")
    both = run(c, 5)
    for got, want in zip(run(b, 2), both[3:]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(first, both[:3]):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(both[0], both[1])  # fresh draws for every batch
    assert first[0].dtype == np.float32


def test_on_the_fake_device_equals_numpy():
    host, dev = NoiseSource(np, 4, 2, 3, "float32"), NoiseSource(fake_xp, 4, 2, 3, "float32")
    x = make_input((4, 784), "float32")
    dy = random_like((4, 784), "float32", seed=1)
    aug, aug_dev = da.DiffAugment("color,translation,cutout", host.extra), da.DiffAugment(
        "color,translation,cutout", dev.extra)
    y, cache = aug.forward(x)
    y_dev, cache_dev = aug_dev.forward(fake_xp.asarray(x))
    np.testing.assert_array_equal(y_dev.get(), y)
    np.testing.assert_array_equal(aug_dev.backward(fake_xp.asarray(dy), cache_dev).get(), aug.backward(dy, cache))


@pytest.mark.parametrize("text, match", [("flip", "unknown 'flip'"), ("color,color", "at most once"),
                                         (",", "empty")])
def test_bad_policies(text, match):
    with pytest.raises(ValueError, match=match):
        da.parse_policy(text)


def test_non_square_flat_batches_are_refused():
    aug = da.DiffAugment("cutout", NoiseSource(np, 2, 2, 0, "float64").extra)
    with pytest.raises(ValueError, match="square grey images"):
        aug.forward(make_input((2, 50)))


@pytest.mark.parametrize("policy", ["translation,cutout,color"])
def test_g_step_gradient_goes_through_the_augmentation(policy):
    """Directional check over G's flat store of the G step's loss g(D(T(G(z)))), the draws replayed."""
    config = dict(train_command.MLP_DEFAULTS, image_size=16, batch_size=4, g_hidden="8", d_hidden="8", latent_dim=3,
                  dtype="float64", diffaugment=policy)
    step = models.build_step(config, np)
    step.opt_G.step = lambda: None  # look at the gradient only
    z = make_input((4, 3), seed=9)

    def loss_and_backward():
        step.noise.start_epoch(0)  # the same augmentation draws every time
        return step.g_step(step.G.forward(z))["loss_G"]

    analytic, numeric, err = directional_check(loss_and_backward, step.G.flat_store())
    record_error(TABLE, "G step through DiffAugment", "direction", "float64", err)
    assert err < 1e-7 and abs(analytic) > 0, (analytic, numeric)
    # and it differs from the gradient without the augmentation: the backward really went through T
    plain = models.build_step(dict(config, diffaugment=""), np)
    plain.opt_G.step = lambda: None
    plain.g_step(plain.G.forward(z))
    assert not np.allclose(plain.G.flat_store().grad, step.G.flat_store().grad)
