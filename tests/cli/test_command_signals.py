"""Ctrl-C and SIGTERM in the commands other than train: `sample`, `evaluate` (while its evaluator trains)
and `interpolate` end in one line on stderr, exit 130 / 143, no traceback; what they leave is said in
that line, and a rerun finishes the job (`sample --outdir ... --resume` keeps the PNGs already written).

Each test starts `python -m scratchgan ...`, waits for a marker (a line on stdout, a file appearing),
never a fixed time, then signals; every wait is bounded.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchgan.cli import sample as sample_cli
from scratchgan.cli import train as train_command

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

REPO = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "mnist-bundled", "--limit", "128", "--batch-size", "32", "--g-hidden", "32,64",
        "--d-hidden", "64,32", "--no-progress", "--sample-every", "0", "--epochs", "1", "--latent-dim", "16"]
WAIT = 60  # seconds: the bound of every wait; a healthy run needs a fraction of one
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
NAME = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"mlp", "cond"}: checkpoints of a tiny MLP GAN and a tiny conditional one, trained in-process."""
    tmp = tmp_path_factory.mktemp("runs")
    old = os.environ.get("SCRATCHGAN_DATA")
    os.environ["SCRATCHGAN_DATA"] = str(tmp / "empty-cache")
    try:
        assert train_command.train_main([*TINY, "--out", str(tmp / "mlp")]) == 0
        assert train_command.train_main([*TINY, "--conditional", "--out", str(tmp / "cond")]) == 0
    finally:
        if old is None:
            del os.environ["SCRATCHGAN_DATA"]
        else:
            os.environ["SCRATCHGAN_DATA"] = old
    return {name: tmp / name / "checkpoint.npz" for name in ("mlp", "cond")}


class Command:
    """`python -m scratchgan ARGS` in ``cwd``, its stdout read line by line as it comes (unbuffered)."""

    def __init__(self, args, cwd):
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", SCRATCHGAN_DATA=str(cwd / "cache"))
        self.proc = subprocess.Popen([sys.executable, "-m", "scratchgan", *map(str, args)], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, start):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                break
            if line.startswith(start):
                return line
        self.proc.kill()
        pytest.fail(f"no line starting {start!r} within {WAIT} s; stderr: {self.proc.stderr.read()[-2000:]}")

    def stop(self, signum):
        """Send ``signum``; (exit code, stderr lines)."""
        assert self.proc.poll() is None, "the command ended before the signal: give it more work"
        self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"still running {WAIT} s after {NAME[signum]}")
        return code, self.proc.stderr.read().splitlines()


def run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), SCRATCHGAN_DATA=str(cwd / "cache"))
    p = subprocess.run([sys.executable, "-m", "scratchgan", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=WAIT)
    return p.returncode, p.stderr.splitlines()


def wait_for_file(folder, pattern):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if folder.is_dir() and any(folder.glob(pattern)):
            return
        time.sleep(0.005)
    pytest.fail(f"no {pattern} in {folder} within {WAIT} s")


def one_line(code, err, signum):
    assert code == EXIT[signum], err
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and "KeyboardInterrupt" not in err[0]
    return err[0]


# ---------------------------------------------------------------------------------- sample --outdir
SEEDS = ["--seeds", "0-19999"]


def interrupted_sample(runs, tmp_path, signum):
    """`sample --seeds 0-19999 --outdir big`, signalled once its first PNGs are in place."""
    big = tmp_path / "big"
    command = Command(["sample", "--checkpoint", runs["mlp"], *SEEDS, "--outdir", "big"], tmp_path)
    command.wait_for_line("writing 20,000 images into big/")
    wait_for_file(big, "seed*.png")
    line = one_line(*command.stop(signum), signum)
    m = re.fullmatch(rf"scratchgan sample: interrupted by {NAME[signum]}; ([\d,]+) of 20,000 images are in big/, "
                     r"which big/INCOMPLETE\.json marks as incomplete; run the same command with --resume to "
                     r"finish it", line)
    assert m, line
    pngs = sorted(p.name for p in big.glob("*.png"))
    assert 0 < len(pngs) < 20000 and int(m.group(1).replace(",", "")) == len(pngs)
    assert sorted(p.name for p in big.iterdir()) == sorted([*pngs, "INCOMPLETE.json"])  # no half-written file
    assert not (tmp_path / "big.npy").exists() and not (tmp_path / "big.png").exists()
    return big, pngs


def test_sigterm_in_sample_outdir_marks_the_folder_and_resume_finishes_it(runs, tmp_path):
    big, before = interrupted_sample(runs, tmp_path, signal.SIGTERM)
    kept = {name: (big / name).read_bytes() for name in before}
    # a plain rerun is refused, in one line that says how to finish the folder
    code, err = run(["sample", "--checkpoint", runs["mlp"], *SEEDS, "--outdir", "big"], tmp_path)
    assert code == 2 and len(err) == 1 and "holds an interrupted `scratchgan sample`" in err[0] and \
        "add --resume to finish it" in err[0], err
    code, err = run(["sample", "--checkpoint", runs["mlp"], *SEEDS, "--outdir", "big", "--resume"], tmp_path)
    assert code == 0, err
    names = sorted(p.name for p in big.iterdir())
    assert names == sorted(f"seed{s:04d}_0000.png" for s in range(20000))  # the marker is gone: the folder is whole
    assert all((big / name).read_bytes() == data for name, data in kept.items())  # the PNGs written first are kept
    images = np.load(tmp_path / "big.npy")
    assert images.shape == (20000, 28, 28) and (tmp_path / "big.png").is_file()
    for i in (0, len(before) - 1, len(before), 19999):  # written before the signal, and after
        with Image.open(big / f"seed{i:04d}_0000.png") as im:
            assert np.array_equal(np.asarray(im), sample_cli.to_picture(images[i])), i


def test_sigint_in_sample_outdir_and_resume_only_with_the_same_request(runs, tmp_path):
    big, before = interrupted_sample(runs, tmp_path, signal.SIGINT)
    code, err = run(["sample", "--checkpoint", runs["mlp"], *SEEDS, "--truncation", "0.5", "--outdir", "big",
                     "--resume"], tmp_path)
    assert code == 2 and len(err) == 1 and "started with another --truncation" in err[0], err
    code, err = run(["sample", "--checkpoint", runs["cond"], *SEEDS, "--label", "1", "--outdir", "big", "--resume"],
                    tmp_path)
    assert code == 2 and len(err) == 1 and "started with another --checkpoint" in err[0], err
    (big / "mine.png").write_bytes(b"the user's picture")
    code, err = run(["sample", "--checkpoint", runs["mlp"], *SEEDS, "--outdir", "big", "--resume"], tmp_path)
    assert code == 2 and len(err) == 1 and "holds 'mine.png', which the interrupted run did not write" in err[0], err
    assert sorted(p.name for p in big.glob("seed*.png")) == before and (big / "INCOMPLETE.json").is_file()
    assert (big / "mine.png").read_bytes() == b"the user's picture"


# ---------------------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_evaluate_trains_its_evaluator(runs, tmp_path, signum):
    command = Command(["evaluate", "--checkpoint", runs["mlp"], "--n", "200", "--evaluator-limit", "2000",
                       "--evaluator-epochs", "200", "--json", "e.json"], tmp_path)
    command.wait_for_line("training the evaluator")
    line = one_line(*command.stop(signum), signum)
    assert line == (f"scratchgan evaluate: interrupted by {NAME[signum]}; stopped while loading or training the "
                    "evaluator (it is cached only once fully trained); no results were written"), line
    assert not (tmp_path / "e.json").exists()
    cache = tmp_path / "cache" / "evaluators"
    assert not cache.exists() or not any(cache.iterdir())  # no half-trained evaluator, no temp file


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_train_eval_every_trains_its_evaluator(tmp_path, signum):
    """Before the first step of `train --eval-every`, while an evaluator that does not ship trains."""
    command = Command(["train", *TINY, "--eval-every", "4", "--evaluator", "mlp", "--out", "run"], tmp_path)
    command.wait_for_line("training the evaluator")
    line = one_line(*command.stop(signum), signum)
    assert line == f"scratchgan train: aborted by {NAME[signum]}; last good checkpoint: none (nothing was saved)"
    cache = tmp_path / "cache" / "evaluators"
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_evaluator_command_trains(tmp_path, signum):
    command = Command(["evaluator", "--dataset", "mnist", "--kind", "mlp", "--epochs", "200", "--out", "e.npz"],
                      tmp_path)
    command.wait_for_line("training the evaluator")
    line = one_line(*command.stop(signum), signum)
    assert line == f"scratchgan evaluator: interrupted by {NAME[signum]}; no evaluator was written to e.npz"
    assert list(tmp_path.glob("*e.npz*")) == []  # nor a temp file


# ---------------------------------------------------------------------------------- interpolate
def test_sigterm_in_interpolate_writes_nothing_and_a_rerun_completes(runs, tmp_path):
    # a conditional model walks in each of its 10 classes: 3,000 images, a second or more of work after the line
    args = ["interpolate", "--checkpoint", runs["cond"], "--seeds", "0-299", "--steps", "1", "--out", "walk.gif"]
    command = Command(args, tmp_path)
    command.wait_for_line("making walk.gif (300 frames) and walk.png")
    line = one_line(*command.stop(signal.SIGTERM), signal.SIGTERM)
    assert line == ("scratchgan interpolate: interrupted by SIGTERM; nothing was written (walk.gif and its strip "
                    ".png appear only together, at the end)"), line
    assert not [p.name for p in tmp_path.iterdir() if "walk" in p.name]  # no walk.gif, walk.png or temp file
    code, err = run(args, tmp_path)
    assert code == 0, err
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == 300
    assert (tmp_path / "walk.png").is_file()


# ---------------------------------------------------------------------------------- in-process: export, sample --out
class NotHandled(Exception):
    """Raised by the test's own SIGTERM handler: the command did not install its handler."""


@pytest.fixture
def guarded_sigterm():
    """A SIGTERM handler of the test's own while it runs (so that a command that ignores the promise fails the
    test instead of killing pytest); yields it, to check that the command puts it back."""
    def guard(signum, frame):
        raise NotHandled("SIGTERM reached the test's handler: the command installed none")
    previous = signal.signal(signal.SIGTERM, guard)
    yield guard
    signal.signal(signal.SIGTERM, previous)


def kill_self_then(real):
    def call(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode: inside the write below
        return real(*args, **kwargs)
    return call


def test_sigterm_while_export_writes(runs, tmp_path, capsys, monkeypatch, guarded_sigterm):
    from scratchgan.cli import export
    monkeypatch.setattr(export, "save_checkpoint", kill_self_then(export.save_checkpoint))
    assert export.export_main(["--checkpoint", str(runs["mlp"]), "--out", str(tmp_path / "G.npz")]) == 143
    assert capsys.readouterr().err == ("scratchgan export: interrupted by SIGTERM; nothing was written "
                                       f"({tmp_path / 'G.npz'} is written whole or not at all)\n")
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is guarded_sigterm


def test_sigterm_while_sample_writes_its_grid_leaves_neither_file(runs, tmp_path, capsys, monkeypatch,
                                                                  guarded_sigterm):
    monkeypatch.setattr(sample_cli.viz, "save_image_grid", kill_self_then(sample_cli.viz.save_image_grid))
    assert sample_cli.sample_main(["--checkpoint", str(runs["mlp"]), "--n", "8", "--out", str(tmp_path / "s")]) == 143
    assert capsys.readouterr().err == "scratchgan sample: interrupted by SIGTERM; nothing was written\n"
    assert list(tmp_path.iterdir()) == []  # s.npy was complete in its temporary file, and is not left half-done
    assert signal.getsignal(signal.SIGTERM) is guarded_sigterm


def test_a_signal_as_a_temporary_file_is_created_leaves_no_file(tmp_path, monkeypatch):
    """Python runs a signal's handler as the system call returns: as os.open has just created the temporary
    file of an atomic write (where `sample --outdir` left `.seed0015_0000.png.<pid>.<hex>.tmp` behind)."""
    from scratchgan import fileio
    from scratchgan.cli import common as cliutil
    real_open = os.open

    def open_then_sigterm(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_EXCL:  # the temporary file, just created
            os.close(fd)
            os.kill(os.getpid(), signal.SIGTERM)
        return fd
    previous = cliutil.stop_on_sigterm()
    try:
        monkeypatch.setattr(fileio.os, "open", open_then_sigterm)
        with pytest.raises(cliutil.Terminated):
            with fileio.atomic_write(tmp_path / "seed0015_0000.png", durable=False) as f:
                f.write(b"never reached")
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []
