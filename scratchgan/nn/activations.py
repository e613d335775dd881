"""Elementwise activations: LeakyReLU, ReLU, Tanh, Sigmoid.

Each has y = f(x) and dx = dy * f'(x); we cache whichever of x or y makes f' cheapest.
Shapes: any; y and dx have the shape of x.           (docs/derivations/activations.md)
"""
from __future__ import annotations

from ..backend import array_module, fused_kernel
from .module import Module


def leaky_relu_forward(x, slope):
    """y = x if x > 0 else slope * x, computed as max(x, slope * x) (min for slope > 1)."""
    xp = array_module(x)
    fused = fused_kernel(xp, "leaky_relu_forward")  # CuPy: the two passes below in one kernel
    if fused is not None:
        return fused(x, slope), x
    y = x * slope
    # for slope <= 1, x > 0 gives x >= slope x and x < 0 gives slope x > x: the larger one is y.
    # Two fast passes; xp.where(x > 0, x, slope * x) is several times slower on NumPy.
    (xp.maximum if slope <= 1.0 else xp.minimum)(x, y, out=y)
    return y, x  # cache x itself (no copy): backward needs only its sign


def leaky_relu_backward(dy, x, slope):
    """dx = dy * f'(x) with f'(x) = 1 if x > 0 else slope."""
    xp = array_module(dy)
    fused = fused_kernel(xp, "leaky_relu_backward")  # CuPy: one kernel, dx = x > 0 ? dy : dy * slope
    if fused is not None:
        return fused(dy, x, slope)
    if not 0.0 <= slope <= 1.0:  # rare; the general (slower) form
        return xp.where(x > 0, dy, dy * slope)
    # f'(x) = slope + [x > 0] (1 - slope): 1 or slope exactly, when 1 - slope is rounded in dy's
    # dtype first (docs/derivations/activations.md). maximum([x > 0], slope) is exact too, but NumPy
    # has no vectorised loop for maximum with a scalar operand: it took 4x as long as these passes.
    one_minus_slope = dy.dtype.type(1) - dy.dtype.type(slope)
    dx = (x > 0).astype(dy.dtype)  # 1 where x > 0, else 0
    dx *= one_minus_slope
    dx += slope
    dx *= dy
    return dx


def relu_forward(x):
    """y = max(x, 0)."""
    xp = array_module(x)
    return xp.maximum(x, 0.0), x  # cache x itself: backward needs only its sign


def relu_backward(dy, x):
    """dx = dy where x > 0, else 0."""
    fused = fused_kernel(array_module(dy), "relu_backward")  # CuPy: compare and multiply in one kernel
    if fused is not None:
        return fused(dy, x)
    return dy * (x > 0)  # bool times float keeps the float dtype


def tanh_forward(x):
    """y = tanh(x)."""
    xp = array_module(x)
    y = xp.tanh(x)
    return y, y


def tanh_backward(dy, y):
    """dx = dy * (1 - y^2), using the cached output y."""
    xp = array_module(dy)
    fused = fused_kernel(xp, "tanh_backward")  # CuPy: the three passes below in one kernel
    if fused is not None:
        return fused(dy, y)
    dx = y * y
    xp.subtract(1.0, dx, out=dx)  # in place: one new array instead of three
    dx *= dy
    return dx


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), evaluated without overflow: e = exp(-|x|) is at most 1."""
    xp = array_module(x)
    fused = fused_kernel(xp, "sigmoid_forward")  # CuPy: one kernel instead of seven passes
    if fused is not None:
        y = fused(x)
        return y, y
    e = xp.exp(-xp.abs(x))
    y = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
    return y, y


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y), using the cached output y."""
    fused = fused_kernel(array_module(dy), "sigmoid_backward")  # CuPy: one kernel instead of three
    if fused is not None:
        return fused(dy, y)
    return dy * y * (1.0 - y)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)  # a Python float keeps float32 float32

    def forward(self, x):
        y, self.cache = leaky_relu_forward(x, self.negative_slope)
        return y

    def backward(self, dy):
        return leaky_relu_backward(dy, self.pop_cache(), self.negative_slope)

    def __repr__(self):
        return f"LeakyReLU({self.negative_slope})"


class ReLU(Module):
    def forward(self, x):
        y, self.cache = relu_forward(x)
        return y

    def backward(self, dy):
        return relu_backward(dy, self.pop_cache())


class Tanh(Module):
    def forward(self, x):
        y, self.cache = tanh_forward(x)
        return y

    def backward(self, dy):
        return tanh_backward(dy, self.pop_cache())


class Sigmoid(Module):
    def forward(self, x):
        y, self.cache = sigmoid_forward(x)
        return y

    def backward(self, dy):
        return sigmoid_backward(dy, self.pop_cache())
