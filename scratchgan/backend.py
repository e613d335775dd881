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
