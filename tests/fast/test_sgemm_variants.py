"""fast/cuda_graph/gemm.py's variants of the graph's SGEMM, checked on the CPU as the default kernel is (tests/fast/test_cuda_graph.py):
the 32 x 32 tile and split-K, their CUDA source compiled with g++ (one host thread per CUDA thread), called through
the fake device's RawKernel as the graph would call them, against NumPy's matmul in float64; mutated kernels fail.
Which one the graph uses is chosen by measurement on a GPU (benchmarks/bench_sgemm.py), not here."""
import host_kernels
import numpy as np
import pytest
from fake_device import FakeRawKernel, xp
from tolerances import FLOAT32_EPS, assert_close

from scratchgan.fast.cuda_graph import gemm

CASES = [  # M, N, K, A transposed, B transposed, beta: tile edges, K not a multiple of 8, the backward's layouts
    (70, 50, 30, False, False, 0.0), (33, 65, 17, True, False, 1.0), (3, 5, 200, False, True, 0.0),
    (1, 1, 1, True, True, 1.0), (40, 20, 64, True, False, 1.0)]


@pytest.fixture
def host_raw_kernels(monkeypatch):
    if host_kernels.compiler() is None:
        pytest.skip("no C++ compiler (g++ or c++): the kernels cannot be built for the CPU")
    monkeypatch.setattr(xp, "RawKernel", FakeRawKernel, raising=False)
    monkeypatch.setattr(gemm, "_built", {})
    monkeypatch.setattr(gemm, "_variants", {})


def _operands(M, N, K, ta, tb, seed=0):
    rng = np.random.default_rng(seed + M * 1000 + N + K)
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    a, b = (xp.asarray(A).T if ta else xp.asarray(A)), (xp.asarray(B).T if tb else xp.asarray(B))
    c = rng.standard_normal((M, N)).astype(np.float32)
    expected = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B)
    return a, b, c, expected


def _expected(expected, c, beta):
    return expected + beta * c


@pytest.mark.parametrize("M, N, K, ta, tb, beta", CASES)
def test_the_32x32_tile_equals_matmul(host_raw_kernels, M, N, K, ta, tb, beta):
    a, b, c, expected = _operands(M, N, K, ta, tb)
    out = xp.asarray(c)
    gemm.gemm(a, b, out, beta=beta, tile="32x32")
    assert_close(out.get(), _expected(expected, c, beta), rtol=2 * (K + 1) * FLOAT32_EPS)
    assert gemm.grid(M, N, "32x32")[:2] == (-(-N // 32), -(-M // 32))


@pytest.mark.parametrize("splits", [2, 3, 8])
@pytest.mark.parametrize("M, N, K, ta, tb, beta", CASES)
def test_split_k_equals_matmul(host_raw_kernels, M, N, K, ta, tb, beta, splits):
    a, b, c, expected = _operands(M, N, K, ta, tb)
    out, partial = xp.asarray(c), xp.zeros((splits, M, N), np.float32)
    gemm.gemm_split_k(a, b, out, partial, beta=beta)
    assert_close(out.get(), _expected(expected, c, beta), rtol=2 * (K + 1) * FLOAT32_EPS)


def test_split_k_sums_the_partials_in_order(host_raw_kernels):
    """The second kernel adds partial[0] + partial[1] + ... in that order, one rounding each: its bits are those of
    the same sum in float32 on the host (a reduction in another order, or with atomics, would differ)."""
    a, b, c, _ = _operands(70, 50, 200, False, True)
    out, partial = xp.asarray(c), xp.zeros((5, 70, 50), np.float32)
    gemm.gemm_split_k(a, b, out, partial, beta=1.0)
    P = partial.get()
    expected = P[0].copy()
    for z in range(1, 5):
        expected += P[z]
    expected += c
    np.testing.assert_array_equal(out.get(), expected)
    assert gemm.k_chunk(200, 5) == 40  # 5 runs of 40


def test_split_k_of_one_gives_the_default_kernels_bits(host_raw_kernels):
    a, b, c, _ = _operands(65, 70, 45, True, False)
    plain, split = xp.asarray(c), xp.asarray(c)
    gemm.gemm(a, b, plain, beta=1.0)
    gemm.gemm_split_k(a, b, split, xp.empty((1, 65, 70), np.float32), beta=1.0)
    np.testing.assert_array_equal(split.get(), plain.get())


def test_split_k_uses_only_the_runs_that_hold_some_of_k(host_raw_kernels):
    """K = 17 in slices of 8 cannot make 8 runs: 3 runs of 8, the buffer's other slices untouched and unread."""
    a, b, c, expected = _operands(9, 7, 17, False, False)
    partial = xp.asarray(np.full((8, 9, 7), np.nan, np.float32))
    out = xp.empty((9, 7), np.float32)
    gemm.gemm_split_k(a, b, out, partial)
    assert_close(out.get(), expected, rtol=40 * FLOAT32_EPS)
    assert np.isnan(partial.get()[3:]).all()


def test_split_k_refuses_a_wrong_partial_buffer():
    a, b, out = (np.ones(s, np.float32) for s in ((4, 3), (3, 5), (4, 5)))
    for bad in (np.empty((2, 5, 4), np.float32), np.empty((2, 4, 5)), np.empty((4, 5), np.float32)):
        with pytest.raises(ValueError, match=r"partial buffer is float32 \(S, 4, 5\)"):
            gemm.gemm_split_k(a, b, out, bad)


def test_choose_splits_fills_the_gpu_only_where_the_tiles_do_not():
    assert gemm.choose_splits(64, 784, 1024, sms=132) == 21  # 13 blocks: 21 runs of 48 of K give 273 blocks
    assert gemm.choose_splits(64, 128, 100, sms=132) == 3  # K = 100 keeps at least 32 per run
    assert gemm.choose_splits(4096, 1024, 784, sms=132) == 1  # 1024 blocks already


MUTATIONS = [  # each breaks split-K only: the default kernel's mutations are tests/fast/test_cuda_graph.py's
    ("for (int z = 1; z < splits; ++z)", "for (int z = 1; z + 1 < splits; ++z)"),  # the last run is dropped
    ("float* P = partial + (size_t)blockIdx.z * M * N;", "float* P = partial;"),  # every run into slice 0
    ("if (beta != 0.0f) c += beta * C[i];", ""),  # p.grad += x^T dy loses the +=
    ("const int k_begin = blockIdx.z * k_chunk;", "const int k_begin = blockIdx.z * k_chunk + BK;"),  # a slice skipped
]


@pytest.mark.parametrize("original, mutated", MUTATIONS, ids=["last-run", "one-slice", "beta", "k-range"])
def test_a_mutated_split_k_is_caught(host_raw_kernels, monkeypatch, original, mutated):
    assert original in gemm.SOURCE
    real_source = gemm.source
    monkeypatch.setattr(gemm, "source", lambda tile=gemm.DEFAULT_TILE: real_source(tile).replace(original, mutated))
    with pytest.raises(AssertionError):
        for M, N, K, ta, tb, beta in CASES:
            a, b, c, expected = _operands(M, N, K, ta, tb)
            out = xp.asarray(c)
            gemm.gemm_split_k(a, b, out, xp.zeros((3, M, N), np.float32), beta=beta)
            assert_close(out.get(), _expected(expected, c, beta), rtol=2 * (K + 1) * FLOAT32_EPS)


@pytest.mark.parametrize("tile", sorted(gemm.TILES))
def test_the_variants_compile_with_nvrtc(tile):
    """Where CuPy and its NVRTC are installed (no GPU needed), every kernel of every tile compiles for sm_90."""
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy (and its NVRTC) not installed")
    try:
        nvrtc.getVersion()
    except Exception as e:
        pytest.skip(f"CuPy is installed but NVRTC cannot be loaded: {e}")
    program = nvrtc.createProgram(gemm.source(tile), "sgemm.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["--gpu-architecture=compute_90"])
        ptx = nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    for name in (gemm.NAME, gemm.SPLIT_K_NAME, gemm.REDUCE_NAME):
        assert f".entry {name}(" in ptx


def test_the_variants_on_the_gpu_equal_matmul():
    from layer_cases import skip_unless_cupy
    skip_unless_cupy()
    import cupy
    for M, N, K, ta, tb, beta in CASES + [(64, 784, 1024, False, True, 0.0), (1024, 784, 64, True, False, 1.0)]:
        rng = np.random.default_rng(M + N + K)
        A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        c = rng.standard_normal((M, N)).astype(np.float32)
        a, b = cupy.asarray(A), cupy.asarray(B)
        a, b = (a.T if ta else a), (b.T if tb else b)
        expected = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B) + beta * c
        for run in ("32x32", "split-k"):
            out = cupy.asarray(c)
            if run == "32x32":
                gemm.gemm(a, b, out, beta=beta, tile="32x32")
            else:
                gemm.gemm_split_k(a, b, out, cupy.empty((4, M, N), np.float32), beta=beta)
            assert_close(out.get(), expected, rtol=2 * (K + 1) * FLOAT32_EPS, err_msg=run)
