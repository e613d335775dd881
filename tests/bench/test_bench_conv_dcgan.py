"""benchmarks/bench_conv.py and benchmarks/bench_dcgan_step.py: their smallest configurations run on NumPy
and print their tables; on a machine without CuPy, --backend cupy is refused in one line (exit 2).
Smoke tests, never timing tests."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _run(script, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _cells(line):
    return line.split()[-5:] if "|" not in line else [c.strip() for c in line.strip("|").split("|")]


def test_bench_conv_quick_with_the_subpixel_column():
    out = _run("bench_conv.py", "--quick", "--subpixel")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "sub-pixel ms" in lines[2] and ("torch ms" in lines[2]) == HAVE_TORCH
    rows = {line[:2]: line for line in lines if line[:2] in ("D1", "G4", "to")}
    for key in ("D1", "G4", "to"):  # a conv, a sub-pixel ConvT, the total: every time measured
        numbers = [float(v) for v in rows[key].split()[-(5 if HAVE_TORCH else 3):]]
        assert all(v > 0 for v in numbers), rows[key]


@pytest.mark.parametrize("script", ["bench_conv.py", "bench_dcgan_step.py"])
def test_cupy_backend_without_cupy_is_one_line_exit_2(script):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the 'CuPy missing' message cannot be provoked here")
    out = _run(script, "--backend", "cupy", "--quick")
    assert out.returncode == 2 and out.stdout == "", out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "CuPy is not installed" in lines[0] and "pip install" in lines[0], out.stderr


def test_bench_conv_tf32_on_numpy_is_one_line_exit_2():
    out = _run("bench_conv.py", "--tf32", "--quick")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "--tf32 needs --backend cupy" in lines[0], out.stderr


def test_bench_dcgan_step_quick_prints_its_row():
    out = _run("bench_dcgan_step.py", "--quick")
    assert out.returncode == 0, out.stderr
    assert "| backend | batch | scratchgan fp32 ms | PyTorch fp32 ms | ratio |" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("| numpy |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "4" and float(cells[2]) > 0
    assert (float(cells[3]) > 0 and float(cells[4]) > 0) if HAVE_TORCH else cells[3] == "-"
    assert cells[5] == cells[6] == cells[7] == "-"  # no TF32 on the CPU


@pytest.mark.parametrize("size, width, channels", [(64, 64, 3), (28, 32, 1)])
def test_the_dcgan_step_benchmark_times_the_tutorials_nets(size, width, channels):
    """Its PyTorch nets have the layers and parameter counts of scratchgan's DCGAN (64x64 width 64, the tutorial's;
    28x28 grey width 32, the quality preset's)."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_dcgan_step
    finally:
        sys.path.pop(0)
    from scratchgan.gan import models
    G, D = bench_dcgan_step.tutorial_nets(torch, size, width, "cpu", channels)
    G_sg = models.dcgan_generator(image_size=size, channels=channels, width=width)
    D_sg = models.dcgan_discriminator(size, channels, width)
    for ours, theirs in ((G_sg, G), (D_sg, D)):
        assert sum(p.data.size for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    with torch.no_grad():
        images = G(torch.zeros(2, 100, 1, 1))
        assert tuple(images.shape) == (2, channels, size, size) and tuple(D(images).shape) == (2, 1)
