"""Load NumPy so that OpenBLAS's idle threads give the cores back soon after each matmul.

OpenBLAS's worker threads busy-wait after every matrix product (by default 2^28 CPU cycles, about
0.1 s) before they sleep, so that a next matmul starts without a wake-up. On a small machine that
holds every core but one whenever a step is not in a matmul, and scratchgan's own CPU threads
(Adam's parts, im2col/col2im) found the other core busy: splitting col2im over two threads right
after a matmul took as long as one thread (benchmarks/RESULTS.md). OpenBLAS reads the wait,
OPENBLAS_THREAD_TIMEOUT (2^value cycles), once, when NumPy loads it; so this is done before NumPy
is imported, and only when NumPy is not loaded yet and the variable is not set (your value wins).
The environment is restored right after the import: nothing else in the process sees the variable.
"""
import os
import sys

# 2^18 cycles: ~0.1 ms at 2-3 GHz. Long enough that the matmuls of a layer stack, a few microseconds
# apart at batch 64, find the threads awake; short enough that a millisecond of elementwise work
# after them gets the cores. (4, the smallest, made batch-64 steps slower: a wake-up per matmul.)
OPENBLAS_THREAD_TIMEOUT = "18"
applied = None  # OPENBLAS_THREAD_TIMEOUT once import_numpy has loaded NumPy with it (for config.json)


def import_numpy():
    """Import NumPy, with OPENBLAS_THREAD_TIMEOUT set while OpenBLAS loads (see the module's docstring)."""
    global applied
    if "numpy" in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        import numpy
        return numpy
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
    try:
        import numpy
    finally:
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]
    applied = OPENBLAS_THREAD_TIMEOUT
    return numpy
