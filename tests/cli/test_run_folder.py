"""The run folder explains itself, as a user sees it from the command line: provenance and resumes in
config.json, log.txt, metrics of short runs, one PNG per grid, named and numbered runs, TensorBoard per run."""
import json
import re
import subprocess
import sys

from commands import env_for

TINY = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "32", "--g-hidden", "16,32", "--d-hidden", "16",
        "--latent-dim", "8"]


def train(tmp, *args):
    """`python -m scratchgan train ARGS` in ``tmp``, stderr a pipe (not a terminal): (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "scratchgan", "train", *args], cwd=tmp, env=env_for(tmp),
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_config_json_records_provenance_and_each_resume_without_losing_the_start(tmp_path):
    assert train(tmp_path, *TINY, "--epochs", "1", "--out", "r")[0] == 0
    first = json.loads((tmp_path / "r" / "config.json").read_text())
    started = first["provenance"]
    assert started["command"] == "scratchgan train " + " ".join(TINY) + " --epochs 1 --out r"
    assert started["scratchgan"] == "0.1.0" and started["numpy"] and started["python"] and started["host"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", started["started"]) and started["cupy"] is None
    assert started["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", started["git_commit"])
    assert first["resumes"] == [] and first["lr"] == 2e-4
    for epochs, lr in ((2, "1e-3"), (3, "5e-4")):
        code, _, err = train(tmp_path, "--resume", "--out", "r", "--epochs", str(epochs), "--lr", lr)
        assert code == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["provenance"] == started, "a resume overwrote how the run started"
    assert config["lr"] == 5e-4 and [r["changed"] for r in config["resumes"]] == [
        {"epochs": [1, 2], "lr": [2e-4, 1e-3]}, {"epochs": [2, 3], "lr": [1e-3, 5e-4]}]
    assert [r["step"] for r in config["resumes"]] == [8, 16]
    assert config["resumes"][1]["command"] == "scratchgan train --resume --out r --epochs 3 --lr 5e-4"
    assert config["resumes"][0]["checkpoint"] == "r/checkpoint.npz"
    # into a new folder, the history travels in the checkpoint
    assert train(tmp_path, "--resume", "r/checkpoint.npz", "--out", "r2", "--epochs", "4")[0] == 0
    moved = json.loads((tmp_path / "r2" / "config.json").read_text())
    assert moved["provenance"] == started and len(moved["resumes"]) == 3
    assert moved["resumes"][2]["changed"] == {"epochs": [3, 4], "out": ["r", "r2"]}
