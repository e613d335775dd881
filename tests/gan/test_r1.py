"""The R1 penalty (gradient_penalty.R1Penalty): (gamma/2) mean ||grad_x D(x)||^2 on real images, through the
WGAN-GP penalty's second-order backward. Its parameter gradients against central differences of the penalty
in float64 (plain, with Dropout, conditional), against PyTorch's double backward, in the GAN step's D loss,
and the critics it refuses with the reason.
"""
from __future__ import annotations

import numpy as np
import pytest
from fake_device import xp as fake_xp
from layer_cases import make_input, record_error

from scratchgan import nn
from scratchgan.cli import train as train_command
from scratchgan.gan import models
from scratchgan.gan.gradient_penalty import R1Penalty, UnsupportedCritic, r1_of_gradients
from scratchgan.gradcheck import numerical_gradient, relative_error

TABLE = "R1 penalty: analytic vs central differences (relative error)"
N, D_IN = 6, 5


def critic(dropout=0.0, seed=0, d_in=D_IN):
    layers = [nn.Linear(d_in, 7, seed=seed), nn.LeakyReLU(0.2)]
    if dropout:
        layers.append(nn.Dropout(dropout, seed=3))
    layers += [nn.Linear(7, 4, seed=seed + 1), nn.ReLU(), nn.Linear(4, 1, seed=seed + 2)]
    return nn.Sequential(*layers).to("numpy", "float64")


def reseed(D):
    for m in D.modules():
        if isinstance(m, nn.Dropout):
            m.reseed(11)


def check(D, x, labels=None, gamma=10.0, name="critic"):
    r1 = R1Penalty(D, gamma)

    def penalty():
        reseed(D)  # one fixed function: the same Dropout mask at every evaluation
        return r1(x, labels)[0]

    D.zero_grad()
    P = penalty()
    assert P.ndim == 0 and float(P) > 0
    analytic = {n: p.grad.copy() for n, p in D.named_parameters()}
    for pname, p in D.named_parameters():
        err = relative_error(analytic[pname], numerical_gradient(penalty, p.data))
        record_error(TABLE, f"R1 {name}", pname, "float64", err)
        assert err < 1e-7, (pname, err)
    assert any(np.abs(g).sum() > 0 for n, g in analytic.items() if n.endswith("W"))


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_penalty_gradient_against_central_differences(dropout):
    check(critic(dropout), make_input((N, D_IN)), name=f"dropout {dropout}")


@pytest.mark.parametrize("embedding_dim", [0, 3])
def test_penalty_gradient_of_a_conditional_critic(embedding_dim):
    net = critic(d_in=D_IN + (embedding_dim or 4))
    D = nn.Conditional(net, 4, embedding_dim, seed=8).to("numpy", "float64")
    check(D, make_input((N, D_IN)), labels=np.arange(N) % 4, name=f"conditional ({embedding_dim})")


def test_of_gradients_is_the_formula():
    g = make_input((4, 3))
    P, dg, norms = r1_of_gradients(g, 3.0)
    assert abs(float(P) - 1.5 * (g ** 2).sum(axis=1).mean()) <= 1e-15 * float(P)  # float64
    np.testing.assert_allclose(dg, g * 3.0 / 4, rtol=1e-15)
    np.testing.assert_allclose(norms, np.linalg.norm(g, axis=1), rtol=1e-15)


def test_parity_with_torch_double_backward(torch):
    """P and dP/dtheta against torch.autograd.grad(create_graph=True), float64."""
    D = critic(seed=12)
    x = make_input((8, D_IN), seed=5)
    gamma = 5.0
    D.zero_grad()
    P, mean_norm = R1Penalty(D, gamma)(x)
    t_layers = []
    for m in D:
        if isinstance(m, nn.Linear):
            t = torch.nn.Linear(m.in_features, m.out_features).double()
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(m.W.data.T.copy()))
                t.bias.copy_(torch.from_numpy(m.b.data.copy()))
            t_layers.append(t)
        elif isinstance(m, nn.LeakyReLU):
            t_layers.append(torch.nn.LeakyReLU(m.negative_slope))
        else:
            t_layers.append(torch.nn.ReLU())
    x_t = torch.from_numpy(x).requires_grad_(True)
    g, = torch.autograd.grad(torch.nn.Sequential(*t_layers)(x_t).sum(), x_t, create_graph=True)
    P_t = gamma / 2 * (g ** 2).sum(dim=1).mean()
    P_t.backward()
    assert abs(float(P) - P_t.item()) <= 1e-10 * abs(P_t.item())
    assert abs(float(mean_norm) - g.norm(dim=1).mean().item()) <= 1e-10 * float(mean_norm)
    linears = [m for m in D if isinstance(m, nn.Linear)]
    for i, (m, t) in enumerate(zip(linears, [t for t in t_layers if isinstance(t, torch.nn.Linear)])):
        want = t.weight.grad.numpy().T
        err = relative_error(m.W.grad, want)
        record_error("PyTorch parity (relative error)", "R1 penalty", f"W{i}", "float64", err)
        assert err < 1e-10, (i, err)
        want_b = t.bias.grad.numpy() if t.bias.grad is not None else np.zeros_like(m.b.grad)
        assert np.all(want_b == 0) and np.all(m.b.grad == 0)


def test_on_the_fake_device_equals_numpy():
    host, dev = critic(seed=13), critic(seed=13).to(backend=fake_xp)
    x = make_input((N, D_IN), seed=2)
    P, r = R1Penalty(host)(x)
    P_dev, r_dev = R1Penalty(dev)(fake_xp.asarray(x))
    assert float(P_dev) == float(P) and float(r_dev) == float(r)
    for p, p_dev in zip(host.parameters(), dev.parameters()):
        np.testing.assert_array_equal(p_dev.grad.get(), p.grad)


@pytest.mark.parametrize("build, reason", [
    (lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)), "BatchNorm couples"),
    (lambda: nn.Sequential(nn.Linear(4, 1), nn.Sigmoid()), "Sigmoid bounds"),
    (lambda: models.dcgan_discriminator(28, 1, width=2), "layers only"),
    (lambda: nn.Sequential(nn.SpectralNorm(nn.Linear(4, 1))), "sigma"),
])
def test_refuses_critics_it_cannot_handle_with_the_reason(build, reason):
    with pytest.raises(UnsupportedCritic, match="the R1 penalty cannot use this critic") as info:
        R1Penalty(build())
    assert reason in str(info.value)


def test_in_the_gan_step_the_penalty_joins_d_loss():
    """The D update of a step with R1 equals the one without plus the penalty's own gradient."""
    config = dict(train_command.MLP_DEFAULTS, image_size=16, batch_size=4, g_hidden="8", d_hidden="8,6", latent_dim=3,
                  batchnorm=False, dtype="float64")
    real = make_input((4, 16)).clip(-1, 1)
    plain, with_r1 = models.build_step(config, np), models.build_step(dict(config, r1=2.0), np)
    plain.opt_D.step = with_r1.opt_D.step = lambda: None  # look at the gradients of one D step
    _, stats_plain = plain.d_step(real)
    _, stats = with_r1.d_step(real)
    extra = models.build_step(config, np).D
    extra.zero_grad()
    P, norm = R1Penalty(extra, 2.0)(real)
    np.testing.assert_allclose(with_r1.opt_D.store.grad, plain.opt_D.store.grad + extra.flat_store().grad,
                               rtol=1e-12, atol=1e-14)  # float64
    assert float(stats["r1"]) == float(P) and float(stats["grad_norm_x"]) == float(norm)
    assert abs(float(stats["loss_D"]) - float(stats_plain["loss_D"]) - float(P)) <= 1e-12 * float(stats["loss_D"])
