"""GAN objectives: D's loss on real and on fake scores, G's loss, each with its gradient dL/dout.

Every objective has the interface of ``BCEObjective`` (the standard one, first below):
    d_real(out), d_fake(out), g(out) -> (loss as a 0-d array, dL/dout shaped like out)
    probability(out) -> a 0-d statistic of the scores, logged under the keys
        "<score>_x", "<score>_G_z", "<score>_G_z_after"  (score "D": probability that the input is real,
        BCE only; score "C": mean raw output of the critic / discriminator, no sigmoid)
``out`` is D's raw output (N, 1); losses are means over the batch. The settings each objective's paper
trains with (optimizer, lr, betas, D steps, weight clipping) are the train command's (flags.py, ``by_loss``).
(docs/derivations/objectives.md; the gradient penalty: gradient_penalty.py, docs/derivations/wgan_gp.md)
"""
from __future__ import annotations

from .. import losses
from ..backend import array_module
from ..errors import SettingError
from ..nn.activations import sigmoid_forward

NAMES = ("bce", "wgan", "wgan-gp", "lsgan", "hinge")

class BCEObjective:
    """The standard GAN objective (Goodfellow et al. 2014) with binary cross-entropy, on D's logits
    (``losses.bce_with_logits``) or on its probabilities (``losses.bce``):

        L_D = BCE(D(x), 1) + BCE(D(G(z)), 0),   L_G = BCE(D(G(z)), 1)  (the non-saturating G loss).
    ``real_target`` < 1 is one-sided label smoothing (e.g. 0.9): only D's real labels move.
    """

    name = "bce"
    score = "D"  # stats D_x, D_G_z, D_G_z_after: probabilities (the objectives below: "C", raw scores)
    wasserstein = False

    def __init__(self, on_logits=True, real_target=1.0):
        if not 0.0 < real_target <= 1.0:
            raise ValueError(f"the real label must be in (0, 1], got {real_target}")
        self.on_logits, self.real_target = on_logits, float(real_target)
        self.loss = losses.bce_with_logits if on_logits else losses.bce

    def d_real(self, out):
        """Loss and gradient of D on a real batch: target real_target."""
        return self.loss(out, self.real_target)

    def d_fake(self, out):
        """Loss and gradient of D on a fake batch: target 0."""
        return self.loss(out, 0.0)

    def g(self, out):
        """Non-saturating generator loss: -log D(G(z)), i.e. target 1 for the fakes."""
        return self.loss(out, 1.0)

    def probability(self, out):
        """D's output as the probability 'real', for the D(x) and D(G(z)) statistics (0-d array)."""
        xp = array_module(out)
        if not self.on_logits:
            return xp.asarray(out.mean())  # NumPy's .mean() gives a scalar: keep the 0-d array
        return xp.asarray(sigmoid_forward(out)[0].mean())


def _mean(xp, a):
    return xp.asarray(a.mean())  # NumPy's .mean() gives a scalar: keep the 0-d array on the device


def _constant_grad(out, value):
    """dL/dout = value / N for every entry: the gradient of value * mean(out)."""
    xp = array_module(out)
    return xp.full(out.shape, value / out.size, dtype=out.dtype)


class WGANObjective:
    """Wasserstein GAN (Arjovsky et al. 2017). The critic C maximises mean C(x) - mean C(G(z)):

        L_D = -mean C(x) + mean C(G(z)),   L_G = -mean C(G(z)),   dL/dout = -+1/N.

    A 1-Lipschitz critic is needed for -L_D to estimate the Wasserstein-1 distance: weight clipping
    (``GANStep(clip=0.01)``) here, the gradient penalty in WGANGPObjective.
    """

    name = "wgan"
    score = "C"
    wasserstein = True  # the step logs mean C(x) - mean C(G(z)), the distance estimate
    gp_lambda = 0.0

    def d_real(self, out):
        """L = -mean(out): the critic raises its scores on real data."""
        xp = array_module(out)
        return xp.asarray(-out.mean()), _constant_grad(out, -1.0)

    def d_fake(self, out):
        """L = mean(out): the critic lowers its scores on fakes."""
        return _mean(array_module(out), out), _constant_grad(out, 1.0)

    def g(self, out):
        """L = -mean(out): the generator raises the critic's scores on its fakes."""
        xp = array_module(out)
        return xp.asarray(-out.mean()), _constant_grad(out, -1.0)

    def probability(self, out):
        """The mean critic score (a critic has no probabilities)."""
        return _mean(array_module(out), out)


class WGANGPObjective(WGANObjective):
    """WGAN-GP (Gulrajani et al. 2017): the WGAN losses plus, for the critic, the gradient penalty
    lam * mean (||grad_xhat C(xhat)|| - 1)^2 on xhat between real and fake (GANStep adds it)."""

    name = "wgan-gp"

    def __init__(self, gp_lambda=10.0):
        if not gp_lambda > 0:
            raise ValueError(f"WGAN-GP needs a positive gradient-penalty lambda, got {gp_lambda}")
        self.gp_lambda = float(gp_lambda)


class LSGANObjective:
    """Least-squares GAN (Mao et al. 2017) with targets a = 0 (fake), b = 1 (real), c = 1 (G):

        L_D = 1/2 mean (D(x) - b)^2 + 1/2 mean D(G(z))^2,   L_G = 1/2 mean (D(G(z)) - 1)^2,
        dL/dout = (out - target) / N.
    ``real_target`` < 1 is one-sided label smoothing of b.
    """

    name = "lsgan"
    score = "C"
    wasserstein = False

    def __init__(self, real_target=1.0):
        self.real_target = float(real_target)

    @staticmethod
    def _half_squared(out, target):
        """1/2 mean (out - target)^2 and its gradient (out - target) / N."""
        xp = array_module(out)
        diff = out - target
        # dtype=: on NumPy 1.x a Python float times a NumPy scalar is float64 (halving is exact, so no rounding)
        return xp.asarray(0.5 * (diff * diff).mean(), dtype=out.dtype), diff * (1.0 / out.size)

    def d_real(self, out):
        return self._half_squared(out, self.real_target)

    def d_fake(self, out):
        return self._half_squared(out, 0.0)

    def g(self, out):
        return self._half_squared(out, 1.0)

    def probability(self, out):
        """The mean raw score: the discriminator aims for 1 on real images, 0 on fakes."""
        return _mean(array_module(out), out)


class HingeObjective:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018, SNGAN):

        L_D = mean relu(1 - D(x)) + mean relu(1 + D(G(z))),   L_G = -mean D(G(z)),
        dL_D/dout = -[out < 1] / N (real),  [out > -1] / N (fake);   dL_G/dout = -1 / N.
    """

    name = "hinge"
    score = "C"
    wasserstein = False

    def d_real(self, out):
        xp = array_module(out)
        margin = 1.0 - out
        active = margin > 0
        loss = xp.where(active, margin, 0.0).mean()
        return xp.asarray(loss, dtype=out.dtype), (active.astype(out.dtype) * (-1.0 / out.size))

    def d_fake(self, out):
        xp = array_module(out)
        margin = 1.0 + out
        active = margin > 0
        loss = xp.where(active, margin, 0.0).mean()
        return xp.asarray(loss, dtype=out.dtype), (active.astype(out.dtype) * (1.0 / out.size))

    def g(self, out):
        xp = array_module(out)
        return xp.asarray(-out.mean()), _constant_grad(out, -1.0)

    def probability(self, out):
        """The mean raw score (the margin is at +1 for real, -1 for fake)."""
        return _mean(array_module(out), out)


def make_objective(name, on_logits=True, real_target=1.0, gp_lambda=None):
    """The objective called ``name`` (one of NAMES); ``gp_lambda`` None takes WGAN-GP's own default.
    SettingError names the setting that does not fit, by its config key ("loss_on", "label_smoothing")."""
    if name not in NAMES:
        raise SettingError("loss", f"{name!r}: unknown objective; choose one of: {', '.join(NAMES)}")
    if name == "bce":
        return BCEObjective(on_logits=on_logits, real_target=real_target)
    if not on_logits:
        raise SettingError("loss_on", f"probs is for the bce objective only: {name} works on D's raw scores (no "
                                      "Sigmoid after D)")
    if real_target != 1.0 and name != "lsgan":
        raise SettingError("label_smoothing", f"is for the bce or lsgan objective, not {name}")
    if name == "wgan":
        return WGANObjective()
    if name == "wgan-gp":
        return WGANGPObjective() if gp_lambda is None else WGANGPObjective(gp_lambda)
    if name == "lsgan":
        return LSGANObjective(real_target=real_target)
    return HingeObjective()
