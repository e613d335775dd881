"""TF32: float32 matmuls, and so the convolutions (im2col + matmul here), on a GPU's tensor cores.

TensorFloat-32 keeps float32's 8-bit exponent but rounds each *input* of a product to a 10-bit
mantissa (float32 keeps 23) and accumulates in float32: a matmul's result is then off by about 1e-3
of its inputs' scale (2^-11 per product, before cancellation), against about 1e-7 in float32. On an
Ampere or newer GPU such a GEMM runs on the tensor cores, several times faster. Weights, activations,
gradients and Adam stay float32; only the products inside the matmuls lose bits.

PyTorch's switches: ``torch.backends.cuda.matmul.allow_tf32`` (matmuls, off by default since 1.12)
and ``torch.backends.cudnn.allow_tf32`` (convolutions, on by default). CuPy's: the compute type of
its float32 GEMMs, ``cupy._core.set_compute_type(float32, COMPUTE_TYPE_TF32)`` (cuBLAS's
CUBLAS_COMPUTE_32F_FAST_TF32), or ``CUPY_TF32=1`` in the environment, read at the first float32
matmul. Both are process-wide; ``use_tf32`` is the one explicit call (``--tf32``), nothing sets it on
import. NumPy has no TF32 arithmetic: asking for it there is an error, not a silent no-op.

The compute type reaches CuPy's 2-d GEMMs only: its batched (3-d) matmul calls cublasGemmStridedBatchedEx with
float32 as the compute type (cupy/_core/_routines_linalg.pyx), whatever is set here. The one batched matmul
of the engine, the sub-pixel ConvTranspose2d's four phases, is run as four 2-d GEMMs when TF32 is on
(fast/subpixel.py: phase_products); the CUDA graph's own SGEMM has no TF32 path (--tf32 with --cuda-graph is
refused).
"""
from __future__ import annotations

from ..backend import BackendError, backend_name

# what --help says the flag costs
COST = "products of 10-bit-mantissa inputs: matmuls and convolutions off by ~1e-3 relative instead of ~1e-7"


def use_tf32(xp, on=True):
    """Let (``on``) or stop float32 matmuls on backend ``xp`` use TF32 tensor cores. CuPy only."""
    if backend_name(xp) != "cupy":
        raise BackendError("--tf32 needs --backend cupy: TF32 is a mode of NVIDIA GPUs' tensor cores, and NumPy "
                           "computes in full float32 (drop --tf32, or add --backend cupy)")
    try:
        from cupy._core import _routines_linalg as linalg
        compute_type = linalg.COMPUTE_TYPE_TF32 if on else linalg.COMPUTE_TYPE_DEFAULT
        set_compute_type = linalg.set_compute_type
    except (ImportError, AttributeError) as e:
        raise BackendError(f"--tf32: this CuPy has no TF32 compute type ({e}); CuPy 14 or later has it") from None
    # on a GPU older than Ampere CuPy warns and keeps full float32
    set_compute_type(xp.float32, compute_type)


def tf32_enabled(xp):
    """True when float32 matmuls on ``xp`` may use TF32 (CuPy's compute type, as set or from CUPY_TF32)."""
    if backend_name(xp) != "cupy":
        return False
    from cupy._core import _routines_linalg as linalg
    return linalg.get_compute_type(xp.float32) == linalg.COMPUTE_TYPE_TF32
