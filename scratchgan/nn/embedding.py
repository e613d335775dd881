"""Class labels as network inputs: Embedding, one_hot, and Conditional (label code concatenated to x).

Embedding   forward:  y = W[idx]                    idx: (N,) ints in [0, K), W: (K, D) -> y: (N, D)
            backward: dW[k] = sum_{n: idx_n = k} dy_n   (a scatter-add: repeated labels add up)
Conditional forward:  h = [x, code(y)] along the feature axis,  out = net(h)
            backward: dh = net.backward(dout);  dx, dcode = dh split at D_x;  code's backward gets dcode
(docs/derivations/objectives.md, "Conditional GAN".)
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module, scatter_add
from ..params import make_rng, normal
from .module import Module


# ---------------------------------------------------------------------------- Embedding

def embedding_forward(idx, W):
    """y = W[idx]: row idx_n of W for each n.  idx: (N,), W: (K, D) -> y: (N, D)."""
    return W[idx], idx  # a gather: a new array; cache the indices only


def embedding_backward(dy, idx, W_shape):
    """dW = sum over n of dy_n added into row idx_n.  dy: (N, D) -> dW: (K, D). No gradient for idx."""
    xp = array_module(dy)
    dW = xp.zeros(W_shape, dtype=dy.dtype)
    scatter_add(dW, idx, dy)  # numpy.add.at / cupyx.scatter_add: every repeat of a label adds
    return dW


def _check_labels(owner, idx, num_classes, n=None):
    """Integer labels of shape (N,); on the host also their range (on a GPU that check would sync)."""
    if not hasattr(idx, "dtype") or idx.dtype.kind not in "iu":
        raise TypeError(f"{owner}: labels must be an integer array of class indices, "
                        f"got {getattr(idx, 'dtype', type(idx).__name__)}")
    if idx.ndim != 1 or (n is not None and idx.shape[0] != n):
        want = "(N,)" if n is None else f"({n},) to match the batch"
        raise ValueError(f"{owner}: labels must have shape {want}, got {tuple(idx.shape)}")
    if isinstance(idx, np.ndarray) and idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ValueError(f"{owner}: labels must be in [0, {num_classes}), got values from "
                         f"{idx.min()} to {idx.max()}")


class Embedding(Module):
    """``Embedding(num_embeddings, embedding_dim)``: a learned row W[k] per index; W ~ N(0, 1) as PyTorch."""

    def __init__(self, num_embeddings, embedding_dim, seed=None, dtype="float32"):
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(f"Embedding sizes must be positive, got ({num_embeddings}, {embedding_dim})")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        rng = make_rng(seed)
        W = normal((num_embeddings, embedding_dim), rng, 0.0, 1.0)
        self.register_parameter("W", W.astype(np.dtype(dtype)))

    def forward(self, idx):
        _check_labels(repr(self), idx, self.num_embeddings)
        y, self.cache = embedding_forward(idx, self.W.data)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        idx = self.pop_cache()
        if param_grads and self.requires_grad:
            self.W.grad += embedding_backward(dy, idx, self.W.shape)  # (K, D): only the rows used move
        return None  # integer indices have no gradient, whatever need_dx says

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"


def one_hot(idx, num_classes, dtype):
    """(N,) integer labels -> (N, num_classes) rows of 0/1 with the 1 at the label, in ``dtype``."""
    xp = array_module(idx)
    return (idx[:, None] == xp.arange(num_classes)).astype(dtype)


# ---------------------------------------------------------------------------- concatenation

def concat_forward(x, code):
    """h = [x, code] along axis 1.  x: (N, D) or (N, C, H, W); code: (N, K), broadcast over H, W."""
    xp = array_module(x)
    if x.ndim == 4:
        N, _, H, W = x.shape
        code = xp.broadcast_to(code[:, :, None, None], (N, code.shape[1], H, W))
    return xp.concatenate([x, code], axis=1), x.shape[1]


def concat_backward(dh, d_x):
    """The split: dx = dh[:, :D_x], dcode = dh[:, D_x:] (summed over H, W for images)."""
    dx, dcode = dh[:, :d_x], dh[:, d_x:]
    if dh.ndim == 4:
        dcode = dcode.sum(axis=(2, 3))  # the code was copied to every pixel: its gradients add
    return dx, dcode


class Conditional(Module):
    """``Conditional(net, num_classes, embedding_dim=0)``: out = net([x, code(labels)]).

    code = one_hot(labels) when ``embedding_dim`` is 0, else a learned Embedding(num_classes,
    embedding_dim). ``net`` takes D_x + code_dim features (channels, for image inputs).
    Call ``forward(x, labels)``; labels are (N,) integers in [0, num_classes).
    """

    def __init__(self, net, num_classes, embedding_dim=0, seed=None, dtype="float32"):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"Conditional needs at least 2 classes, got {num_classes}")
        if embedding_dim < 0:
            raise ValueError(f"embedding_dim must be 0 (one-hot) or positive, got {embedding_dim}")
        self.net, self.num_classes = net, int(num_classes)
        self.embedding = Embedding(num_classes, embedding_dim, seed=seed, dtype=dtype) if embedding_dim else None
        self.code_dim = int(embedding_dim) or self.num_classes

    def children(self):
        return [self.embedding, self.net] if self.embedding is not None else [self.net]

    @property
    def name(self):
        """A one-line name for messages (the full repr lists the net)."""
        code = f"Embedding({self.num_classes}, {self.code_dim})" if self.embedding is not None \
            else f"one_hot({self.num_classes})"
        return f"Conditional(code={code})"

    def code(self, labels, dtype):
        if self.embedding is not None:
            return self.embedding.forward(labels)  # (N,) -> (N, embedding_dim)
        return one_hot(labels, self.num_classes, dtype)  # (N,) -> (N, num_classes)

    def forward(self, x, labels=None):
        if labels is None:
            raise ValueError(f"{self.name} is conditional: call forward(x, labels) with (N,) class labels")
        _check_labels(self.name, labels, self.num_classes, n=x.shape[0])
        if x.ndim not in (2, 4):
            raise ValueError(f"{self.name}: expected input (N, D) or (N, C, H, W), got {tuple(x.shape)}")
        h, d_x = concat_forward(x, self.code(labels, x.dtype))
        self.cache = d_x
        return self.net.forward(h)

    def backward(self, dy, param_grads=True, need_dx=True):
        d_x = self.pop_cache()
        # dh = dL/d[x, code] is needed when x's caller wants dx, or a learned code wants dcode for its
        # W (a one-hot code is a constant: nobody wants its gradient)
        wants_dcode = self.embedding is not None and param_grads and self.embedding.requires_grad
        if not (need_dx or wants_dcode):
            self.net.backward(dy, param_grads=param_grads, need_dx=False)
            if self.embedding is not None:
                self.embedding.pop_cache()  # its forward ran; no gradient goes back to it
            return None
        dx, dcode = concat_backward(self.net.backward(dy, param_grads=param_grads), d_x)
        if self.embedding is not None:
            self.embedding.backward(dcode, param_grads=param_grads)
        return dx if need_dx else None

    def __repr__(self):
        inner = "\n".join("  " + line for line in repr(self.net).splitlines())
        return f"{self.name[:-1]},\n{inner}\n)"
