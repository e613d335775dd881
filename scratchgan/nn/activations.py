"""Elementwise activations: LeakyReLU, ReLU, Tanh, Sigmoid.

Each has y = f(x) and dx = dy * f'(x); we cache whichever of x or y makes f' cheapest.
Shapes: any; y and dx have the shape of x.           (docs/derivations/activations.md)
"""
from __future__ import annotations

from ..backend import array_module
from .module import Module


def leaky_relu_forward(x, slope):
    """y = x if x > 0 else slope * x."""
    xp = array_module(x)
    positive = x > 0
    y = xp.where(positive, x, x * slope)
    return y, positive


def leaky_relu_backward(dy, positive, slope):
    """dx = dy if x > 0 else slope * dy."""
    xp = array_module(dy)
    return xp.where(positive, dy, dy * slope)


def relu_forward(x):
    """y = max(x, 0)."""
    xp = array_module(x)
    positive = x > 0
    return xp.where(positive, x, 0.0).astype(x.dtype, copy=False), positive


def relu_backward(dy, positive):
    """dx = dy where x > 0, else 0."""
    xp = array_module(dy)
    return xp.where(positive, dy, 0.0).astype(dy.dtype, copy=False)


def tanh_forward(x):
    """y = tanh(x)."""
    xp = array_module(x)
    y = xp.tanh(x)
    return y, y


def tanh_backward(dy, y):
    """dx = dy * (1 - y^2), using the cached output y."""
    return dy * (1.0 - y * y)


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), evaluated without overflow: e = exp(-|x|) is at most 1."""
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))
    y = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
    return y, y


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y), using the cached output y."""
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
