"""Linear (fully connected) layer: y = x W + b.

Forward:   y  = x @ W + b                 x: (N, D_in), W: (D_in, D_out), b: (D_out,)
Backward:  dx = dy @ W.T,  dW = x.T @ dy,  db = sum_n dy        (docs/derivations/linear.md)
"""
from __future__ import annotations

import numpy as np

from ..fast import replaceable
from ..params import linear_default, make_rng
from .module import Module


@replaceable
def linear_forward(x, W, b):
    """y = x W + b.  x: (N, D_in), W: (D_in, D_out), b: (D_out,) -> y: (N, D_out)"""
    y = x @ W + b  # (N, D_in) @ (D_in, D_out) -> (N, D_out); b is added to every row (broadcast)
    return y, (x, W)  # cache: exactly what backward needs (b does not appear in any gradient)


def linear_backward(dy, cache):
    """dx = dy W^T, dW = x^T dy, db = sum over the batch of dy."""
    x, W = cache
    dx = dy @ W.T  # (N, D_out) @ (D_out, D_in) -> (N, D_in)
    dW = x.T @ dy  # (D_in, N) @ (N, D_out) -> (D_in, D_out): one outer product per sample, summed
    db = dy.sum(axis=0)  # (N, D_out) -> (D_out,): b reached every row with weight 1
    return dx, dW, db


@replaceable
def add_matmul(out, a, b):
    """out += a @ b: how a layer adds a gradient that is a matrix product into its ``p.grad``."""
    out += a @ b


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
        if self.has_bias:
            y, self.cache = linear_forward(x, self.W.data, self.b.data)
        else:
            y, self.cache = x @ self.W.data, (x, self.W.data)  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        """linear_backward's three lines, with dW and db added (+=) into the gradients."""
        x, W = self.pop_cache()
        if param_grads and self.requires_grad:
            add_matmul(self.W.grad, x.T, dy)  # dW += x^T dy: (D_in, N) @ (N, D_out) -> (D_in, D_out)
            if self.has_bias:
                self.b.grad += dy.sum(axis=0)  # db += sum_n dy: (N, D_out) -> (D_out,)
        if not need_dx:
            return None  # the network's input (noise z, images): nobody uses dL/dx, skip the matmul
        return dy @ W.T  # dx: (N, D_out) @ (D_out, D_in) -> (N, D_in)

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}{'' if self.has_bias else ', bias=False'})"
