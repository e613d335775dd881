"""benchmarks/gpu_check.sh, the one script a GPU machine runs, checked on the CPU: its NumPy variant (BACKEND=numpy,
TINY=1) runs every part, writes every log and the summary of exit codes and figures, and goes on past a part that
fails (--cuda-graph on NumPy is refused, exit 2). The GPU machine has no network: the script installs nothing."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PARTS = ["gpu_tests", "full_suite", "main_eager", "main_graph", "bench_step", "bench_sgemm", "bench_dcgan",
         "bench_conv", "dcgan"]


def _run(env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "BACKEND", "TINY", "PYTHONPATH")}
    env.update(PYTHON=sys.executable, **env_extra)
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)


@pytest.mark.slow
def test_the_numpy_variant_writes_every_log_and_the_summary(tmp_path):
    out = tmp_path / "out"
    result = _run({"OUT": str(out), "BACKEND": "numpy", "TINY": "1"}, tmp_path)
    assert result.returncode == 0, result.stderr
    summary = (out / "summary.txt").read_text()
    codes = dict(re.findall(r"^(\w+): exit (\d+), \d+ s \(limit \d+ s\)$", summary, re.M))
    assert list(codes) == PARTS  # every part, in order, each with its exit code
    for part in PARTS:
        log = (out / f"{part}.log").read_text()
        assert log.startswith("+ ") and len(log.splitlines()) > 2, part
    assert codes.pop("main_graph") == "2"  # refused on NumPy in one line, and the script went on
    assert set(codes.values()) == {"0"}, codes
    assert "--cuda-graph needs --backend cupy" in (out / "main_graph.log").read_text()
    figures = summary.split("## figures", 1)[1]
    assert len(re.findall(r"^  epoch \d/3 done in", figures, re.M)) == 3  # the main job's three epochs
    assert re.search(r"^  final: step,epoch,loss_D,loss_G", figures, re.M)  # its final losses
    assert "| batch | GFLOP/step | scratchgan ms |" in figures and "graphed ms (--cuda-graph)" in figures
    assert "| M | K | N | layout |" in figures and "step total" in figures  # bench_sgemm
    assert re.search(r"gpu_tests: \d+ passed", figures) and re.search(r"full_suite: \d+ passed", figures)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["dcgan", "main_eager"]  # the runs write under $OUT only
    assert not (tmp_path / "runs").exists()


def test_without_out_it_says_so_in_one_line(tmp_path):
    result = _run({}, tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "set OUT" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_it_installs_nothing_and_bounds_every_part():
    text = SCRIPT.read_text()
    assert "pip" not in text and "curl" not in text and "wget" not in text  # the GPU machine has no network
    limits = [int(s) for s in re.findall(r"^part \w+ (\d+) ", text, re.M)]
    assert len(limits) == len(PARTS) and sum(limits) <= 8 * 60  # at most 8 minutes in all
