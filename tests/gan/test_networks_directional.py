"""Whole networks, float64: grad . u against (L(theta + h u) - L(theta - h u)) / 2h for random unit u.

Small MLPs built directly from scratchgan.nn: a generator G (Linear / LeakyReLU / BatchNorm1d,
Tanh out), a discriminator D (Linear / LeakyReLU, logits out), and the GAN's generator step,
G through D with the non-saturating loss bce_with_logits(D(G(z)), 1), checked over G's flat store
and over D's (the gradient D's store receives from that loss).
"""
import numpy as np
import pytest

from layer_cases import make_input, random_like, record_error
from scratchgan import gradcheck, losses, nn

TOL = 1e-7
TABLE = "directional check: relative error |grad.u - finite difference| / (|grad.u| + |fd|) (float64)"
Z_DIM, HIDDEN, X_DIM, N = 4, 12, 6, 8


def _linear(d_in, d_out, seed):
    return nn.Linear(d_in, d_out, seed=seed, dtype="float64")


def generator(seed=0):
    """4 Linear layers: z (N, Z_DIM) -> x (N, X_DIM) in (-1, 1)."""
    return nn.Sequential(
        _linear(Z_DIM, HIDDEN, seed + 1), nn.LeakyReLU(0.2), nn.BatchNorm1d(HIDDEN, dtype="float64"),
        _linear(HIDDEN, HIDDEN, seed + 2), nn.LeakyReLU(0.2), nn.BatchNorm1d(HIDDEN, dtype="float64"),
        _linear(HIDDEN, HIDDEN, seed + 3), nn.LeakyReLU(0.2),
        _linear(HIDDEN, X_DIM, seed + 4), nn.Tanh(),
    ).to(dtype="float64")


def discriminator(seed=0):
    """4 Linear layers: x (N, X_DIM) -> logits (N, 1)."""
    return nn.Sequential(
        _linear(X_DIM, HIDDEN, seed + 11), nn.LeakyReLU(0.2),
        _linear(HIDDEN, HIDDEN, seed + 12), nn.LeakyReLU(0.2),
        _linear(HIDDEN, HIDDEN, seed + 13), nn.LeakyReLU(0.2),
        _linear(HIDDEN, 1, seed + 14),
    ).to(dtype="float64")


def _randomize_batchnorm(model, seed):
    rng = np.random.default_rng(seed)
    for m in model:
        if isinstance(m, nn.BatchNorm1d):
            m.gamma.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.beta.data[...] = rng.normal(0.0, 0.3, m.num_features)
    return model


def _check(name, store_name, loss_and_backward, store, seed):
    analytic, numeric, rel = gradcheck.directional_check(loss_and_backward, store, seed=seed)
    record_error(TABLE, name, store_name, f"u seed {seed}", rel)
    assert abs(analytic) > 1e-6, f"{name}: directional derivative {analytic} too small to check"
    assert rel < TOL, f"{name} over {store_name}: analytic {analytic!r}, numeric {numeric!r}, rel {rel:.2e}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generator_alone(seed):
    G = _randomize_batchnorm(generator(seed), seed)
    z = make_input((N, Z_DIM), seed=seed)
    w = random_like((N, X_DIM), seed=seed)  # loss = sum(G(z) * w): a random linear read-out

    def loss_and_backward():
        G.zero_grad()
        x = G.forward(z)
        G.backward(w)
        return (x * w).sum()

    _check("G alone (BatchNorm train)", "G store", loss_and_backward, G.flat_store(), seed)


def test_generator_alone_in_eval_mode():
    G = _randomize_batchnorm(generator(5), 5)
    G.forward(make_input((N, Z_DIM), seed=9))  # give the running statistics non-trivial values
    G.eval()
    z = make_input((N, Z_DIM), seed=5)
    w = random_like((N, X_DIM), seed=5)

    def loss_and_backward():
        G.zero_grad()
        x = G.forward(z)
        G.backward(w)
        return (x * w).sum()

    _check("G alone (BatchNorm eval)", "G store", loss_and_backward, G.flat_store(), 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [1.0, 0.0, 0.9])
def test_discriminator_alone(seed, target):
    D = discriminator(seed)
    x = np.tanh(make_input((N, X_DIM), seed=seed + 3))

    def loss_and_backward():
        D.zero_grad()
        loss, dlogits = losses.bce_with_logits(D.forward(x), target)
        D.backward(dlogits)
        return loss

    _check(f"D alone, t={target}", "D store", loss_and_backward, D.flat_store(), seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generator_through_discriminator(seed):
    """The generator step: L = bce_with_logits(D(G(z)), 1); check G's and D's stores."""
    G, D = _randomize_batchnorm(generator(seed), seed), discriminator(seed)
    z = make_input((N, Z_DIM), seed=seed + 7)

    def loss_and_backward():
        G.zero_grad()
        D.zero_grad()
        logits = D.forward(G.forward(z))
        loss, dlogits = losses.bce_with_logits(logits, 1.0)  # non-saturating: G wants D to say "real"
        G.backward(D.backward(dlogits))
        return loss

    _check("G through D (non-saturating)", "G store", loss_and_backward, G.flat_store(), seed)
    _check("G through D (non-saturating)", "D store", loss_and_backward, D.flat_store(), seed)


def test_directional_check_catches_a_wrong_backward(monkeypatch):
    """A LeakyReLU backward with the wrong slope fails the whole-network check."""
    from scratchgan.nn import activations

    D = discriminator(0)
    x = np.tanh(make_input((N, X_DIM), seed=3))

    def loss_and_backward():
        D.zero_grad()
        loss, dlogits = losses.bce_with_logits(D.forward(x), 1.0)
        D.backward(dlogits)
        return loss

    monkeypatch.setattr(activations, "leaky_relu_backward",
                        lambda dy, positive, slope: np.where(positive, dy, dy * slope * 1.5))
    _, _, rel = gradcheck.directional_check(loss_and_backward, D.flat_store())
    assert rel > 1e-4
