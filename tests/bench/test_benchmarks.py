"""benchmarks/bench_step.py --quick works and prints its table (a smoke test, never a timing test)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_step_quick_prints_table():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--quick"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| batch | GFLOP/step | scratchgan ms |" in out.stdout
    lines = out.stdout.splitlines()
    head = [c.strip() for c in next(line for line in lines if line.startswith("| batch |")).strip("|").split("|")]
    row = next(line for line in lines if line.startswith("| 64 |"))
    cells = dict(zip(head, (c.strip() for c in row.strip("|").split("|"))))
    assert float(cells["scratchgan ms"]) > 0 and float(cells["GEMM floor ms"]) > 0  # both were measured


def test_gemm_shapes_count_the_step_flops():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_step
    # forward: 2 * params * N per pass; per image G runs ~3 passes and D ~8 (see gemm_shapes)
    assert 1.0e9 < bench_step.step_flops(64) < 1.2e9


def test_count_device_ops_prints_fewer_operations_with_the_fused_kernels():
    import host_kernels
    if host_kernels.compiler() is None:
        import pytest
        pytest.skip("no C++ compiler: the fused kernels' host stand-ins cannot be built")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "count_device_ops.py"), "--batch", "16"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| 16 |"))
    plain, fused = (float(c) for c in row.strip("|").split("|")[1:])
    assert 0 < fused < plain


def test_bench_by_hand_quick_prints_its_table():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_by_hand.py"), "--quick"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| 64 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) > 0 and float(cells[4]) > 0 and float(cells[6]) > 0  # by hand, GANStep, reference


def test_evaluator_sanity_quick_prints_its_curves(tmp_path):
    env = {**__import__("os").environ, "SCRATCHGAN_DATA": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "evaluator_sanity.py"), "--quick"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "| corruption | level | FD (cnn) |" in out.stdout and "| precision: uniform noise / fresh real |" in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| gaussian blur (")]
    assert len(rows) == 4 and all(float(r.strip("|").split("|")[2]) > 0 for r in rows)
    # the outlier sweep: precision can only fall as more real balls are left out
    sweep = [line for line in out.stdout.splitlines() if line.startswith("| fresh real |")]
    assert len(sweep) == 1
    values = [float(c) for c in sweep[0].strip("|").split("|")[1:]]
    assert len(values) == 5 and all(b <= a for a, b in zip(values, values[1:])) and values[0] > 0


def test_readme_sanity_command_parses_with_the_script():
    """docs/quality.md's sanity-curve command names flags the script has (running it for real trains the
    full Fashion-MNIST evaluator: minutes, not CI; --quick above runs the same code)."""
    import re
    import shlex
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import evaluator_sanity
    guide = (ROOT / "docs" / "quality.md").read_text()
    command = re.search(r"^python benchmarks/evaluator_sanity\.py (.*)$", guide, flags=re.M)
    assert command, "docs/quality.md lost its evaluator_sanity.py command"
    args = evaluator_sanity.make_parser().parse_args(shlex.split(command.group(1)))
    assert args.dataset == "fashion-mnist" and args.evaluators == "cnn,mlp" and args.data_dir


def test_dcgan_parity_twins_are_the_same_networks():
    """benchmarks/dcgan_parity.py's PyTorch DCGAN starts from scratchgan's weights and computes the same G(z), D(x)."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import dcgan_parity
    finally:
        sys.path.pop(0)
    from tolerances import assert_close

    from scratchgan.gan.models import build_step

    step = build_step(dcgan_parity.make_config(seed=3, batch_size=8), np)
    G, D = dcgan_parity.torch_twins(step.G, step.D)
    z = np.random.default_rng(0).standard_normal((8, 100), dtype=np.float32)
    fake = step.G.forward(z)
    with torch.no_grad():
        fake_torch = G(torch.from_numpy(z)).numpy()
        logits_torch = D(torch.from_numpy(fake)).numpy()
    assert fake.shape == fake_torch.shape == (8, 1, 28, 28)
    assert_close(fake, fake_torch, rtol=1e-4)  # float32 convolutions summed in another order
    assert_close(step.D.forward(fake), logits_torch, rtol=1e-4)
