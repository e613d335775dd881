"""WGAN-GP's gradient penalty: its hand-written second-order backward against finite differences of
the penalty itself (every critic parameter, the inputs x and G(z)), against PyTorch's double
backward (torch.autograd.grad with create_graph=True), inside the whole critic loss, on the fake
device, and the refusal of critics it does not cover.
"""
from __future__ import annotations

import numpy as np
import pytest
from fake_device import xp as fake_xp
from layer_cases import record_error

from scratchgan import nn
from scratchgan.gan.gradient_penalty import GradientPenalty, UnsupportedCritic, critic_layers, penalty_of_gradients
from scratchgan.gan.objectives import WGANGPObjective
from scratchgan.gradcheck import directional_check, numerical_gradient, relative_error

TABLE = "WGAN-GP penalty: analytic vs central differences (relative error)"
TOL = 1e-7
N, D_IN = 6, 5


def mlp_critic(kind="leaky", dropout=0.0, seed=0):
    """A small Linear/activation critic (N, 5) -> (N, 1), float64."""
    act = {"leaky": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU}[kind]
    layers = [nn.Linear(D_IN, 7, seed=seed), act()]
    if dropout:
        layers.append(nn.Dropout(dropout, seed=3))
    layers += [nn.Linear(7, 4, seed=seed + 1), act(), nn.Linear(4, 1, seed=seed + 2)]
    return nn.Sequential(*layers).to("numpy", "float64")


def data(seed=0, shape=(N, D_IN)):
    rng = np.random.default_rng((seed, 0x6B))
    real, fake = rng.standard_normal(shape), rng.standard_normal(shape)
    alpha = rng.uniform(size=(shape[0],) + (1,) * (len(shape) - 1))
    return real, fake, alpha


def reseed_dropout(D):
    for m in D.modules():
        if isinstance(m, nn.Dropout):
            m.reseed(11)


def check_penalty_gradients(D, real, fake, alpha, labels=None, name="critic", lam=10.0):
    """The penalty's dP/dtheta for every parameter, and dP/dx, dP/dG(z), against central differences."""
    gp = GradientPenalty(D, lam)

    def penalty():
        reseed_dropout(D)  # one fixed function: the same Dropout mask at every evaluation
        return gp(alpha * real + (1.0 - alpha) * fake, labels)[0]

    D.zero_grad()
    P = penalty()
    assert P.ndim == 0 and float(P) > 0
    analytic = {n: p.grad.copy() for n, p in D.named_parameters()}
    for pname, p in D.named_parameters():
        numeric = numerical_gradient(penalty, p.data)
        err = relative_error(analytic[pname], numeric)
        record_error(TABLE, name, pname, "train", err)
        assert err < TOL, f"{name} {pname}: relative error {err:.2e}"
        if pname.endswith(".b") or "embedding" in pname or (pname == "0.W" and labels is not None
                                                            and D.embedding is not None):
            # biases and the label embedding move only the activation masks: dP/d. = 0 exactly
            assert not np.any(numeric) and not np.any(analytic[pname]), pname
    for arr, what in ((real, "x"), (fake, "G(z)")):
        numeric = numerical_gradient(penalty, arr)
        # g depends on the input only through the masks (piecewise constant): P does not move at all
        assert not np.any(numeric), f"dP/d{what} should be exactly 0, got max {np.abs(numeric).max():.2e}"
        record_error(TABLE, name, f"d{what}", "train", 0.0)


@pytest.mark.parametrize("kind", ["leaky", "relu"])
def test_penalty_gradient_matches_finite_differences(kind):
    real, fake, alpha = data(1)
    check_penalty_gradients(mlp_critic(kind), real, fake, alpha, name=f"MLP critic ({kind})")


def test_penalty_gradient_with_dropout_and_flatten():
    D = nn.Sequential(nn.Flatten(), nn.Linear(12, 6, seed=4), nn.LeakyReLU(0.2), nn.Dropout(0.3, seed=3),
                      nn.Linear(6, 1, seed=5)).to("numpy", "float64")
    real, fake, alpha = data(2, shape=(4, 3, 2, 2))
    check_penalty_gradients(D, real, fake, alpha, name="Flatten/Dropout critic")


@pytest.mark.parametrize("embedding_dim", [0, 3], ids=["one-hot", "embedding"])
def test_penalty_gradient_of_a_conditional_critic(embedding_dim):
    net = nn.Sequential(nn.Linear(D_IN + (embedding_dim or 4), 6, seed=6), nn.LeakyReLU(0.2), nn.Linear(6, 1, seed=7))
    D = nn.Conditional(net, 4, embedding_dim, seed=8).to("numpy", "float64")
    real, fake, alpha = data(3)
    labels = np.array([0, 3, 1, 1, 2, 0])
    check_penalty_gradients(D, real, fake, alpha, labels=labels, name=f"conditional critic ({embedding_dim})")


def test_penalty_of_gradients_is_the_formula():
    rng = np.random.default_rng(5)
    g = rng.standard_normal((5, 3))
    P, dg, r = penalty_of_gradients(g, 10.0, 1e-12)
    r_ref = np.sqrt((g ** 2).sum(1) + 1e-12)
    assert np.allclose(r, r_ref) and np.isclose(float(P), 10.0 * np.mean((r_ref - 1) ** 2))
    numeric = numerical_gradient(lambda: penalty_of_gradients(g, 10.0, 1e-12)[0], g)
    assert relative_error(dg, numeric) < TOL
    # at g = 0 the epsilon keeps the norm's derivative finite
    P0, dg0, _ = penalty_of_gradients(np.zeros((2, 3)), 10.0, 1e-12)
    assert np.isfinite(float(P0)) and np.all(dg0 == 0)


def test_whole_critic_loss_with_penalty_directional():
    """L_D = -mean D(x) + mean D(G(z)) + P(xhat): the WGAN-GP objective plus the penalty, over D's store."""
    D = mlp_critic("leaky", seed=9)
    obj = WGANGPObjective(10.0)
    gp = GradientPenalty(D, obj.gp_lambda)
    real, fake, alpha = data(4)
    xhat = alpha * real + (1.0 - alpha) * fake

    def loss_and_backward():
        D.zero_grad()
        loss_real, dout = obj.d_real(D.forward(real))
        D.backward(dout)
        loss_fake, dout = obj.d_fake(D.forward(fake))
        D.backward(dout)
        P, _ = gp(xhat)
        return float(loss_real + loss_fake + P)

    store = D.flat_store()
    for seed in range(3):
        a, n, _ = directional_check(loss_and_backward, store, seed=seed, h=1e-5)
        # relative to the whole gradient's norm: a random direction may be nearly orthogonal to it,
        # and then |a| + |n| is small while the O(h^2) truncation error is not
        err = abs(a - n) / np.linalg.norm(store.grad)
        record_error(TABLE, "critic loss + penalty", f"direction {seed}", "train", err)
        assert err < TOL, (a, n, err)


def test_parity_with_torch_double_backward(torch):
    """P and dP/dtheta against torch.autograd.grad(create_graph=True) on a float64 MLP critic."""
    D = mlp_critic("leaky", seed=12)
    real, fake, alpha = data(5, shape=(8, D_IN))
    lam, eps = 10.0, 1e-12
    D.zero_grad()
    P, mean_norm = GradientPenalty(D, lam, eps)(alpha * real + (1.0 - alpha) * fake)

    linears = [m for m in D if isinstance(m, nn.Linear)]
    t_layers = []
    for m in D:
        if isinstance(m, nn.Linear):
            t = torch.nn.Linear(m.in_features, m.out_features).double()
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(m.W.data.T.copy()))
                t.bias.copy_(torch.from_numpy(m.b.data.copy()))
            t_layers.append(t)
        else:
            t_layers.append(torch.nn.LeakyReLU(m.negative_slope))
    t_D = torch.nn.Sequential(*t_layers)
    x_t, f_t, a_t = (torch.from_numpy(v) for v in (real, fake, alpha))
    xhat = (a_t * x_t + (1 - a_t) * f_t).requires_grad_(True)
    g, = torch.autograd.grad(t_D(xhat).sum(), xhat, create_graph=True)
    norm = torch.sqrt((g ** 2).sum(dim=1) + eps)
    P_t = lam * ((norm - 1) ** 2).mean()
    P_t.backward()

    assert abs(float(P) - P_t.item()) <= 1e-9 * abs(P_t.item())
    assert abs(float(mean_norm) - norm.mean().item()) <= 1e-9 * norm.mean().item()
    t_linears = [t for t in t_layers if isinstance(t, torch.nn.Linear)]
    for i, (m, t) in enumerate(zip(linears, t_linears)):
        want_W = t.weight.grad.numpy().T
        np.testing.assert_allclose(m.W.grad, want_W, rtol=1e-9, atol=1e-12 * np.abs(want_W).max())
        assert relative_error(m.W.grad, want_W) < 1e-9
        want_b = t.bias.grad.numpy() if t.bias.grad is not None else np.zeros_like(m.b.grad)
        assert np.all(want_b == 0) and np.all(m.b.grad == 0), f"layer {i}: the bias gradient is 0 in both"
        record_error("PyTorch parity (relative error)", "WGAN-GP penalty", f"W{i}", "float64",
                     relative_error(m.W.grad, want_W))


def test_penalty_on_the_fake_device_equals_numpy():
    host = mlp_critic("leaky", seed=13)
    dev = mlp_critic("leaky", seed=13).to(backend=fake_xp)
    real, fake, alpha = data(6)
    xhat = alpha * real + (1.0 - alpha) * fake
    host.zero_grad()
    dev.zero_grad()
    P, r = GradientPenalty(host)(xhat)
    P_dev, r_dev = GradientPenalty(dev)(fake_xp.asarray(xhat))
    assert float(P_dev) == float(P) and float(r_dev) == float(r)
    for p, p_dev in zip(host.parameters(), dev.parameters()):
        np.testing.assert_array_equal(p_dev.grad.get(), p.grad)


def test_float32_stays_float32():
    D = mlp_critic("leaky").to(dtype="float32")
    real, fake, alpha = (a.astype(np.float32) for a in data(7))
    P, r = GradientPenalty(D)(alpha * real + (1 - alpha) * fake)
    assert P.dtype == np.float32 and r.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in D.parameters())


def test_frozen_critic_gets_no_gradient():
    D = mlp_critic("leaky")
    D.zero_grad()
    D.requires_grad_(False)
    real, fake, alpha = data(8)
    GradientPenalty(D)(alpha * real + (1 - alpha) * fake)
    assert not np.any(D.flat_store().grad)


# ---------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("layers, where, why", [
    (lambda: [nn.Linear(5, 4), nn.BatchNorm1d(4), nn.LeakyReLU(0.2), nn.Linear(4, 1)], "layer 1 is BatchNorm1d",
     "couples the samples"),
    (lambda: [nn.Linear(5, 4), nn.LeakyReLU(0.2), nn.Linear(4, 1), nn.Sigmoid()], "layer 3 is Sigmoid()",
     "unbounded scores"),
    (lambda: [nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)], "layer 1 is Tanh()", "second derivative"),
    (lambda: [nn.Reshape(1, 5, 1), nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(10, 1)], "layer 1 is Conv2d",
     "Linear, LeakyReLU, ReLU, Dropout, Flatten and Reshape layers only"),
], ids=["BatchNorm1d", "Sigmoid", "Tanh", "Conv2d"])
def test_unsupported_critics_are_refused_naming_layer_and_reason(layers, where, why):
    D = nn.Sequential(*layers())
    with pytest.raises(UnsupportedCritic) as e:
        GradientPenalty(D)
    message = str(e.value)
    assert where in message and why in message, message
    assert isinstance(e.value, ValueError)  # the CLI turns it into one line on stderr


def test_batchnorm_critic_is_refused_by_the_step():
    from scratchgan import optim
    from scratchgan.gan.step import GANStep, NoiseSource
    G = nn.Sequential(nn.Linear(3, 5), nn.Tanh()).to("numpy")
    D = nn.Sequential(nn.Linear(5, 4), nn.LeakyReLU(0.2), nn.BatchNorm1d(4), nn.Linear(4, 1)).to("numpy")
    with pytest.raises(UnsupportedCritic, match="layer 2 is BatchNorm1d"):
        GANStep(G, D, optim.Adam(G.parameters()), optim.Adam(D.parameters()), WGANGPObjective(), 3,
                NoiseSource(np, 4, 3, 0, "float32"))


def test_critic_layers_unwraps_nested_sequentials_and_conditional():
    inner = nn.Sequential(nn.Linear(6, 3), nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(3, 1)))
    cond, layers = critic_layers(nn.Conditional(inner, 2))
    assert cond is not None and [type(m).__name__ for m in layers] == ["Linear", "LeakyReLU", "Linear"]
