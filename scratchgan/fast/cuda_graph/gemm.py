"""SGEMM without cuBLAS: a tiled matrix product as one CUDA kernel of our own (for the CUDA graph).

    C <- op(A) op(B) + beta C        C: (M, N), op(A): (M, K), op(B): (K, N), all row-major float32
    op(X) = X or X^T (``trans_a``, ``trans_b``); beta is 0 (a new product) or 1 (``p.grad += x^T dy``).

Why: CuPy refuses every cuBLAS call while a stream is being captured (``NotImplementedError: calling
cuBLAS API during stream capture is currently unsupported``, cupy/cupy#6290), so a training step
captured as a CUDA graph (fast/cuda_graph/graph.py) cannot use ``@``. This kernel is an ordinary launch, which a
capture records like any other.

How (the classic shared-memory tiling, as in llm.c's dev/cuda matmul kernels and Simon Boehm's SGEMM
walk-through): a block of 16 x 16 threads owns a 64 x 64 tile of C. For each slice of BK = 8 along K
it copies the 64 x 8 slice of op(A) and the 8 x 64 slice of op(B) into shared memory (each thread two
elements of each; out-of-range entries as 0), waits for the whole block, then every thread adds the
products for its own 4 x 4 sub-tile of C, held in registers (register blocking: 8 loads from shared
memory give 16 multiply-adds). The transposes change only the index of the load. No vectorised
loads, no double buffering, no tensor cores (``--tf32``) yet: a first, readable version, never timed.

Variants (not the default: the choice is to be made by measurement on a GPU, benchmarks/bench_sgemm.py):
  - a smaller tile (``tile="32x32"``: 16 x 16 threads, 2 x 2 outputs each): four times the blocks of the 64 x 64
    tile, for the products whose M or N is small (batch 64 gives the default tile 1-16 blocks on 132 SMs);
  - split-K (``gemm_split_k``): the z-th of S blocks along K writes its partial product into its own slice of a
    (S, M, N) buffer, then a second kernel sums the slices in the order z = 0, 1, ..., S-1 and adds beta C.
    No atomics: the same bits on every run (an atomicAdd split-K would add the slices in whatever order the
    blocks finish). S times the blocks for the products with a long K and a small M x N (dx = dy W^T).
All three share the tile loop (``sgemm_tile``); with S = 1 split-K gives the plain kernel's bits.

Status: the kernels' arithmetic is checked on the CPU (tests/fast/test_cuda_graph.py and tests/fast/test_sgemm_variants.py
compile this very source with g++, one host thread per CUDA thread, and compare it with NumPy's matmul, and
mutated kernels fail) and NVRTC compiles it where CuPy is installed; it has NEVER RUN ON A GPU.
"""
from __future__ import annotations

import numpy as np

from ...backend import array_module

NAME = "scratchgan_sgemm"
SPLIT_K_NAME, REDUCE_NAME = "scratchgan_sgemm_split_k", "scratchgan_sgemm_reduce"
TILES = {"64x64": (64, 64, 4, 4), "32x32": (32, 32, 2, 2)}  # name: (BM, BN, TM, TN), the tile of C per block
DEFAULT_TILE = "64x64"
BM, BN, TM, TN = TILES[DEFAULT_TILE]
BK = 8  # the slice of K per step
THREADS = (BN // TN, BM // TM)  # (16, 16): threadIdx.x walks the columns of C, threadIdx.y the rows
REDUCE_THREADS = 256  # the split-K sum: one thread per element of C

TEMPLATE = r"""
#define BM %(BM)d
#define BN %(BN)d
#define BK 8
#define TM %(TM)d
#define TN %(TN)d

// acc (this thread's TM x TN sub-tile of the block's tile of C) += op(A) op(B) over k in [k_begin, k_end).
// op(A)[m][k] = trans_a ? A[k lda + m] : A[m lda + k]; the same for op(B).
__device__ __forceinline__ void sgemm_tile(const float* A, const float* B, int M, int N, int k_begin, int k_end,
                                           int lda, int ldb, int trans_a, int trans_b, float acc[TM][TN])
{
    __shared__ float As[BK][BM];  // the block's slice of op(A), k-major: a thread reads its TM rows side by side
    __shared__ float Bs[BK][BN];  // the block's slice of op(B)
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * (BN / TN) + tx;         // 0 .. 255
    const int threads = (BN / TN) * (BM / TM);   // 256
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    float a_reg[TM], b_reg[TN];

    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        // 1. the block copies the (BM x BK) slice of op(A) and the (BK x BN) slice of op(B)
        for (int e = tid; e < BK * BM; e += threads) {
            const int kk = e / BM, mm = e %% BM, m = row0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < k_end) ? (trans_a ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]) : 0.0f;
        }
        for (int e = tid; e < BK * BN; e += threads) {
            const int kk = e / BN, nn = e %% BN, k = k0 + kk, n = col0 + nn;
            Bs[kk][nn] = (k < k_end && n < N) ? (trans_b ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]) : 0.0f;
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
}

extern "C" __global__ void scratchgan_sgemm(const float* A, const float* B, float* C, int M, int N, int K,
                                            int lda, int ldb, int ldc, int trans_a, int trans_b, float beta)
{
    // C (M, N) <- op(A) (M, K) @ op(B) (K, N) + beta C
    float acc[TM][TN];                           // this thread's sub-tile of C, in registers
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;
    sgemm_tile(A, B, M, N, 0, K, lda, ldb, trans_a, trans_b, acc);
    // write the sub-tile: C = acc (beta 0: C is not read, so garbage in C cannot leak in) or acc + beta C
    for (int i = 0; i < TM; ++i) {
        const int m = blockIdx.y * BM + threadIdx.y * TM + i;
        for (int j = 0; j < TN; ++j) {
            const int n = blockIdx.x * BN + threadIdx.x * TN + j;
            if (m < M && n < N) {
                float c = acc[i][j];
                if (beta != 0.0f) c += beta * C[(size_t)m * ldc + n];
                C[(size_t)m * ldc + n] = c;
            }
        }
    }
}

extern "C" __global__ void scratchgan_sgemm_split_k(const float* A, const float* B, float* partial, int M, int N,
                                                    int K, int lda, int ldb, int trans_a, int trans_b, int k_chunk)
{
    // partial[z] (M, N) <- op(A) op(B) over k in [z k_chunk, (z + 1) k_chunk), z = blockIdx.z
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = K - k_begin < k_chunk ? K : k_begin + k_chunk;
    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;
    sgemm_tile(A, B, M, N, k_begin, k_end, lda, ldb, trans_a, trans_b, acc);
    float* P = partial + (size_t)blockIdx.z * M * N;  // this split's own slice: no two blocks write one element
    for (int i = 0; i < TM; ++i) {
        const int m = blockIdx.y * BM + threadIdx.y * TM + i;
        for (int j = 0; j < TN; ++j) {
            const int n = blockIdx.x * BN + threadIdx.x * TN + j;
            if (m < M && n < N) P[(size_t)m * N + n] = acc[i][j];
        }
    }
}

extern "C" __global__ void scratchgan_sgemm_reduce(const float* partial, float* C, int M, int N, int splits,
                                                   float beta)
{
    // C = ((partial[0] + partial[1]) + ...) + partial[splits - 1], in that order, then + beta C
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, size = (size_t)M * N;
    if (i < size) {
        float c = partial[i];
        for (int z = 1; z < splits; ++z) c += partial[(size_t)z * size + i];
        if (beta != 0.0f) c += beta * C[i];
        C[i] = c;
    }
}
"""


def source(tile=DEFAULT_TILE):
    """The CUDA source of the kernels for tile ``tile`` (a key of TILES)."""
    bm, bn, tm, tn = TILES[tile]
    return TEMPLATE % {"BM": bm, "BN": bn, "TM": tm, "TN": tn}


SOURCE = source()
_built = {}  # RawKernel class of the array module -> the default kernel (the graph's), compiled once per module
_variants = {}  # (RawKernel class, tile, name) -> the other kernels, compiled once per module


def kernel(xp, name=NAME, tile=DEFAULT_TILE):
    """Kernel ``name`` of tile ``tile`` as ``xp.RawKernel`` (CuPy's; the fake device's in the tests), built once."""
    make = xp.RawKernel
    cache, key = (_built, make) if (name, tile) == (NAME, DEFAULT_TILE) else (_variants, (make, tile, name))
    built = cache.get(key)
    if built is None:
        built = cache[key] = make(source(tile), name)
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


def grid(M, N, tile=DEFAULT_TILE, splits=1):
    """Blocks of the launch: one per tile of C (x along the columns, y along the rows), ``splits`` along z."""
    bm, bn = TILES[tile][:2]
    return ((N + bn - 1) // bn, (M + bm - 1) // bm, splits)


def threads(tile=DEFAULT_TILE):
    bm, bn, tm, tn = TILES[tile]
    return (bn // tn, bm // tm, 1)


def _check(a, b, out, beta):
    """(M, N, K, (trans, ld) of a, of b) after refusing what the kernels cannot take."""
    M, K = a.shape
    N = b.shape[1]
    ta, tb = _operand(a), _operand(b)
    if (ta is None or tb is None or not out.flags.c_contiguous or out.shape != (M, N) or b.shape[0] != K
            or not a.dtype == b.dtype == out.dtype == np.float32 or beta not in (0.0, 1.0)):
        raise ValueError(f"gemm takes float32 2-d operands (M, K) @ (K, N) -> C-contiguous (M, N), beta 0 or 1; "
                         f"got {a.dtype}{tuple(a.shape)} @ {b.dtype}{tuple(b.shape)} -> {out.dtype}{tuple(out.shape)}"
                         f", beta {beta}")
    return M, N, K, ta, tb


def gemm(a, b, out, beta=0.0, tile=DEFAULT_TILE):
    """out <- a @ b + beta out, by the tiled kernel: a (M, K), b (K, N), out (M, N) C-contiguous float32.

    ``a`` and ``b`` may be transposed views (``x.T``, ``W.T``): the kernel reads them in place."""
    xp = array_module(out)
    M, N, K, ta, tb = _check(a, b, out, beta)
    i32 = np.int32
    kernel(xp, NAME, tile)(grid(M, N, tile), threads(tile),
                           (a, b, out, i32(M), i32(N), i32(K), i32(ta[1]), i32(tb[1]), i32(N), i32(ta[0]), i32(tb[0]),
                            np.float32(beta)))
    return out


def k_chunk(K, splits):
    """The length of each split's run of K: K / splits rounded up to a whole slice (BK)."""
    return max(BK, -(-K // (splits * BK)) * BK)


def gemm_split_k(a, b, out, partial, beta=0.0, tile=DEFAULT_TILE):
    """out <- a @ b + beta out by split-K: up to S = len(partial) products over runs of K, summed in order.

    ``partial``: a float32 (S, M, N) C-contiguous buffer, allocated once by the caller (a CUDA graph's fixed
    buffer); its slices hold the partial products. Two launches; deterministic (no atomics)."""
    xp = array_module(out)
    M, N, K, ta, tb = _check(a, b, out, beta)
    if partial.dtype != np.float32 or partial.ndim != 3 or partial.shape[1:] != (M, N) or \
            not partial.flags.c_contiguous or len(partial) < 1:
        raise ValueError(f"gemm_split_k's partial buffer is float32 (S, {M}, {N}) C-contiguous; got "
                         f"{partial.dtype}{tuple(partial.shape)}")
    chunk = k_chunk(K, len(partial))
    splits = max(1, -(-K // chunk))  # the runs that hold some of K (at most len(partial))
    i32 = np.int32
    kernel(xp, SPLIT_K_NAME, tile)(grid(M, N, tile, splits), threads(tile),
                                   (a, b, partial, i32(M), i32(N), i32(K), i32(ta[1]), i32(tb[1]), i32(ta[0]),
                                    i32(tb[0]), i32(chunk)))
    kernel(xp, REDUCE_NAME, tile)(((M * N + REDUCE_THREADS - 1) // REDUCE_THREADS, 1, 1), (REDUCE_THREADS, 1, 1),
                                  (partial, out, i32(M), i32(N), i32(splits), np.float32(beta)))
    return out


def choose_splits(M, N, K, sms, tile=DEFAULT_TILE):
    """A split count for split-K: enough blocks for about two per SM of a GPU with ``sms`` SMs, each split
    keeping at least 4 slices of K (32 values). 1 where the tiles alone fill the GPU."""
    blocks = grid(M, N, tile)[0] * grid(M, N, tile)[1]
    return int(max(1, min(-(-2 * sms // blocks), K // (4 * BK))))
