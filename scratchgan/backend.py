"""The one module that knows NumPy from CuPy.

Layer code never imports numpy or cupy to work on data: it asks ``array_module(x)``
for the module that owns ``x`` and calls that (``xp.exp``, ``xp.where``, ...), so the
same line runs on the CPU and on the GPU. This file also holds the host/device
conversions (``to_numpy``, ``to_device``), ``synchronize`` for honest GPU timings,
and the clear one-line errors users get when a backend cannot be used.
"""
from __future__ import annotations

import os
import threading

import numpy as np

BACKENDS = ("numpy", "cupy")
INSTALL_HINT = 'install it with: pip install "scratchgan[cuda12]" (or "scratchgan[cuda13]" for CUDA 13)'


class BackendError(RuntimeError):
    """A backend was asked for that cannot be used here; the message says why and what to do."""


_cupy = None  # the imported cupy module, once a caller has asked for it
_numpy_heap_ready = False  # see _reuse_freed_numpy_memory


def _reuse_freed_numpy_memory():
    """Let the C allocator reuse freed activations instead of returning them to the OS.

    NumPy takes array memory from malloc. glibc serves large blocks (above a threshold that starts
    at 128 KiB) with mmap and unmaps them on free, so every fresh (1024, 1024) float32 temporary of a
    training step comes back as 1,024 new zero-filled pages: ~7,500 page faults and ~20 ms of kernel
    time per step of the MLP GAN at batch 1024 (benchmarks/RESULTS.md). glibc raises that threshold
    to the size of any mmapped block that is freed (mallopt(3), "dynamic mmap threshold"), up to
    32 MiB; freeing one such block once makes every smaller array come from the heap, where freed
    memory is reused. The cost: up to 64 MiB of freed memory stays with the process. Other C
    libraries simply allocate and free one block.
    """
    global _numpy_heap_ready
    if not _numpy_heap_ready:
        _numpy_heap_ready = True
        block = np.empty((32 << 20) - (64 << 10), dtype=np.uint8)  # just under glibc's 32 MiB cap
        del block


def cpu_threads():
    """Threads for scratchgan's own CPU work (Adam, run_in_parts): the cores this process may use,
    or fewer when OPENBLAS_NUM_THREADS or OMP_NUM_THREADS says so (a limit set for the matmuls is
    taken to be meant for the whole process)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            cores = min(cores, int(value))
    return max(1, cores)


# Below this many elements a part is too small to pay for starting a thread (~0.1 ms).
PARALLEL_MIN_ELEMENTS = 1 << 20


def run_in_parts(xp, task, n, elements, threads=None, pool=None):
    """Run ``task(start, stop)`` over the index range [0, n), on NumPy split into one contiguous part per
    thread (NumPy's copies and ufuncs release the GIL while they run).

    For work that BLAS does not parallelise: optimizer updates, im2col, col2im, layout transposes.
    ``elements`` is the size of the work: below PARALLEL_MIN_ELEMENTS, or on CuPy (one kernel per
    call either way), or with one thread, it is simply ``task(0, n)``. ``threads`` defaults to
    cpu_threads(). The calling thread takes the first part; the others go to ``pool`` (an executor
    kept by a caller that runs every step: starting a thread costs ~0.2 ms) or to new threads. The
    parts must not overlap in what they write; an error in any part is raised here.
    """
    threads = min(threads or cpu_threads(), n)
    if xp is not np or threads < 2 or elements < PARALLEL_MIN_ELEMENTS:
        task(0, n)
        return
    bounds = [n * i // threads for i in range(threads + 1)]
    errors = []

    def run(start, stop):
        try:
            task(start, stop)
        except BaseException as e:  # handed to the calling thread below
            errors.append(e)

    if pool is not None:
        others = [pool.submit(run, bounds[i], bounds[i + 1]) for i in range(1, threads)]
        wait = [future.result for future in others]
    else:
        others = [threading.Thread(target=run, args=(bounds[i], bounds[i + 1]), daemon=True)
                  for i in range(1, threads)]
        for w in others:
            w.start()
        wait = [w.join for w in others]
    run(bounds[0], bounds[1])
    for finish in wait:
        finish()
    if errors:
        raise errors[0]


def _import_cupy():
    """Import CuPy and check that a GPU is visible; raise BackendError with a fix otherwise."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError:
        raise BackendError(f"backend 'cupy' asked for, but CuPy is not installed; {INSTALL_HINT}") from None
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken: CuPy raises its own runtime errors
        raise BackendError(f"CuPy is installed but no usable GPU was found ({e}); "
                           "use --backend numpy, or check the NVIDIA driver with nvidia-smi") from None
    if n_gpus == 0:
        raise BackendError("CuPy is installed but no GPU is visible; use --backend numpy, "
                           "or check CUDA_VISIBLE_DEVICES and nvidia-smi")
    _cupy = cupy
    return cupy


def get_xp(name="numpy"):
    """The array module for a backend name: ``"numpy"`` or ``"cupy"``.

    An array module object (anything with ``asarray``) is passed through unchanged, which lets
    tests run the layers on a guarded stand-in for a device backend.
    """
    if not isinstance(name, str):
        if hasattr(name, "asarray"):
            return name
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    key = name.strip().lower()
    if key == "numpy":
        _reuse_freed_numpy_memory()
        return np
    if key == "cupy":
        return _import_cupy()
    raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


def cupy_available():
    """True when CuPy imports and a GPU is visible (used by tests to skip, never raises)."""
    try:
        _import_cupy()
        return True
    except BackendError:
        return False


def array_module(x):
    """The array module that owns ``x``: numpy for NumPy arrays and scalars, cupy for CuPy arrays.

    Other array types answer through the Array API's ``__array_namespace__`` hook.
    """
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy
    namespace = getattr(x, "__array_namespace__", None)
    if namespace is not None:
        return namespace()
    raise TypeError(f"expected an array, got {type(x).__name__}")


def backend_name(xp):
    """'numpy', 'cupy' or the module's own name: for messages, configs and checkpoints."""
    return xp.__name__.split(".")[0]


def to_numpy(a):
    """A NumPy copy (or the array itself, if already on the host) of any backend's array."""
    if isinstance(a, (np.ndarray, np.generic)):
        return np.asarray(a)
    if hasattr(a, "get"):  # CuPy's explicit device-to-host copy
        return a.get()
    return np.asarray(a)


def to_device(a, xp, dtype=None):
    """Copy a host or device array onto backend ``xp`` (host to device once; never per step)."""
    if xp is np:
        a = to_numpy(a)
    return xp.asarray(a, dtype=dtype)


def resolve_dtype(dtype):
    """A NumPy dtype from a name ('float32') or a dtype; floats only, with a clear error."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"unknown dtype {dtype!r}; use 'float32' or 'float64'") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)):
        raise ValueError(f"dtype must be a float type ('float32', 'float64'); got {dt}")
    return dt


def synchronize(xp=None):
    """Wait for the GPU to finish queued work (a no-op on NumPy); call it before reading a clock."""
    if xp is not None and xp is _cupy and _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()
    elif xp is None and _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()


def scatter_add(a, indices, values):
    """a[indices] += values in place, every repeated index adding its share (numpy.add.at).

    CuPy's ufuncs have no ``.at`` before v13; ``cupyx.scatter_add`` is its equivalent in every
    version, so this is the one line layers call (nn.Embedding's dW).
    """
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        import cupyx
        cupyx.scatter_add(a, indices, values)
    else:
        array_module(a).add.at(a, indices, values)


# ---------------------------------------------------------------------------------- fused kernels
# CuPy-only speed-ups. On a GPU every NumPy-style pass (x * slope, then maximum, ...) is a kernel
# launch plus a trip of the whole array through memory; at MNIST sizes the launches dominate. Each
# kernel below does the work of several such passes in one launch, one element per thread
# (cupy.ElementwiseKernel: inputs are read-only, outputs are written; T is the dtype of the array
# arguments and scalar arguments are cast to it). Each body performs exactly the operations of the
# NumPy lines it replaces, in the same order, and is compiled with FMA contraction off, so the
# kernels built from +, -, *, / and sqrt give the NumPy path's results bit for bit; exp and log1p
# are CUDA's, not NumPy's, so those two kernels agree to a few ulp. tests/test_fused_kernels.py compiles these same bodies for
# the CPU with the system's C++ compiler and runs the layers, losses and Adam through them against
# the NumPy path (and through CuPy itself where a GPU is visible). SCRATCHGAN_FUSED_KERNELS=0 turns
# them off, so CuPy runs the plain xp code path of every layer.
FUSED_KERNELS = {  # name: (inputs, outputs, body); the layer that calls it holds the maths
    "leaky_relu_forward": ("T x, T slope", "T y",
                           "y = x > 0 ? x : x * slope;"),
    "leaky_relu_backward": ("T dy, T x, T slope", "T dx",
                            "dx = x > 0 ? dy : dy * slope;"),
    "relu_backward": ("T dy, T x", "T dx",
                      "dx = dy * (x > 0 ? T(1) : T(0));"),
    "tanh_backward": ("T dy, T y", "T dx",
                      "dx = (T(1) - y * y) * dy;"),
    "sigmoid_forward": ("T x", "T y",
                        "T e = exp(-fabs(x));  y = x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);"),
    "sigmoid_backward": ("T dy, T y", "T dx",
                         "dx = dy * y * (T(1) - y);"),
    "bce_with_logits": ("T z, T t, T inv_n", "T loss, T dz",
                        "T e = exp(-fabs(z));"
                        "  loss = (z > 0 ? z : T(0)) - z * t + log1p(e);"
                        "  dz = ((z >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e)) - t) * inv_n;"),
    "batchnorm_normalize": ("T x, T mean, T inv_std, T gamma, T beta", "T xhat, T y",
                            "xhat = (x - mean) * inv_std;  y = xhat * gamma + beta;"),
    "batchnorm_backward_train": ("T dy, T xhat, T mean_dy, T mean_dy_xhat, T scale", "T dx",
                                 "dx = (dy - mean_dy - xhat * mean_dy_xhat) * scale;"),
    "adam": ("T beta1, T beta2, T neg_step_size, T eps_sum, T weight_decay", "T theta, T g, T m_sum, T v_sum",
             "if (weight_decay != T(0)) g = g + theta * weight_decay;"
             "  m_sum = m_sum * beta1 + g;"
             "  v_sum = v_sum * beta2 + g * g;"
             "  theta = theta + m_sum / (sqrt(v_sum) + eps_sum) * neg_step_size;"),
}
FUSED_OPTIONS = ("--fmad=false",)  # no a * b + c contracted into one rounding: the NumPy path's results
_fused_cache = {}  # (kernel factory, name) -> kernel: each is built once and compiled on its first call


def fused_kernel(xp, name):
    """The fused kernel ``name`` of FUSED_KERNELS for array module ``xp``, or None where there is none.

    None on NumPy (its ufuncs are the CPU path), on any module without ``ElementwiseKernel``, and when
    the environment sets SCRATCHGAN_FUSED_KERNELS=0. Callers fall back to their xp code.
    """
    if xp is np or os.environ.get("SCRATCHGAN_FUSED_KERNELS", "1").strip() == "0":
        return None
    make = getattr(xp, "ElementwiseKernel", None)
    if make is None:
        return None
    kernel = _fused_cache.get((make, name))
    if kernel is None:
        inputs, outputs, body = FUSED_KERNELS[name]
        kernel = _fused_cache[(make, name)] = make(inputs, outputs, body, f"scratchgan_{name}",
                                                   options=FUSED_OPTIONS)
    return kernel
