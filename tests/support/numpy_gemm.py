"""The SGEMM kernel's interface on the fake device with NumPy's arithmetic (see _NumpyArithmeticGemm)."""
import numpy as np

from fake_device import FakeRawKernel
from scratchgan.fast.cuda_graph import gemm


# ------------------------------------------------------------------ 3. the graphed step against GANStep
class _NumpyArithmeticGemm:
    """The SGEMM's RawKernel interface with the eager step's arithmetic (NumPy's ``@``): the GEMM of
    the graphed step then gives the eager step's bits, so the comparison below checks everything else
    (buffers, order of operations, device counters, noise, replay) bit for bit. The kernel's own
    arithmetic is checked in part 1, and with it the whole step below (test_graphed_step_with_the_sgemm_kernel)."""

    name = gemm.NAME

    def __call__(self, grid, block, args):
        a, b, c, M, N, K, lda, ldb, ldc, ta, tb, beta = args
        # gemm.gemm passes the operands as the product reads them (x.T, W.T views): NumPy's product of them
        if beta:
            c += a @ b
        else:
            np.matmul(a, b, out=c)


class NumpyArithmeticRawKernel(FakeRawKernel):
    def __init__(self, code, name, **kwargs):
        assert name == gemm.NAME
        self.kernel, self.calls = _NumpyArithmeticGemm(), 0
