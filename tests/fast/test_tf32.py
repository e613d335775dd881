"""--tf32: float32 matmuls on TF32 tensor cores (scratchgan/fast/precision.py), CuPy only.

On NumPy it is refused in one line (exit 2) before anything is written: TF32 does not exist there,
and a flag that silently does nothing would make a CPU run's config claim a precision it never had.
`--help` says what it changes and what it costs. With CuPy, ``use_tf32`` sets the compute type of
CuPy's float32 GEMMs; where a GPU is visible, a product of a 1 + 2^-12 input shows the 10-bit rounding.
"""
from __future__ import annotations

import re
import subprocess
import sys
import types

import numpy as np
import pytest
from layer_cases import skip_unless_cupy
from commands import EXAMPLE, REPO, env_for, run

from scratchgan.backend import BackendError
from scratchgan.fast import precision

DCGAN_EXAMPLE = REPO / "examples" / "dcgan.py"


@pytest.mark.parametrize("entry", ["mnist_mlp", "dcgan", "scratchgan train"])
def test_tf32_on_numpy_is_refused_in_one_line_before_anything_is_written(tmp_path, entry):
    out = tmp_path / "run"
    args = ["--tf32", "--epochs", "1", "--out", str(out)]
    if entry == "mnist_mlp":
        code, stdout, stderr = run(args, tmp_path)
    elif entry == "scratchgan train":
        code, stdout, stderr = run(["train", "--arch", "dcgan", *args], tmp_path, module=True)
    else:
        proc = subprocess.run([sys.executable, str(DCGAN_EXAMPLE), *args], cwd=tmp_path, env=env_for(tmp_path),
                              capture_output=True, text=True, timeout=120)
        code, stderr = proc.returncode, proc.stderr
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert "--tf32 needs --backend cupy" in lines[0] and "drop --tf32" in lines[0]
    assert not out.exists()


def test_tf32_with_the_cuda_graph_is_refused_in_one_line(tmp_path):
    """The graph's matmuls are scratchgan's own GEMM kernel, not cuBLAS: TF32 would silently not reach them.
    Refused before the backend is loaded, so with or without CuPy."""
    from scratchgan.cli import train_options
    from scratchgan.cli.common import UserError
    config = {"arch": "mlp", "dataset": "mnist", "backend": "cupy", "tf32": True, "cuda_graph": True}
    with pytest.raises(UserError, match="--tf32 does not reach --cuda-graph's matmuls"):
        train_options.check_flags(config, explicit={"tf32", "cuda_graph"}, arch_choosable=False)
    code, _, stderr = run(["--tf32", "--cuda-graph", "--backend", "cupy", "--out", str(tmp_path / "run")], tmp_path)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "drop --tf32 or --cuda-graph" in lines[0], stderr
    assert not (tmp_path / "run").exists()


def test_tf32_with_cupy_missing_says_how_to_install_it(tmp_path):
    import importlib.util
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the 'CuPy missing' message cannot be provoked here")
    code, _, stderr = run(["--tf32", "--backend", "cupy", "--epochs", "1", "--out", str(tmp_path / "run")], tmp_path)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "pip install" in lines[0], stderr


def test_help_says_what_tf32_changes_and_costs(tmp_path):
    env = env_for(tmp_path)
    env["COLUMNS"] = "100"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    text = " ".join(proc.stdout.split())
    block = re.search(r"--tf32 (.*?\(default: [^)]*\))", text)
    assert proc.returncode == 0 and block, proc.stdout
    help_text = block.group(1)
    for phrase in ("CuPy only", "TF32 tensor cores", "10-bit", "~1e-3 relative", "Refused with --backend numpy",
                   "(default: off, full float32)"):
        assert phrase in help_text, (phrase, help_text)


def test_use_tf32_refuses_numpy():
    with pytest.raises(BackendError, match="--tf32 needs --backend cupy"):
        precision.use_tf32(np)
    assert precision.tf32_enabled(np) is False


def test_use_tf32_sets_cupys_float32_compute_type(monkeypatch):
    """The call CuPy's own CUPY_TF32 makes at the first float32 matmul, made explicitly (a stand-in module
    that records it: CuPy is not installed here)."""
    calls = []
    linalg = types.ModuleType("cupy._core._routines_linalg")
    linalg.COMPUTE_TYPE_DEFAULT, linalg.COMPUTE_TYPE_TF32 = 1, 7  # cpdef enum values in _routines_linalg.pxd
    linalg.set_compute_type = lambda dtype, compute_type: calls.append((np.dtype(dtype), compute_type))
    linalg.get_compute_type = lambda dtype: calls[-1][1]
    cupy = types.ModuleType("cupy")
    cupy.float32 = np.float32
    core = types.ModuleType("cupy._core")
    core._routines_linalg = linalg
    cupy._core = core
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy._core", core)
    monkeypatch.setitem(sys.modules, "cupy._core._routines_linalg", linalg)
    precision.use_tf32(cupy)
    assert calls == [(np.dtype(np.float32), 7)] and precision.tf32_enabled(cupy)
    precision.use_tf32(cupy, on=False)
    assert calls[-1] == (np.dtype(np.float32), 1) and not precision.tf32_enabled(cupy)


def test_tf32_rounds_the_inputs_of_a_cupy_matmul():
    """1 + 2^-12 needs 12 mantissa bits: float32 keeps it, TF32 (10 bits) rounds it to 1."""
    skip_unless_cupy()
    import cupy
    a = cupy.full((64, 64), 1 + 2.0 ** -12, dtype=cupy.float32)
    b = cupy.eye(64, dtype=cupy.float32)
    try:
        precision.use_tf32(cupy, on=False)
        assert float((a @ b)[0, 0]) == np.float32(1 + 2.0 ** -12)
        if cupy.cuda.Device().compute_capability < "80":
            pytest.skip("no TF32 tensor cores before compute capability 8.0")
        precision.use_tf32(cupy)
        assert float((a @ b)[0, 0]) == 1.0
    finally:
        precision.use_tf32(cupy, on=False)
