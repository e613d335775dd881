"""benchmarks/bench_inception.py: its smoke run prints the table and the profile (never a timing test)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_inception_quick_prints_its_table_and_profile():
    env = {k: v for k, v in os.environ.items() if k not in ("SCRATCHGAN_FID_WHEEL", "SCRATCHGAN_FID_WEIGHTS")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_inception.py"), "--quick", "--profile"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "PyTorch: not run (no wheel or no torch)" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("scratchgan (NumPy)"))
    assert float(row.split()[2]) > 0  # seconds per image, measured
    assert "Conv2d: matmul and the rest" in out.stdout and "maxpool2d_forward" in out.stdout


def test_a_bad_flag_is_one_line_exit_2():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_inception.py"), "--batch", "0"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 2 and "must be positive" in out.stderr and out.stderr.count("\n") == 1
