"""The fast paths: replacements for reference functions, kept apart from the maths.

Every layer, loss and optimizer in ``scratchgan.nn``, ``losses`` and ``optim`` is written once, as
the textbook maths on ``xp``. Speed comes from *replacements* that live here, each a function with
the same arguments and results as the reference function it replaces (llm.c keeps its readable
``train_gpt2.c`` beside the fast ``train_gpt2.cu`` the same way):

    fast/cpu.py      NumPy: in-place forms with fewer passes, Adam and im2col/col2im on the cores
    fast/blas.py     NumPy: ``out += a @ b`` inside the GEMM (BLAS beta = 1), no temporary
    fast/kernels.py  CuPy: fused elementwise CUDA kernels, one launch instead of several passes
    fast/conv_kernels.py  CuPy: im2col and col2im as one gather kernel each
    fast/process.py  process-wide settings (OpenBLAS's thread wait, glibc's heap): one explicit call
    fast/cuda_graph/graph.py    CuPy: the whole MLP GAN step (GANStep.step) as one CUDA graph, ``--cuda-graph``
                     (experimental: never run on a GPU); fast/cuda_graph/fixed.py the maths in fixed buffers, fast/cuda_graph/gemm.py
                     an SGEMM kernel instead of cuBLAS

The registry (``TABLE``, ``@replaceable``, the switch) is scratchgan/replace.py, below the maths it
lists; each function here says with ``@replaces`` which reference it stands for, checked against that
table. Its names (``TABLE``, ``set_enabled``, ``active``, ...) are reachable from here as before.
tests/fast/test_fast_paths.py runs each replacement against its reference: bit for bit where the arithmetic
is the same ("bitwise"), else to a few ulp.

Importing this package changes nothing in the process and does not import NumPy (so that an entry
point can call ``configure_process()`` before NumPy loads, see fast/process.py).
"""
from __future__ import annotations

# The registry lives below the maths (scratchgan/replace.py); its names stay reachable from here.
from ..replace import (ENV, INACTIVE, TABLE, active, disabled, enabled, replaceable, replacement_for,  # noqa: F401
                       replaces, reset, set_enabled, trying)


def configure_process(argv=None):
    """Apply the fast paths' process-wide settings (fast/process.py); see there."""
    from . import process
    return process.configure_process(argv)


__all__ = ["TABLE", "INACTIVE", "trying", "ENV",
           "enabled", "set_enabled", "disabled", "reset", "replaceable", "replaces", "replacement_for",
           "active", "configure_process"]
