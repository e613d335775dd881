"""The projection discriminator (Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018).

A conditional D whose label enters as an inner product with the image's features phi(x):

Projection forward:  out = phi w + b + sum_f V[y]_f phi_f
                     phi: (N, F), y: (N,) ints in [0, K), w: (F, 1), b: (1,), V: (K, F) -> out: (N, 1)
           backward: dphi = dout w^T + dout * V[y],  dw = phi^T dout,  db = sum_n dout,
                     dV[k] = sum_{n: y_n = k} dout_n phi_n     (a scatter-add: repeated labels add up)
ProjectionDiscriminator: out = Projection(features(x), y); backward: features.backward(dphi).
(docs/derivations/projection.md.)
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import array_module, scatter_add
from ..params import linear_default, make_rng, uniform
from .embedding import _check_labels
from .module import Module


def projection_forward(phi, y, w, b, V):
    """out = psi(phi) + <V[y], phi> with psi(phi) = phi w + b.  phi: (N, F), y: (N,) -> out: (N, 1)."""
    psi = phi @ w + b  # (N, F) @ (F, 1) -> (N, 1), b added to every row
    v = V[y]  # (N, F): the embedding of each sample's class (a gather: a new array)
    out = psi + (v * phi).sum(axis=1, keepdims=True)  # (N, F) * (N, F) summed over F -> (N, 1)
    return out, (phi, y, w, v)


def projection_backward(dout, cache, V_shape, need_dphi=True, need_params=True):
    """dphi = dout w^T + dout * V[y], dw = phi^T dout, db = sum dout, dV = scatter-add of dout * phi.

    dout: (N, 1). Returns (dphi, dw, db, dV); ``need_dphi`` / ``need_params`` False return None for those.
    """
    phi, y, w, v = cache
    dphi = dout @ w.T + dout * v if need_dphi else None  # (N, 1) @ (1, F) -> (N, F), plus (N, 1) * (N, F)
    if not need_params:
        return dphi, None, None, None
    dw = phi.T @ dout  # (F, N) @ (N, 1) -> (F, 1)
    db = dout.sum(axis=0)  # (N, 1) -> (1,): b reached every row with weight 1
    dV = array_module(dout).zeros(V_shape, dtype=dout.dtype)  # (K, F)
    scatter_add(dV, y, dout * phi)  # row y_n gets dout_n phi_n: (N, 1) * (N, F) -> (N, F), added by label
    return dphi, dw, db, dV


class Projection(Module):
    """``Projection(F, K)``: (phi (N, F), labels (N,)) -> (N, 1), the projection discriminator's output.

    psi is a Linear(F, 1) (``W`` (F, 1), ``b`` (1,), PyTorch's default init); ``V`` (K, F) is the class
    embedding, Glorot-uniform as in the paper's code (an N(0, 1) embedding would swamp psi when F is large).
    """

    def __init__(self, num_features, num_classes, seed=None, dtype="float32"):
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"Projection needs a positive feature size, got {num_features}")
        if num_classes < 2:
            raise ValueError(f"Projection needs at least 2 classes, got {num_classes}")
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        rng, dt = make_rng(seed), np.dtype(dtype)
        F, K = self.num_features, self.num_classes
        self.register_parameter("W", linear_default((F, 1), rng, F).astype(dt))
        self.register_parameter("b", linear_default((1,), rng, F).astype(dt))
        self.register_parameter("V", uniform((K, F), rng, math.sqrt(6.0 / (K + F))).astype(dt))

    def forward(self, phi, labels=None):
        if labels is None:
            raise ValueError(f"{self!r} is conditional: call forward(phi, labels) with (N,) class labels")
        if phi.ndim != 2 or phi.shape[1] != self.num_features:
            raise ValueError(f"{self!r}: expected features of shape (N, {self.num_features}), got {tuple(phi.shape)}")
        self.check_dtype(phi, self.W.data.dtype)
        _check_labels(repr(self), labels, self.num_classes, n=phi.shape[0])
        out, self.cache = projection_forward(phi, labels, self.W.data, self.b.data, self.V.data)
        return out

    def backward(self, dy, param_grads=True, need_dx=True):
        grads = param_grads and self.requires_grad
        dphi, dW, db, dV = projection_backward(dy, self.pop_cache(), self.V.shape, need_dphi=need_dx,
                                               need_params=grads)
        if grads:
            self.W.grad += dW
            self.b.grad += db
            self.V.grad += dV
        return dphi

    def __repr__(self):
        return f"Projection({self.num_features}, {self.num_classes})"


class ProjectionDiscriminator(Module):
    """``ProjectionDiscriminator(features, F, K)``: D(x, y) = Projection(features(x), y).

    ``features`` maps images to phi(x) (N, F) (the DCGAN's convolutions, flattened). Call
    ``forward(x, labels)``; labels are (N,) integers in [0, K).
    """

    def __init__(self, features, num_features, num_classes, seed=None, dtype="float32"):
        super().__init__()
        self.features = features
        self.head = Projection(num_features, num_classes, seed=seed, dtype=dtype)
        self.num_classes = self.head.num_classes

    def children(self):
        return [self.features, self.head]

    def forward(self, x, labels=None):
        if labels is None:
            raise ValueError(f"{self.head!r} is conditional: call forward(x, labels) with (N,) class labels")
        return self.head.forward(self.features.forward(x), labels)

    def backward(self, dy, param_grads=True, need_dx=True):
        # dphi is needed when x's caller wants dx, or when the features learn
        if not (need_dx or (param_grads and self.features.learns())):
            self.head.backward(dy, param_grads=param_grads, need_dx=False)
            for m in self.features.modules():
                m.cache = None  # their forward ran; no gradient goes back to them
            return None
        dphi = self.head.backward(dy, param_grads=param_grads)
        return self.features.backward(dphi, param_grads=param_grads, need_dx=need_dx)

    def __repr__(self):
        inner = "\n".join("  " + line for line in repr(self.features).splitlines())
        return f"ProjectionDiscriminator(\n{inner}\n  head: {self.head!r}\n)"
