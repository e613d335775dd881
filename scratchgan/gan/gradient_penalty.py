"""WGAN-GP's gradient penalty, with its second-order backward written by hand, layer by layer.

    P = lam * mean_n (r_n - 1)^2,   r_n = sqrt(||g_n||^2 + eps),   g_n = dD(xhat_n) / dxhat_n,
    xhat = alpha x + (1 - alpha) G(z),  alpha ~ U(0, 1) per sample               (Gulrajani et al. 2017)

For a critic made of Linear, LeakyReLU / ReLU, Dropout, Flatten and Reshape layers, the first
backward g = dD/dxhat is a chain of matmuls with W^T and multiplies by the activations' masks;
the masks are piecewise constant, so P depends on the weights only through that chain:

    first backward:  gz_L = 1;  gz_{l-1} = (gz_l @ W_l^T) * mask_{l-1};  g = gz_1 @ W_1^T
    tangent pass:    u_0 = dP/dg;  u_l = (u_{l-1} @ W_l) * mask_l      (the net's forward on u, no biases)
    gradients:       dP/dW_l = u_{l-1}^T @ gz_l,   dP/db_l = 0,   dP/dxhat = 0 (almost everywhere)

Each of those layers has the two passes next to its backward (``backward_input``, ``backward2``, as
numpy-ml's ``_bwd2``); this module runs them in order. A layer without them is refused, with the reason.
Derivation, checks and limits: docs/derivations/wgan_gp.md.

R1 (Mescheder et al. 2018), P = (gamma / 2) mean_n ||dD(x_n)/dx_n||^2 on real images x, is the same
machinery with another function of g (``R1Penalty``, ``r1_of_gradients``): only dP/dg changes
(docs/derivations/r1.md).
"""
from __future__ import annotations

from .. import nn
from ..backend import array_module


class UnsupportedCritic(ValueError):
    """The critic has a layer the penalty's hand-written second-order backward does not cover."""


_WHY = {
    "BatchNorm1d": "BatchNorm couples the samples of a batch (each output depends on the batch mean and "
                   "variance), so dD(xhat_n)/dxhat_n is not a per-sample gradient; WGAN-GP critics use no "
                   "BatchNorm (the paper suggests layer normalisation or none): build D without it",
    "Sigmoid": "a Sigmoid bounds the critic's score to (0, 1) and has a non-zero second derivative; a "
               "Wasserstein critic outputs unbounded scores: end D at its last Linear (output='logits')",
    "Tanh": "a smooth activation has a non-zero second derivative, which this penalty's backward (written "
            "for piecewise-linear critics) leaves out; use LeakyReLU",
}
_WHY["BatchNorm2d"] = _WHY["BatchNorm1d"]
_WHY["SpectralNorm"] = ("the penalty's second-order backward is written for plain weights and does not go through "
                        "sigma(W) of spectral normalisation: use --spectral-norm or the penalty, not both")
SUPPORTED = "Linear, LeakyReLU, ReLU, Dropout, Flatten and Reshape"


def critic_layers(D, what="the gradient penalty"):
    """(conditional wrapper or None, the critic's layers in order), or UnsupportedCritic naming the layer;
    ``what`` names the penalty in the message."""
    conditional = D if isinstance(D, nn.Conditional) else None
    net = D.net if conditional is not None else D
    layers = []

    def walk(module, path):
        if isinstance(module, (nn.Sequential, nn.ProjectionDiscriminator)):  # (a projection D: features, head)
            for i, child in enumerate(module.children()):
                walk(child, f"{path}.{i}" if path else str(i))
            return
        if not hasattr(module, "backward2"):  # the layer's own second-order pass, next to its backward
            name = type(module).__name__
            why = _WHY.get(name, f"the penalty's second-order backward is written for {SUPPORTED} layers only")
            raise UnsupportedCritic(f"{what} cannot use this critic: layer {path or '0'} is "
                                    f"{module!r}: {why}")
        layers.append(module)

    walk(net, "")
    if not any(isinstance(m, nn.Linear) for m in layers):
        raise UnsupportedCritic(f"{what} needs a critic with at least one Linear layer")
    return conditional, layers


def penalty_of_gradients(g, lam, eps):
    """P = lam mean_n (r_n - 1)^2 with r_n = sqrt(sum_i g_ni^2 + eps) over g: (N, D).

    Returns (P, dP/dg, r): dP/dg_n = (2 lam / N) (r_n - 1) / r_n * g_n.
    """
    xp = array_module(g)
    N = g.shape[0]
    r = xp.sqrt((g * g).sum(axis=1) + eps)  # (N,)
    P = lam * ((r - 1.0) ** 2).mean()
    dg = g * ((2.0 * lam / N) * (r - 1.0) / r)[:, None]  # (N, D) * (N, 1)
    return xp.asarray(P, dtype=g.dtype), dg, r  # dtype=: lam * a NumPy scalar is float64 on NumPy 1.x


def r1_of_gradients(g, gamma):
    """P = (gamma / 2) mean_n ||g_n||^2 over g: (N, D).

    Returns (P, dP/dg, ||g_n||): dP/dg_n = (gamma / N) g_n.
    """
    xp = array_module(g)
    N = g.shape[0]
    squared = (g * g).sum(axis=1)  # (N,): ||g_n||^2
    P = (0.5 * gamma) * squared.mean()
    dg = g * (gamma / N)  # (N, D)
    return xp.asarray(P, dtype=g.dtype), dg, xp.sqrt(squared)


class GradientPenalty:
    """``GradientPenalty(D, lam=10, eps=1e-12)``; ``gp(xhat, labels=None)`` returns (P, mean ||g||) as
    0-d arrays and adds dP/dW into each Linear's ``W.grad`` (biases get 0). Refuses unsupported critics."""

    def __init__(self, D, lam=10.0, eps=1e-12):
        if not lam > 0:
            raise ValueError(f"the gradient penalty's lambda must be positive, got {lam}")
        self.D, self.lam, self.eps = D, float(lam), float(eps)
        self.conditional, self.layers = critic_layers(D)

    def of_gradients(self, g):
        """(P, dP/dg, per-sample norms) for the per-sample input gradients g: (N, D)."""
        return penalty_of_gradients(g, self.lam, self.eps)

    def __call__(self, xhat, labels=None):
        D, xp = self.D, array_module(xhat)
        if D.dtype is not None and xhat.dtype != D.dtype:
            raise TypeError(f"gradient penalty: xhat is {xhat.dtype} but the critic is {D.dtype}")
        N = xhat.shape[0]
        h, d_x = xhat, None
        if self.conditional is not None:  # the label code joins the input; the penalty is on dD/dx only
            if labels is None:
                raise ValueError("gradient penalty: this critic is conditional: pass the labels")
            code = self.conditional.code(labels, xhat.dtype)
            if self.conditional.embedding is not None:
                self.conditional.embedding.cache = None  # no backward: dP/dcode is 0 (see the docs)
            h, d_x = nn.embedding.concat_forward(xhat, code)

        # 1. forward: each layer keeps its cache, as in training
        for layer in self.layers:
            h = layer.forward(h)
        if h.size != N:
            raise ValueError(f"gradient penalty: the critic must output one score per sample, got {tuple(h.shape)}")

        # 2. first backward with upstream 1: g = d(sum_n D(xhat_n))/dxhat = per-sample gradients; each layer
        # keeps what its second-order pass needs (a Linear its upstream gz_l, an activation its mask)
        g = xp.ones(h.shape, dtype=h.dtype)
        for layer in reversed(self.layers):
            g = layer.backward_input(g)
        g_x = g if d_x is None else g[:, :d_x]

        # 3. the penalty and dP/dg
        P, dg, r = self.of_gradients(g_x.reshape(N, -1))
        u = dg.reshape(g_x.shape)
        if d_x is not None:  # the code's part of dP/dg is 0
            u_full = xp.zeros(g.shape, dtype=g.dtype)
            u_full[:, :d_x] = u
            u = u_full

        # 4. the second-order pass, input to output: each layer adds its dP/dW (u_{l-1}^T gz_l for a Linear)
        # and hands dP/d(its upstream) on; past the last Linear nothing depends on u
        last_linear = max(i for i, layer in enumerate(self.layers) if isinstance(layer, nn.Linear))
        for i, layer in enumerate(self.layers):
            u = layer.backward2(u, need_du=i < last_linear)
        return P, xp.asarray(r.mean())


class R1Penalty(GradientPenalty):
    """``R1Penalty(D, gamma)``; ``r1(x, labels=None)`` on a real batch returns (P, mean ||grad_x D(x)||) with
    P = (gamma / 2) mean_n ||grad_x D(x_n)||^2, and adds dP/dW into each Linear's ``W.grad``: the
    gradient penalty's passes with dP/dg = (gamma / N) g. Refuses the critics GradientPenalty refuses."""

    def __init__(self, D, gamma=10.0):
        if not gamma > 0:
            raise ValueError(f"the R1 penalty's gamma must be positive, got {gamma}")
        self.D, self.lam, self.eps = D, float(gamma), 0.0
        self.conditional, self.layers = critic_layers(D, "the R1 penalty")

    def of_gradients(self, g):
        return r1_of_gradients(g, self.lam)
