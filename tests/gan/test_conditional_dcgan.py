"""The conditional DCGAN: G(z, y) with the label's code joined to z (nn.Conditional around the DCGAN
generator), D(x, y) the projection discriminator (nn.ProjectionDiscriminator). Its shapes, the whole D
step and G step through D by the directional check (float64), the GANStep on it, and what the checkpoint
schema counts of its weights."""
import numpy as np
import pytest

from layer_cases import record_error
from scratchgan import gradcheck, losses, nn, optim
from scratchgan.errors import SettingError
from scratchgan.gan import checkpoint_schema, models
from scratchgan.gan.objectives import BCEObjective
from scratchgan.gan.step import GANStep, NoiseSource

TOL = 1e-7
TABLE = "directional check: relative error |grad.u - finite difference| / (|grad.u| + |fd|) (float64)"
LATENT, K = 4, 3


def _pair(embedding_dim=0, dtype="float64"):
    G = models.dcgan_generator(LATENT, 28, 1, width=2, seed=0, dtype=dtype, num_classes=K,
                               embedding_dim=embedding_dim).to("numpy", dtype)
    D = models.dcgan_discriminator(28, 1, width=2, seed=1, dtype=dtype, num_classes=K).to("numpy", dtype)
    return G, D


def test_shapes_and_names():
    G, D = _pair(embedding_dim=5, dtype="float32")
    assert isinstance(G, nn.Conditional) and isinstance(D, nn.ProjectionDiscriminator)
    assert G.num_classes == D.num_classes == K
    first = next(m for m in G.net if isinstance(m, nn.ConvTranspose2d))
    assert first.W.shape == (LATENT + 5, 4, 7, 7)  # z and the label's 5-d code, 7 x 7 at 28 px
    assert D.head.W.shape == (2 * 2 * 7 * 7, 1) and D.head.V.shape == (K, 4 * 7 * 7)  # phi: the 7 x 7 map
    z, y = np.zeros((6, LATENT), np.float32), np.array([0, 1, 2, 0, 1, 2])
    x = G.forward(z, y)
    assert x.shape == (6, 1, 28, 28) and D.forward(x, y).shape == (6, 1)


def test_probs_output_is_refused_with_the_reason():
    config = {"dtype": "float32", "conditional": True, "num_classes": 3, "loss_on": "probs", "latent_dim": 4,
              "resolution": 28, "channels": 1, "g_width": 2, "d_width": 2, "seed": 0}
    with pytest.raises(SettingError, match="projection discriminator"):
        models.build_dcgan(config, np)


def _randomize_batchnorm(*nets):
    rng = np.random.default_rng(9)
    for net in nets:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.gamma.data[...] = rng.uniform(0.5, 1.5, m.num_features)
                m.beta.data[...] = rng.normal(0.0, 0.3, m.num_features)


@pytest.mark.parametrize("embedding_dim", [0, 3], ids=["one-hot", "embedding"])
def test_d_step_and_g_step_by_the_directional_check(embedding_dim):
    """L_D = bce(D(x, y), 1) + bce(D(G(z, y), y), 0) over D's store; L_G = bce(D(G(z, y), y), 1) over G's
    store (the label embedding included) and over D's, in train mode (BatchNorm on batch statistics)."""
    G, D = _pair(embedding_dim)
    _randomize_batchnorm(G, D)
    rng = np.random.default_rng(4)
    z, x = rng.standard_normal((5, LATENT)), np.tanh(rng.standard_normal((5, 1, 28, 28)))
    y = np.array([2, 0, 1, 2, 2])

    def d_loss():
        D.zero_grad()
        fake = G.forward(z, y)
        for m in G.modules():
            m.cache = None  # a constant in the D step
        loss_real, d_real = losses.bce_with_logits(D.forward(x, y), 1.0)
        D.backward(d_real, need_dx=False)
        loss_fake, d_fake = losses.bce_with_logits(D.forward(fake, y), 0.0)
        D.backward(d_fake, need_dx=False)
        return float(loss_real + loss_fake)

    def g_loss():
        G.zero_grad()
        D.zero_grad()
        loss, dout = losses.bce_with_logits(D.forward(G.forward(z, y), y), 1.0)
        G.backward(D.backward(dout), need_dx=False)
        return float(loss)

    name = f"conditional DCGAN ({'embedding' if embedding_dim else 'one-hot'})"
    for what, loss, store in (("D step, over D", d_loss, D.flat_store()), ("G step, over G", g_loss, G.flat_store()),
                              ("G step, over D", g_loss, D.flat_store())):
        analytic, numeric, rel = gradcheck.directional_check(loss, store, seed=1, h=1e-6)
        record_error(TABLE, name, what, "u seed 1", rel)
        assert abs(analytic) > 1e-8, f"{what}: directional derivative {analytic} too small to check"
        assert rel < TOL, f"{what}: analytic {analytic!r}, numeric {numeric!r}, rel {rel:.2e}"


def test_the_gan_step_trains_the_pair_on_labelled_batches():
    G, D = _pair(embedding_dim=0, dtype="float32")
    step = GANStep(G, D, optim.Adam(G.parameters()), optim.Adam(D.parameters()), BCEObjective(), LATENT,
                   NoiseSource(np, 6, LATENT, 0, "float32"))
    assert step.conditional
    V = D.head.V.data.copy()
    real = np.tanh(np.random.default_rng(0).standard_normal((6, 1, 28, 28))).astype(np.float32)
    stats = step.step([(real, np.array([0, 0, 1, 1, 1, 1]))])
    assert np.isfinite(float(stats["loss_D"])) and np.isfinite(float(stats["loss_G"]))
    moved = np.any(D.head.V.data != V, axis=1)
    assert moved[:2].all() and not moved[2], "only the rows of the labels in the batch move"
    with pytest.raises(ValueError, match="both G and D conditional"):
        GANStep(G, models.dcgan_discriminator(28, 1, width=2).to("numpy"), optim.Adam(G.parameters()),
                optim.Adam(D.parameters()), BCEObjective(), LATENT, NoiseSource(np, 6, LATENT, 0, "float32"))


@pytest.mark.parametrize("embedding_dim", [0, 6])
def test_the_schema_counts_the_new_weights(embedding_dim):
    config = {"arch": "dcgan", "latent_dim": LATENT, "resolution": 28, "channels": 1, "g_width": 2, "d_width": 2,
              "conditional": True, "num_classes": K, "embedding_dim": embedding_dim}
    G, D = _pair(embedding_dim, dtype="float32")
    for net, name in ((G, "G"), (D, "D")):
        counted = checkpoint_schema.network_weights(config, name)
        held = net.num_parameters()
        assert counted <= held <= counted + 64, f"{name}: schema {counted}, network {held}"  # + BatchNorm, b


def test_the_penalties_refuse_a_projection_critic_in_one_line_naming_the_layer():
    from scratchgan.gan.gradient_penalty import R1Penalty, UnsupportedCritic
    _, D = _pair(dtype="float32")
    with pytest.raises(UnsupportedCritic, match=r"layer 0\.0 is Conv2d\(1, 2") as e:
        R1Penalty(D, 1.0)
    assert "\n" not in str(e.value)
    linear = nn.ProjectionDiscriminator(nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(0.2)), 3, K)
    with pytest.raises(UnsupportedCritic, match=r"layer 1 is Projection\(3, 3\)"):
        R1Penalty(linear, 1.0)  # the head has no second-order pass


def test_the_schema_checks_the_class_names():
    from scratchgan.checkpoint import CheckpointError
    good = {"config": {"num_classes": 2, "class_names": ["cat", "dog"]}}
    assert checkpoint_schema.check_meta("run.npz", good) is good
    for names, match in ((["cat"], "2 names, one per class"), (["cat", 7], r"config.class_names\[1\] is 7"),
                         ("cat,dog", "a list of at most")):
        with pytest.raises(CheckpointError, match=match):
            checkpoint_schema.check_meta("run.npz", {"config": {"num_classes": 2, "class_names": names}})
