"""cupy.ElementwiseKernel's contract on the CPU: the same kernel body, compiled by the system's C++ compiler.

``HostElementwiseKernel(in_params, out_params, operation, name)`` takes what CuPy's class takes and
is called as CuPy's is: inputs (arrays or scalars) and optionally the outputs, broadcast together;
``T`` is the dtype of the array arguments (two different dtypes for ``T`` are a TypeError, as on
CuPy) and scalars are cast to it; missing outputs are allocated; one output is returned as is,
several as a tuple. The body runs once per element inside the loop CuPy would generate::

    for (i = 0; i < n; i++) { const T &x = x_[i]; ...; T &y = y_[i]; ...; <operation> }

A ``raw T a`` parameter is the whole array, indexed by the body (``a[k]``, C-ordered over the array's
logical shape, as CuPy's CArray reads a strided array: the host passes a C-contiguous copy when the
array is not one); an ``int32 n`` / ``int64 n`` parameter is an integer scalar passed by value. The
loop index ``i`` is a ``ptrdiff_t``, as CuPy's. (The gather kernels of scratchgan/fast/conv_kernels.py
use both.)

compiled with ``-ffp-contract=off`` (no fused multiply-add: the counterpart of nvrtc's
``--fmad=false``), so +, -, *, / and sqrt round as NumPy's ufuncs do. The bodies' helpers
(``add_rn``, ``mul_rn``, ``is_gt``, ...: single PTX instructions on the GPU, see
scratchgan/fast/kernels.py) are the plain C++ operators here (HOST_PREAMBLE); the kernels' own CUDA
``preamble`` is accepted and not used. x86-64 keeps subnormals unless told otherwise, as NumPy does.
The math functions are the C library's (``exp``, ``log1p``), not CUDA's. Shared libraries are
cached by a hash of their source in the temporary directory. ``compiler()`` says whether a C++
compiler is here at all.
"""
from __future__ import annotations

import ctypes
import hashlib
import inspect
import os
import shutil
import subprocess
import tempfile

import numpy as np

CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# CuPy's integer scalar parameters: (C type, ctypes type)
SCALAR_CTYPES = {"int32": ("int", ctypes.c_int), "int64": ("long long", ctypes.c_longlong)}
FLAGS = ["-O2", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math"]
# the host meaning of scratchgan.fast.kernels.PREAMBLE's IEEE helpers
HOST_PREAMBLE = """
template <class T> static inline T add_rn(T a, T b) { return a + b; }
template <class T> static inline T sub_rn(T a, T b) { return a - b; }
template <class T> static inline T mul_rn(T a, T b) { return a * b; }
template <class T> static inline T div_rn(T a, T b) { return a / b; }
template <class T> static inline T sqrt_rn(T a) { return std::sqrt(a); }
template <class T> static inline bool is_gt(T a, T b) { return a > b; }
template <class T> static inline bool is_ne(T a, T b) { return a != b; }
"""


def compiler():
    """The path of a C++ compiler (``$CXX``, ``g++`` or ``c++``), or None."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _params(params):
    """'T x, raw T cols, int32 H' -> [('T', 'x'), ('raw', 'cols'), ('int32', 'H')]: CuPy's three kinds of
    parameter that the host supports: an element of a broadcast array (``T``), a whole array indexed by
    the body (``raw T``, C-ordered over its logical shape as CuPy's CArray indexes it), an integer scalar."""
    out = []
    for param in params.split(","):
        words = param.split()
        if words == ["raw", "T", *words[2:]] and len(words) == 3:
            out.append(("raw", words[2]))
        elif len(words) == 2 and (words[0] == "T" or words[0] in SCALAR_CTYPES):
            out.append((words[0], words[1]))
        else:
            raise ValueError(f"host kernels support parameters 'T name', 'raw T name' and "
                             f"'{'|'.join(SCALAR_CTYPES)} name' only, got {param.strip()!r}")
    return out


def _names(params):
    """'T x, T dy' -> ['x', 'dy']."""
    return [name for _, name in _params(params)]


def _source(name, inputs, outputs, operation, ctype):
    """The C++ of a kernel: ``inputs`` and ``outputs`` are _params lists."""
    def argument(kind, p):
        return f"{SCALAR_CTYPES[kind][0]} {p}" if kind in SCALAR_CTYPES else f"T *{p}_"
    arguments = ", ".join(argument(kind, p) for kind, p in inputs + outputs)
    raw = " ".join([f"const T *{p} = {p}_;" for kind, p in inputs if kind == "raw"] +
                   [f"T *{p} = {p}_;" for kind, p in outputs if kind == "raw"])
    bindings = " ".join([f"const T &{p} = {p}_[i];" for kind, p in inputs if kind == "T"] +
                        [f"T &{p} = {p}_[i];" for kind, p in outputs if kind == "T"])
    return (f"#include <cmath>\n#include <cstddef>\nusing namespace std;\ntypedef {ctype} T;\n{HOST_PREAMBLE}"
            f'extern "C" void {name}(long n, {arguments}) {{\n  {raw}\n'
            f"  for (ptrdiff_t i = 0; i < n; ++i) {{ {bindings}\n    {operation}\n  }}\n}}\n")


def _build(source, symbol, flags=FLAGS):
    """Compile ``source`` with ``flags`` into a cached shared library; return its function ``symbol``."""
    digest = hashlib.sha256((" ".join(flags) + source).encode()).hexdigest()[:20]
    folder = os.path.join(tempfile.gettempdir(), f"scratchgan-host-kernels-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    library = os.path.join(folder, f"{symbol}-{digest}.so")
    if not os.path.exists(library):
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("no C++ compiler (g++ or c++) found: host kernels cannot be built")
        src = os.path.join(folder, f"{symbol}-{digest}.cpp")
        with open(src, "w") as f:
            f.write(source)
        partial = f"{library}.{os.getpid()}.tmp"
        result = subprocess.run([cxx, *flags, "-o", partial, src], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"kernel {symbol} did not compile:\n{result.stderr}")
        os.replace(partial, library)  # atomic: a parallel test run sees the whole library or none
    return getattr(ctypes.CDLL(library), symbol)


class HostElementwiseKernel:
    """A cupy.ElementwiseKernel look-alike that runs its body on NumPy arrays (see the module docstring)."""

    def __init__(self, in_params, out_params, operation, name="kernel", options=(), **kwargs):
        self.inputs, self.outputs = _params(in_params), _params(out_params)
        # ``options`` (nvrtc's, e.g. --fmad=false) and CUDA's ``preamble`` are accepted and not used:
        # FLAGS and HOST_PREAMBLE are their g++ counterparts
        self.operation, self.name = operation, name
        self._functions = {}  # dtype -> compiled function

    def _function(self, dtype):
        function = self._functions.get(dtype)
        if function is None:
            source = _source(self.name, self.inputs, self.outputs, self.operation, CTYPES[dtype])
            function = self._functions[dtype] = _build(source, self.name)
            function.restype = None
            function.argtypes = [ctypes.c_long] + [SCALAR_CTYPES[kind][1] if kind in SCALAR_CTYPES else ctypes.c_void_p
                                                   for kind, _ in self.inputs + self.outputs]
        return function

    def __call__(self, *args):
        n_in, n_out = len(self.inputs), len(self.outputs)
        if len(args) not in (n_in, n_in + n_out):
            raise TypeError(f"{self.name} takes {n_in} inputs and optionally {n_out} outputs, got {len(args)}")
        kinds = [kind for kind, _ in self.inputs + self.outputs]
        arrays = [a for a, kind in zip(args, kinds) if isinstance(a, np.ndarray) and kind in ("T", "raw")]
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise TypeError(f"{self.name}: the type placeholder T got the dtypes {sorted(map(str, dtypes))}")
        dtype = dtypes.pop()
        if dtype not in CTYPES:
            raise TypeError(f"{self.name}: host kernels take float32 or float64, got {dtype}")
        for a, (kind, p) in zip(args, self.inputs + self.outputs):
            if kind in SCALAR_CTYPES and (isinstance(a, (np.ndarray, float)) or int(a) != a):
                raise TypeError(f"{self.name}: {p} is an {kind} scalar, got {a!r}")
            if kind == "raw" and not isinstance(a, np.ndarray):
                raise TypeError(f"{self.name}: {p} is a raw array, got {type(a).__name__}")
        # the broadcast shape of the elementwise (T) arguments, outputs included (raw ones keep their own)
        shape = np.broadcast_shapes(*(a.shape for a, kind in zip(args, kinds) if kind == "T" and
                                      isinstance(a, np.ndarray)))
        values = []
        for a, kind in zip(args[:n_in], kinds):
            if kind in SCALAR_CTYPES:
                values.append(int(a))
            elif kind == "raw":  # C-ordered over its logical shape, as CArray's a[i] reads a strided array
                values.append(np.ascontiguousarray(a))
            else:  # broadcast and contiguous (a contiguous array is used in place, not copied)
                values.append(np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=dtype), shape)))
        outputs = list(args[n_in:]) or [np.empty(shape, dtype) for _ in range(n_out)]
        for out, (kind, _) in zip(outputs, self.outputs):
            if kind == "T" and (not isinstance(out, np.ndarray) or out.shape != shape):
                raise ValueError(f"{self.name}: outputs must be arrays of the broadcast shape {shape}")
        buffers = [out if out.flags.c_contiguous else np.ascontiguousarray(out) for out in outputs]
        pointers = [v if isinstance(v, int) else v.ctypes.data for v in values + buffers]
        self._function(dtype)(int(np.prod(shape)), *pointers)
        for out, buffer in zip(outputs, buffers):
            if buffer is not out:
                out[...] = buffer
        return outputs[0] if n_out == 1 else tuple(outputs)


def cupy_appended_options():
    """The options CuPy adds after the caller's when it compiles a kernel (cupy/cuda/compiler.py)."""
    from cupy.cuda import compiler
    return ("-ftz=true",) if "'-ftz=true'" in inspect.getsource(compiler._compile_with_cache_cuda) else ()
