"""SGEMM without cuBLAS: a tiled matrix product as one CUDA kernel of our own (for the CUDA graph).

    C <- op(A) op(B) + beta C        C: (M, N), op(A): (M, K), op(B): (K, N), all row-major float32
    op(X) = X or X^T (``trans_a``, ``trans_b``); beta is 0 (a new product) or 1 (``p.grad += x^T dy``).

Why: CuPy refuses every cuBLAS call while a stream is being captured (``NotImplementedError: calling
cuBLAS API during stream capture is currently unsupported``, cupy/cupy#6290), so a training step
captured as a CUDA graph (fast/graph.py) cannot use ``@``. This kernel is an ordinary launch, which a
capture records like any other.

How (the classic shared-memory tiling, as in llm.c's dev/cuda matmul kernels and Simon Boehm's SGEMM
walk-through): a block of 16 x 16 threads owns a 64 x 64 tile of C. For each slice of BK = 8 along K
it copies the 64 x 8 slice of op(A) and the 8 x 64 slice of op(B) into shared memory (each thread two
elements of each; out-of-range entries as 0), waits for the whole block, then every thread adds the
products for its own 4 x 4 sub-tile of C, held in registers (register blocking: 8 loads from shared
memory give 16 multiply-adds). The transposes change only the index of the load. No vectorised
loads, no double buffering, no tensor cores (``--tf32``) yet: a first, readable version, never timed.

Status: the kernel's arithmetic is checked on the CPU (tests/test_cuda_graph.py compiles this very
source with g++, one host thread per CUDA thread, and compares it with NumPy's matmul) and NVRTC
compiles it where CuPy is installed; it has NEVER RUN ON A GPU.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module

NAME = "scratchgan_sgemm"
BM, BN, BK, TM, TN = 64, 64, 8, 4, 4  # tile of C per block, slice of K per step, sub-tile of C per thread
THREADS = (BN // TN, BM // TM)  # (16, 16): threadIdx.x walks the columns of C, threadIdx.y the rows

SOURCE = r"""
#define BM 64
#define BN 64
#define BK 8
#define TM 4
#define TN 4

extern "C" __global__ void scratchgan_sgemm(const float* A, const float* B, float* C, int M, int N, int K,
                                            int lda, int ldb, int ldc, int trans_a, int trans_b, float beta)
{
    // C (M, N) <- op(A) (M, K) @ op(B) (K, N) + beta C.  op(A)[m][k] = trans_a ? A[k lda + m] : A[m lda + k]
    __shared__ float As[BK][BM];  // the block's slice of op(A), k-major: a thread reads its TM rows side by side
    __shared__ float Bs[BK][BN];  // the block's slice of op(B)
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * (BN / TN) + tx;         // 0 .. 255
    const int threads = (BN / TN) * (BM / TM);   // 256
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    float acc[TM][TN];                           // this thread's 4 x 4 sub-tile of C, in registers
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;
    float a_reg[TM], b_reg[TN];

    for (int k0 = 0; k0 < K; k0 += BK) {
        // 1. the block copies the (BM x BK) slice of op(A) and the (BK x BN) slice of op(B): 2 + 2 per thread
        for (int e = tid; e < BK * BM; e += threads) {
            const int kk = e / BM, mm = e % BM, m = row0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? (trans_a ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]) : 0.0f;
        }
        for (int e = tid; e < BK * BN; e += threads) {
            const int kk = e / BN, nn = e % BN, k = k0 + kk, n = col0 + nn;
            Bs[kk][nn] = (k < K && n < N) ? (trans_b ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]) : 0.0f;
        }
        __syncthreads();  // the whole slice is in shared memory before anyone reads it
        // 2. each thread: its TM x TN sub-tile += (TM x BK) @ (BK x TN), an outer product per kk
        for (int kk = 0; kk < BK; ++kk) {
            for (int i = 0; i < TM; ++i) a_reg[i] = As[kk][ty * TM + i];
            for (int j = 0; j < TN; ++j) b_reg[j] = Bs[kk][tx * TN + j];
            for (int i = 0; i < TM; ++i)
                for (int j = 0; j < TN; ++j)
                    acc[i][j] += a_reg[i] * b_reg[j];
        }
        __syncthreads();  // everyone is done with the slice before the next one overwrites it
    }
    // 3. write the sub-tile: C = acc (beta 0: C is not read, so garbage in C cannot leak in) or acc + beta C
    for (int i = 0; i < TM; ++i) {
        const int m = row0 + ty * TM + i;
        for (int j = 0; j < TN; ++j) {
            const int n = col0 + tx * TN + j;
            if (m < M && n < N) {
                float c = acc[i][j];
                if (beta != 0.0f) c += beta * C[(size_t)m * ldc + n];
                C[(size_t)m * ldc + n] = c;
            }
        }
    }
}
"""

_built = {}  # RawKernel class of the array module -> the kernel (compiled once per module)


def kernel(xp):
    """The SGEMM as ``xp.RawKernel`` (CuPy's; the fake device's in the tests), built once."""
    make = xp.RawKernel
    built = _built.get(make)
    if built is None:
        built = _built[make] = make(SOURCE, NAME)
    return built


def _operand(a):
    """(transposed?, leading dimension) of a 2-d operand as the kernel reads it (row-major), or None.

    A C-contiguous (R, S) array is itself with ld = S; an F-contiguous one (x.T of a C-contiguous x) is
    the transpose of the row-major (S, R) array under it, with ld = R."""
    if a.flags.c_contiguous:
        return 0, max(1, a.shape[1])
    if a.flags.f_contiguous:
        return 1, max(1, a.shape[0])
    return None


def grid(M, N):
    """Blocks of the launch: one per 64 x 64 tile of C, x along the columns, y along the rows."""
    return ((N + BN - 1) // BN, (M + BM - 1) // BM, 1)


def gemm(a, b, out, beta=0.0):
    """out <- a @ b + beta out, by the tiled kernel: a (M, K), b (K, N), out (M, N) C-contiguous float32.

    ``a`` and ``b`` may be transposed views (``x.T``, ``W.T``): the kernel reads them in place."""
    xp = array_module(out)
    M, K = a.shape
    N = b.shape[1]
    ta, tb = _operand(a), _operand(b)
    if (ta is None or tb is None or not out.flags.c_contiguous or out.shape != (M, N) or b.shape[0] != K
            or not a.dtype == b.dtype == out.dtype == np.float32 or beta not in (0.0, 1.0)):
        raise ValueError(f"gemm takes float32 2-d operands (M, K) @ (K, N) -> C-contiguous (M, N), beta 0 or 1; "
                         f"got {a.dtype}{tuple(a.shape)} @ {b.dtype}{tuple(b.shape)} -> {out.dtype}{tuple(out.shape)}"
                         f", beta {beta}")
    i32 = np.int32
    kernel(xp)(grid(M, N), THREADS + (1,),
               (a, b, out, i32(M), i32(N), i32(K), i32(ta[1]), i32(tb[1]), i32(N), i32(ta[0]), i32(tb[0]),
                np.float32(beta)))
    return out
