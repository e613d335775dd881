"""Process-wide settings for speed on the CPU, applied by one explicit call: ``configure_process()``.

Nothing in scratchgan applies them on import. The training entry points (``examples/*.py``,
``python -m scratchgan`` and ``scratchgan train`` through cli.train_main) call it unless the run
asks for the reference path (``--reference`` or SCRATCHGAN_REFERENCE=1); your own script may call
it first thing too. It does two things, each only once:

1. **OpenBLAS's thread wait.** OpenBLAS's worker threads busy-wait after every matrix product (by
   default 2^28 CPU cycles, ~0.1 s) before they sleep, so that the next matmul starts without a
   wake-up. On a small machine that holds every core but one whenever the step is not in a matmul,
   and scratchgan's own CPU threads (Adam's parts, im2col/col2im in fast/cpu.py) found the other
   core busy: col2im split over two threads right after a matmul took as long as on one thread.
   OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` (2^value cycles) once, **when NumPy loads it**: so
   this part works only if NumPy is not imported yet. It sets 18 (2^18 cycles, ~0.1 ms: the
   matmuls of a layer stack, microseconds apart, still find the threads awake; a millisecond of
   elementwise work after them gets the cores) for the import only, and never when you have set the
   variable yourself (your value wins). ``scratchgan`` and this module import NumPy lazily, so an
   entry point can call this before anything loads it; ``applied()`` says whether it was in effect.
2. **glibc's heap threshold.** NumPy takes array memory from malloc; glibc serves large blocks
   (above a threshold that starts at 128 KiB) with mmap and unmaps them on free, so every fresh
   (1024, 1024) float32 temporary of a step comes back as 1,024 new zero-filled pages: ~7,500 page
   faults and ~20 ms of kernel time per step of the MLP GAN at batch 1024. glibc raises that
   threshold to the size of any mmapped block that is freed (mallopt(3), "dynamic mmap threshold"),
   up to 32 MiB: freeing one such block once makes every smaller array come from the heap, where
   freed memory is reused. The cost: up to 64 MiB of freed memory stays with the process. (Other C
   libraries simply allocate and free one block.)

benchmarks/RESULTS.md has the measurements behind both.
"""
from __future__ import annotations

import os
import sys

# 2^18 cycles, ~0.1 ms at 2-3 GHz. (4, the smallest, made batch-64 steps slower: a wake-up per matmul.)
OPENBLAS_THREAD_TIMEOUT = "18"
_state = {"OPENBLAS_THREAD_TIMEOUT": None, "heap": False}


def applied():
    """What configure_process has set in this process: {'OPENBLAS_THREAD_TIMEOUT': '18' or None, 'heap': bool}."""
    return dict(_state)


def environment():
    """The facts that make timings comparable, recorded in a run's config.json."""
    return {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "cpu_count": os.cpu_count(),
            # the user's value, else the one configure_process loaded NumPy with (None: NumPy was loaded first)
            "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT") or _state["OPENBLAS_THREAD_TIMEOUT"]}


def wants_reference(argv=None):
    """True when the run asks for the reference path: ``--reference`` in ``argv`` or the environment's switch."""
    from . import enabled
    return "--reference" in (argv or ()) or not enabled()


def import_numpy_with_short_thread_wait():
    """Import NumPy with OPENBLAS_THREAD_TIMEOUT set while OpenBLAS loads (part 1 of the docstring)."""
    if "numpy" in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        import numpy
        return numpy
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
    try:
        import numpy
    finally:
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]  # nothing else in the process sees the variable
    _state["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
    return numpy


def reuse_freed_memory(numpy):
    """Free one ~32 MiB block so that glibc keeps freed arrays on the heap (part 2 of the docstring)."""
    if not _state["heap"]:
        block = numpy.empty((32 << 20) - (64 << 10), dtype=numpy.uint8)  # just under glibc's 32 MiB cap
        del block
        _state["heap"] = True


def configure_process(argv=None):
    """Apply both settings, unless ``argv`` has ``--reference`` or the fast paths are switched off.

    Call it before anything imports NumPy for the thread wait to take effect. Returns ``applied()``.
    """
    if wants_reference(argv):
        return applied()
    numpy = import_numpy_with_short_thread_wait()
    reuse_freed_memory(numpy)
    return applied()
