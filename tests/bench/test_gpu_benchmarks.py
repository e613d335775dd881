"""The GPU benchmarks' own code paths on the CPU: benchmarks/bench_sgemm.py (its NumPy smoke run lists every GEMM
shape of the step; its kernel calls, through the fake device's host-compiled RawKernel, compute the product) and
bench_step.py's --cuda-graph worker (the GraphedStep it times runs on the fake device). Timings are not checked."""
import subprocess
import sys
from pathlib import Path

import host_kernels
import numpy as np
import pytest
from fake_device import FakeRawKernel, xp
from numpy_gemm import NumpyArithmeticRawKernel
from tolerances import FLOAT32_EPS, assert_close

from scratchgan.fast.cuda_graph import gemm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_sgemm  # noqa: E402
import bench_step  # noqa: E402


def test_bench_sgemm_quick_times_every_shape_of_the_step():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sgemm.py"), "--quick"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and not line.startswith("| M ")]
    assert len(rows) == len(set(bench_step.gemm_shapes(64))) == 23
    assert sum(int(r.split("|")[5]) for r in rows) == len(bench_step.gemm_shapes(64))  # the counts add up
    assert all(float(r.split("|")[6]) > 0 for r in rows)


def test_bench_sgemm_kernel_calls_compute_the_product(monkeypatch):
    if host_kernels.compiler() is None:
        pytest.skip("no C++ compiler: the kernels cannot be built for the CPU")
    monkeypatch.setattr(xp, "RawKernel", FakeRawKernel, raising=False)
    monkeypatch.setattr(gemm, "_built", {})
    monkeypatch.setattr(gemm, "_variants", {})
    a, b = bench_sgemm.operands(xp, 20, 200, 9, "dy@W.T", np.random.default_rng(0))
    calls, splits = bench_sgemm.kernel_calls(xp, gemm, a, b, sms=8)
    assert splits == 6  # 1 block of 64 x 64: 16 for two per SM, but K = 200 keeps 6 runs of at least 32
    expected = xp.matmul(a, b).get().astype(np.float64)
    for name, (call, out) in calls.items():
        call()
        assert_close(out.get(), expected, rtol=2 * 201 * FLOAT32_EPS, err_msg=name)


def test_bench_step_graphed_worker_runs_the_graphed_step(monkeypatch):
    monkeypatch.setattr(xp, "RawKernel", NumpyArithmeticRawKernel, raising=False)
    monkeypatch.setattr(gemm, "_built", {})
    result = bench_step.worker_graphed(8, 3, 1, xp)
    assert result["ms"] > 0
