"""One GAN training step, composed from layers, a loss and two Adam optimizers.

The order is the PyTorch DCGAN tutorial's:
  1. D step:  L_D = BCE(D(x), 1) + BCE(D(G(z)), 0); backward through D only; update D.
  2. G step:  L_G = BCE(D(G(z)), 1) through the *updated* D (the non-saturating loss);
              backward through D into G(z), then through G; update G.
G(z) is computed once and reused by both steps, so G's forward cache from step 1 serves the
backward of step 2. Other objectives (objectives.py: wgan, wgan-gp, lsgan, hinge) swap the BCE
terms for theirs; GANStep adds weight clipping, the gradient penalty, instance noise and class
labels (docs/derivations/objectives.md, wgan_gp.md). Nothing here converts to Python floats: statistics stay on the device as
0-d arrays until the trainer logs them (on a GPU a float() is a synchronisation).
"""
from __future__ import annotations

import numpy as np

from . import losses
from .backend import array_module
from .gradient_penalty import GradientPenalty
from .nn.activations import sigmoid_forward
from .nn import Conditional


class BCEObjective:
    """The standard GAN objective with binary cross-entropy, on logits or on probabilities.

    ``real_target`` < 1 is one-sided label smoothing (e.g. 0.9): only D's real labels move.
    """

    name = "bce"
    score = "D"  # stats D_x, D_G_z, D_G_z_after: probabilities (objectives.py: "C" for raw scores)
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
        self._extra = {}  # name -> [generator, kind, shape, draws]: see extra()
        for _ in range(draws):  # replay up to where a checkpoint left off
            self.sample()

    def sample(self):
        self.draws += 1
        return self.rng.standard_normal((self.batch_size, self.latent_dim), dtype=self.dtype)

    def extra(self, name, shape, kind="normal"):
        """A draw from the named extra stream ("instance_noise", "gp_alpha"): N(0, 1) or U[0, 1).

        Each stream has its own generator seeded by (seed, epoch, name), so z stays the same whether
        or not a run uses them, and counts its draws for exact resume (one shape per stream).
        """
        entry = self._extra.get(name)
        if entry is None:
            tag = int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little")
            mixed = int(np.random.SeedSequence([self.seed, self.epoch, tag]).generate_state(1)[0])
            entry = self._extra[name] = [self.xp.random.default_rng(mixed), kind, tuple(shape), 0]
        entry[3] += 1
        rng = entry[0]
        if kind == "uniform":
            return rng.random(shape, dtype=self.dtype)
        return rng.standard_normal(shape, dtype=self.dtype)

    def state(self):
        state = {"epoch": self.epoch, "draws": self.draws}
        if self._extra:
            state["extra"] = {name: [kind, list(shape), n] for name, (_, kind, shape, n) in self._extra.items()}
        return state

    def restore(self, state):
        self.start_epoch(int(state["epoch"]), int(state["draws"]))
        for name, (kind, shape, n) in state.get("extra", {}).items():
            for _ in range(int(n)):
                self.extra(name, tuple(shape), kind)


def generate(G, z, labels=None):
    """G(z) in eval mode (running BatchNorm statistics), leaving no caches and G's mode unchanged.

    A conditional G takes (N,) class ``labels``; without them it makes the classes in turn (n % K).
    """
    was_training = G.training
    G.eval()
    try:
        if isinstance(G, Conditional):
            if labels is None:
                labels = G.xp.arange(z.shape[0]) % G.num_classes
            return G.forward(z, labels)
        return G.forward(z)
    finally:
        for m in G.modules():
            m.cache = None
        G.train(was_training)


class GANStep:
    """G, D, their optimizers and an objective; ``step(real)`` runs one D step and one G step.

    ``d_steps`` > 1 runs that many D steps (each on its own real batch and fresh fakes) before
    each G step, which reuses the fakes of the last D step. Options (all off by default):
      clip            after each D update, clip every D weight to [-clip, clip] (WGAN)
      gp_lambda       add the gradient penalty lam * mean(||dD(xhat)/dxhat|| - 1)^2 to D's loss
                      (WGAN-GP; default: the objective's ``gp_lambda``); see gradient_penalty.py
      instance_noise  sigma of Gaussian noise added to every input of D (the trainer anneals it)
    A conditional pair (nn.Conditional G and D) takes real batches as (images, labels); the fakes
    of a D step are made for the labels of its real batch.
    """

    def __init__(self, G, D, opt_G, opt_D, objective, latent_dim, noise, clip=None, gp_lambda=None,
                 instance_noise=0.0):
        self.G, self.D, self.opt_G, self.opt_D = G, D, opt_G, opt_D
        self.objective, self.latent_dim, self.noise = objective, latent_dim, noise
        if isinstance(G, Conditional) != isinstance(D, Conditional):
            raise ValueError("a conditional GAN needs both G and D conditional (nn.Conditional), or neither")
        self.conditional = isinstance(G, Conditional)
        self.clip = float(clip) if clip else None
        if self.clip is not None and self.clip < 0:
            raise ValueError(f"the weight-clipping bound must be positive, got {clip}")
        lam = getattr(objective, "gp_lambda", 0.0) if gp_lambda is None else gp_lambda
        self.penalty = GradientPenalty(D, lam) if lam else None  # refuses critics it cannot handle
        self.instance_noise = float(instance_noise)
        p = getattr(objective, "score", "D")
        self.keys = (f"{p}_x", f"{p}_G_z", f"{p}_G_z_after")

    def _split(self, real):
        """(images, labels) of a batch; labels None for an unconditional GAN."""
        if isinstance(real, (tuple, list)):
            real, labels = real
            return real, (labels if self.conditional else None)
        if self.conditional:
            raise ValueError("a conditional GAN trains on (images, labels) batches: give the BatchLoader labels=")
        return real, None

    def _noisy(self, x):
        """x + sigma * N(0, 1) (instance noise), or x itself when sigma is 0."""
        if not self.instance_noise:
            return x
        return x + self.instance_noise * self.noise.extra("instance_noise", x.shape)

    def _forward(self, net, x, labels):
        return net.forward(x) if labels is None else net.forward(x, labels)

    def d_step(self, real):
        """Update D on one real batch and one fake batch; returns (fake, stats)."""
        G, D, obj = self.G, self.D, self.objective
        real, labels = self._split(real)
        if real.shape[0] != self.noise.batch_size:
            raise ValueError(f"real batch of {real.shape[0]} images, but the step was built for "
                             f"batches of {self.noise.batch_size}")
        z = self.noise.sample()
        fake = self._forward(G, z, labels)  # its cache stays for the G step's backward

        self.opt_D.zero_grad()
        real_in, fake_in = self._noisy(real), self._noisy(fake)
        out_real = self._forward(D, real_in, labels)
        loss_real, dout = obj.d_real(out_real)
        D.backward(dout, need_dx=False)  # real and fake inputs are constants here
        out_fake = self._forward(D, fake_in, labels)  # D sees G(z) as a constant here: we never backprop into G
        loss_fake, dout = obj.d_fake(out_fake)
        D.backward(dout, need_dx=False)
        xp = array_module(out_real)  # loss_real + loss_fake is a NumPy scalar: keep the 0-d array
        loss_D = xp.asarray(loss_real + loss_fake)
        stats = {}
        if self.penalty is not None:
            # xhat = alpha x + (1 - alpha) G(z), one alpha ~ U[0, 1) per sample
            alpha = self.noise.extra("gp_alpha", (real.shape[0],) + (1,) * (real.ndim - 1), "uniform")
            xhat = fake_in + alpha * (real_in - fake_in)
            gp, grad_norm = self.penalty(xhat, labels)  # adds dP/dW into D's gradients
            stats.update(gp=gp, grad_norm_xhat=grad_norm)
            loss_D = xp.asarray(loss_D + gp)
        self.opt_D.step()
        if self.clip is not None:  # WGAN: keep the critic (roughly) Lipschitz, one pass over D's buffer
            data = self.opt_D.store.data
            xp.clip(data, -self.clip, self.clip, out=data)
        k_x, k_fake, _ = self.keys
        stats = {"loss_D": loss_D, k_x: obj.probability(out_real), k_fake: obj.probability(out_fake), **stats}
        if getattr(obj, "wasserstein", False):
            stats["wasserstein"] = xp.asarray(out_real.mean() - out_fake.mean())  # estimate of W1(real, fake)
        return fake, stats

    def g_step(self, fake, labels=None):
        """Update G through the updated D with the objective's G loss; returns stats."""
        G, D, obj = self.G, self.D, self.objective
        self.opt_G.zero_grad()
        out = self._forward(D, self._noisy(fake), labels)
        loss_G, dout = obj.g(out)
        # we need dL_G/dG(z) only: D's parameter gradients would be thrown away, so skip them
        dfake = D.backward(dout, param_grads=False)  # d(fake + noise)/d fake = 1: the same gradient reaches G(z)
        G.backward(dfake, need_dx=False)  # nobody uses dL/dz
        self.opt_G.step()
        return {"loss_G": loss_G, self.keys[2]: obj.probability(out)}

    def step(self, real_batches):
        """One GAN iteration on a list of real batches (one per D step); stats as 0-d arrays."""
        for real in real_batches:
            fake, stats = self.d_step(real)
        stats.update(self.g_step(fake, self._split(real)[1]))
        return stats
