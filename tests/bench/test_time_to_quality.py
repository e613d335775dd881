"""benchmarks/time_to_quality.py on a quality_table.py output folder written here: minutes are epochs times the
run's fastest logged epoch (or the logged epochs summed), the best recipe per budget is the lowest FID trained
within it, and the plot is drawn."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "time_to_quality.py"


def _runs(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    rows = [  # an MLP row: 30 s epochs (one slowed by other load); a DCGAN row: 300 s epochs
        {"row": "mlp", "seed": 0, "scores": {"5": {"frechet_distance": 90.0, "fid": 150.0},
                                             "10": {"frechet_distance": 60.0, "fid": 120.0}}},
        {"row": "conv", "seed": 0, "scores": {"5": {"frechet_distance": 40.0, "fid": 60.0},
                                              "10": {"frechet_distance": 30.0, "fid": 45.0}}},
        {"row": "unscored", "seed": 0, "scores": {"5": {"frechet_distance": 10.0}}},  # no FID: left out
    ]
    (runs / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mlp = [30.0] * 10
    mlp[1] = 90.0
    for name, times in (("mlp", mlp), ("conv", [300.0] * 10), ("unscored", [1.0] * 5)):
        (runs / f"fashion-mnist-{name}-s0.log").write_text(
            "".join(f"epoch {i + 1}/{len(times)} done in {t} s (1 steps/s); samples: x\n" for i, t in enumerate(times)))
    return runs


def _run(args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_minutes_from_the_quietest_epoch_and_the_best_recipe_per_budget(tmp_path):
    runs = _runs(tmp_path)
    done = _run(["--runs", str(runs), "--budgets", "4,30,60", "--plot", str(tmp_path / "t.png")])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| mlp | 0 | 5 | 2.5 | 150.0 | 90.0 |" in out  # 5 x 30 s: the 90 s epoch is other load
    assert "| mlp | 0 | 10 | 5.0 | 120.0 | 60.0 |" in out
    assert "| conv | 0 | 5 | 25.0 | 60.0 | 40.0 |" in out
    assert "unscored" not in out
    assert "best within 4 min: mlp (seed 0), 5 epochs, 2.5 min: FID 150.0" in out
    assert "best within 30 min: conv (seed 0), 5 epochs, 25.0 min: FID 60.0" in out
    assert "best within 60 min: conv (seed 0), 10 epochs, 50.0 min: FID 45.0" in out
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_the_log_clock_sums_the_epochs_as_logged(tmp_path):
    runs = _runs(tmp_path)
    done = _run(["--runs", str(runs), "--clock", "log", "--budgets", "1"])
    assert done.returncode == 0, done.stderr
    assert "| mlp | 0 | 5 | 3.5 | 150.0 | 90.0 |" in done.stdout  # 4 x 30 s + 90 s
    assert "best within 1 min: no snapshot measured" in done.stdout


def test_a_pace_measured_apart_replaces_the_log(tmp_path):
    runs = _runs(tmp_path)
    done = _run(["--runs", str(runs), "--pace", "conv=60", "--budgets", "10"])
    assert done.returncode == 0, done.stderr
    assert "conv: 60 s per epoch measured apart" in done.stdout
    assert "| conv | 0 | 10 | 10.0 | 45.0 | 30.0 |" in done.stdout
    assert "best within 10 min: conv (seed 0), 10 epochs, 10.0 min: FID 45.0" in done.stdout
    assert _run(["--runs", str(runs), "--pace", "conv"]).returncode == 2
