"""Spectral normalisation (scratchgan/nn/spectral_norm.py): its backward through sigma(W) against central
differences in float64, parity with torch.nn.utils.parametrizations.spectral_norm, the power iteration's
modes, its buffers in checkpoints, and --spectral-norm in a GAN step.
"""
from __future__ import annotations

import numpy as np
import pytest
from layer_cases import build_layer, check_contract, import_torch, make_input, random_like, record_error
from device_checks import check_layer_on_fake_device

from scratchgan import gradcheck, nn
from scratchgan.gan import models
from scratchgan.gan.gradient_penalty import GradientPenalty, UnsupportedCritic
from scratchgan.nn.spectral_norm import SpectralNorm, apply_spectral_norm, power_iteration

TABLE = "SpectralNorm: analytic vs central differences (relative error)"
CASES = {
    "Linear": (lambda: nn.Linear(5, 4, seed=0, dtype="float64"), (6, 5)),
    "Conv2d": (lambda: nn.Conv2d(2, 3, 3, stride=1, padding=1, seed=0, dtype="float64"), (2, 2, 4, 4)),
}


def wrapped(kind):
    factory, shape = CASES[kind]
    sn = SpectralNorm(factory(), seed=1)
    return nn.Sequential(sn).to("numpy", "float64"), sn, shape


def converge(sn, steps=2000):
    """u, v at sigma's singular vectors (to rounding), returned as copies to reset them to."""
    power_iteration(sn._matrix(sn.W.data), sn.u, sn.v, steps, sn.eps)
    return sn.u.copy(), sn.v.copy()


@pytest.mark.parametrize("kind", sorted(CASES))
def test_gradcheck_eval_mode(kind):
    """Eval mode runs no power step: sigma = u^T W v with u, v fixed, and the backward is exact."""
    model, sn, shape = wrapped(kind)
    model.eval()
    errors = gradcheck.check_module(model, make_input(shape))
    for name, err in errors.items():
        record_error(TABLE, f"SpectralNorm({kind})", name, "eval", err)
    assert set(errors) == {"x", "0.W", "0.0.b"}
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("kind", sorted(CASES))
def test_gradcheck_train_mode_at_the_fixed_point(kind):
    """Train mode moves u and v by one power step per forward, and that update is not differentiated
    (Miyato et al. eq. 12, and torch: u and v are constants of the backward). The backward is then the
    true derivative where u, v are sigma's singular vectors: there d(u^T W v) = u^T dW v, because
    W v = sigma u and du is orthogonal to u (likewise for v). So u, v are run to convergence and put back
    before every forward; the finite differences then see the function the backward differentiates."""
    model, sn, shape = wrapped(kind)
    model.train()
    u, v = converge(sn)

    def reset():
        sn.u[...], sn.v[...] = u, v

    errors = gradcheck.check_module(model, make_input(shape), before_forward=reset)
    for name, err in errors.items():
        record_error(TABLE, f"SpectralNorm({kind})", name, "train", err)
    assert max(errors.values()) < 1e-7, errors


def test_gradcheck_is_not_vacuous():
    """Leaving out the sigma term (dW = G / sigma) fails the check."""
    model, sn, shape = wrapped("Linear")
    model.eval()
    import scratchgan.nn.spectral_norm as module
    original = module.spectral_norm_backward
    try:
        module.spectral_norm_backward = lambda dW_sn, cache, outer: dW_sn / cache[1]
        errors = gradcheck.check_module(model, make_input(shape))
    finally:
        module.spectral_norm_backward = original
    assert errors["0.W"] > 1e-3


def test_power_step_in_train_mode_only():
    model, sn, shape = wrapped("Linear")
    x = make_input(shape)
    u0 = sn.u.copy()
    model.eval()
    model.forward(x)
    model[0].cache = model[0].layer.cache = None
    np.testing.assert_array_equal(sn.u, u0)  # eval: no step
    model.train()
    model.forward(x)
    assert not np.array_equal(sn.u, u0)  # train: one step
    sigma = np.linalg.svd(sn._matrix(sn.W.data), compute_uv=False)[0]
    W_sn = model[0].layer.W.data
    # after 16 power steps sigma(W_sn) is near 1 (the estimate converges from below)
    assert abs(np.linalg.svd(sn._matrix(W_sn), compute_uv=False)[0] - 1.0) < 1e-3
    assert abs(float(model[0].cache[1]) - sigma) < 1e-3 * sigma


def test_buffers_in_the_state_and_restored():
    model, sn, shape = wrapped("Conv2d")
    state = model.state_dict()
    assert set(state) == {"0.W", "0.0.b", "0.u", "0.v"}
    other, sn2, _ = wrapped("Conv2d")
    sn2.u[...] = 0.0
    other.load_state_dict(state)
    np.testing.assert_array_equal(sn2.u, sn.u)
    np.testing.assert_array_equal(sn2.v, sn.v)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_parity_with_torch(kind):
    """float64, the same weights and the same u, v: outputs, dx, dW and u after each of 3 SGD steps."""
    torch = import_torch()
    model, sn, shape = wrapped(kind)
    inner = sn.layer
    if kind == "Linear":
        ref = torch.nn.Linear(5, 4).double()
        weight = sn.W.data.T
    else:
        ref = torch.nn.Conv2d(2, 3, 3, stride=1, padding=1).double()
        weight = sn.W.data
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(weight.copy()))
        ref.bias.copy_(torch.from_numpy(inner.b.data.copy()))
    ref = torch.nn.utils.parametrizations.spectral_norm(ref)  # its own u, v (and 15 power steps): ours below
    param = ref.parametrizations.weight
    sn.u[...] = param[0]._u.numpy()
    sn.v[...] = param[0]._v.numpy()
    rng = np.random.default_rng(3)
    lr = 0.1
    for step in range(3):
        x = rng.standard_normal(shape)
        xt = torch.tensor(x, requires_grad=True)
        yt = ref(xt)
        dy = rng.standard_normal(tuple(yt.shape))
        (yt * torch.from_numpy(dy)).sum().backward()
        model.zero_grad()
        y = model.forward(x)
        dx = model.backward(dy)
        dW_ref = param.original.grad.numpy()
        dW_ref = dW_ref.T if kind == "Linear" else dW_ref
        for name, ours, theirs in (("y", y, yt.detach().numpy()), ("dx", dx, xt.grad.numpy()),
                                   ("dW", sn.W.grad, dW_ref), ("db", inner.b.grad, ref.bias.grad.numpy()),
                                   ("u", sn.u, param[0]._u.numpy()), ("v", sn.v, param[0]._v.numpy())):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12, err_msg=f"{name}, step {step}")  # float64
        with torch.no_grad():  # an SGD step on both, so the power iteration follows moving weights
            param.original -= lr * param.original.grad
            ref.bias -= lr * ref.bias.grad
        param.original.grad = None
        ref.bias.grad = None
        sn.W.data[...] -= lr * sn.W.grad
        inner.b.data[...] -= lr * inner.b.grad
    model.eval(), ref.eval()  # eval: both use the stored u, v without a power step
    x = rng.standard_normal(shape)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-10, atol=1e-12)  # float64
    np.testing.assert_allclose(sn.u, param[0]._u.numpy(), rtol=1e-10, atol=1e-12)  # float64


def test_apply_to_the_discriminators_keeps_the_flat_store():
    D = models.mlp_discriminator(in_dim=12, hidden=(8, 6), seed=0, dtype="float64").to("numpy", "float64")
    store, names = D.flat_store(), [n for n, _ in D.named_parameters()]
    assert apply_spectral_norm(D, seed=0) == 3
    assert D.flat_store() is store  # the same Parameters in the same order: the optimizer's store stays
    assert [n.split(".")[-1] for n, _ in D.named_parameters()] == [n.split(".")[-1] for n in names]
    C = models.dcgan_discriminator(image_size=28, channels=1, width=4, dtype="float64").to("numpy", "float64")
    assert apply_spectral_norm(C) == 3
    out = C.forward(make_input((2, 1, 28, 28)))
    C.backward(np.ones_like(out) * 0.5)
    assert np.isfinite(C.flat_store().grad).all() and np.abs(C.flat_store().grad).sum() > 0


def test_gradient_penalty_refuses_spectral_norm_with_the_reason():
    D = models.mlp_discriminator(in_dim=12, hidden=(8,), seed=0, dtype="float64").to("numpy", "float64")
    apply_spectral_norm(D)
    with pytest.raises(UnsupportedCritic, match="sigma"):
        GradientPenalty(D, 10.0)


def test_gan_step_with_spectral_norm_float32():
    from scratchgan.cli import train as train_command
    config = dict(train_command.MLP_DEFAULTS, image_size=16, batch_size=4, g_hidden="8", d_hidden="8,6", latent_dim=3,
                  spectral_norm=True, batchnorm=False)
    step = models.build_step(config, np)
    assert sum(isinstance(m, nn.SpectralNorm) for m in step.D.modules()) == 3
    real = make_input((4, 16), "float32").clip(-1, 1)
    for _ in range(2):
        stats = step.step([real])
    assert all(np.isfinite(float(v)) for v in stats.values())
    assert all(m.u.dtype == np.float32 for m in step.D.modules() if isinstance(m, nn.SpectralNorm))
    assert step.D.flat_store().data.dtype == np.float32


def sn_factory(kind):
    def factory(dtype):
        layer = (nn.Linear(5, 4, seed=0, dtype=dtype) if kind == "Linear"
                 else nn.Conv2d(2, 3, 3, stride=1, padding=1, seed=0, dtype=dtype))
        return nn.Sequential(SpectralNorm(layer, seed=1))
    return factory


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_contract(kind, dtype):
    layer = build_layer(sn_factory(kind), dtype, "train")
    check_contract(layer, CASES[kind][1], dtype)
    with pytest.raises(RuntimeError, match="without a forward"):
        layer.backward(random_like((6, 4) if kind == "Linear" else (2, 3, 4, 4), dtype))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_on_the_fake_device_equals_numpy(kind, mode):
    """CuPy's rules on the CPU: no NumPy call on device arrays; the same numbers, u and v included."""
    check_layer_on_fake_device(sn_factory(kind), CASES[kind][1], mode, "float32", steps=3)


def test_conditional_discriminator_with_spectral_norm():
    from scratchgan.cli import train as train_command
    config = dict(train_command.MLP_DEFAULTS, image_size=16, batch_size=4, g_hidden="8", d_hidden="8", latent_dim=3,
                  spectral_norm=True, conditional=True, num_classes=3, embedding_dim=2, batchnorm=False)
    step = models.build_step(config, np)
    assert sum(isinstance(m, nn.SpectralNorm) for m in step.D.modules()) == 2
    real = make_input((4, 16), "float32").clip(-1, 1)
    stats = step.step([(real, np.arange(4) % 3)])
    assert all(np.isfinite(float(v)) for v in stats.values())
