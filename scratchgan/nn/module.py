"""Module: the base of every layer, and Sequential.

A layer's ``forward(x)`` computes ``y`` and keeps in ``self.cache`` exactly what its
backward needs; ``backward(dy)`` consumes that cache, ADDS its parameter gradients into
``p.grad`` and returns ``dx = dL/dx``. The maths lives in pure ``*_forward``/``*_backward``
functions beside each class; the classes only hold parameters, buffers and the cache.

What a backward computes is said by its arguments, never by flags flipped on the layer:
``backward(dy, param_grads=False)`` skips the parameter gradients (D in the G step: they would be
thrown away) and ``need_dx=False`` skips dL/dx (a network's input: nobody uses dL/dz). Sequential
passes ``param_grads`` to every layer and ``need_dx`` to its first. ``requires_grad_(False)``
freezes a module for good, as in PyTorch: it never gets parameter gradients.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module, get_xp, resolve_dtype, to_device, to_numpy
from ..params import FlatStore, Parameter


class Module:
    """Parameters and buffers by name, train/eval mode, and a forward/backward pair."""

    def __init__(self):
        self.training = True
        self.requires_grad = True  # False: frozen, backward never computes its parameter gradients
        self.cache = None
        self._parameters = {}  # name -> Parameter, in registration order
        self._buffers = []  # names of non-trainable state arrays (e.g. running_mean)

    # -------------------------------------------------------------- registration
    def register_parameter(self, name, data):
        """Create a Parameter from ``data`` and make it an attribute: ``self.W``."""
        p = Parameter(data)
        self._parameters[name] = p
        setattr(self, name, p)
        return p

    def register_buffer(self, name, data):
        """Non-trainable state that moves with ``to()`` and goes into checkpoints."""
        self._buffers.append(name)
        setattr(self, name, data)

    def children(self):
        """Sub-modules, in order (none for a plain layer)."""
        return []

    # -------------------------------------------------------------- traversal
    def named_parameters(self, prefix=""):
        for name, p in self._parameters.items():
            yield prefix + name, p
        for i, child in enumerate(self.children()):
            yield from child.named_parameters(f"{prefix}{i}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for name in self._buffers:
            yield prefix + name, getattr(self, name)
        for i, child in enumerate(self.children()):
            yield from child.named_buffers(f"{prefix}{i}.")

    def modules(self):
        yield self
        for child in self.children():
            yield from child.modules()

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    # -------------------------------------------------------------- modes and grads
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze every layer's parameters, as torch's requires_grad_.

        A frozen layer's backward still returns dL/dx, but never touches its ``p.grad``. To skip
        the parameter gradients of one backward only, pass ``param_grads=False`` instead.
        """
        for m in self.modules():
            m.requires_grad = flag
        return self

    def learns(self):
        """True when a backward of this module updates parameter gradients (it has some, not frozen)."""
        return any(m.requires_grad and m._parameters for m in self.modules())

    def zero_grad(self):
        """Every parameter gradient to zero: one fill when they are one flat store."""
        params = self.parameters()
        store = params[0].store if params else None
        if store is not None and not store.stale and store.params == params:
            store.zero_grad()
        else:  # parameters not packed (yet), or a part of a larger store
            for p in params:
                p.zero_grad()

    # -------------------------------------------------------------- device and dtype
    @property
    def dtype(self):
        params = self.parameters()
        return params[0].data.dtype if params else None

    @property
    def xp(self):
        params = self.parameters()
        return array_module(params[0].data) if params else np

    def to(self, backend=None, dtype=None):
        """Move/cast every parameter and buffer in place, pack the parameters into one flat store.

        ``backend``: "numpy" or "cupy" (None keeps the current one); ``dtype``: "float32",
        "float64" or a NumPy dtype (None keeps the current one). Returns ``self``.
        """
        xp = get_xp(backend) if backend is not None else self.xp
        params = self.parameters()
        dt = resolve_dtype(dtype) if dtype is not None else (self.dtype or np.dtype(np.float32))
        for p in params:
            p.data = to_device(p.data, xp, dt)
        if params:
            FlatStore(params, xp=xp, dtype=dt)
        for m in self.modules():
            for name in m._buffers:
                setattr(m, name, to_device(getattr(m, name), xp, dt))
            m.cache = None
            m.on_moved(xp)
        return self

    def on_moved(self, xp):
        """Hook for layers holding backend-specific state (e.g. Dropout's generator)."""

    def flat_store(self):
        """The FlatStore holding this module's parameters (packed on first use)."""
        return FlatStore.of(self.parameters())

    # -------------------------------------------------------------- state for checkpoints
    def state_dict(self):
        """Host copies of every parameter and buffer, by dotted name ("0.W", "2.running_var")."""
        state = {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}
        state.update({name: to_numpy(b).copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state):
        """Write values into the existing arrays (never rebinding parameters); shapes must match."""
        own = dict(self.named_parameters())
        buffers = {name: None for name, _ in self.named_buffers()}
        expected = set(own) | set(buffers)
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(f"state does not fit this model: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        for name, p in own.items():
            value = state[name]
            if tuple(value.shape) != tuple(p.data.shape):
                raise ValueError(f"state does not fit this model: {name} has shape {tuple(value.shape)},"
                                 f" the model has {tuple(p.data.shape)}")
            p.data[...] = to_device(value, array_module(p.data), p.data.dtype)
        for m_prefix, m in self._named_modules():
            for bname in m._buffers:
                buf = getattr(m, bname)
                value = state[m_prefix + bname]
                if tuple(value.shape) != tuple(buf.shape):
                    raise ValueError(f"state does not fit this model: {m_prefix + bname} has shape "
                                     f"{tuple(value.shape)}, the model has {tuple(buf.shape)}")
                buf[...] = to_device(value, array_module(buf), buf.dtype)

    def _named_modules(self, prefix=""):
        yield prefix, self
        for i, child in enumerate(self.children()):
            yield from child._named_modules(f"{prefix}{i}.")

    # -------------------------------------------------------------- forward/backward
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy, param_grads=True, need_dx=True):
        """Consume the cache of one forward; add parameter gradients (unless ``param_grads`` is
        False or the layer is frozen) and return dL/dx (None when ``need_dx`` is False)."""
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def pop_cache(self):
        """Take the forward cache for backward, with a clear error if there is none."""
        cache = self.cache
        if cache is None:
            raise RuntimeError(f"{self!r}: backward called without a forward pass "
                               "(each backward consumes the cache of exactly one forward)")
        self.cache = None
        return cache

    def check_dtype(self, x, dtype):
        if x.dtype != dtype:
            raise TypeError(f"{self!r}: input dtype is {x.dtype} but the layer is {dtype}; "
                            f"cast the input (x.astype('{dtype}')) or the model (model.to(dtype='{x.dtype}'))")

    def __repr__(self):
        return f"{type(self).__name__}()"


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse. Iterable and indexable."""

    def __init__(self, *layers):
        super().__init__()
        for layer in layers:
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Modules, got {type(layer).__name__}")
        self.layers = list(layers)

    def children(self):
        return self.layers

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy, param_grads=True, need_dx=True):
        """The layers' backwards in reverse order, each with ``param_grads``.

        With ``need_dx`` False nobody wants dL/dx, so the layers in front of the first one with
        parameters to update (a Reshape before the first ConvTranspose2d) want no dy either: that
        layer skips its dx, and those before it only drop their caches.
        """
        first = 0
        if not need_dx:
            first = next((i for i, layer in enumerate(self.layers) if param_grads and layer.learns()),
                         len(self.layers))
            for layer in self.layers[:first]:
                layer.cache = None  # their forward ran; no gradient goes back to them
        for i in reversed(range(first, len(self.layers))):
            dy = self.layers[i].backward(dy, param_grads=param_grads, need_dx=need_dx or i > first)
        return dy if need_dx else None

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
