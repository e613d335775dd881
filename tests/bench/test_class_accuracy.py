"""benchmarks/class_accuracy.py on a tiny conditional DCGAN of the bundled digits: the table's counts add up,
the fractions are the hits over the asked; an unconditional checkpoint is one line and exit 2."""
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "class_accuracy.py"
TINY = ["--dataset", "mnist-bundled", "--limit", "64", "--image-size", "28", "--batch-size", "16", "--g-width", "4",
        "--d-width", "4", "--latent-dim", "8", "--epochs", "1", "--no-progress", "--sample-every", "0"]


def _run(cmd, tmp):
    env = {**__import__("os").environ, "SCRATCHGAN_DATA": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=300, env=env, cwd=tmp)


def test_class_accuracy_prints_the_fraction_per_class(tmp_path):
    for extra, out in ((["--conditional"], "cond"), ([], "plain")):
        done = _run(["-m", "scratchgan", "train", "--arch", "dcgan", *extra, *TINY, "--out", str(tmp_path / out)],
                    tmp_path)
        assert done.returncode == 0, done.stderr
    done = _run([str(SCRIPT), "--checkpoint", str(tmp_path / "cond" / "checkpoint.npz"), "--per-class", "4",
                 "--evaluator-limit", "400"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == [str(k) for k in range(10)] + ["all"]
    asked, hits = (np.array([int(r[i]) for r in rows]) for i in (1, 2))
    assert (asked[:10] == 4).all() and asked[10] == 40 and hits[10] == hits[:10].sum()
    assert [r[3].strip() for r in rows] == [f"{h / a:.3f}" for h, a in zip(hits, asked)]  # printed to 3 places
    done = _run([str(SCRIPT), "--checkpoint", str(tmp_path / "plain" / "checkpoint.npz")], tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "is not a conditional generator" in done.stderr
