"""docs/training.md's section on snapshots, exports, sample folders and Inception FID: its commands run.

The `python -m scratchgan ...` lines run in order, in a temporary folder, as written, except that the
training line gets flags appended that make it tiny (argparse keeps the last value of a flag): a small
network on 256 digits for one epoch, evaluated every 2 steps by a small classifier. The Python snippet
that writes the real digits as PNGs runs as written. The FID tools are not dependencies: the test checks
that their commands read the two folders the lines above write.
"""
from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchgan.cli.main import main as cli_main
from scratchgan.eval import evaluator

REPO = Path(__file__).resolve().parents[2]
TITLE = "## Snapshots, the best checkpoint, and samples for other tools"
SHRINK = ["--limit", "256", "--batch-size", "32", "--g-hidden", "32,64", "--d-hidden", "64,32", "--epochs", "1",
          "--eval-every", "2", "--no-progress", "--sample-every", "0"]


def section():
    text = (REPO / "docs" / "training.md").read_text()
    assert TITLE in text, "docs/training.md lost its section on snapshots and sample folders"
    return text.split(TITLE, 1)[1].split("\n## ", 1)[0]


def blocks(kind):
    return re.findall(rf"```{kind}\n(.*?)```", section(), flags=re.S)


def commands():
    lines = [line.split("#")[0].strip() for b in blocks("bash") for line in b.splitlines()]
    return [shlex.split(line) for line in lines if line]


@pytest.mark.slow
def test_the_readme_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(evaluator, "get_evaluator",
                        functools.partial(evaluator.get_evaluator, limit=600, epochs=1, cache=False))
    ours = [c for c in commands() if c[:3] == ["python", "-m", "scratchgan"]]
    assert [c[3] for c in ours] == ["train", "export", "sample", "interpolate"]
    for argv in ours:
        argv = argv[3:] + (SHRINK if argv[3] == "train" else [])
        assert cli_main(argv) == 0, argv
    assert (tmp_path / "runs/best/checkpoint_best.npz").is_file() and (tmp_path / "G.npz").is_file()
    fake = sorted((tmp_path / "fake").iterdir())
    assert len(fake) == 1000 and fake[7].name == "seed0007_0000.png"
    assert np.load(tmp_path / "fake.npy").shape == (1000, 28, 28)
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == 33
    assert (tmp_path / "walk.png").is_file()

    # the snippet that writes the real digits, as written
    (snippet,) = blocks("python")
    (tmp_path / "real.py").write_text(snippet)
    proc = subprocess.run([sys.executable, "real.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    real = sorted((tmp_path / "real").iterdir())
    assert len(real) == 10000
    with Image.open(real[0]) as im:
        assert im.mode == "L" and im.size == (28, 28)

    # each FID tool is pointed at those two folders
    tools = [c for c in commands() if "pytorch_fid" in c or "fidelity" in c or any("cleanfid" in a for a in c)]
    assert len(tools) == 3
    for command in tools:
        text = " ".join(command)
        assert re.search(r"\breal\b", text) and re.search(r"\bfake\b", text), text
    assert ["python", "-m", "pytorch_fid", "real", "fake"] == [a for a in tools[0] if a not in ("pip", "install",
                                                                                             "pytorch-fid", "&&")]
