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
import os
import types

import numpy as np

from host_kernels import HostElementwiseKernel

__all__ = ["DeviceArray", "FakeElementwiseKernel", "FakeRawKernel", "FakeGraph", "CUDARuntimeError", "xp", "to_device",
           "unwrap", "wrap"]


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
        if _capturing is not None:  # capture mode (below): recorded, refused, or a view
            return _captured_call(self._fn, self._where, args, kwargs)
        return wrap(self._fn(*args, **kwargs))

    def __getattr__(self, name):  # ufunc methods (xp.add.at, xp.maximum.reduce) and attributes
        attr = getattr(self._fn, name)
        return _Wrapped(attr, f"{self._where}.{name}") if callable(attr) else attr

    def __repr__(self):
        return f"<fake device {self._where}>"


def _binary(op, name):
    def method(self, other):
        if _capturing is not None:
            _refuse_in_capture(name)
        return wrap(op(self._a, unwrap(other, f"DeviceArray.{name}")))
    method.__name__ = name
    return method


def _reflected(op, name):
    def method(self, other):
        if _capturing is not None:
            _refuse_in_capture(name)
        return wrap(op(unwrap(other, f"DeviceArray.{name}"), self._a))
    method.__name__ = name
    return method


def _inplace(op, name):
    def method(self, other):
        if _capturing is not None:  # recorded as one kernel launch, run at each replay
            _capturing.record(op, (self._a, unwrap(other, f"DeviceArray.{name}")), {}, name)
            return self
        result = op(self._a, unwrap(other, f"DeviceArray.{name}"))
        if result is not self._a:  # numpy's in-place operators always write into self._a
            raise AssertionError(f"{name} did not work in place")
        return self
    method.__name__ = name
    return method


def _unary(op, name):
    def method(self):
        if _capturing is not None:
            _refuse_in_capture(name)
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
        _refuse_sync("DeviceArray.get")
        return self._a.copy()

    def item(self):
        _refuse_sync("DeviceArray.item")
        return self._a.item()

    def tolist(self):
        _refuse_sync("DeviceArray.tolist")
        return self._a.tolist()

    def __float__(self):
        _refuse_sync("float(device array)")
        return float(self._a)

    def __int__(self):
        _refuse_sync("int(device array)")
        return int(self._a)

    def __index__(self):
        _refuse_sync("operator.index(device array)")
        return operator.index(self._a)

    def __bool__(self):
        _refuse_sync("bool(device array)")
        return bool(self._a)

    def __format__(self, spec):
        _refuse_sync("format(device array)")
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
        key = _wrapped_key(self._a.shape, unwrap(key, "DeviceArray.__getitem__"))
        if _capturing is not None:  # a view is free; a copy (advanced indexing) is an allocation
            return _captured_view(self._a, key)
        return wrap(self._a[key])

    def __setitem__(self, key, value):
        key = _wrapped_key(self._a.shape, unwrap(key, "DeviceArray.__setitem__"))
        if _capturing is not None:  # a fill or copy kernel: recorded
            _capturing.record(operator.setitem, (self._a, key, unwrap(value, "DeviceArray.__setitem__")), {},
                              "__setitem__")
            return
        self._a[key] = unwrap(value, "DeviceArray.__setitem__")

    def take(self, indices, axis=None, out=None):
        """``cupy.ndarray.take``: out-of-range indices wrap (see ``xp.take``)."""
        return xp.take(self, indices, axis=axis, out=out)

    def put(self, indices, values, mode="wrap"):
        """``cupy.ndarray.put``: out-of-range indices wrap by default (NumPy's default raises)."""
        return xp.put(self, indices, values, mode=mode)

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


def _wrapped_key(shape, key):
    """An index with its integer arrays taken modulo their axis's length: CuPy wraps out-of-range integer-array
    indices, reading and writing (cupy/_core/_routines_indexing.pyx, "wrap all out-of-bound indices"), where
    NumPy raises IndexError. Python integers and slices are basic indexing, checked by both alike."""
    parts = key if isinstance(key, tuple) else (key,)
    parts = tuple(np.asarray(p) if isinstance(p, list) else p for p in parts)
    if not any(isinstance(p, np.ndarray) and p.dtype.kind in "iu" for p in parts):
        return key
    def width(p):  # the axes of ``shape`` that one part of the index consumes
        if p is None or p is Ellipsis:
            return 0
        return p.ndim if isinstance(p, np.ndarray) and p.dtype == bool else 1
    axis, out = 0, []
    for p in parts:
        if p is Ellipsis:
            axis += len(shape) - sum(map(width, parts))
        elif isinstance(p, np.ndarray) and p.dtype.kind in "iu" and shape[axis]:
            p = p % shape[axis]
        out.append(p)
        axis += width(p)
    return tuple(out) if isinstance(key, tuple) else out[0]


def _take(a, indices, axis=None, out=None):
    """``cupy.take(a, indices, axis=None, out=None)``: out-of-range indices wrap around (cupy_take's kernel takes
    ``indices % index_range``), where NumPy's take raises; CuPy has no ``mode=``."""
    return np.take(a, indices, axis=axis, out=out, mode="wrap")


# ----------------------------------------------------------------------------- the fake module

# CuPy 14.2's cupy.random.Generator (cupy/random/_generator_api.pyx) has these draws and no others (no
# normal, permutation, shuffle, choice, bytes, spawn): the fake's generator has the same set.
GENERATOR_METHODS = frozenset({
    "random", "uniform", "integers", "beta", "chisquare", "dirichlet", "exponential", "f", "geometric",
    "hypergeometric", "logseries", "standard_exponential", "poisson", "power", "standard_normal", "gamma",
    "standard_gamma", "binomial"})


class _FakeXORWOW:
    """``cupy.random.XORWOW(seed, size=-1)``: the fake's bit generator. ``size`` is the number of cuRAND states
    (CuPy's default, -1, is 8 * 256 * the GPU's SM count: ``None`` here, "whatever the card has"). The draws are
    NumPy's ``default_rng(seed)``'s (PCG64), so that a run on the fake device keeps the NumPy run's bits."""

    def __init__(self, seed=None, *, size=-1):
        self.bits = np.random.PCG64(seed)
        self._size = None if size < 0 else int(size)

    def _state_size(self):
        """The number of states, as CuPy's ``_state_size()``; None for the card-dependent default."""
        return self._size


def _check_output_array(out, dtype, size, only_c_contiguous=False):
    """CuPy's Generator._check_output_array: out's dtype must be ``dtype``, out contiguous, size out's shape."""
    dtype = np.dtype(dtype)
    if out.dtype.char != dtype.char:
        raise TypeError(f"Supplied output array has the wrong type. Expected {dtype.name}, got {out.dtype.name}")
    if not out.flags.c_contiguous and (only_c_contiguous or not out.flags.f_contiguous):
        raise ValueError("Supplied output array is not contiguous, writable or aligned.")
    if size is not None and (tuple(size) if np.iterable(size) else (size,)) != out.shape:
        raise ValueError("size must match out.shape when used together")


class _FakeGenerator:
    """``cupy.random.Generator`` on the fake device: NumPy's values, CuPy's rules.

    - only CuPy's methods (GENERATOR_METHODS); a draw without ``size`` is a 0-d device array, not a Python float;
    - ``random``, ``standard_exponential`` (and ``standard_gamma`` into float32) with ``out=`` draw ``size`` values
      into a new array and copy it into ``out``; without ``size`` that is ONE value broadcast into the whole of
      ``out`` (_generator_api.pyx: ``size = ()``, then ``elementwise_copy(y, out)``), where NumPy fills ``out``;
    - ``standard_normal(out=)`` draws straight into ``out``, every element, with or without ``size``;
    - ``out`` must have the asked dtype and be contiguous, and ``size`` (when given) must be its shape.
    A draw into ``out`` is recorded during a capture; one without ``out`` allocates, and is refused there."""

    def __init__(self, gen, bit_generator=None):
        self._gen, self.bit_generator = gen, bit_generator

    def __getattr__(self, name):
        if name not in GENERATOR_METHODS:
            raise AttributeError(f"cupy.random.Generator has no attribute {name!r} (CuPy 14's generator draws: "
                                 f"{', '.join(sorted(GENERATOR_METHODS))})")
        draw = getattr(self._gen, name)

        def method(*args, **kwargs):
            if _capturing is not None:
                _refuse_in_capture(f"random.Generator.{name}")
            return _device_draw(draw(*unwrap(args, name), **{k: unwrap(v, name) for k, v in kwargs.items()}))
        return method

    def random(self, size=None, dtype=np.float64, out=None):
        return self._draw("random", size, dtype, out, fills_out=False)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return self._draw("standard_normal", size, dtype, out, fills_out=True)

    def standard_exponential(self, size=None, dtype=np.float64, method="inv", out=None):
        if method == "zig":
            raise NotImplementedError("Ziggurat method is not supported")
        return self._draw("standard_exponential", size, dtype, out, fills_out=False)

    def standard_gamma(self, shape, size=None, dtype=np.float64, out=None):
        # CuPy draws straight into a float64 out; into a float32 out through a new float64 array of ``size``
        fills_out = out is not None and unwrap(out, "standard_gamma").dtype.char == "d"
        return self._draw("standard_gamma", size, dtype, out, fills_out, unwrap(shape, "standard_gamma"),
                          only_c_contiguous=True)

    def _draw(self, name, size, dtype, out, fills_out, *args, only_c_contiguous=False):
        draw, where = getattr(self._gen, name), f"random.Generator.{name}"
        if out is None:
            if _capturing is not None:
                _refuse_in_capture(where)
            return _device_draw(draw(*args, size=size, dtype=dtype), dtype)
        target = unwrap(out, where)
        _check_output_array(target, dtype, size, only_c_contiguous)
        if fills_out:
            def run():
                draw(*args, dtype=dtype, out=target)
        else:
            def run():  # ``size`` values (one without size) into a new array, then copied, broadcast, into out
                target[...] = draw(*args, size=size, dtype=dtype)
        if _capturing is not None:
            _capturing.record(run, (), {}, where)
        else:
            run()
        return out


def _device_draw(value, dtype=None):
    """A draw as CuPy returns it: an array on the device, 0-d for a single value (NumPy gives a Python scalar)."""
    if not isinstance(value, np.ndarray):
        value = np.asarray(value, dtype=dtype)
    return wrap(value)


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
    XORWOW = _FakeXORWOW

    def default_rng(self, seed=None):
        """``cupy.random.default_rng``: a seed gives XORWOW(seed) with CuPy's card-dependent number of states;
        a bit generator is wrapped as it is."""
        if _capturing is not None:  # a generator's state is a new device allocation
            _refuse_in_capture("random.default_rng")
        bits = seed if isinstance(seed, _FakeXORWOW) else _FakeXORWOW(seed)
        return _FakeGenerator(np.random.Generator(bits.bits), bits)


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
        self._core = _FakeCore()

    def take(self, a, indices, axis=None, out=None):
        return _Wrapped(_take, "fake_device.take")(a, indices, axis=axis, out=out)

    def put(self, a, ind, v, mode="wrap"):
        """``cupy.put``: its default mode is "wrap" (NumPy's is "raise")."""
        return _Wrapped(np.put, "fake_device.put")(a, ind, v, mode=mode)

    def asarray(self, a, dtype=None, order=None, copy=None):
        """Host -> device copy (a host array is always copied); a device array passes through."""
        if _capturing is not None:
            if not isinstance(a, DeviceArray):
                _refuse_sync("xp.asarray(host data)")
            return _captured_call(_asarray, "asarray", (a._a, dtype, order, copy), {})
        if isinstance(a, DeviceArray):
            return DeviceArray(_asarray(a._a, dtype, order, copy))
        return DeviceArray(np.array(unwrap_host(a), dtype=dtype, order=order, copy=True))

    def array(self, a, dtype=None, copy=True, order="K", ndmin=0):
        """Host or device -> a new device array (``cupy.array``)."""
        if _capturing is not None:
            _refuse_sync("xp.array") if not isinstance(a, DeviceArray) else _refuse_in_capture("xp.array")
        if isinstance(a, DeviceArray):
            return DeviceArray(np.array(a._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
        return DeviceArray(np.array(unwrap_host(a), dtype=dtype, copy=True, order=order, ndmin=ndmin))


class _FakeCore:
    """The accelerator switches of ``cupy._core`` (cupy/_core/_accelerator.pyx): lists of names, from
    CUPY_ACCELERATORS as CuPy reads it ("cub" when unset). The fake computes nothing differently with them;
    during a capture, a reduction that CUB would run is refused (see ``_cub_reduction``)."""

    def __init__(self):
        names = [name for name in os.environ.get("CUPY_ACCELERATORS", "cub").split(",") if name]
        self.accelerators = {kind: list(names) for kind in ("elementwise", "reduction", "routine")}

    def _get(kind):
        return lambda self: list(self.accelerators[kind])

    def _set(kind):
        def set_accelerators(self, accelerators):
            self.accelerators[kind] = list(accelerators)
        return set_accelerators

    get_elementwise_accelerators, set_elementwise_accelerators = _get("elementwise"), _set("elementwise")
    get_reduction_accelerators, set_reduction_accelerators = _get("reduction"), _set("reduction")
    get_routine_accelerators, set_routine_accelerators = _get("routine"), _set("routine")
    del _get, _set


def unwrap_host(value):
    """For explicit copies only: host arrays allowed, device arrays in containers unwrapped."""
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap_host(v) for v in value)
    return value


class FakeElementwiseKernel:
    """``cupy.ElementwiseKernel`` on the fake device: the kernel body compiled for the CPU
    (tests/support/host_kernels.py) run on the arrays' payloads. Host arrays are refused as CuPy refuses
    them; ``calls`` counts the launches. The fake module has no ElementwiseKernel of its own (so the
    reference code runs there: scratchgan.fast finds no replacement); tests/fast/test_fused_kernels.py and
    tests/fast/test_fast_paths.py lend it this one."""

    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        self.kernel = HostElementwiseKernel(in_params, out_params, operation, name, **kwargs)
        self.calls = 0

    def __call__(self, *args):
        args = unwrap(args, f"ElementwiseKernel {self.kernel.name}")
        if _capturing is not None:  # recorded when its outputs are given; else it would allocate them
            if len(args) != len(self.kernel.inputs) + len(self.kernel.outputs):
                _refuse_in_capture(f"ElementwiseKernel {self.kernel.name} without its outputs")
            _capturing.record(self._launch, args, {}, self.kernel.name)
            return wrap(args[len(self.kernel.inputs)] if len(self.kernel.outputs) == 1
                        else tuple(args[len(self.kernel.inputs):]))
        return wrap(self._launch(*args))

    def _launch(self, *args):
        self.calls += 1
        return self.kernel(*args)


xp = FakeDeviceModule()


def to_device(a, dtype=None):
    """Shorthand for ``xp.asarray(a, dtype)``: a host array copied onto the fake device."""
    return xp.asarray(a, dtype=dtype)


# ----------------------------------------------------------------------------- capture mode
# What CuPy refuses while a stream is being captured into a CUDA graph (fast/cuda_graph/graph.py), refused here
# on the CPU, with CuPy's errors:
#   - any cuBLAS call (matmul, dot, tensordot, einsum, @, linalg): NotImplementedError, as CuPy's guard in
#     cupy_backends/cuda/libs/cublas.pyx (cupy/cupy#6290); any cuRAND call (the legacy xp.random.* functions;
#     a default_rng Generator runs its own kernels and is allowed, with out=): the same from curand.pyx;
#   - any host transfer or synchronisation (.get(), float(d), .item(), bool(d), xp.asarray(host)) and any
#     allocation: CUDA's cudaErrorStreamCaptureUnsupported. Stricter than CuPy, which may hand out a block
#     already cached in the capturing pool: here EVERY new array is refused, so a step that passes runs
#     on buffers allocated before the capture, every operation writing into one (out=, in place, a kernel's
#     outputs) -- "fixed buffers", enforced;
#   - a reduction that CuPy's CUB accelerator would run (xp._core's "cub", CuPy's default): CUB's device reduce
#     allocates its result and its workspace and adds a copy (cupy/cuda/cub.pyx), so it is refused as an
#     allocation; with the accelerators off (fast/cuda_graph/graph.py does so around its warm-up and capture) a reduction
#     is one kernel, recorded.
# A refused CUDA call (a transfer, a sync, an allocation) also invalidates the capture, as CUDA does: the
# capture's end (``xp.end_capture()``) then raises cudaErrorStreamCaptureInvalidated.
# Between ``xp.begin_capture()`` and ``xp.end_capture()`` (which returns the graph), or inside the tests'
# shorthand ``with xp.stream_capture() as graph:`` (which ends quietly), nothing is computed (as in a real
# capture): each launch is recorded with the arrays and scalars it was given, and ``graph.launch()`` replays
# the record. So a value computed on the host at capture time is replayed frozen, as a CUDA graph would
# freeze it; views (reshape, .T, basic slicing) are free and allowed.

class CUDARuntimeError(RuntimeError):
    """cupy_backends.cuda.api.runtime.CUDARuntimeError, as raised during a capture."""


_capturing = None  # the FakeGraph being recorded, or None
_CUBLAS = {"matmul", "dot", "vdot", "inner", "tensordot", "einsum", "__matmul__", "__rmatmul__", "__imatmul__"}
_MUTATORS = {"copyto", "fill", "put", "putmask", "place", "at"}  # write in place without an out= argument
_CAPTURE_UNSUPPORTED = "cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing"


def _refuse_sync(what):
    if _capturing is not None:
        _capturing.invalidated = _capturing.invalidated or what
        raise CUDARuntimeError(f"{_CAPTURE_UNSUPPORTED} (fake device: {what} is a host transfer or sync)")


def _refuse_in_capture(what, why="allocates a new array"):
    name = what.rsplit(".", 1)[-1]
    if name in _CUBLAS or ".linalg." in what:  # CuPy's own guard, before any CUDA call: the capture goes on
        raise NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")
    _capturing.invalidated = _capturing.invalidated or what
    raise CUDARuntimeError(f"{_CAPTURE_UNSUPPORTED} (fake device: {what} {why})")


_REDUCTIONS = {"sum", "prod", "max", "min", "amax", "amin", "argmax", "argmin", "mean"}
CUB_REDUCE_SIZE_THRESHOLD = 128  # cupy/_core/_cub_reduction.pyx: smaller reductions skip CUB's block reduction


def _cub_reduction(name, fn, args, kwargs):
    """True when CuPy, with its accelerators as ``xp._core`` has them, would run this reduction with CUB: on a
    C-contiguous input reduced over its trailing axes (all of them included) or an F-contiguous one over its
    leading axes; by the routine accelerator (sum, prod, min, max, argmin, argmax, mean) at any size, by the
    reduction accelerator from CUB_REDUCE_SIZE_THRESHOLD elements on."""
    if name not in _REDUCTIONS:
        return False
    owner = getattr(fn, "__self__", None)
    x, rest = (owner, args) if isinstance(owner, np.ndarray) else (args[0] if args else None, args[1:])
    if not isinstance(x, np.ndarray) or x.size == 0:
        return False
    axis = kwargs.get("axis", rest[0] if rest else None)
    axes = tuple(range(x.ndim)) if axis is None else tuple(sorted(
        a % x.ndim for a in (axis if isinstance(axis, tuple) else (axis,))))
    along = (x.flags.c_contiguous and axes == tuple(range(x.ndim - len(axes), x.ndim))) or \
        (x.flags.f_contiguous and axes == tuple(range(len(axes))))
    size = int(np.prod([x.shape[a] for a in axes]))
    core = xp._core
    return along and ("cub" in core.get_routine_accelerators() or (
        "cub" in core.get_reduction_accelerators() and size >= CUB_REDUCE_SIZE_THRESHOLD))


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _arrays_in(values):
    for v in values:
        if isinstance(v, np.ndarray):
            yield v
        elif isinstance(v, (tuple, list)):
            yield from _arrays_in(v)


def _check_no_allocation(result, args, kwargs, where):
    """A result of a call run during the capture must be one of its inputs or a view of one."""
    if isinstance(result, np.generic):
        _refuse_in_capture(where)
    results = result if isinstance(result, (tuple, list)) else (result,)
    inputs = list(_arrays_in(args)) + list(_arrays_in(kwargs.values()))
    roots = {id(_root(a)) for a in inputs}
    for r in results:
        if isinstance(r, np.generic) or (isinstance(r, np.ndarray) and id(_root(r)) not in roots):
            _refuse_in_capture(where)


def _captured_call(fn, where, args, kwargs):
    name = where.rsplit(".", 1)[-1]
    if name in _CUBLAS or ".linalg." in where:
        _refuse_in_capture(where)
    if where.startswith("fake_device.random."):
        raise NotImplementedError("calling cuRAND API during stream capture is currently unsupported")
    positional_out = isinstance(fn, np.ufunc) and len(args) > fn.nin
    if _cub_reduction(name, fn, args, kwargs):
        _refuse_in_capture(where, "runs through CUB, which allocates its result and workspace (cupy._core's "
                                  "reduction and routine accelerators include 'cub')")
    if kwargs.get("out") is not None or positional_out or name in _MUTATORS:
        _capturing.record(fn, args, kwargs, where)
        return wrap(kwargs["out"] if kwargs.get("out") is not None else (args[fn.nin] if positional_out else None))
    result = fn(*args, **kwargs)  # views, metadata: nothing is computed
    owner = getattr(fn, "__self__", None)  # a method's array (x.reshape): its views are free too
    _check_no_allocation(result, args + ((owner,) if isinstance(owner, np.ndarray) else ()), kwargs, where)
    return wrap(result)


def _captured_view(a, key):
    result = a[key]
    if isinstance(result, np.generic):  # a[i, j] is a NumPy scalar but a 0-d view on CuPy
        result = a[(key if isinstance(key, tuple) else (key,)) + (Ellipsis,)]
    _check_no_allocation(result, (a,), {}, "DeviceArray.__getitem__ (advanced indexing copies)")
    return wrap(result)


class FakeGraph:
    """The launches recorded by a capture; ``launch()`` replays them in order (``cupy.cuda.Graph.launch``)."""

    def __init__(self):
        self.ops, self.launches = [], 0
        self.invalidated = None  # the first refused CUDA call: the capture's end then fails

    def record(self, fn, args, kwargs, where):
        self.ops.append((fn, args, kwargs, where))

    def launch(self, stream=None):
        for fn, args, kwargs, _ in self.ops:
            fn(*args, **kwargs)
        self.launches += 1


def begin_capture():
    """``Stream.begin_capture()``: from here launches are recorded, not run."""
    global _capturing
    if _capturing is not None:
        raise CUDARuntimeError("cudaErrorIllegalState: the stream is already capturing")
    _capturing = FakeGraph()


def end_capture():
    """``Stream.end_capture()``: the recorded graph; cudaErrorStreamCaptureInvalidated when a CUDA call was
    refused during the capture (CUDA ends the capture all the same: the stream is no longer capturing)."""
    global _capturing
    if _capturing is None:
        raise CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
    graph, _capturing = _capturing, None
    if graph.invalidated:
        raise CUDARuntimeError("cudaErrorStreamCaptureInvalidated: operation failed due to a previous error "
                               f"during capture (fake device: {graph.invalidated})")
    return graph


class _Capture:
    """``with xp.stream_capture() as graph:`` records instead of running; refuses what CuPy refuses. The tests'
    shorthand: it ends the capture quietly, where ``end_capture()`` reports an invalidated one."""

    def __enter__(self):
        begin_capture()
        self.graph = _capturing
        return self.graph

    def __exit__(self, *exc):
        global _capturing
        _capturing = None
        return False


def stream_capture():
    return _Capture()


def capturing():
    """True inside ``xp.stream_capture()``."""
    return _capturing is not None


FakeDeviceModule.stream_capture = staticmethod(stream_capture)
FakeDeviceModule.begin_capture = staticmethod(begin_capture)
FakeDeviceModule.end_capture = staticmethod(end_capture)


class FakeRawKernel:
    """``cupy.RawKernel`` on the fake device: the CUDA source compiled for the host (tests/support/host_raw_kernels.py),
    run on the arrays' payloads; recorded during a capture. Tests lend it as ``xp.RawKernel``."""

    def __init__(self, code, name, **kwargs):
        from host_raw_kernels import HostRawKernel
        self.kernel = HostRawKernel(code, name, **kwargs)
        self.calls = 0

    def __call__(self, grid, block, args, shared_mem=0):
        args = tuple(unwrap(tuple(args), f"RawKernel {self.kernel.name}"))
        if _capturing is not None:
            _capturing.record(self._launch, (grid, block, args), {}, f"RawKernel {self.kernel.name}")
            return
        self._launch(grid, block, args)

    def _launch(self, grid, block, args):
        self.calls += 1
        self.kernel(grid, block, args)
