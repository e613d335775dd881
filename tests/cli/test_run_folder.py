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


def test_log_txt_holds_what_was_printed_and_no_progress_bar_goes_to_a_file(tmp_path):
    """stderr a pipe: no progress bar (no \\r redraws); log.txt has every line printed, in the manifest."""
    code, out, err = train(tmp_path, *TINY, "--epochs", "2", "--out", "r")
    assert code == 0 and "\r" not in out + err and err == "", err
    log = (tmp_path / "r" / "log.txt").read_text()
    assert log == out and log.startswith("training mnist-bundled (256 images") and "epoch 2/2 done" in log
    assert "log.txt" in json.loads((tmp_path / "r" / "manifest.json").read_text())["files"]
    code, out2, _ = train(tmp_path, "--resume", "--out", "r", "--epochs", "3")  # a resume appends
    assert code == 0 and (tmp_path / "r" / "log.txt").read_text() == out + out2


def test_on_a_terminal_the_bar_shows_and_log_txt_keeps_its_last_state_only(tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import termios
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    try:
        proc = subprocess.run([sys.executable, "-m", "scratchgan", "train", *TINY, "--epochs", "1", "--out", "r"],
                              cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=follower,
                              timeout=300)
    finally:
        os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    log = (tmp_path / "r" / "log.txt").read_text()
    assert b"\r" in shown and b"epoch 1/1" in shown, "no progress bar on a terminal"
    assert "\r" not in log and log.count("epoch 1/1: 100%") == 1, log
    assert proc.returncode == 0 and log.startswith("training mnist-bundled") and "epoch 1/1 done" in log


def test_a_run_shorter_than_log_every_logs_its_last_step(tmp_path):
    """8 steps with --log-every 10 (the default): metrics.csv and metrics.jsonl hold step 8; a run of 16 steps
    with --log-every 5 logs 5, 10, 15 and its last, 16."""
    assert train(tmp_path, *TINY, "--epochs", "1", "--out", "short", "--no-progress")[0] == 0
    rows = (tmp_path / "short" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["8"]
    assert [json.loads(line)["step"] for line in (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()] == [8]
    assert train(tmp_path, *TINY, "--epochs", "2", "--out", "odd", "--log-every", "5", "--no-progress")[0] == 0
    rows = (tmp_path / "odd" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["5", "10", "15", "16"]


def test_one_png_per_grid_and_the_gif_shows_each_once(tmp_path):
    """Each epoch end wrote samples/step_N.png and samples/epoch_E.png with the same bytes; now one file per grid."""
    from PIL import Image
    assert train(tmp_path, *TINY, "--epochs", "2", "--out", "r", "--sample-every", "4", "--no-progress")[0] == 0
    samples = tmp_path / "r" / "samples"
    names = sorted(p.name for p in samples.iterdir())
    assert names == ["epoch_001.png", "epoch_002.png", "step_0000004.png", "step_0000012.png"]
    contents = [(samples / n).read_bytes() for n in names]
    assert len(set(contents)) == len(contents)
    with Image.open(tmp_path / "r" / "progress.gif") as gif:
        assert gif.n_frames == 4
    # a resume from epoch 1 drops the later grids by the manifest's steps (step 12, epoch 2), and draws them again
    first = {n: (samples / n).read_bytes() for n in names}
    assert train(tmp_path, *TINY, "--epochs", "1", "--out", "e", "--sample-every", "4", "--snapshot-every", "1",
                 "--no-progress")[0] == 0
    (tmp_path / "e" / "checkpoint.npz").unlink()
    assert train(tmp_path, *TINY, "--epochs", "2", "--out", "e", "--sample-every", "4", "--snapshot-every", "1",
                 "--resume", "e/checkpoint_epoch0001.npz", "--no-progress")[0] == 0
    again = {p.name: p.read_bytes() for p in (tmp_path / "e" / "samples").iterdir()}
    assert again == first, "the resumed run's grids differ from the uninterrupted run's"


def test_named_and_numbered_run_folders(tmp_path):
    """Without --out or --name a fresh numbered folder (the next number after the highest, never reused);
    --name NAME is runs/NAME; --resume needs a checkpoint or a folder, said in one line."""
    (tmp_path / "runs" / "00007-kept-by-the-user").mkdir(parents=True)
    for _ in range(2):
        assert train(tmp_path, *TINY, "--epochs", "1", "--no-progress")[0] == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "00007-kept-by-the-user", "00008-mlp-mnist-bundled-bce", "00009-mlp-mnist-bundled-bce"]
    code, _, err = train(tmp_path, "--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "32", "--arch",
                         "dcgan", "--d-width", "2", "--g-width", "2", "--latent-dim", "8", "--loss", "hinge",
                         "--epochs", "1", "--no-progress")
    assert code == 0 and (tmp_path / "runs" / "00010-dcgan-mnist-bundled-hinge" / "checkpoint.npz").is_file(), err
    code, out, err = train(tmp_path, *TINY, "--epochs", "1", "--name", "exp1", "--no-progress")
    assert code == 0 and "outputs in runs/exp1" in out and (tmp_path / "runs" / "exp1" / "checkpoint.npz").is_file()
    assert json.loads((tmp_path / "runs" / "exp1" / "config.json").read_text())["out"] == "runs/exp1"
    code, out, err = train(tmp_path, "--resume", "--name", "exp1", "--epochs", "2", "--no-progress")
    assert code == 0 and "resumed from runs/exp1/checkpoint.npz at epoch 2" in out, err
    assert len(list((tmp_path / "runs").iterdir())) == 5, "a resume made a new folder"
    # an explicit --out keeps its rules: an earlier run there is refused
    code, _, err = train(tmp_path, *TINY, "--epochs", "1", "--out", "runs/exp1", "--no-progress")
    assert code == 2 and "holds an earlier run" in err
    for args, line in (
            (["--resume", "--epochs", "2"], "train: error: --resume without a checkpoint continues the run in --out "
                                            "DIR or --name NAME: give one of them, or --resume FILE\n"),
            (["--name", "a", "--out", "b"], "train: error: --name a is the folder runs/a, and --out b another: give "
                                            "one of them\n"),
            (["--name", "a/b"], "train: error: --name 'a/b': a run's name is one folder name, without / (it becomes "
                                "runs/NAME)\n")):
        code, out, err = train(tmp_path, *TINY, *args)
        assert code == 2 and err == "scratchgan " + line, err
    assert len(list((tmp_path / "runs").iterdir())) == 5


def test_tensorboard_has_an_event_folder_per_run(tmp_path):
    """--tensorboard alone: OUT/tb, the event file in the run's manifest (--overwrite deletes it); --tensorboard DIR:
    a folder per run under DIR, so two runs never share one."""
    import pytest
    pytest.importorskip("tensorboardX")
    for name in ("a", "b"):
        code, out, err = train(tmp_path, *TINY, "--epochs", "1", "--name", name, "--tensorboard", "--no-progress")
        assert code == 0 and f"TensorBoard events in runs/{name}/tb" in out, err
        events = list((tmp_path / "runs" / name / "tb").glob("events.out.tfevents.*"))
        manifest = json.loads((tmp_path / "runs" / name / "manifest.json").read_text())
        assert len(events) == 1 and f"tb/{events[0].name}" in manifest["files"] and "tb" in manifest["folders"]
        assert json.loads((tmp_path / "runs" / name / "config.json").read_text())["tensorboard"] == f"runs/{name}/tb"
    for name in ("c", "d"):
        assert train(tmp_path, *TINY, "--epochs", "1", "--name", name, "--tensorboard", "shared")[0] == 0
    folders = sorted(p.name for p in (tmp_path / "shared").iterdir())
    assert len(folders) == 2 and folders[0].startswith("c-") and folders[1].startswith("d-")
    assert all(len(list((tmp_path / "shared" / f).iterdir())) == 1 for f in folders)
    assert train(tmp_path, *TINY, "--epochs", "1", "--name", "a", "--overwrite", "--no-progress")[0] == 0
    assert not (tmp_path / "runs" / "a" / "tb").exists(), "--overwrite left the old run's event folder"


def test_log_txt_ends_with_the_line_that_stopped_the_run(tmp_path):
    code, out, err = train(tmp_path, *TINY, "--epochs", "2", "--lr", "1e12", "--out", "dv")
    assert code == 3 and err.startswith("scratchgan train: stopped: training diverged by step 8")
    assert (tmp_path / "dv" / "log.txt").read_text() == out + err
