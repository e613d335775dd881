"""One GAN training step, composed from layers, an objective and two optimizers.

The order is the PyTorch DCGAN tutorial's:
  1. D step:  L_D = BCE(D(x), 1) + BCE(D(G(z)), 0); backward through D only; update D.
  2. G step:  L_G = BCE(D(G(z)), 1) through the *updated* D (the non-saturating loss);
              backward through D into G(z), then through G; update G.
G(z) is computed once and reused by both steps, so G's forward cache from step 1 serves the
backward of step 2. The objective (objectives.py: bce, wgan, wgan-gp, lsgan, hinge) supplies the
losses and their gradients; the options (instance noise, the gradient penalty, weight clipping, class
labels) are the named helpers below ``d_step`` and ``g_step`` (docs/derivations/objectives.md,
wgan_gp.md). examples/gan_by_hand.py is the same step written out in one file, without the options.
Nothing here converts to Python floats: statistics stay on the device as 0-d arrays until the
trainer logs them (on a GPU a float() is a synchronisation).
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..backend import array_module, random_generator
from ..nn import Conditional, ProjectionDiscriminator
from .diffaugment import DiffAugment
from .ema import GeneratorEMA
from .gradient_penalty import GradientPenalty, R1Penalty

CONDITIONAL = (Conditional, ProjectionDiscriminator)  # networks called as forward(x, labels)


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
        self.rng = random_generator(self.xp, mixed)  # on CuPy: the same stream on every GPU model
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
        entry = self.stream(name, shape, kind)
        entry[3] += 1
        rng = entry[0]
        if kind == "uniform":
            return rng.random(shape, dtype=self.dtype)
        return rng.standard_normal(shape, dtype=self.dtype)

    def stream(self, name, shape, kind="normal"):
        """The named extra stream's [generator, kind, shape, draws], made at its first use; no draw (the
        CUDA graph, fast/cuda_graph/graph.py, draws from the generator into a fixed buffer and counts the draws)."""
        entry = self._extra.get(name)
        if entry is None:
            tag = int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little")
            mixed = int(np.random.SeedSequence([self.seed, self.epoch, tag]).generate_state(1)[0])
            entry = self._extra[name] = [random_generator(self.xp, mixed), kind, tuple(shape), 0]
        return entry

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


class DropoutDraws:
    """A Dropout layer's generator, counting the masks it draws and their shape, so that a checkpoint can
    replay the stream and a resumed run draws the same masks: the run's bookkeeping, as NoiseSource's for
    z, while the layer keeps only its maths and a seeded draw (nn/dropout.py)."""

    def __init__(self, rng):
        self.rng, self.draws, self.shape, self.dtype = rng, 0, None, None

    def random(self, shape, dtype):
        self.draws, self.shape, self.dtype = self.draws + 1, tuple(shape), dtype
        return self.rng.random(shape, dtype=dtype)

    @classmethod
    def install(cls, layer, xp, seed=None):
        """Reseed ``layer`` (with ``seed``, else its own) with a counted generator on backend ``xp``."""
        layer.reseed(layer.seed if seed is None else seed)
        layer.rng = cls(random_generator(xp, layer.seed))
        return layer.rng

    @staticmethod
    def state(layer):
        """(seed, masks drawn, their shape and dtype): all a checkpoint needs to resume ``layer`` exactly."""
        counted = layer.rng if isinstance(layer.rng, DropoutDraws) else DropoutDraws(None)
        return {"seed": layer.seed, "draws": counted.draws, "shape": list(counted.shape or []),
                "dtype": str(counted.dtype)}

    @classmethod
    def restore(cls, layer, state, xp):
        """Reseed ``layer`` as ``state`` says and replay its draws of the recorded shape on backend ``xp``."""
        counted = cls.install(layer, xp, state["seed"])
        for _ in range(state["draws"]):
            counted.random(tuple(state["shape"]), state["dtype"])



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
      r1              gamma of the R1 penalty (gamma/2) mean ||dD(x)/dx||^2 on the real batch (Mescheder et
                      al. 2018), added to D's loss; see gradient_penalty.R1Penalty
      ema             beta of the moving average of G's weights, updated after each G step (ema.py);
                      ``sampling()`` gives G with the averaged weights for grids and evaluation
      diffaugment     a policy ("translation,cutout,color"): every batch D sees, real and fake, in both steps,
                      is augmented with fresh draws (Zhao et al. 2020); the G step backpropagates through it
    A conditional pair (nn.Conditional G; nn.Conditional or nn.ProjectionDiscriminator D) takes real batches
    as (images, labels); the fakes of a D step are made for the labels of its real batch.
    """

    def __init__(self, G, D, opt_G, opt_D, objective, latent_dim, noise, clip=None, gp_lambda=None,
                 instance_noise=0.0, r1=0.0, ema=0.0, diffaugment=None):
        self.G, self.D, self.opt_G, self.opt_D = G, D, opt_G, opt_D
        self.objective, self.latent_dim, self.noise = objective, latent_dim, noise
        if isinstance(G, Conditional) != isinstance(D, CONDITIONAL):
            raise ValueError("a conditional GAN needs both G and D conditional (nn.Conditional, "
                             "nn.ProjectionDiscriminator), or neither")
        self.conditional = isinstance(G, Conditional)
        self.clip = float(clip) if clip else None
        if self.clip is not None and self.clip < 0:
            raise ValueError(f"the weight-clipping bound must be positive, got {clip}")
        lam = getattr(objective, "gp_lambda", 0.0) if gp_lambda is None else gp_lambda
        self.penalty = GradientPenalty(D, lam) if lam else None  # refuses critics it cannot handle
        self.instance_noise = float(instance_noise)
        self.r1 = R1Penalty(D, r1) if r1 else None  # refuses the critics GradientPenalty refuses, saying why
        self.ema = GeneratorEMA(G, ema) if ema else None
        self.augment = DiffAugment(diffaugment, noise.extra) if diffaugment else None  # draws: noise's streams
        p = getattr(objective, "score", "D")
        self.keys = (f"{p}_x", f"{p}_G_z", f"{p}_G_z_after")

    def d_step(self, real):
        """Update D on one real batch x and one fake batch G(z); returns (fake, stats).

        L_D = d_real(D(x)) + d_fake(D(G(z))) (+ the gradient penalty), backward through D only."""
        G, obj = self.G, self.objective
        real, labels = self._real_batch(real)
        fake = self._forward(G, self.noise.sample(), labels)  # its cache stays for the G step's backward
        self.opt_D.zero_grad()
        real_in = self._with_instance_noise(self._augmented(real))
        fake_in = self._with_instance_noise(self._augmented(fake))
        out_real, loss_real = self._d_forward_backward(real_in, labels, obj.d_real)
        out_fake, loss_fake = self._d_forward_backward(fake_in, labels, obj.d_fake)  # G(z): a constant here
        penalty = self._gradient_penalty(real_in, fake_in, labels)  # {} unless a penalty is on
        penalty.update(self._r1_penalty(real_in, labels))
        self.opt_D.step()
        self._clip_weights()
        return fake, self._d_stats(loss_real, loss_fake, out_real, out_fake, penalty)

    def g_step(self, fake, labels=None):
        """Update G through the updated D: L_G = g(D(G(z))), backward through D into G; returns stats."""
        self.opt_G.zero_grad()
        seen, augmentation = fake, None
        if self.augment is not None:  # D sees T(G(z)): the gradient goes back through T
            seen, augmentation = self.augment.forward(fake)
        out = self._forward(self.D, self._with_instance_noise(seen), labels)
        loss_G, dout = self.objective.g(out)
        # only dL_G/dG(z) is needed: D's weight gradients would be thrown away, so they are not computed;
        # d(x + noise)/dx = 1, so the gradient at D's input is the one that reaches T(G(z)), or G(z)
        dfake = self.D.backward(dout, param_grads=False)
        if augmentation is not None:
            dfake = self.augment.backward(dfake, augmentation)
        self.G.backward(dfake, need_dx=False)  # nobody uses dL/dz
        self.opt_G.step()
        return {"loss_G": loss_G, self.keys[2]: self.objective.probability(out)}

    def step(self, real_batches):
        """One GAN iteration on a list of real batches (one per D step); stats as 0-d arrays."""
        for real in real_batches:
            fake, stats = self.d_step(real)
        stats.update(self.g_step(fake, self._split(real)[1]))
        if self.ema is not None:
            self.ema.update()  # one pass over G's flat buffer
        return stats

    def sampling(self):
        """``with step.sampling() as G:`` G with the averaged weights under --ema (put back after), else G."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext(self.G)

    # ------------------------------------------------------------------ the pieces of the two steps
    def _forward(self, net, x, labels):
        return net.forward(x) if labels is None else net.forward(x, labels)

    def _d_forward_backward(self, x, labels, loss):
        """D(x), the loss of it, and its backward: adds dloss/dW into D's gradients. Returns (out, loss)."""
        out = self._forward(self.D, x, labels)
        value, dout = loss(out)
        self.D.backward(dout, need_dx=False)  # real and fake inputs are constants here: no dL/dx
        return out, value

    def _split(self, real):
        """(images, labels) of a batch; labels None for an unconditional GAN."""
        if isinstance(real, (tuple, list)):
            real, labels = real
            return real, (labels if self.conditional else None)
        if self.conditional:
            raise ValueError("a conditional GAN trains on (images, labels) batches: give the BatchLoader labels=")
        return real, None

    def _real_batch(self, real):
        """(images, labels) of a D step's real batch, checked against the noise batch size."""
        real, labels = self._split(real)
        if real.shape[0] != self.noise.batch_size:
            raise ValueError(f"real batch of {real.shape[0]} images, but the step was built for "
                             f"batches of {self.noise.batch_size}")
        return real, labels

    def _augmented(self, x):
        """DiffAugment's T(x) with fresh draws (no backward needed: the D step's inputs are constants), or x."""
        return x if self.augment is None else self.augment.forward(x)[0]

    def _with_instance_noise(self, x):
        """x + sigma * N(0, 1) (instance noise), or x itself when sigma is 0."""
        if not self.instance_noise:
            return x
        return x + self.instance_noise * self.noise.extra("instance_noise", x.shape)

    def _gradient_penalty(self, real_in, fake_in, labels):
        """WGAN-GP: adds the gradient of lam * mean(||dD(xhat)/dxhat|| - 1)^2 into D's gradients, at
        xhat = alpha x + (1 - alpha) G(z) with one alpha ~ U[0, 1) per sample. Returns the statistics
        {"gp", "grad_norm_xhat"}, or {} when the penalty is off."""
        if self.penalty is None:
            return {}
        alpha = self.noise.extra("gp_alpha", (real_in.shape[0],) + (1,) * (real_in.ndim - 1), "uniform")
        xhat = fake_in + alpha * (real_in - fake_in)
        gp, grad_norm = self.penalty(xhat, labels)
        return {"gp": gp, "grad_norm_xhat": grad_norm}

    def _r1_penalty(self, real_in, labels):
        """R1: adds the gradient of (gamma/2) mean ||dD(x)/dx||^2 at the real batch D saw into D's gradients.
        Returns {"r1", "grad_norm_x"}, or {} when it is off."""
        if self.r1 is None:
            return {}
        r1, grad_norm = self.r1(real_in, labels)
        return {"r1": r1, "grad_norm_x": grad_norm}

    def _clip_weights(self):
        """WGAN: clip every D weight to [-clip, clip] after D's update, keeping the critic (roughly)
        Lipschitz; one pass over D's flat parameter buffer."""
        if self.clip is not None:
            data = self.opt_D.store.data
            array_module(data).clip(data, -self.clip, self.clip, out=data)

    def _d_stats(self, loss_real, loss_fake, out_real, out_fake, penalty):
        """loss_D (with the penalty), the objective's D(x) and D(G(z)) statistics, the WGAN distance."""
        obj, xp = self.objective, array_module(out_real)
        loss_D = xp.asarray(loss_real + loss_fake)  # a NumPy scalar otherwise: keep the 0-d array
        for key in ("gp", "r1"):  # the penalties are part of D's loss
            if key in penalty:
                loss_D = xp.asarray(loss_D + penalty[key])
        k_x, k_fake, _ = self.keys
        stats = {"loss_D": loss_D, k_x: obj.probability(out_real), k_fake: obj.probability(out_fake), **penalty}
        if getattr(obj, "wasserstein", False):
            stats["wasserstein"] = xp.asarray(out_real.mean() - out_fake.mean())  # estimate of W1(real, fake)
        return stats
