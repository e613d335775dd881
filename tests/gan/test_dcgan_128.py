"""The 128x128 DCGAN (--image-size 128): one more doubling stage than the tutorial's 64x64 network.

Shapes stage by stage, and a float64 directional gradient check of the generator step (G through D,
non-saturating BCE) over both flat stores at a tiny width, BatchNorm in train mode.
"""
import numpy as np
from layer_cases import record_error

from scratchgan import gradcheck, losses, nn
from scratchgan.gan import models

TOL = 1e-7
TABLE = "directional check: relative error |grad.u - finite difference| / (|grad.u| + |fd|) (float64)"


def test_128_is_offered_and_planned_with_one_more_stage():
    assert 128 in models.DCGAN_SIZES
    first_kernel, widths = models._dcgan_plan(128, 2)
    assert first_kernel == 4 and widths == [32, 16, 8, 4, 2]  # 16w ... w: the 64x64 plan's 8w ... w plus one


def test_128_shapes_stage_by_stage():
    G = models.dcgan_generator(latent_dim=8, image_size=128, channels=3, width=1, seed=0).to("numpy", "float32")
    D = models.dcgan_discriminator(image_size=128, channels=3, width=1, seed=1).to("numpy", "float32")
    z = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    sizes, x = [], z
    for layer in G:
        x = layer.forward(x)
        if isinstance(layer, nn.ConvTranspose2d):
            sizes.append(x.shape[-1])
    assert sizes == [4, 8, 16, 32, 64, 128]
    assert x.shape == (2, 3, 128, 128) and x.dtype == np.float32 and np.abs(x).max() <= 1.0
    sizes, y = [], x
    for layer in D:
        y = layer.forward(y)
        if isinstance(layer, nn.Conv2d):
            sizes.append(y.shape[-1])
    assert sizes == [64, 32, 16, 8, 4, 1]
    assert y.shape == (2, 1) and y.dtype == np.float32


def test_128_gradient_flows_through_g_and_d_float64():
    G = models.dcgan_generator(latent_dim=4, image_size=128, channels=1, width=1, seed=3, dtype="float64")
    D = models.dcgan_discriminator(image_size=128, channels=1, width=1, seed=4, dtype="float64")
    G, D = G.to("numpy", "float64"), D.to("numpy", "float64")
    z = np.random.default_rng(5).standard_normal((2, 4))

    def loss_and_backward():
        G.zero_grad()
        D.zero_grad()
        loss, dlogits = losses.bce_with_logits(D.forward(G.forward(z)), 1.0)
        G.backward(D.backward(dlogits))
        return loss

    for name, store in (("G store", G.flat_store()), ("D store", D.flat_store())):
        # h = 1e-6, not the default 1e-5: with ~40k ReLU/LeakyReLU units at 128x128, a step of 1e-5 along u
        # moves some pre-activation across 0 (a kink), which the central difference cannot see through
        analytic, numeric, rel = gradcheck.directional_check(loss_and_backward, store, seed=7, h=1e-6)
        record_error(TABLE, "DCGAN 128 G through D", name, "u seed 7", rel)
        assert abs(analytic) > 1e-8, f"{name}: directional derivative {analytic} too small to check"
        assert rel < TOL, f"{name}: analytic {analytic!r}, numeric {numeric!r}, rel {rel:.2e}"
    # every parameter of the first stage (the 1x1 -> 4x4 ConvTranspose2d) receives a gradient
    first = next(m for m in G if isinstance(m, nn.ConvTranspose2d))
    assert np.count_nonzero(first.W.grad) == first.W.grad.size
