"""Elementwise activations: LeakyReLU, ReLU, Tanh, Sigmoid.

Each has y = f(x) and dx = dy * f'(x); we cache whichever of x or y makes f' cheapest.
Shapes: any; y and dx have the shape of x.           (docs/derivations/activations.md)
"""
from __future__ import annotations

from ..backend import array_module
from ..replace import replaceable
from .module import Module


@replaceable  # fast: fast/cpu.py (CPU), fast/kernels.py (CuPy)
def leaky_relu_forward(x, slope):
    """y = x if x > 0 else slope * x."""
    xp = array_module(x)
    y = xp.where(x > 0, x, x * slope)
    return y, x  # cache x itself (no copy): backward needs only its sign


@replaceable  # fast: fast/cpu.py (CPU), fast/kernels.py (CuPy)
def leaky_relu_backward(dy, x, slope):
    """dx = dy * f'(x) with f'(x) = 1 if x > 0 else slope."""
    xp = array_module(dy)
    # at x = 0 exactly we take the slope side, as PyTorch does (f has no derivative there)
    return xp.where(x > 0, dy, dy * slope)


def relu_forward(x):
    """y = max(x, 0)."""
    xp = array_module(x)
    return xp.maximum(x, 0.0), x  # cache x itself: backward needs only its sign


@replaceable  # fast: fast/kernels.py (CuPy)
def relu_backward(dy, x):
    """dx = dy where x > 0, else 0."""
    return dy * (x > 0)  # bool times float keeps the float dtype


def tanh_forward(x):
    """y = tanh(x)."""
    xp = array_module(x)
    y = xp.tanh(x)
    return y, y  # tanh' = 1 - tanh^2: the output is all backward needs


@replaceable  # fast: fast/cpu.py (CPU), fast/kernels.py (CuPy)
def tanh_backward(dy, y):
    """dx = dy * (1 - y^2), using the cached output y."""
    return dy * (1.0 - y * y)


@replaceable  # fast: fast/kernels.py (CuPy)
def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), evaluated without overflow: e = exp(-|x|) is at most 1."""
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))
    # x >= 0: 1 / (1 + e^-x); x < 0: e^x / (1 + e^x). Same function, but exp never sees a positive
    # argument, so a large |x| gives 0 or 1 instead of inf / inf
    y = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
    return y, y  # sigmoid' = y (1 - y): again the output is enough


@replaceable  # fast: fast/kernels.py (CuPy)
def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y), using the cached output y."""
    return dy * y * (1.0 - y)


# The layers: each holds its cache between forward and backward, nothing else (they have no
# parameters, so ``param_grads`` has nothing to skip; ``need_dx=False`` skips the whole backward).

class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)  # a Python float keeps float32 float32

    def forward(self, x):
        y, self.cache = leaky_relu_forward(x, self.negative_slope)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        x = self.pop_cache()
        return leaky_relu_backward(dy, x, self.negative_slope) if need_dx else None

    # The penalty's second-order pass (see Linear.backward_input): dx = dy * f'(x) is linear in dy with
    # a piecewise-constant factor (f'' = 0 almost everywhere), so dP/d(dy) is u times the same factor.
    def backward_input(self, dy):
        x = self.pop_cache()
        self.cache = x
        return leaky_relu_backward(dy, x, self.negative_slope)

    def backward2(self, u, need_du=True):
        x = self.pop_cache()
        return leaky_relu_backward(u, x, self.negative_slope) if need_du else None

    def __repr__(self):
        return f"LeakyReLU({self.negative_slope})"


class ReLU(Module):
    def forward(self, x):
        y, self.cache = relu_forward(x)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        x = self.pop_cache()
        return relu_backward(dy, x) if need_dx else None

    def backward_input(self, dy):  # the penalty's passes, as LeakyReLU's with slope 0
        x = self.pop_cache()
        self.cache = x
        return relu_backward(dy, x)

    def backward2(self, u, need_du=True):
        x = self.pop_cache()
        return relu_backward(u, x) if need_du else None


class Tanh(Module):
    def forward(self, x):
        y, self.cache = tanh_forward(x)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        y = self.pop_cache()
        return tanh_backward(dy, y) if need_dx else None


class Sigmoid(Module):
    def forward(self, x):
        y, self.cache = sigmoid_forward(x)
        return y

    def backward(self, dy, param_grads=True, need_dx=True):
        y = self.pop_cache()
        return sigmoid_backward(dy, y) if need_dx else None
