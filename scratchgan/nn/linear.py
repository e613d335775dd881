"""Linear (fully connected) layer: y = x W + b.

Forward:   y  = x @ W + b                 x: (N, D_in), W: (D_in, D_out), b: (D_out,)
Backward:  dx = dy @ W.T,  dW = x.T @ dy,  db = sum_n dy        (docs/derivations/linear.md)
"""
from __future__ import annotations

import numpy as np

from ..replace import replaceable
from ..params import linear_default, make_rng
from .module import Module


@replaceable  # fast: fast/cpu.py (CPU)
def linear_forward(x, W, b):
    """y = x W + b.  x: (N, D_in), W: (D_in, D_out), b: (D_out,) or None -> y: (N, D_out)"""
    y = x @ W  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
    if b is not None:
        y = y + b  # b is added to every row (broadcast)
    return y, (x, W)  # cache: exactly what backward needs (b does not appear in any gradient)


@replaceable  # fast: fast/cpu.py (CPU)
def linear_backward(dy, cache, dW=None, db=None, need_dx=True, need_dW=True):
    """dx = dy W^T, dW += x^T dy, db += sum over the batch of dy.

    ``dW``, ``db``: the arrays the gradients are added into (a layer's ``p.grad``: every backward adds,
    as llm.c's matmul_backward does), or None for new ones. ``need_dx`` / ``need_dW`` False skip dx /
    (dW, db), returned as None. Returns (dx, dW, db).
    """
    x, W = cache
    if need_dW:
        dW_step = x.T @ dy  # (D_in, N) @ (N, D_out) -> (D_in, D_out): one outer product per sample, summed
        db_step = dy.sum(axis=0)  # (N, D_out) -> (D_out,): b reached every row with weight 1
        dW = dW_step if dW is None else _add(dW, dW_step)
        db = db_step if db is None else _add(db, db_step)
    else:
        dW = db = None
    dx = dy @ W.T if need_dx else None  # (N, D_out) @ (D_out, D_in) -> (N, D_in)
    return dx, dW, db


def _add(total, term):
    total += term  # in place: ``total`` is a view into the flat gradient store
    return total


class Linear(Module):
    """``Linear(D_in, D_out)``: weights W (D_in, D_out) and bias b (D_out,), PyTorch's default init."""

    def __init__(self, in_features, out_features, bias=True, seed=None, dtype="float32"):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear sizes must be positive, got ({in_features}, {out_features})")
        self.in_features, self.out_features, self.has_bias = in_features, out_features, bias
        rng = make_rng(seed)
        dt = np.dtype(dtype)
        # U(-1/sqrt(D_in), 1/sqrt(D_in)) for both, as torch.nn.Linear: keeps the output's variance
        # near the input's whatever D_in is
        self.register_parameter("W", linear_default((in_features, out_features), rng, in_features).astype(dt))
        if bias:
            self.register_parameter("b", linear_default((out_features,), rng, in_features).astype(dt))

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.in_features}), "
                             f"got {tuple(x.shape)}")
        self.check_dtype(x, self.W.data.dtype)
        y, self.cache = linear_forward(x, self.W.data, self.b.data if self.has_bias else None)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        """linear_backward, adding dW and db into the gradients; ``param_grads=False`` computes dx only.
        (need_dx=False: the network's input, noise z or images, whose dL/dx nobody uses: no matmul.)"""
        grads = param_grads and self.requires_grad
        dx, _, _ = linear_backward(dy, self.pop_cache(), self.W.grad, self.b.grad if self.has_bias else None,
                                   need_dx=need_dx, need_dW=grads)
        return dx

    # The second-order pass of a gradient penalty (gradient_penalty.py; numpy-ml calls it _bwd2). For
    # g = dD/dx, backward_input is the first backward without parameter gradients; backward2 carries
    # u = dP/dg back through it: the first backward is linear in dy with matrix W^T, so dP/d(dy) = u W
    # and dP/dW = u^T dy (b does not reach g: dP/db = 0). docs/derivations/wgan_gp.md.

    def backward_input(self, dy):
        """dx = dy W^T for the penalty's first backward; keeps dy for backward2."""
        cache = self.pop_cache()
        dx, _, _ = linear_backward(dy, cache, need_dW=False)
        self.cache = (dy, cache[1])
        return dx

    def backward2(self, u, need_du=True):
        """u = dP/d(dx) -> dP/d(dy) = u W: (N, D_in) @ (D_in, D_out) -> (N, D_out); adds dP/dW = u^T dy."""
        dy, W = self.pop_cache()
        if self.requires_grad:
            self.W.grad += u.T @ dy  # (D_in, N) @ (N, D_out) -> (D_in, D_out)
        return u @ W if need_du else None

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}{'' if self.has_bias else ', bias=False'})"
