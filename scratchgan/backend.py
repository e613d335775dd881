"""The one module that knows NumPy from CuPy.

Layer code never imports numpy or cupy to work on data: it asks ``array_module(x)``
for the module that owns ``x`` and calls that (``xp.exp``, ``xp.where``, ...), so the
same line runs on the CPU and on the GPU. This file also holds the host/device
conversions (``to_numpy``, ``to_device``), ``synchronize`` for honest GPU timings,
and the clear one-line errors users get when a backend cannot be used, and ``cpu_threads``, the cores this
process may use. (Speed-ups for either
backend live in scratchgan/fast/, not here.)
"""
from __future__ import annotations

import os

import numpy as np

BACKENDS = ("numpy", "cupy")
INSTALL_HINT = 'install it with: pip install "scratchgan[cuda12]" (or "scratchgan[cuda13]" for CUDA 13)'


class BackendError(RuntimeError):
    """A backend was asked for that cannot be used here; the message says why and what to do."""


_cupy = None  # the imported cupy module, once a caller has asked for it


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


# The number of XORWOW states of a generator on CuPy: fixed, whatever the GPU. CuPy's default_rng(seed) keeps
# 8 * 256 * (the GPU's SM count) of them (cupy/random/_bit_generator.pyx), and element i of a draw comes from
# state i % states (cupy/random/cupy_distributions.cu): a draw larger than the state count takes a second value
# from some states, so the noise of a large batch -- and an exact resume -- would hold only on the same GPU
# model. Why 2**16:
#   - every draw reads and writes the whole state (one thread per state, 48 bytes each): 3 MB here, where the
#     default is 13 MB on a 132-SM H100 or H200, so each draw moves 6 MB instead of 26 MB;
#   - 256 blocks of 256 threads: about two blocks per SM on today's largest GPUs, enough to keep a draw parallel;
#   - a draw of up to 65,536 values (z at batch 64: 6,400; at batch 655: 65,500) takes exactly one value from
#     each state it uses; larger ones loop (batch 4096's z, 409,600 values: 7 per state), the same on every card.
# It changes the CuPy noise streams (not NumPy's): set before the first GPU baselines.
GPU_RNG_STATES = 1 << 16


def random_generator(xp, seed):
    """A seeded generator that draws on backend ``xp``'s device: NumPy's ``default_rng(seed)``; on CuPy (and the
    tests' fake device) ``default_rng`` of an XORWOW bit generator with GPU_RNG_STATES states."""
    xorwow = getattr(xp.random, "XORWOW", None)
    if xorwow is None:
        return xp.random.default_rng(seed)
    return xp.random.default_rng(xorwow(seed, size=GPU_RNG_STATES))


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


def cpu_threads():
    """Threads for scratchgan's own CPU work: the cores this process may use, or fewer when
    OPENBLAS_NUM_THREADS or OMP_NUM_THREADS says so (a limit set for the matmuls is taken to be
    meant for the whole process)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            cores = min(cores, int(value))
    return max(1, cores)
