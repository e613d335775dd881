"""One GAN training step, composed from layers, a loss and two Adam optimizers.

The order is the PyTorch DCGAN tutorial's:
  1. D step:  L_D = BCE(D(x), 1) + BCE(D(G(z)), 0); backward through D only; update D.
  2. G step:  L_G = BCE(D(G(z)), 1) through the *updated* D (the non-saturating loss);
              backward through D into G(z), then through G; update G.
G(z) is computed once and reused by both steps, so G's forward cache from step 1 serves the
backward of step 2. Nothing here converts to Python floats: statistics stay on the device as
0-d arrays until the trainer logs them (on a GPU a float() is a synchronisation).
"""
from __future__ import annotations

import numpy as np

from . import losses
from .backend import array_module


class BCEObjective:
    """The standard GAN objective with binary cross-entropy, on logits or on probabilities.

    ``real_target`` < 1 is one-sided label smoothing (e.g. 0.9): only D's real labels move.
    """

    name = "bce"

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
        e = xp.exp(-xp.abs(out))
        return xp.asarray(xp.where(out >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).mean())


class NoiseSource:
    """Batches of latent vectors z ~ N(0, I), (batch_size, latent_dim), drawn on the device.

    Resumable exactly: the stream of epoch e comes from a generator seeded by (seed, e) and the
    source counts its draws, so a checkpoint needs only (epoch, draws); restoring replays them.
    """

    def __init__(self, xp, batch_size, latent_dim, seed, dtype):
        self.xp, self.batch_size, self.latent_dim = xp, batch_size, latent_dim
        self.seed, self.dtype = seed, np.dtype(dtype)
        self.start_epoch(0)

    def start_epoch(self, epoch, draws=0):
        # SeedSequence mixes (seed, epoch) into one well-spread integer seed (a host computation)
        mixed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        self.rng = self.xp.random.default_rng(mixed)
        self.epoch, self.draws = epoch, 0
        for _ in range(draws):  # replay up to where a checkpoint left off
            self.sample()

    def sample(self):
        self.draws += 1
        return self.rng.standard_normal((self.batch_size, self.latent_dim), dtype=self.dtype)

    def state(self):
        return {"epoch": self.epoch, "draws": self.draws}

    def restore(self, state):
        self.start_epoch(int(state["epoch"]), int(state["draws"]))


def generate(G, z):
    """G(z) in eval mode (running BatchNorm statistics), leaving no caches and G's mode unchanged."""
    was_training = G.training
    G.eval()
    try:
        return G.forward(z)
    finally:
        for m in G.modules():
            m.cache = None
        G.train(was_training)


class GANStep:
    """G, D, their optimizers and an objective; ``step(real)`` runs one D step and one G step.

    ``d_steps`` > 1 runs that many D steps (each on its own real batch and fresh fakes) before
    each G step, which reuses the fakes of the last D step.
    """

    def __init__(self, G, D, opt_G, opt_D, objective, latent_dim, noise):
        self.G, self.D, self.opt_G, self.opt_D = G, D, opt_G, opt_D
        self.objective, self.latent_dim, self.noise = objective, latent_dim, noise

    def d_step(self, real):
        """Update D on one real batch and one fake batch; returns (fake, stats)."""
        G, D, obj = self.G, self.D, self.objective
        if real.shape[0] != self.noise.batch_size:
            raise ValueError(f"real batch of {real.shape[0]} images, but the step was built for "
                             f"batches of {self.noise.batch_size}")
        z = self.noise.sample()
        fake = G.forward(z)  # its cache stays for the G step's backward

        self.opt_D.zero_grad()
        D.first_layer().need_input_grad = False  # real and fake inputs are constants here
        out_real = D.forward(real)
        loss_real, dout = obj.d_real(out_real)
        D.backward(dout)
        out_fake = D.forward(fake)  # D sees G(z) as a constant here: we never backprop into G
        loss_fake, dout = obj.d_fake(out_fake)
        D.backward(dout)
        self.opt_D.step()
        xp = array_module(out_real)  # loss_real + loss_fake is a NumPy scalar: keep the 0-d array
        stats = {"loss_D": xp.asarray(loss_real + loss_fake), "D_x": obj.probability(out_real),
                 "D_G_z": obj.probability(out_fake)}
        return fake, stats

    def g_step(self, fake):
        """Update G through the updated D with the non-saturating loss; returns stats."""
        G, D, obj = self.G, self.D, self.objective
        self.opt_G.zero_grad()
        out = D.forward(fake)
        loss_G, dout = obj.g(out)
        # we need dL_G/dG(z) only: D's parameter gradients would be thrown away, so skip them
        D.requires_grad_(False)
        D.first_layer().need_input_grad = True
        try:
            dfake = D.backward(dout)
        finally:
            D.requires_grad_(True)
        G.backward(dfake)
        self.opt_G.step()
        return {"loss_G": loss_G, "D_G_z_after": obj.probability(out)}

    def step(self, real_batches):
        """One GAN iteration on a list of real batches (one per D step); stats as 0-d arrays."""
        for real in real_batches:
            fake, stats = self.d_step(real)
        stats.update(self.g_step(fake))
        return stats
