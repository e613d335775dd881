"""BLAS through NumPy's own OpenBLAS: ``out += a @ b`` inside the GEMM (beta = 1), and Adam's axpby passes.

GEMM computes C <- alpha A B + beta C. NumPy's ``@`` always asks for beta = 0 (a new C), so the
reference ``p.grad += x.T @ dy`` makes a (D_in, D_out) temporary and then a second pass to add it.
With beta = 1 the product is added into the gradient buffer as it is computed: no temporary, no
extra pass, and the result is the reference's ``+=``. Measured on the MLP GAN's largest Linear
gradient (1024 x 784 at batch 64): 0.48 ms against 0.98 ms (benchmarks/RESULTS.md).

The numbers: into a zero buffer the result is bit for bit the reference's (the same GEMM kernel
adds the same partial products into a C that starts at 0 in both cases); into a non-zero one
the product's partial sums are added to C one block of k at a time instead of summed first, so
it agrees to rounding ("close").

``axpby(a, x, b, y)`` (y <- a x + b y) does in one pass over memory what NumPy needs three ufunc
passes for; fast/cpu.py's Adam uses it for m and v (8 passes over the flat buffers instead of 12).
(Not ``axpy``: OpenBLAS runs that one on its own threads, and called from our threads' parts it
serialised them: Adam took twice as long.)

It needs the CBLAS of the OpenBLAS that NumPy's wheels bundle (``scipy_cblas_sgemm64_``, ...: 64-bit
integers), found beside NumPy; where it is not (another NumPy build, macOS Accelerate, MKL), or
for arrays whose layout BLAS cannot take in place, the callers run NumPy's code instead.
"""
from __future__ import annotations

import ctypes
import glob
import os

import numpy as np


_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_found = None  # {(routine, dtype): ctypes function}, once searched


def _library():
    """NumPy's bundled OpenBLAS as a ctypes library, or None."""
    here = os.path.dirname(np.__file__)
    candidates = (glob.glob(os.path.join(here + ".libs", "*openblas*"))  # Linux / Windows wheels
                  + glob.glob(os.path.join(here, ".dylibs", "*openblas*")))  # macOS wheels
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: this only looks it up
        except OSError:
            continue
        if hasattr(lib, "scipy_cblas_sgemm64_"):
            return lib
    return None


def _routines():
    """{("gemm" | "axpby", dtype): function} of the CBLAS routines found ({} if none)."""
    global _found
    if _found is not None:
        return _found
    _found = {}
    lib = _library()
    if lib is None:
        return _found
    i64, p = ctypes.c_int64, ctypes.c_void_p
    for dtype, letter, scalar in ((np.float32, "s", ctypes.c_float), (np.float64, "d", ctypes.c_double)):
        signatures = {"gemm": [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, p, i64, p, i64,
                               scalar, p, i64],
                      "axpby": [i64, scalar, p, i64, scalar, p, i64]}
        for routine, argtypes in signatures.items():
            function = getattr(lib, f"scipy_cblas_{letter}{routine}64_", None)
            if function is not None:
                function.argtypes, function.restype = argtypes, None
                _found[(routine, np.dtype(dtype))] = function
    return _found


def _flat(*arrays):
    """True when every array is 1-d, contiguous and of one dtype (what the level-1 routines take here)."""
    return all(a.ndim == 1 and a.flags.c_contiguous and a.dtype == arrays[0].dtype for a in arrays)


def axpby(a, x, b, y):
    """y <- a x + b y in one pass; False (nothing done) where BLAS cannot."""
    function = _routines().get(("axpby", y.dtype))
    if function is None or not _flat(x, y) or x.size != y.size or not y.flags.writeable:
        return False
    function(y.size, a, x.ctypes.data, 1, b, y.ctypes.data, 1)
    return True


def _operand(a):
    """(transpose flag, leading dimension) for a row-major GEMM operand, or None if GEMM cannot read it."""
    if a.flags.c_contiguous:
        return _NO_TRANS, max(1, a.shape[1])
    if a.flags.f_contiguous:  # e.g. x.T: the transpose of a C-contiguous array
        return _TRANS, max(1, a.shape[0])
    return None


def add_matmul(out, a, b):
    """out += a @ b with one GEMM call (beta = 1) when the layouts allow it, else the reference."""
    gemm = _routines().get(("gemm", out.dtype))
    ta, tb = _operand(a), _operand(b)
    if (gemm is None or ta is None or tb is None or not out.flags.c_contiguous or not out.flags.writeable
            or a.dtype != out.dtype or b.dtype != out.dtype or out.ndim != 2 or a.ndim != 2 or b.ndim != 2
            or out.shape != (a.shape[0], b.shape[1]) or a.shape[1] != b.shape[0] or a.shape[1] == 0
            or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        out += a @ b
        return
    M, K = a.shape
    N = b.shape[1]
    gemm(_ROW_MAJOR, ta[0], tb[0], M, N, K, 1.0, a.ctypes.data, ta[1], b.ctypes.data, tb[1],
         1.0, out.ctypes.data, max(1, N))


add_matmul.usable = lambda xp: bool(_routines())  # shown as inactive in the table where there is no CBLAS
