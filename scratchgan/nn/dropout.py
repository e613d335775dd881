"""Inverted dropout with a seeded mask.

Forward (train): mask_i = [u_i >= p] / (1 - p) with u_i ~ U[0, 1);  y = x * mask
Forward (eval):  y = x.   Backward: dx = dy * mask (train), dx = dy (eval).
Scaling by 1/(1 - p) at train time keeps E[y] = x, so eval needs no rescaling.
"""
from __future__ import annotations

from ..backend import array_module, random_generator
from .module import Module


def dropout_forward(x, p, u):
    """y = x * mask with mask = [u >= p] / (1 - p); ``u`` uniform in [0, 1), shaped like x."""
    mask = (u >= p).astype(x.dtype)  # keep each unit with probability 1 - p
    mask *= 1.0 / (1.0 - p)  # scaled now, so that E[y] = x and eval mode is the identity
    return x * mask, mask  # the scaled mask is all backward needs: y is linear in x


def dropout_backward(dy, mask):
    """dx = dy * mask: the same units dropped, the same scale."""
    return dy * mask


class Dropout(Module):
    """``Dropout(p, seed)``: zero each input with probability p in train mode; identity in eval."""

    def __init__(self, p=0.5, seed=0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p, self.seed = float(p), seed
        self.rng = None  # created on first use on the input's backend, so masks come from the device

    def on_moved(self, xp):
        self.rng = None

    def reseed(self, seed):
        """Restart the mask sequence from ``seed`` (a trainer's checkpoints count the draws: gan.DropoutDraws)."""
        self.seed, self.rng = seed, None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.cache = ("identity", None)  # y = x: no mask, no copy
            return x
        xp = array_module(x)
        if self.rng is None:
            self.rng = random_generator(xp, self.seed)
        u = self.rng.random(x.shape, dtype=x.dtype)  # drawn where x lives: no host-to-device copy per step
        y, mask = dropout_forward(x, self.p, u)
        self.cache = ("mask", mask)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        cache = self.pop_cache()
        return self._apply(cache, dy) if need_dx else None  # eval mode: y = x, so dx = dy

    def backward_input(self, dy):  # the penalty's passes: dx = dy * mask is linear in dy, so is its adjoint
        cache = self.pop_cache()
        self.cache = cache
        return self._apply(cache, dy)

    def backward2(self, u, need_du=True):
        cache = self.pop_cache()
        return self._apply(cache, u) if need_du else None

    @staticmethod
    def _apply(cache, a):
        kind, mask = cache
        return a if kind == "identity" else dropout_backward(a, mask)

    def __repr__(self):
        return f"Dropout(p={self.p})"
