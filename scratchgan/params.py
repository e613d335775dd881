"""Parameters, the flat parameter store, and seeded initialisers.

A ``Parameter`` is a pair of arrays: ``data`` (the weights) and ``grad`` (dL/d data, same
shape). A network keeps all its parameters in ONE contiguous buffer and all gradients in a
twin buffer (a ``FlatStore``); every ``Parameter`` is a pair of views into them. So zeroing
gradients is one fill, Adam is one pass over one array, and a checkpoint is one copy.

Initialisers draw on the host from a seeded ``numpy.random.Generator`` and return float64
host arrays; ``Module.to`` casts and copies them to the device. CPU and GPU runs therefore
start from identical weights.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import array_module


class Parameter:
    """A trainable array and its gradient: ``data`` and ``grad`` have the same shape and dtype.

    Backward passes add into ``grad`` (``p.grad += dW``), so it holds the sum of every backward
    since the last ``zero_grad``; the optimizer reads it. Write into both, never rebind them.
    """

    def __init__(self, data):
        self.data = data
        self.grad = array_module(data).zeros_like(data)
        self.store = None  # the FlatStore whose buffers ``data``/``grad`` are views of, if any

    def zero_grad(self):
        self.grad.fill(0)

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class FlatStore:
    """All parameters of a network in one contiguous ``data`` buffer and one ``grad`` buffer.

    Packing copies each parameter's values into its slice and rebinds ``p.data`` and ``p.grad``
    to views of the slices. A store becomes ``stale`` when its parameters are packed again
    (for example by ``model.to(...)``); an optimizer built on a stale store refuses to step.
    """

    def __init__(self, params, xp=None, dtype=None):
        params = list(params)
        if not params:
            raise ValueError("FlatStore needs at least one Parameter; the model has none")
        if len(set(map(id, params))) != len(params):
            raise ValueError("the same Parameter appears twice; pass each parameter once")
        xp = xp or array_module(params[0].data)
        dtype = np.dtype(dtype or params[0].data.dtype)
        self.params = params
        self.offsets = []
        total = 0
        for p in params:
            self.offsets.append(total)
            total += p.data.size
        self.size = total
        self.data = xp.empty(total, dtype=dtype)
        self.grad = xp.zeros(total, dtype=dtype)
        self.stale = False
        for p, start in zip(params, self.offsets):
            stop = start + p.data.size
            data_view = self.data[start:stop].reshape(p.data.shape)
            data_view[...] = xp.asarray(p.data, dtype=dtype)
            if p.store is not None:
                p.store.stale = True
            p.data = data_view
            p.grad = self.grad[start:stop].reshape(p.data.shape)
            p.store = self

    @classmethod
    def of(cls, params):
        """The store that already holds exactly ``params`` in this order, else a new packing."""
        params = list(params)
        store = params[0].store if params else None
        if (store is not None and not store.stale and len(store.params) == len(params)
                and all(a is b for a, b in zip(store.params, params))):
            return store
        return cls(params)

    def zero_grad(self):
        """Every gradient of the store to zero: one fill of the flat buffer."""
        self.grad.fill(0)


# ---------------------------------------------------------------------------- initialisers
# Each takes a shape and a numpy Generator and returns a float64 host array.

def uniform(shape, rng, bound):
    return rng.uniform(-bound, bound, size=shape)


def linear_default(shape, rng, fan_in):
    """PyTorch's default for Linear and Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(shape, rng, bound)


def normal(shape, rng, mean=0.0, std=0.02):
    """N(mean, std^2): the DCGAN paper's initialisation with the defaults."""
    return rng.normal(mean, std, size=shape)


def zeros(shape, rng=None):
    return np.zeros(shape)


def ones(shape, rng=None):
    return np.ones(shape)


def make_rng(seed):
    """The host generator every initialiser draws from; an int seed or an existing Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
