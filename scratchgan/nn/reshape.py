"""Flatten and Reshape: no arithmetic, only a view of the same numbers in another shape.

Forward:  y = x.reshape(N, *shape);  Backward: dx = dy.reshape(x.shape).
"""
from __future__ import annotations

import math

from .module import Module


class _SameNumbers(Module):
    """The penalty's passes (see Linear.backward_input) for a layer that only reshapes: reshapes again."""

    def backward_input(self, dy):
        x_shape = self.pop_cache()
        self.cache = dy.shape
        return dy.reshape(x_shape)

    def backward2(self, u, need_du=True):
        y_shape = self.pop_cache()
        return u.reshape(y_shape) if need_du else None


class Flatten(_SameNumbers):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"{self!r}: expected input of shape (N, ...), got {tuple(x.shape)}")
        self.cache = x.shape  # the shape is all backward needs: the numbers do not change
        return x.reshape(x.shape[0], -1)  # a view of contiguous x: no copy

    def backward(self, dy, param_grads=True, need_dx=True):
        x_shape = self.pop_cache()
        return dy.reshape(x_shape) if need_dx else None  # the same numbers, back in x's shape


class Reshape(_SameNumbers):
    """(N, ...) -> (N, *shape), e.g. Reshape(1, 28, 28) turns (N, 784) into images."""

    def __init__(self, *shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x):
        if x.ndim < 1 or math.prod(x.shape[1:]) != math.prod(self.shape):
            raise ValueError(f"{self!r}: cannot reshape input {tuple(x.shape)} "
                             f"to (N, {', '.join(map(str, self.shape))})")
        self.cache = x.shape
        return x.reshape((x.shape[0],) + self.shape)  # the batch axis stays first

    def backward(self, dy, param_grads=True, need_dx=True):
        x_shape = self.pop_cache()
        return dy.reshape(x_shape) if need_dx else None  # the same numbers, back in x's shape

    def __repr__(self):
        return f"Reshape{self.shape}"
