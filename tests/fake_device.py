"""A guarded stand-in for a device backend: CuPy's rules, NumPy's arithmetic.

``DeviceArray`` wraps a NumPy array but is not one: NumPy refuses it (``np.exp(d)``,
``np.asarray(d)``, ``host + d`` raise TypeError), and a raw ``numpy.ndarray`` reaching a device
operation raises TypeError as CuPy does ("Unsupported type <class 'numpy.ndarray'>"). The only
ways across are the explicit copies: ``xp.asarray(host)`` / ``xp.array(host)`` (host -> device)
and ``d.get()`` (device -> host), plus ``float(d)`` / ``d.item()`` on one element.

``xp`` (the fake module) exposes NumPy's functions with those rules; dtypes and scalar types are
NumPy's own (``xp.float32`` is ``np.float32``), and ``xp.random.default_rng(seed)`` gives a
generator whose draws are DeviceArrays with exactly NumPy's values. A layer run on the fake
device therefore gives bit-identical results to the NumPy run, or raises where CuPy would have.
"""
from __future__ import annotations

import operator
import types

import numpy as np

from host_kernels import HostElementwiseKernel

__all__ = ["DeviceArray", "FakeElementwiseKernel", "xp", "to_device", "unwrap", "wrap"]


def _unsupported(value, where):
    return TypeError(f"Unsupported type {type(value)!r}: a host NumPy array reached the device "
                     f"operation {where}; copy it explicitly with xp.asarray(...) first")


def unwrap(value, where="?"):
    """DeviceArray -> its NumPy payload; containers recursively; raw ndarrays are an error."""
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, np.ndarray):
        raise _unsupported(value, where)
    if isinstance(value, tuple):
        return tuple(unwrap(v, where) for v in value)
    if isinstance(value, list):
        return [unwrap(v, where) for v in value]
    return value  # Python and NumPy scalars, dtypes, types, slices, None, Ellipsis, strings


def wrap(value):
    """NumPy results -> DeviceArrays (0-d for NumPy scalars, as CuPy returns); containers recursively."""
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(wrap(v) for v in value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


class _Wrapped:
    """A NumPy callable (function, ufunc, bound method) behind the device rules."""

    def __init__(self, fn, where):
        self._fn, self._where = fn, where

    def __call__(self, *args, **kwargs):
        args = unwrap(args, self._where)
        kwargs = {k: unwrap(v, self._where) for k, v in kwargs.items()}
        return wrap(self._fn(*args, **kwargs))

    def __getattr__(self, name):  # ufunc methods (xp.add.at, xp.maximum.reduce) and attributes
        attr = getattr(self._fn, name)
        return _Wrapped(attr, f"{self._where}.{name}") if callable(attr) else attr

    def __repr__(self):
        return f"<fake device {self._where}>"


def _binary(op, name):
    def method(self, other):
        return wrap(op(self._a, unwrap(other, f"DeviceArray.{name}")))
    method.__name__ = name
    return method


def _reflected(op, name):
    def method(self, other):
        return wrap(op(unwrap(other, f"DeviceArray.{name}"), self._a))
    method.__name__ = name
    return method


def _inplace(op, name):
    def method(self, other):
        result = op(self._a, unwrap(other, f"DeviceArray.{name}"))
        if result is not self._a:  # numpy's in-place operators always write into self._a
            raise AssertionError(f"{name} did not work in place")
        return self
    method.__name__ = name
    return method


def _unary(op, name):
    def method(self):
        return wrap(op(self._a))
    method.__name__ = name
    return method


class DeviceArray:
    """An array "on the device": arithmetic as NumPy's, no implicit conversion to or from NumPy."""

    __slots__ = ("_a",)
    __hash__ = None

    def __init__(self, a):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"DeviceArray wraps a numpy.ndarray, got {type(a).__name__}")
        object.__setattr__(self, "_a", a)

    # ------------------------------------------------------------- the walls towards NumPy
    def __array__(self, dtype=None, copy=None):
        raise TypeError("implicit conversion of a device array to NumPy is not allowed; "
                        "use .get() (or scratchgan.backend.to_numpy) for an explicit copy")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        suffix = "" if method == "__call__" else f".{method}"
        raise TypeError(f"numpy.{ufunc.__name__}{suffix} called on a device array; use the array "
                        "module of the input (xp = array_module(x)). A NumPy scalar on the left of an "
                        "operator lands here too: write a Python float")

    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} called on a device array; use the array module "
                        "of the input (xp = array_module(x))")

    def __array_namespace__(self, api_version=None):
        return xp

    # ------------------------------------------------------------- explicit transfers
    def get(self, stream=None, order="C", out=None):
        """Device -> host copy, as ``cupy.ndarray.get``."""
        return self._a.copy()

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return operator.index(self._a)

    def __bool__(self):
        return bool(self._a)

    def __format__(self, spec):
        return format(self._a, spec) if self._a.ndim == 0 else format(str(self), spec)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    def __str__(self):
        return str(self._a)

    # ------------------------------------------------------------- container protocol
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (wrap(v) for v in self._a)

    def __getitem__(self, key):
        return wrap(self._a[unwrap(key, "DeviceArray.__getitem__")])

    def __setitem__(self, key, value):
        self._a[unwrap(key, "DeviceArray.__setitem__")] = unwrap(value, "DeviceArray.__setitem__")

    def __setattr__(self, name, value):
        if name == "shape":  # a.shape = ... reshapes in place, as on NumPy and CuPy
            self._a.shape = value
            return
        raise AttributeError(f"cannot set attribute {name!r} of a DeviceArray")

    # ------------------------------------------------------------- everything else: delegated
    def __getattr__(self, name):
        if name.startswith("__") or name == "_a":
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return _Wrapped(attr, f"DeviceArray.{name}")
        return wrap(attr)  # shape, dtype, ndim, size, T, real, base, ...

    def __dir__(self):
        return sorted(set(dir(type(self))) | set(dir(self._a)))

    def __copy__(self):
        return DeviceArray(self._a.copy())

    def __deepcopy__(self, memo):
        return DeviceArray(self._a.copy())

    # arithmetic, comparison and matmul, plain, reflected and in place
    __add__, __radd__, __iadd__ = _binary(operator.add, "__add__"), _reflected(operator.add, "__radd__"), \
        _inplace(operator.iadd, "__iadd__")
    __sub__, __rsub__, __isub__ = _binary(operator.sub, "__sub__"), _reflected(operator.sub, "__rsub__"), \
        _inplace(operator.isub, "__isub__")
    __mul__, __rmul__, __imul__ = _binary(operator.mul, "__mul__"), _reflected(operator.mul, "__rmul__"), \
        _inplace(operator.imul, "__imul__")
    __truediv__, __rtruediv__, __itruediv__ = _binary(operator.truediv, "__truediv__"), \
        _reflected(operator.truediv, "__rtruediv__"), _inplace(operator.itruediv, "__itruediv__")
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binary(operator.floordiv, "__floordiv__"), \
        _reflected(operator.floordiv, "__rfloordiv__"), _inplace(operator.ifloordiv, "__ifloordiv__")
    __mod__, __rmod__, __imod__ = _binary(operator.mod, "__mod__"), _reflected(operator.mod, "__rmod__"), \
        _inplace(operator.imod, "__imod__")
    __pow__, __rpow__, __ipow__ = _binary(operator.pow, "__pow__"), _reflected(operator.pow, "__rpow__"), \
        _inplace(operator.ipow, "__ipow__")
    __matmul__, __rmatmul__, __imatmul__ = _binary(operator.matmul, "__matmul__"), \
        _reflected(operator.matmul, "__rmatmul__"), _inplace(operator.imatmul, "__imatmul__")
    __and__, __rand__, __iand__ = _binary(operator.and_, "__and__"), _reflected(operator.and_, "__rand__"), \
        _inplace(operator.iand, "__iand__")
    __or__, __ror__, __ior__ = _binary(operator.or_, "__or__"), _reflected(operator.or_, "__ror__"), \
        _inplace(operator.ior, "__ior__")
    __xor__, __rxor__, __ixor__ = _binary(operator.xor, "__xor__"), _reflected(operator.xor, "__rxor__"), \
        _inplace(operator.ixor, "__ixor__")
    __lt__, __le__ = _binary(operator.lt, "__lt__"), _binary(operator.le, "__le__")
    __gt__, __ge__ = _binary(operator.gt, "__gt__"), _binary(operator.ge, "__ge__")
    __eq__, __ne__ = _binary(operator.eq, "__eq__"), _binary(operator.ne, "__ne__")
    __neg__, __pos__ = _unary(operator.neg, "__neg__"), _unary(operator.pos, "__pos__")
    __abs__, __invert__ = _unary(operator.abs, "__abs__"), _unary(operator.invert, "__invert__")


# ----------------------------------------------------------------------------- the fake module

class _FakeGenerator:
    """``numpy.random.Generator`` whose draws land on the device (same values as NumPy's)."""

    def __init__(self, gen):
        self._gen = gen

    def __getattr__(self, name):
        attr = getattr(self._gen, name)
        return _Wrapped(attr, f"random.Generator.{name}") if callable(attr) else attr


class _FakeNamespace(types.ModuleType):
    """A NumPy (sub)module behind the device rules: functions wrapped, types and constants as is."""

    def __init__(self, name, target):
        super().__init__(name)
        self._target = target

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._target, name)
        if isinstance(attr, type):  # np.float32, np.dtype, np.bool_: usable as dtype= unchanged
            return attr
        if isinstance(attr, types.ModuleType):
            return _FakeNamespace(f"{self.__name__}.{name}", attr)
        if callable(attr):
            return _Wrapped(attr, f"{self.__name__}.{name}")
        return attr  # pi, inf, newaxis, ...


class _FakeRandom(_FakeNamespace):
    def default_rng(self, seed=None):
        return _FakeGenerator(np.random.default_rng(seed))


def _asarray(a, dtype, order, copy):
    """``np.asarray(a, dtype, order, copy=copy)`` with NumPy 2's ``copy``, also on NumPy 1.x (no ``copy=``):
    True always copies, None copies only if needed, False never copies (ValueError if it must)."""
    if copy:
        return np.array(a, dtype=dtype, order=order, copy=True)
    out = np.asarray(a, dtype=dtype, order=order)
    if copy is False and out is not a:
        raise ValueError("Unable to avoid copy while creating an array as requested (copy=False)")
    return out


class FakeDeviceModule(_FakeNamespace):
    """The array module of DeviceArrays, as ``cupy`` is the array module of cupy arrays."""

    ndarray = DeviceArray

    def __init__(self):
        super().__init__("fake_device", np)
        self.random = _FakeRandom("fake_device.random", np.random)

    def asarray(self, a, dtype=None, order=None, copy=None):
        """Host -> device copy (a host array is always copied); a device array passes through."""
        if isinstance(a, DeviceArray):
            return DeviceArray(_asarray(a._a, dtype, order, copy))
        return DeviceArray(np.array(unwrap_host(a), dtype=dtype, order=order, copy=True))

    def array(self, a, dtype=None, copy=True, order="K", ndmin=0):
        """Host or device -> a new device array (``cupy.array``)."""
        if isinstance(a, DeviceArray):
            return DeviceArray(np.array(a._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
        return DeviceArray(np.array(unwrap_host(a), dtype=dtype, copy=True, order=order, ndmin=ndmin))


def unwrap_host(value):
    """For explicit copies only: host arrays allowed, device arrays in containers unwrapped."""
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap_host(v) for v in value)
    return value


class FakeElementwiseKernel:
    """``cupy.ElementwiseKernel`` on the fake device: the kernel body compiled for the CPU
    (tests/host_kernels.py) run on the arrays' payloads. Host arrays are refused as CuPy refuses
    them; ``calls`` counts the launches. The fake module has no ElementwiseKernel of its own (so the
    reference code runs there: scratchgan.fast finds no replacement); tests/test_fused_kernels.py and
    tests/test_fast_paths.py lend it this one."""

    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        self.kernel = HostElementwiseKernel(in_params, out_params, operation, name, **kwargs)
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return wrap(self.kernel(*unwrap(args, f"ElementwiseKernel {self.kernel.name}")))


xp = FakeDeviceModule()


def to_device(a, dtype=None):
    """Shorthand for ``xp.asarray(a, dtype)``: a host array copied onto the fake device."""
    return xp.asarray(a, dtype=dtype)
