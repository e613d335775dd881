"""benchmarks/bench_pool.py --quick works and prints its table (a smoke test, never a timing test)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_pool_quick_prints_its_table():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra in ([], ["--channels-last", "--no-torch"]):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_pool.py"), "--quick", *extra],
                             capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr
        rows = [line for line in out.stdout.splitlines() if line.startswith(("| max 3/2", "| avg 3/1/1"))]
        assert len(rows) == 4, out.stdout
        assert all(float(row.strip("|").split("|")[1]) > 0 for row in rows)  # scratchgan was measured
