"""Linear (fully connected) layer: y = x W + b.

Forward:   y  = x @ W + b                 x: (N, D_in), W: (D_in, D_out), b: (D_out,)
Backward:  dx = dy @ W.T,  dW = x.T @ dy,  db = sum_n dy        (docs/derivations/linear.md)
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..params import linear_default, make_rng
from .module import Module


def linear_forward(x, W, b):
    """y = x W + b.  x: (N, D_in), W: (D_in, D_out), b: (D_out,) -> y: (N, D_out)"""
    y = x @ W  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
    y += b  # in place: no second (N, D_out) temporary
    return y, (x, W)  # cache: exactly what backward needs


def linear_backward(dy, cache, need_dx=True, need_dW=True, dW_out=None, db_out=None):
    """dx = dy W^T, dW = x^T dy, db = sum over the batch of dy (each skipped when not needed).

    ``dW_out``/``db_out``: arrays to write dW/db into instead of new ones (the gradient buffers).
    """
    x, W = cache
    xp = array_module(dy)
    dx = dy @ W.T if need_dx else None  # (N, D_out) @ (D_out, D_in) -> (N, D_in)
    dW = db = None
    if need_dW:
        dW = xp.matmul(x.T, dy, out=dW_out)  # (D_in, N) @ (N, D_out) -> (D_in, D_out)
        db = dy.sum(axis=0, out=db_out)  # (N, D_out) -> (D_out,)
    return dx, dW, db


class Linear(Module):
    """``Linear(D_in, D_out)``: weights W (D_in, D_out) and bias b (D_out,), PyTorch's default init."""

    def __init__(self, in_features, out_features, bias=True, seed=None, dtype="float32"):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear sizes must be positive, got ({in_features}, {out_features})")
        self.in_features, self.out_features, self.has_bias = in_features, out_features, bias
        rng = make_rng(seed)
        dt = np.dtype(dtype)
        # U(-1/sqrt(D_in), 1/sqrt(D_in)) for both, as torch.nn.Linear
        self.register_parameter("W", linear_default((in_features, out_features), rng, in_features).astype(dt))
        if bias:
            self.register_parameter("b", linear_default((out_features,), rng, in_features).astype(dt))

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape (N, {self.in_features}), "
                             f"got {tuple(x.shape)}")
        self.check_dtype(x, self.W.data.dtype)
        if self.has_bias:
            y, cache = linear_forward(x, self.W.data, self.b.data)
        else:
            y = x @ self.W.data  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
            cache = (x, self.W.data)
        self.cache = cache
        return y

    def backward(self, dy):
        cache = self.pop_cache()
        if not self.requires_grad:
            return linear_backward(dy, cache, need_dx=self.need_input_grad, need_dW=False)[0]
        # right after zero_grad the gradients go straight into their buffers; else they are added
        dW_out, add_dW = self.W.grad_slot()
        db_out, add_db = self.b.grad_slot() if self.has_bias else (None, False)
        dx, dW, db = linear_backward(dy, cache, need_dx=self.need_input_grad, dW_out=dW_out, db_out=db_out)
        if add_dW:
            self.W.grad += dW
        if add_db:
            self.b.grad += db
        return dx

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}{'' if self.has_bias else ', bias=False'})"
