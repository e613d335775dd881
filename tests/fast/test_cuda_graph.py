"""The training step as one CUDA graph (scratchgan/fast/cuda_graph/graph.py, fast/cuda_graph/gemm.py), checked without a GPU.

  1. The SGEMM kernel's source, compiled for the host (tests/support/host_raw_kernels.py: one host thread per
     CUDA thread, barriers for __syncthreads), against NumPy's matmul in float64, every transpose and
     beta; a mutated kernel fails. Where CuPy's NVRTC is installed (no GPU needed) it compiles for sm_90.
  2. The fake device's capture mode (tests/support/fake_device.py) refuses, with CuPy's errors, what CuPy refuses
     while capturing: cuBLAS and cuRAND calls, host transfers and syncs, and here every allocation;
     a capture records without computing, and a launch replays.
  3. The graphed step on the fake device equals the eager GANStep bit for bit after 3 steps (a warm-up,
     a capture and launch, a launch), for bce, wgan (clipping, 5 critic steps), wgan-gp (the penalty's
     double backward), lsgan, hinge, R1 and the conditional step (one-hot and learned codes), the batch
     gathered on the device; across an epoch's new noise generator too; and through the Trainer, which
     hands the graph the loader's device copy of the data and each epoch's order: its checkpoint is the
     eager run's, resumed at an epoch's end or in its middle, for bce and the conditional hinge; a launched
     step moves nothing between host and device. For bit
     equality its matmuls run on NumPy's arithmetic (the eager step's ``@``) through the RawKernel
     interface; with the real kernel body (the host-compiled SGEMM) the step runs under capture as
     well and agrees to rounding.
  4. What has no graph yet is refused in one line; ``--cuda-graph`` on NumPy is refused, exit 2.
  5. On a GPU (skipped here): the kernel against CuPy, the graphed step against the eager one.
No GPU was available: nothing here ran on one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fake_device
import host_kernels
import numpy as np
import pytest
from fake_device import CUDARuntimeError, FakeRawKernel, xp
from numpy_gemm import NumpyArithmeticRawKernel
from tolerances import FLOAT32_EPS, assert_close

from scratchgan.cli import flags, train_options
from scratchgan.cli import train as train_command
from scratchgan.fast.cuda_graph import fixed, gemm, graph
from scratchgan.gan import models

REPO = Path(__file__).resolve().parents[2]
NO_COMPILER = "no C++ compiler (g++ or c++): the kernels cannot be built for the CPU"


def needs_compiler():
    if host_kernels.compiler() is None:
        pytest.skip(NO_COMPILER)


def assert_bitwise(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    bits = actual.dtype.str.replace("f", "u")
    assert np.array_equal(actual.view(bits), expected.view(bits)), \
        f"{what}: {np.sum(actual.view(bits) != expected.view(bits))} of {actual.size} values differ"


# ------------------------------------------------------------------ 1. the SGEMM kernel on the host
def _host_sgemm(source=gemm.SOURCE):
    needs_compiler()
    from host_raw_kernels import HostRawKernel
    return HostRawKernel(source, gemm.NAME)


def _launch(kernel, a, b, c, beta):
    """The kernel on NumPy operands, as gemm.gemm lays out its arguments."""
    M, K = a.shape
    N = b.shape[1]
    ta, tb = gemm._operand(a), gemm._operand(b)
    i32 = np.int32
    base_a = a.T if ta[0] else a  # the array under a transposed view: the kernel gets its pointer
    base_b = b.T if tb[0] else b
    kernel(gemm.grid(M, N), gemm.THREADS + (1,), (base_a, base_b, c, i32(M), i32(N), i32(K), i32(ta[1]),
                                                   i32(tb[1]), i32(N), i32(ta[0]), i32(tb[0]), np.float32(beta)))


GEMM_CASES = [  # M, N, K, A transposed, B transposed, beta: tile edges, K not a multiple of 8, the backward's
    (70, 50, 30, False, False, 0.0), (64, 64, 8, False, False, 1.0), (65, 129, 17, True, False, 1.0),
    (3, 5, 200, False, True, 0.0), (1, 1, 1, True, True, 0.0), (100, 20, 64, True, False, 1.0)]


@pytest.mark.parametrize("M, N, K, ta, tb, beta", GEMM_CASES)
def test_sgemm_kernel_equals_matmul(M, N, K, ta, tb, beta):
    kernel = _host_sgemm()
    rng = np.random.default_rng(M * 1000 + N + K)
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    a, b = (A.T if ta else A), (B.T if tb else B)
    c = rng.standard_normal((M, N)).astype(np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64) + beta * c
    _launch(kernel, a, b, c, beta)
    # K products summed in float32: each adds at most an ulp of the running sum
    assert_close(c, expected, rtol=2 * (K + 1) * FLOAT32_EPS)
    assert c.dtype == np.float32


def test_sgemm_kernel_beta_zero_never_reads_c():
    kernel = _host_sgemm()
    a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    c = np.full((4, 5), np.nan, np.float32)  # garbage in C must not leak into a fresh product
    _launch(kernel, a, b, c, 0.0)
    np.testing.assert_array_equal(c, 3.0)


@pytest.mark.parametrize("original, mutated", [
    ("for (int kk = 0; kk < BK; ++kk)", "for (int kk = 0; kk + 1 < BK; ++kk)"),  # drops a k of each slice
    ("__syncthreads();  // everyone", "//"),  # a thread overwrites the slice another still reads
    ("A[(size_t)k * lda + m]", "A[(size_t)m * lda + k]"),  # the transposed load read untransposed
])
def test_a_mutated_sgemm_is_caught(original, mutated):
    assert original in gemm.SOURCE
    kernel = _host_sgemm(gemm.SOURCE.replace(original, mutated, 1))
    with pytest.raises(AssertionError):
        for M, N, K, ta, tb, beta in GEMM_CASES:
            rng = np.random.default_rng(7)
            A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
            B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
            a, b = (A.T if ta else A), (B.T if tb else B)
            c = np.zeros((M, N), np.float32)
            for _ in range(3):  # a race shows on some runs only
                _launch(kernel, a, b, c, 0.0)
                assert_close(c, a.astype(np.float64) @ b, rtol=2 * (K + 1) * FLOAT32_EPS)


def test_sgemm_kernel_compiles_with_nvrtc():
    """Where CuPy and its NVRTC are installed (no GPU needed), the source compiles for an H100/H200."""
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy (and its NVRTC) not installed")
    try:
        nvrtc.getVersion()
    except Exception as e:
        pytest.skip(f"CuPy is installed but NVRTC cannot be loaded: {e}")
    program = nvrtc.createProgram(gemm.SOURCE, "sgemm.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["--gpu-architecture=compute_90"])
        ptx = nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert f".entry {gemm.NAME}" in ptx and "bar.sync" in ptx  # the kernel, with its barriers


def test_gemm_refuses_what_the_kernel_cannot_take():
    with pytest.raises(ValueError, match="float32"):
        gemm.gemm(np.ones((2, 3)), np.ones((3, 4)), np.empty((2, 4)))
    with pytest.raises(ValueError, match="beta 0 or 1"):
        gemm.gemm(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32), np.empty((2, 4), np.float32), beta=0.5)


# ------------------------------------------------------------------ 2. the fake device's capture mode
def _arrays():
    a = xp.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    return a, xp.asarray(np.ones((3, 4), np.float32)), xp.empty((3, 4), np.float32)


@pytest.mark.parametrize("call", [
    lambda a, b, c: a @ b.T, lambda a, b, c: xp.matmul(a, b.T), lambda a, b, c: xp.dot(a, b.T),
    lambda a, b, c: xp.tensordot(a, b, axes=2), lambda a, b, c: xp.einsum("ij,ij->", a, b),
    lambda a, b, c: a.dot(b.T), lambda a, b, c: xp.linalg.norm(a)], ids=["@", "matmul", "dot", "tensordot",
                                                                        "einsum", "ndarray.dot", "linalg"])
def test_capture_refuses_cublas(call):
    a, b, c = _arrays()
    with xp.stream_capture():
        with pytest.raises(NotImplementedError, match="calling cuBLAS API during stream capture is currently unsupported"):
            call(a, b, c)


def test_capture_refuses_curand():
    with xp.stream_capture():
        with pytest.raises(NotImplementedError, match="calling cuRAND API during stream capture"):
            xp.random.standard_normal((3, 4))


@pytest.mark.parametrize("call", [
    lambda a, b, c: a + b, lambda a, b, c: -a, lambda a, b, c: xp.add(a, b), lambda a, b, c: xp.empty((3,)),
    lambda a, b, c: a.sum(), lambda a, b, c: a.mean(axis=0), lambda a, b, c: a[xp.asarray(np.array([0, 2]))],
    lambda a, b, c: a.astype(np.float64), lambda a, b, c: xp.random.default_rng(0),
    lambda a, b, c: xp.where(a > 1, a, b), lambda a, b, c: a.copy()],
    ids=["+", "neg", "add", "empty", "sum", "mean", "advanced-index", "astype", "default_rng", "where", "copy"])
def test_capture_refuses_allocations(call):
    a, b, c = _arrays()
    with xp.stream_capture():
        with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureUnsupported"):
            call(a, b, c)


def test_capture_refuses_a_generator_draw_without_out():
    rng = xp.random.default_rng(0)
    with xp.stream_capture():
        with pytest.raises(CUDARuntimeError, match="allocates"):
            rng.standard_normal((3, 4), dtype=np.float32)


@pytest.mark.parametrize("call", [
    lambda a, b, c: a.get(), lambda a, b, c: float(a[0, 0]), lambda a, b, c: a[0, 0].item(),
    lambda a, b, c: bool(a[0, 0]), lambda a, b, c: int(a[0, 0]), lambda a, b, c: xp.asarray(np.ones(3)),
    lambda a, b, c: a.tolist(), lambda a, b, c: f"{a[0, 0]:.3f}"],
    ids=["get", "float", "item", "bool", "int", "asarray(host)", "tolist", "format"])
def test_capture_refuses_host_transfers_and_syncs(call):
    a, b, c = _arrays()
    with xp.stream_capture():
        with pytest.raises(CUDARuntimeError, match="host transfer or sync"):
            call(a, b, c)


def test_capture_records_without_computing_and_launch_replays():
    a, b, c = _arrays()
    rng = xp.random.default_rng(3)
    z = xp.zeros((3, 4), np.float32)
    c[...] = 0.0
    with xp.stream_capture() as g:
        xp.add(a, b, out=c)  # into a buffer: recorded
        c += a  # in place: recorded
        c.T[0] = 5.0  # a view, then a fill kernel
        rng.standard_normal(dtype=np.float32, out=z)  # the generator's draw into its slot
        view = c.reshape(12)[2:5]  # views are free
    assert not fake_device.capturing() and len(g.ops) == 4 and view.shape == (3,)
    assert float(c.sum()) == 0.0 and float(abs(z).sum()) == 0.0  # nothing ran
    expected_z = np.random.default_rng(3).standard_normal((2, 3, 4), dtype=np.float32)
    for launch in range(2):
        c[...] = 0.0
        g.launch()
        expected = 2 * np.arange(12, dtype=np.float32).reshape(3, 4) + 1
        expected.T[0] = 5.0
        np.testing.assert_array_equal(c.get(), expected)
        np.testing.assert_array_equal(z.get(), expected_z[launch])  # the generator moves on at each replay


def test_capture_does_not_nest_and_ends_with_the_block():
    with xp.stream_capture():
        with pytest.raises(CUDARuntimeError, match="already capturing"):
            with xp.stream_capture():
                pass
    assert float(xp.asarray(np.ones(2)).sum()) == 2.0  # back to normal


def test_capture_refuses_a_cub_reduction_and_records_it_without_cub():
    """CuPy's default CUB accelerator turns a full mean(out=) into CUB's device reduce (an allocated result and
    workspace, then a copy): refused while capturing; graph.one_kernel_reductions switches CUB off, restoring it."""
    a, b, c = _arrays()
    out, rows, cols = xp.empty((), np.float32), xp.empty((3,), np.float32), xp.empty((4,), np.float32)
    with xp.stream_capture():
        with pytest.raises(CUDARuntimeError, match="CUB"):
            xp.mean(a, out=out)
        with pytest.raises(CUDARuntimeError, match="CUB"):
            xp.sum(a, axis=1, out=rows)  # over the trailing axis: CUB's segmented reduce
        xp.sum(a, axis=0, out=cols)  # over the leading axis of a C-ordered array: no CUB
    with graph.one_kernel_reductions(xp):
        assert xp._core.get_reduction_accelerators() == xp._core.get_routine_accelerators() == []
        with xp.stream_capture() as g:
            xp.mean(a, out=out)
    assert len(g.ops) == 1 and xp._core.get_routine_accelerators() == ["cub"]
    g.launch()
    assert float(out) == 5.5
    with pytest.raises(KeyError):
        with graph.one_kernel_reductions(xp):
            raise KeyError("an error inside")
    assert xp._core.get_reduction_accelerators() == xp._core.get_routine_accelerators() == ["cub"]


def test_end_capture_after_a_refused_call_reports_the_capture_invalidated():
    a, b, c = _arrays()
    xp.begin_capture()
    with pytest.raises(CUDARuntimeError, match="host transfer or sync"):
        float(a[0, 0])
    with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureInvalidated"):
        xp.end_capture()
    assert not fake_device.capturing()  # CUDA ends the capture all the same


def test_capture_graph_ends_a_failed_capture_and_raises_its_first_error():
    a, b, c = _arrays()

    def body():
        xp.add(a, b, out=c)
        float(c[0, 0])  # a sync: refused, and the capture invalidated
    with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureUnsupported.*host transfer"):
        graph.capture_graph(xp.begin_capture, xp.end_capture, body)
    assert not fake_device.capturing()
    recorded = graph.capture_graph(xp.begin_capture, xp.end_capture, lambda: xp.add(a, b, out=c))
    assert len(recorded.ops) == 1



@pytest.fixture
def numpy_gemm(monkeypatch):
    monkeypatch.setattr(xp, "RawKernel", NumpyArithmeticRawKernel, raising=False)
    monkeypatch.setattr(gemm, "_built", {})


@pytest.fixture
def sgemm_kernel(monkeypatch):
    needs_compiler()
    monkeypatch.setattr(xp, "RawKernel", FakeRawKernel, raising=False)
    monkeypatch.setattr(gemm, "_built", {})


def _config(loss, **extra):
    config = dict(train_command.MLP_DEFAULTS, image_size=20, batch_size=8, g_hidden="16,32", d_hidden="24,12", latent_dim=6,
                  loss=loss, seed=5)
    config.update(flags.loss_defaults(loss))
    config.update(extra)
    return config


def _dataset(n=64, dim=20):
    return np.random.default_rng(11).uniform(-1, 1, (n, dim)).astype(np.float32)


def _state(step):
    """Every array the step updates: weights, gradients, optimizer state, BatchNorm's running statistics."""
    out = {}
    for name in ("G", "D"):
        net, opt = getattr(step, name), getattr(step, f"opt_{name}")
        out[f"{name}.data"], out[f"{name}.grad"] = opt.store.data.get(), opt.store.grad.get()
        for key, value in opt.state_dict().items():
            if key != "t":
                out[f"{name}.opt.{key}"] = value.get()
        for i, m in enumerate(net.modules()):
            for buf in ("running_mean", "running_var"):
                if hasattr(m, buf):
                    out[f"{name}.{i}.{buf}"] = getattr(m, buf).get()
    return out


def _compare(loss, steps=3, epochs=1, **extra):
    """Eager GANStep and GraphedStep from the same config on the fake device: same bits after each epoch."""
    config = _config(loss, **extra)
    d_steps = config["d_steps"]
    eager, graphed_eager = models.build_step(config, xp), models.build_step(config, xp)
    data = _dataset(config["batch_size"] * d_steps * steps)
    labels = np.random.default_rng(12).integers(0, 10, len(data)).astype(np.int64)
    conditional = config.get("conditional", False)
    device_data = (xp.asarray(data), xp.asarray(labels)) if conditional else xp.asarray(data)
    graphed = graph.GraphedStep(graphed_eager, d_steps, dataset=device_data)
    N = config["batch_size"]
    for epoch in range(epochs):
        order = np.random.default_rng([5, epoch]).permutation(len(data))
        eager.noise.start_epoch(epoch)
        graphed.noise.start_epoch(epoch)
        graphed.start_epoch(order)
        for s in range(steps):
            picks = [order[(s * d_steps + k) * N:(s * d_steps + k + 1) * N] for k in range(d_steps)]
            batches = [(xp.asarray(data[p]), xp.asarray(labels[p])) if conditional else xp.asarray(data[p])
                       for p in picks]
            expected = eager.step(batches)
            stats = graphed.step()
            assert list(stats) == list(expected)
            for key in expected:
                assert_bitwise(stats[key].get(), expected[key].get(), f"epoch {epoch} step {s} {key}")
        for key, value in _state(eager).items():
            assert_bitwise(_state(graphed_eager)[key], value, f"epoch {epoch}: {key}")
        assert graphed.opt_G.t == eager.opt_G.t and graphed.opt_D.t == eager.opt_D.t
        assert graphed.noise.state() == eager.noise.state()
    return graphed


@pytest.mark.parametrize("loss", ["bce", "wgan", "wgan-gp", "lsgan", "hinge"])
def test_graphed_step_equals_eager_bitwise(numpy_gemm, loss):
    graphed = _compare(loss)
    assert graphed.captures == 1 and graphed.runner.graph.launches == 2  # a warm-up, then replays
    assert all(fn.__name__ != "matmul" for fn, *_ in graphed.runner.graph.ops)
    if loss == "wgan":
        assert graphed.d_steps == 5 and graphed.clip == 0.01  # the multi-critic step, with weight clipping
    if loss == "wgan-gp":
        assert graphed.d_steps == 5 and "gp" in graphed.penalties  # the multi-critic step, the penalty


def test_the_default_step_holds_the_launches_graph_py_counts(numpy_gemm):
    """fast/cuda_graph/graph.py's figure: the default MLP bce step at batch 64, gather included, is 327 launches, 41 GEMMs."""
    config = dict(train_command.MLP_DEFAULTS, loss="bce", image_size=784)
    config.update(flags.loss_defaults("bce"))
    step = graph.GraphedStep(models.build_step(config, xp), 1, dataset=xp.asarray(_dataset(64, 784)))
    step.start_epoch(np.arange(64))
    step.step()  # the warm-up
    step.start_epoch(np.arange(64))
    step.step()  # the capture, and one launch
    ops = step.runner.graph.ops
    assert (len(ops), sum(where.startswith("RawKernel") for *_, where in ops)) == (327, 41)
    assert [where for *_, where in ops[:4]] == ["fake_device.add", "fake_device.take", "fake_device.take",
                                                "fake_device.add"]  # the gather comes first


def test_graphed_wgan_gp_draws_one_alpha_per_sample(numpy_gemm):
    """CuPy's random(out=) without size broadcasts one draw (the fake device does the same): the graph passes alpha's
    shape, so each sample has its own alpha, the eager step's (the bitwise comparison above checks the rest)."""
    graphed = _compare("wgan-gp", steps=2)
    alpha = graphed.penalties["gp"][1].get()
    assert alpha.shape == (8, 1) and len(np.unique(alpha)) == 8
    rng = np.random.default_rng(int(np.random.SeedSequence([5, 0, int.from_bytes(b"gp_alpha", "little")])
                                    .generate_state(1)[0]))
    draws = [rng.random((8, 1), dtype=np.float32) for _ in range(2 * graphed.d_steps)]
    np.testing.assert_array_equal(alpha, draws[-1])  # the stream's last draw, as GANStep.extra("gp_alpha") draws


def test_graphed_step_turns_cub_off_for_its_warm_up_and_capture_only(numpy_gemm):
    step = graph.GraphedStep(models.build_step(_config("bce"), xp), 1, dataset=xp.asarray(_dataset(32)))
    step.start_epoch(np.arange(32))
    seen, body = [], step._body

    def watched_body():
        seen.append((xp._core.get_reduction_accelerators(), xp._core.get_routine_accelerators()))
        body()
    step._body = watched_body
    for _ in range(3):
        step.step()
    assert seen == [([], []), ([], [])]  # the warm-up and the capture; the launch replays without Python
    assert xp._core.get_reduction_accelerators() == xp._core.get_routine_accelerators() == ["cub"]


def test_a_failed_capture_is_dropped_and_raises_its_first_error(numpy_gemm):
    """A new epoch's capture fails (a sync inside it): its error is raised, not the invalidated capture's, and
    the previous epoch's graph is dropped, not launched; a capture that works then replaces it."""
    step = graph.GraphedStep(models.build_step(_config("bce"), xp), 1, dataset=xp.asarray(_dataset(32)))
    step.noise.start_epoch(0)
    step.start_epoch(np.arange(32))
    step.step()
    step.step()  # the first capture
    assert step.runner.graph is not None
    step.noise.start_epoch(1)  # a new generator: the next step captures anew
    step.start_epoch(np.arange(32))
    body = step._body
    step._body = lambda: (body(), float(step.stats["loss_D"]))
    with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureUnsupported.*host transfer"):
        step.step()
    assert step.runner.graph is None and not fake_device.capturing()
    step._body = body
    step.step()
    assert step.runner.graph is not None and step.captures == 2


def test_a_step_past_the_epochs_last_batch_is_refused(numpy_gemm):
    """On CuPy take() wraps an out-of-range index (the fake device too): a third step on 2 batches would gather
    the epoch's first batch again, silently. The host mirror of pos refuses it in one line."""
    step = graph.GraphedStep(models.build_step(_config("bce"), xp), 1, dataset=xp.asarray(_dataset(16)))
    step.start_epoch(np.arange(16))
    step.step()
    step.step()
    with pytest.raises(ValueError, match=r"the epoch has 2 batches of 8; 2 were gathered .*start_epoch"):
        step.step()
    assert step.steps_run == 2
    step.start_epoch(np.arange(16), 1)  # resumed at batch 1: one batch left
    step.step()
    with pytest.raises(ValueError, match="1 more"):
        step.step()


def test_graphed_step_with_r1_equals_eager_bitwise(numpy_gemm):
    graphed = _compare("hinge", r1=2.0, epochs=2, steps=2)
    assert "r1" in graphed.penalties and graphed.captures == 2


def test_graphed_wgan_gp_recaptures_for_a_new_epoch(numpy_gemm):
    graphed = _compare("wgan-gp", steps=2, epochs=2)
    assert graphed.captures == 2  # a new epoch: new generators for z and for alpha


def test_graphed_step_with_two_d_steps_equals_eager(numpy_gemm):
    _compare("bce", d_steps=2)


@pytest.mark.parametrize("embedding_dim", [0, 5], ids=["one-hot", "embedding"])
def test_conditional_graphed_step_equals_eager_bitwise(numpy_gemm, embedding_dim):
    graphed = _compare("bce", conditional=True, embedding_dim=embedding_dim, d_steps=2)
    assert graphed.conditional and graphed.captures == 1


def test_graphed_step_recaptures_for_a_new_epoch(numpy_gemm):
    graphed = _compare("lsgan", steps=2, epochs=2, label_smoothing=0.1)
    assert graphed.captures == 2  # each epoch's noise generator is a new one


@pytest.mark.parametrize("loss, conditional", [("bce", False), ("wgan-gp", False), ("hinge", True)])
def test_graphed_step_with_the_sgemm_kernel(sgemm_kernel, loss, conditional):
    """The whole step with the kernel's own arithmetic, under capture: nothing refused, close to eager."""
    config = _config(loss, batch_size=4, d_steps=2, conditional=conditional)
    eager, other = models.build_step(config, xp), models.build_step(config, xp)
    data, labels = _dataset(16), np.arange(16) % 10
    graphed = graph.GraphedStep(other, 2, dataset=(xp.asarray(data), xp.asarray(labels)) if conditional
                                else xp.asarray(data))
    graphed.start_epoch(np.arange(16))
    for s in range(2):
        picks = [slice((2 * s + k) * 4, (2 * s + k + 1) * 4) for k in range(2)]
        expected = eager.step([(xp.asarray(data[p]), xp.asarray(labels[p])) if conditional else xp.asarray(data[p])
                               for p in picks])
        stats = graphed.step()
        for key in expected:  # float32 sums of at most 32 products, in another order than BLAS's
            assert_close(stats[key].get(), expected[key].get(), rtol=64 * FLOAT32_EPS, err_msg=key)
    assert graphed.captures == 1 and graphed.runner.graph.launches == 1
    assert xp.RawKernel is FakeRawKernel and gemm._built[FakeRawKernel].calls > 0


def test_graphed_step_is_not_silent_about_host_values(numpy_gemm, monkeypatch):
    """The check can fail: a host-side Adam clock frozen into the graph gives other bits than eager."""
    monkeypatch.setattr(fixed.AdamPlan, "step", _adam_with_host_clock)
    with pytest.raises(AssertionError, match="differ"):
        _compare("bce")


def _adam_with_host_clock(self):
    o, xp_ = self.opt, fake_device.xp
    bias1, bias2 = 1.0 - o.beta1 ** (o.t + 1), 1.0 - o.beta2 ** (o.t + 1)  # read on the host at capture
    theta, g, m, v, t1, t2 = o.store.data, o.store.grad, o.m, o.v, self.t1, self.t2
    xp_.multiply(m, o.beta1, out=t1)
    xp_.multiply(g, 1.0 - o.beta1, out=t2)
    xp_.add(t1, t2, out=m)
    xp_.multiply(v, o.beta2, out=t1)
    xp_.multiply(g, 1.0 - o.beta2, out=t2)
    xp_.multiply(t2, g, out=t2)
    xp_.add(t1, t2, out=v)
    xp_.divide(m, bias1, out=t1)
    xp_.divide(v, bias2, out=t2)
    xp_.multiply(t1, o.lr, out=t1)
    xp_.sqrt(t2, out=t2)
    xp_.add(t2, o.eps, out=t2)
    xp_.divide(t1, t2, out=t1)
    xp_.subtract(theta, t1, out=theta)


# ------------------------------------------------------------------ 4. what is refused
@pytest.mark.parametrize("extra, reason", [
    (dict(conditional=True, loss="wgan-gp"), "conditional critic"), (dict(dropout=0.3), "Dropout"),
    (dict(loss_on="probs"), "probabilities"), (dict(ema=0.999), "--ema"), (dict(instance_noise=0.1), "--instance"),
    (dict(spectral_norm=True), "SpectralNorm"), (dict(dtype="float64"), "float32"),
])
def test_what_has_no_graph_is_refused_in_one_line(extra, reason):
    loss = extra.pop("loss", "bce")
    step = models.build_step(_config(loss, **extra), np)
    message = graph.unsupported(step)
    assert message is not None and reason in message and "\n" not in message
    with pytest.raises(ValueError, match="--cuda-graph"):
        graph.GraphedStep(step, 1)


def test_numpy_has_no_graph():
    step = models.build_step(_config("bce"), np)
    with pytest.raises(ValueError, match="needs CuPy"):
        graph.GraphedStep(step, 1)


def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "scratchgan", "train", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_cuda_graph_flag_on_numpy_is_one_line_exit_2(tmp_path):
    result = _run_cli("--cuda-graph", "--backend", "numpy", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--cuda-graph" in result.stderr and "--backend cupy" in result.stderr
    assert not (tmp_path / "run").exists()


def test_cuda_graph_flag_in_help():
    result = _run_cli("--help")
    text = " ".join(result.stdout.split())
    assert "--cuda-graph" in text and "--no-cuda-graph" in text
    assert "experimental: not yet run on a GPU" in text


# ------------------------------------------------------------------ 3b. through the Trainer: checkpoints, resume
TRAIN_IMAGES = 48  # 6 batches of 8 an epoch


def _train(out, graphed, epochs, resume=None, loss="bce", conditional=False, d_steps=1, stop_after=None,
           resident="auto"):
    """The Trainer on the fake device, as `--cuda-graph` runs it: the graphed step gathers its batches from
    the loader's device copy, in the loader's order (the loader hands it no batch: its epoch() refuses)."""
    from scratchgan.data.loader import BatchLoader
    from scratchgan.run.trainer import Trainer
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (TRAIN_IMAGES, 4, 5), dtype=np.uint8)
    labels = np.arange(TRAIN_IMAGES) % 10 if conditional else None
    config = _config(loss, out=str(out), conditional=conditional, d_steps=d_steps)
    step = models.build_step(config, xp)
    loader = BatchLoader(images, 8, xp=xp, seed=0, labels=labels, resident=resident)
    if graphed:
        step = graph.GraphedStep(step, d_steps)
        loader.epoch = _no_batches
        loader = step.gathering(loader)
    trainer = Trainer(step, loader, out, config, sample_every=0, log_every=1, image_shape=(4, 5), d_steps=d_steps,
                      progress=False, log=lambda message: None)
    if stop_after is not None:  # Ctrl-C after that many steps: the trainer saves mid-epoch and stops
        original, calls = trainer.step.step, []

        def step_then_stop(*batches):
            stats = original(*batches)
            calls.append(1)
            if len(calls) == stop_after:
                trainer._stop_requested = True
            return stats
        trainer.step.step = step_then_stop
    trainer.fit(epochs, resume_from=resume)
    return trainer


def _no_batches(*args, **kwargs):
    raise AssertionError("the graphed trainer asked the loader for a batch: the graph gathers its own")


def _assert_same_checkpoints(a, b):
    from scratchgan.checkpoint import load_checkpoint
    (arrays_a, meta_a), (arrays_b, meta_b) = load_checkpoint(a), load_checkpoint(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for key in arrays_a:
        assert_bitwise(arrays_b[key], arrays_a[key], key)
    for key in ("global_step", "epoch", "batch_in_epoch", "noise", "opt_G_t", "opt_D_t"):
        assert key in meta_a and meta_b[key] == meta_a[key], key


@pytest.mark.parametrize("loss, conditional, d_steps", [("bce", False, 1), ("hinge", True, 2)],
                         ids=["bce", "conditional-hinge"])
def test_trainer_gathering_in_the_graph_saves_and_resumes_as_eager(numpy_gemm, tmp_path, loss, conditional, d_steps):
    from scratchgan.run.trainer import TrainingInterrupted
    run = dict(loss=loss, conditional=conditional, d_steps=d_steps)
    iters = TRAIN_IMAGES // 8 // d_steps
    _train(tmp_path / "eager", False, 2, **run)
    trainer = _train(tmp_path / "graph", True, 2, **run)
    assert trainer.step.captures == 2 and trainer.step.steps_run == 2 * iters  # one graph per epoch (its noise)
    _assert_same_checkpoints(tmp_path / "eager" / "checkpoint.npz", tmp_path / "graph" / "checkpoint.npz")
    assert (tmp_path / "graph" / "metrics.csv").read_text() == (tmp_path / "eager" / "metrics.csv").read_text()
    # stopped in the middle of the second epoch, resumed from there: the uninterrupted run's bits
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path / "split", True, 2, stop_after=iters + 1, **run)
    from scratchgan.checkpoint import load_checkpoint
    meta = load_checkpoint(tmp_path / "split" / "checkpoint.npz")[1]
    assert (meta["epoch"], meta["batch_in_epoch"]) == (1, d_steps)  # mid-epoch: the gather resumes at batch d_steps
    resumed = _train(tmp_path / "split", True, 2, resume=tmp_path / "split" / "checkpoint.npz", **run)
    assert resumed.step.steps_run == iters - 1
    _assert_same_checkpoints(tmp_path / "eager" / "checkpoint.npz", tmp_path / "split" / "checkpoint.npz")


def test_trainer_gathering_uint8_resident_data_scales_as_the_loader(numpy_gemm, tmp_path):
    """A loader that keeps the raw bytes on the device (resident="uint8"): the graph scales each gathered batch
    to [-1, 1] as the loader does, bit for bit."""
    _train(tmp_path / "eager", False, 1, resident="uint8")
    trainer = _train(tmp_path / "graph", True, 1, resident="uint8")
    assert trainer.step.raw is not None and trainer.step.dataset.dtype == np.uint8
    _assert_same_checkpoints(tmp_path / "eager" / "checkpoint.npz", tmp_path / "graph" / "checkpoint.npz")


def test_a_short_last_batch_is_refused_as_the_eager_step_refuses_it(tmp_path):
    """drop_last=False keeps a short last batch, which GANStep refuses when the trainer reaches it; the graph
    (fixed slots) refuses the loader at once, with GANStep's words. drop_last=True (the CLI's) drops it in both."""
    from scratchgan.data.loader import BatchLoader
    from scratchgan.run.trainer import Trainer
    images = np.random.default_rng(0).integers(0, 256, (50, 4, 5), dtype=np.uint8)  # 6 batches of 8, then 2
    config = _config("bce", out=str(tmp_path))
    eager = Trainer(models.build_step(config, xp), BatchLoader(images, 8, xp=xp, drop_last=False), tmp_path / "e",
                    config, sample_every=0, progress=False, log=lambda message: None)
    with pytest.raises(ValueError, match="real batch of 2 images, but the step was built for batches of 8"):
        eager.fit(1)
    with pytest.raises(ValueError, match="real batch of 2 images .*but the step was built for batches of 8"):
        graph.GraphedStep(models.build_step(config, xp), 1).gathering(BatchLoader(images, 8, xp=xp, drop_last=False))
    kept = graph.GraphedStep(models.build_step(config, xp), 1)
    kept.gather_from(BatchLoader(images, 8, xp=xp))  # drop_last=True: the 2 left over are never gathered
    assert len(kept.order) == 50


def test_a_launch_moves_nothing_between_host_and_device(numpy_gemm, monkeypatch):
    """Within an epoch a step is one launch: no upload (the order is on the device, pos moves on in the graph),
    no read back, no sync; the statistics stay on the device until the trainer logs."""
    conditional = _config("hinge", conditional=True, d_steps=2)
    step = graph.GraphedStep(models.build_step(conditional, xp), 2,
                             dataset=(xp.asarray(_dataset(48)), xp.asarray(np.arange(48) % 10)))
    step.noise.start_epoch(0)
    step.start_epoch(np.random.default_rng(0).permutation(48))  # the epoch's one upload
    step.step()  # the warm-up
    step.step()  # the capture and its launch

    def transfer(*args, **kwargs):
        raise AssertionError("a host transfer or sync in a launched step")
    with monkeypatch.context() as forbid:
        forbid.setattr(fake_device, "_refuse_sync", transfer)  # every read back and sync of a DeviceArray
        forbid.setattr(xp, "asarray", transfer)  # every upload
        forbid.setattr(xp, "array", transfer)
        stats = step.step()
    assert step.captures == 1 and step.runner.graph.launches == 2 and set(stats) >= {"loss_D", "loss_G"}
    assert int(step.pos.get()) == 3 * 2 * 8  # three iterations of two batches of 8, counted on the device


def test_what_the_gather_cannot_take_is_refused():
    from scratchgan.data.loader import BatchLoader
    images = np.random.default_rng(0).integers(0, 256, (48, 4, 5), dtype=np.uint8)
    step = graph.GraphedStep(models.build_step(_config("bce"), xp), 1)
    with pytest.raises(ValueError, match="no dataset to gather from"):
        step.step()
    with pytest.raises(ValueError, match="no dataset to gather from"):
        step.start_epoch(np.arange(48))
    with pytest.raises(ValueError, match="loader's batches have 16 images, but the step was built for batches of 8"):
        step.gather_from(BatchLoader(images, 16, xp=xp))
    with pytest.raises(ValueError, match=r"batches of shape \(N, 20\)"):
        step.gather_from(BatchLoader(images, 8, xp=xp, flatten=False))
    step.gather_from(BatchLoader(images, 8, xp=xp))
    for bad in (7, -1, 2.0, True):  # 6 batches: start at 0..6
        with pytest.raises(ValueError, match=r"start_batch must be an integer in \[0, 6\]"):
            step.start_epoch(np.arange(48), bad)
    with pytest.raises(ValueError, match="each of the 48 images once"):
        step.start_epoch(np.arange(47))
    conditional = graph.GraphedStep(models.build_step(_config("bce", conditional=True), xp), 1)
    with pytest.raises(ValueError, match="give the BatchLoader labels="):
        conditional.gather_from(BatchLoader(images, 8, xp=xp))


def test_the_gathering_loader_is_the_loader_the_trainer_sees(numpy_gemm):
    """GraphedStep.gathering(loader): the loader's length and images; epoch(e, b) starts the graph's epoch in
    loader.permutation(e)'s order at batch b and hands out one placeholder per batch left, which step() takes;
    a real batch (a plain loader's) is refused, since the graph gathers its own."""
    from scratchgan.data.loader import BatchLoader
    images = np.random.default_rng(0).integers(0, 256, (48, 4, 5), dtype=np.uint8)
    loader = BatchLoader(images, 8, xp=xp, seed=3)
    step = graph.GraphedStep(models.build_step(_config("bce"), xp), 1)
    gathering = step.gathering(loader)
    assert len(gathering) == len(loader) == 6 and gathering.batch_size == 8
    assert_bitwise(gathering.images(5).get(), loader.images(5).get(), "images")
    batches = list(gathering.epoch(2, 4))
    assert batches == [graph.GATHERED] * 2 and step.next_pos == 32
    assert_bitwise(step.order.get(), np.asarray(loader.permutation(2)), "order")
    with pytest.raises(ValueError, match="gathers its batches on the device and takes none"):
        step.step([next(loader.epoch(0))])
    stats = step.step(batches[:1])
    assert step.steps_run == 1 and step.next_pos == 40 and "loss_D" in stats


def test_the_cli_hook_refuses_in_one_line():
    from scratchgan.cli.common import UserError
    step = models.build_step(_config("bce"), np)
    assert train_options.graphed(step, {"cuda_graph": False}, None) is step  # --no-cuda-graph: the eager step
    with pytest.raises(UserError, match="one process"):
        train_options.graphed(step, {"cuda_graph": True, "d_steps": 1}, world=object())
    on_probs = models.build_step(_config("bce", loss_on="probs"), np)
    with pytest.raises(UserError, match=r"^--cuda-graph: .*probabilities.*; run without --cuda-graph$"):
        train_options.graphed(on_probs, {"cuda_graph": True, "d_steps": 1}, None)


# ------------------------------------------------------------------ 5. on a GPU (skipped without one; NEVER RUN yet)
def test_sgemm_kernel_on_the_gpu_equals_matmul():
    from layer_cases import skip_unless_cupy
    skip_unless_cupy()
    import cupy
    for M, N, K, ta, tb, beta in GEMM_CASES:
        rng = np.random.default_rng(M + N + K)
        A = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        B = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        c = rng.standard_normal((M, N)).astype(np.float32)
        a, b = cupy.asarray(A), cupy.asarray(B)
        out = cupy.asarray(c)
        gemm.gemm(a.T if ta else a, b.T if tb else b, out, beta=beta)
        expected = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B) + beta * c
        assert_close(out.get(), expected, rtol=2 * (K + 1) * FLOAT32_EPS)


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_graphed_step_on_the_gpu_follows_eager(loss):
    """On CuPy: a warm-up, a capture and launches; the first step's statistics agree with the eager step's
    to rounding (the GPU's sums run in other orders), and the weights after 3 steps to Adam's step size."""
    from layer_cases import skip_unless_cupy
    skip_unless_cupy()
    import cupy
    config = _config(loss, image_size=784, batch_size=64, g_hidden="128,512,1024", d_hidden="512,256,128",
                     latent_dim=100)
    d_steps = config["d_steps"]
    eager, other = models.build_step(config, cupy), models.build_step(config, cupy)
    data = np.random.default_rng(0).uniform(-1, 1, (64 * d_steps * 3, 784)).astype(np.float32)
    graphed = graph.GraphedStep(other, d_steps, dataset=cupy.asarray(data))
    graphed.start_epoch(np.arange(len(data)))
    for s in range(3):
        batches = [cupy.asarray(data[(s * d_steps + k) * 64:(s * d_steps + k + 1) * 64]) for k in range(d_steps)]
        expected, stats = eager.step(batches), graphed.step()
        if s == 0:
            for key in expected:
                assert_close(stats[key].get(), expected[key].get(), rtol=1e-4, err_msg=key)
    assert graphed.captures == 1 and graphed.steps_run == 3
    for net in ("G", "D"):
        a, b = getattr(other, f"opt_{net}").store.data.get(), getattr(eager, f"opt_{net}").store.data.get()
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=0, atol=6 * config["lr"], err_msg=net)  # Adam moves a weight ~lr a step, either way
