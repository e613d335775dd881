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

    ``zero_grad`` does not fill the gradient at once: it marks it *unset*. Reading ``grad`` fills
    an unset gradient with zeros first, so it always reads as the sum of the backward passes since
    ``zero_grad``. A backward that asks ``grad_slot()`` first gets the buffer itself to write its
    gradient into (e.g. ``matmul(x.T, dy, out=...)``): the common step of one backward per
    ``zero_grad`` then costs neither a zero fill nor a temporary nor a ``+=`` pass over the weights.
    """

    def __init__(self, data):
        self.data = data
        xp = array_module(data)
        self._grad = xp.zeros_like(data)
        self._grad_unset = False
        self.store = None  # the FlatStore whose buffers ``data``/``grad`` are views of, if any

    @property
    def grad(self):
        if self._grad_unset:
            self._grad.fill(0)
            self._grad_unset = False
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad, self._grad_unset = value, False

    def clear_grad(self):
        """Mark the gradient as zero (filled lazily, see the class docstring)."""
        self._grad_unset = True

    def grad_slot(self):
        """Where a backward puts this parameter's gradient: ``(buffer, False)`` to write it into the
        (unset) buffer directly, or ``(None, True)`` to compute it anew and add it (``grad += g``)."""
        if self._grad_unset:
            self._grad_unset = False
            return self._grad, False
        return None, True

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
        self._grad = xp.zeros(total, dtype=dtype)
        self.stale = False
        for p, start in zip(params, self.offsets):
            stop = start + p.data.size
            data_view = self.data[start:stop].reshape(p.data.shape)
            data_view[...] = xp.asarray(p.data, dtype=dtype)
            if p.store is not None:
                p.store.stale = True
            p.data = data_view
            p.grad = self._grad[start:stop].reshape(p.data.shape)
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

    @property
    def grad(self):
        """The flat gradient buffer, with every unset parameter gradient filled with zeros first."""
        unset = [p for p in self.params if p._grad_unset]
        if len(unset) == len(self.params):
            self._grad.fill(0)  # one fill instead of one per parameter
            for p in unset:
                p._grad_unset = False
        else:
            for p in unset:
                p.grad  # fills that parameter's slice
        return self._grad

    def zero_grad(self):
        """Mark every gradient zero; O(number of parameters), the fill happens only if needed."""
        for p in self.params:
            p.clear_grad()


# ---------------------------------------------------------------------------- initialisers
# Each takes a shape and a numpy Generator and returns a float64 host array.

def _fans(shape):
    """fan_in, fan_out as PyTorch computes them for Linear (D_in, D_out) and conv weights."""
    if len(shape) == 2:  # our Linear layout is (D_in, D_out), the transpose of PyTorch's
        return shape[0], shape[1]
    if len(shape) == 4:  # Conv2d (C_out, C_in, kH, kW); for ConvTranspose2d (C_in, C_out, kH, kW)
        # this gives torch's fan_in from the second axis too
        receptive = shape[2] * shape[3]
        return shape[1] * receptive, shape[0] * receptive
    raise ValueError(f"cannot compute fans for a weight of shape {shape}")


def uniform(shape, rng, bound):
    return rng.uniform(-bound, bound, size=shape)


def linear_default(shape, rng, fan_in):
    """PyTorch's default for Linear and Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(shape, rng, bound)


def normal(shape, rng, mean=0.0, std=0.02):
    """N(mean, std^2): the DCGAN paper's initialisation with the defaults."""
    return rng.normal(mean, std, size=shape)


def xavier_uniform(shape, rng, gain=1.0):
    fan_in, fan_out = _fans(shape)
    return uniform(shape, rng, gain * math.sqrt(6.0 / (fan_in + fan_out)))


def xavier_normal(shape, rng, gain=1.0):
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def kaiming_uniform(shape, rng, negative_slope=0.0):
    """He initialisation for (leaky) ReLU nets, fan_in mode."""
    fan_in, _ = _fans(shape)
    gain = math.sqrt(2.0 / (1.0 + negative_slope ** 2))
    return uniform(shape, rng, gain * math.sqrt(3.0 / fan_in))


def kaiming_normal(shape, rng, negative_slope=0.0):
    fan_in, _ = _fans(shape)
    gain = math.sqrt(2.0 / (1.0 + negative_slope ** 2))
    return rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)


def zeros(shape, rng=None):
    return np.zeros(shape)


def ones(shape, rng=None):
    return np.ones(shape)


def make_rng(seed):
    """The host generator every initialiser draws from; an int seed or an existing Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
