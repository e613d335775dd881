"""cupy.ElementwiseKernel's contract on the CPU: the same kernel body, compiled by the system's C++ compiler.

``HostElementwiseKernel(in_params, out_params, operation, name)`` takes what CuPy's class takes and
is called as CuPy's is: inputs (arrays or scalars) and optionally the outputs, broadcast together;
``T`` is the dtype of the array arguments (two different dtypes for ``T`` are a TypeError, as on
CuPy) and scalars are cast to it; missing outputs are allocated; one output is returned as is,
several as a tuple. The body runs once per element inside the loop CuPy would generate::

    for (i = 0; i < n; i++) { const T &x = x_[i]; ...; T &y = y_[i]; ...; <operation> }

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
import os
import shutil
import subprocess
import tempfile

import numpy as np

CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
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


def _names(params):
    """'T x, T dy' -> ['x', 'dy']; only the type placeholder T is supported here."""
    names = []
    for param in params.split(","):
        words = param.split()
        if len(words) != 2 or words[0] != "T":
            raise ValueError(f"host kernels support parameters 'T name' only, got {param.strip()!r}")
        names.append(words[1])
    return names


def _source(name, inputs, outputs, operation, ctype):
    arguments = ", ".join(f"T *{p}_" for p in inputs + outputs)
    bindings = " ".join([f"const T &{p} = {p}_[i];" for p in inputs] + [f"T &{p} = {p}_[i];" for p in outputs])
    return (f"#include <cmath>\nusing namespace std;\ntypedef {ctype} T;\n{HOST_PREAMBLE}"
            f'extern "C" void {name}(long n, {arguments}) {{\n'
            f"  for (long i = 0; i < n; ++i) {{ {bindings}\n    {operation}\n  }}\n}}\n")


def _build(source, symbol):
    """Compile ``source`` into a cached shared library; return its function ``symbol``."""
    digest = hashlib.sha256((" ".join(FLAGS) + source).encode()).hexdigest()[:20]
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
        result = subprocess.run([cxx, *FLAGS, "-o", partial, src], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"kernel {symbol} did not compile:\n{result.stderr}")
        os.replace(partial, library)  # atomic: a parallel test run sees the whole library or none
    return getattr(ctypes.CDLL(library), symbol)


class HostElementwiseKernel:
    """A cupy.ElementwiseKernel look-alike that runs its body on NumPy arrays (see the module docstring)."""

    def __init__(self, in_params, out_params, operation, name="kernel", options=(), **kwargs):
        self.inputs, self.outputs = _names(in_params), _names(out_params)
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
            function.argtypes = [ctypes.c_long] + [ctypes.c_void_p] * (len(self.inputs) + len(self.outputs))
        return function

    def __call__(self, *args):
        n_in, n_out = len(self.inputs), len(self.outputs)
        if len(args) not in (n_in, n_in + n_out):
            raise TypeError(f"{self.name} takes {n_in} inputs and optionally {n_out} outputs, got {len(args)}")
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise TypeError(f"{self.name}: the type placeholder T got the dtypes {sorted(map(str, dtypes))}")
        dtype = dtypes.pop()
        if dtype not in CTYPES:
            raise TypeError(f"{self.name}: host kernels take float32 or float64, got {dtype}")
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        # inputs: broadcast and contiguous (a contiguous array is used in place, not copied)
        inputs = [np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=dtype), shape)) for a in args[:n_in]]
        outputs = list(args[n_in:]) or [np.empty(shape, dtype) for _ in range(n_out)]
        for out in outputs:
            if not isinstance(out, np.ndarray) or out.shape != shape:
                raise ValueError(f"{self.name}: outputs must be arrays of the broadcast shape {shape}")
        buffers = [out if out.flags.c_contiguous else np.ascontiguousarray(out) for out in outputs]
        self._function(dtype)(int(np.prod(shape)), *(a.ctypes.data for a in inputs + buffers))
        for out, buffer in zip(outputs, buffers):
            if buffer is not out:
                out[...] = buffer
        return outputs[0] if n_out == 1 else tuple(outputs)
