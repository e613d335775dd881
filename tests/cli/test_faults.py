"""What a user gets when things go wrong (issue 14): each fault is a real process on tiny data.

Run folders (one run per --out, a lock against a second live run, --overwrite), --resume writing
next to the checkpoint resumed (never where its stored config points), the watchdog over what is
saved, file-system faults, SIGTERM, and the smaller items. Every fault ends in ONE line on stderr
and a documented exit code, never a traceback, and leaves the last good checkpoint intact.

The cases are started together (their ~1 s imports overlap on a small machine). Faults that cannot
be provoked for real here are simulated inside the child process by a few lines of Python before
train_command.train_main runs, and each says so: a full disk (the OSError that write() gives on ENOSPC,
raised in the middle of the second checkpoint) and a read-only file system (EROFS from os.open;
these tests run as root, for whom chmod blocks nothing). One real unwritable file system is used
where there is one: /sys.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scratchgan.checkpoint import load_checkpoint, save_checkpoint
from scratchgan.cli import train as train_command

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "mnist_mlp.py"
TINY = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "64", "--g-hidden", "16,32",
        "--d-hidden", "16", "--latent-dim", "8", "--no-progress", "--sample-every", "0"]
STEPS = 256 // 64  # per epoch
# the default networks (G 1,410,960 parameters), whose Adam v overflows at --lr 1e6 within 4 steps
DEFAULT_NETS = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "64", "--no-progress",
                "--sample-every", "0", "--epochs", "1"]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, flock and fault drivers")

# Fault drivers: prepended to `sys.exit(train_command.train_main(sys.argv[1:]))` in the child process.
FULL_DISK = """
import errno, os
import numpy as np
from scratchgan.run import trainer
real_save, real_write = trainer.save_checkpoint, np.lib.format.write_array
saves = []
def write_array(fp, array, *args, **kwargs):  # the disk fills up in the middle of the 2nd checkpoint
    if len(saves) >= 2:
        fp.write(b"\\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_write(fp, array, *args, **kwargs)
def save_checkpoint(*args, **kwargs):
    saves.append(1)
    return real_save(*args, **kwargs)
np.lib.format.write_array, trainer.save_checkpoint = write_array, save_checkpoint
"""
READ_ONLY = """
import errno, os, builtins
root = os.environ["READ_ONLY_ROOT"]
real_open, real_mkdir, real_builtin_open = os.open, os.mkdir, builtins.open
def under(path):
    return os.path.abspath(os.fspath(path)).startswith(root)
def ro_open(path, flags, *args, **kwargs):
    if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_open(path, flags, *args, **kwargs)
def ro_mkdir(path, *args, **kwargs):
    if under(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_mkdir(path, *args, **kwargs)
def ro_builtin_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and under(file) and set(mode) & set("wax+"):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(file))
    return real_builtin_open(file, mode, *args, **kwargs)
os.open, os.mkdir, builtins.open = ro_open, ro_mkdir, ro_builtin_open
"""


def env_for(tmp, **extra):
    env = dict(os.environ)
    env["SCRATCHGAN_DATA"] = str(tmp / "empty-cache")
    env["PYTHONPATH"] = str(REPO)  # this checkout's package, not whichever one is installed
    env.update(extra)
    return env


def launch(args, tmp, kind="example", driver=None, **env):
    """``python examples/mnist_mlp.py ARGS``, ``python -m scratchgan ARGS`` (kind "module"), or the
    train command behind a fault ``driver`` (kind "driver"), in ``tmp``."""
    if kind == "module":
        cmd = [sys.executable, "-m", "scratchgan", *args]
    elif kind == "driver":
        code = driver + "\nimport sys\nfrom scratchgan.cli import train as train_command\nsys.exit(train_command.train_main(sys.argv[1:]))\n"
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, str(EXAMPLE), *args]
    return subprocess.Popen(cmd, cwd=tmp, env=env_for(tmp, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line(err):
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, f"expected one line on stderr, got {err!r}"
    return lines[0]


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def train_in_process(out, *extra):
    assert train_command.train_main([*TINY, "--log-every", "1", "--epochs", "1", "--out", str(out), *extra]) == 0


def dead_pid():
    """The pid of a process that has ended (and so holds nothing)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------- all cases at once
@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHGAN_DATA", str(tmp / "empty-cache"))
        train_in_process(tmp / "base")  # one earlier run (4 steps, a metrics row per step)
    for name in ("user", "locked", "stale"):
        shutil.copytree(tmp / "base", tmp / name)
    (tmp / "user" / "notes.txt").write_text("my notes on this run\n")
    (tmp / "copy").mkdir()
    shutil.copy(tmp / "base" / "checkpoint.npz", tmp / "copy" / "ckpt.npz")
    arrays, meta = load_checkpoint(tmp / "base" / "checkpoint.npz")
    meta["config"]["out"] = str(tmp / "evil")  # a crafted checkpoint that points elsewhere
    (tmp / "crafted").mkdir()
    save_checkpoint(tmp / "crafted" / "ckpt.npz", arrays, meta)
    gone = dead_pid()
    stale = {"dead": [tmp / "stale" / f".checkpoint.npz.{gone}.0123abcd.tmp",
                      tmp / "stale" / "samples" / f".step_0000009.png.{gone}.89abcdef.tmp"],
             "live": [tmp / "stale" / f".metrics.csv.{os.getpid()}.deadbeef.tmp"]}  # this test process: alive
    for path in stale["dead"] + stale["live"]:
        path.write_bytes(b"half a file")
    (tmp / "afile").write_text("a regular file\n")
    (tmp / "ro").mkdir()
    # a live run holding locked/: this test process, with the lock a run takes
    lock_fd = os.open(tmp / "locked" / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    before = {name: snapshot(tmp / name) for name in ("base", "locked", "copy")}

    cases = {
        "used": ([*TINY, "--epochs", "1", "--out", "base"], "example"),
        "used-module": (["train", *TINY, "--epochs", "1", "--out", "base"], "module"),
        "overwrite": ([*TINY, "--epochs", "1", "--log-every", "2", "--out", "user", "--overwrite"], "example"),
        "locked-overwrite": ([*TINY, "--epochs", "1", "--out", "locked", "--overwrite"], "example"),
        "locked-resume": ([*TINY, "--epochs", "2", "--out", "locked", "--resume"], "example"),
        "resume-copy": (["--resume", "copy/ckpt.npz", "--epochs", "2", "--no-progress"], "example"),
        "resume-copy-new-out": (["--resume", "copy/ckpt.npz", "--epochs", "2", "--out", "copy-run", "--no-progress"],
                                "example"),
        "resume-crafted": (["--resume", "crafted/ckpt.npz", "--epochs", "2", "--out", "crafted-run", "--no-progress"],
                           "example"),
        "stale-temps": (["--out", "stale", "--resume", "--epochs", "2", "--no-progress"], "example"),
        "out-is-a-file": ([*TINY, "--epochs", "1", "--out", "afile"], "example"),
        "out-under-a-file": ([*TINY, "--epochs", "1", "--out", "afile/run"], "example"),
        "read-only": ([*TINY, "--epochs", "1", "--out", "ro/run"], "driver"),
        "read-only-existing": ([*TINY, "--epochs", "1", "--out", "ro"], "driver"),
        "full-disk": ([*TINY, "--epochs", "2", "--out", "full"], "driver"),
        "diverged-state": ([*DEFAULT_NETS, "--lr", "1e6", "--log-every", "10", "--out", "diverged"], "example"),
        "absurd-loss": ([*DEFAULT_NETS, "--lr", "1e3", "--log-every", "1", "--out", "absurd"], "example"),
        "batch-size-1": ([*TINY, "--epochs", "1", "--batch-size", "1", "--out", "bs1"], "example"),
        "latent-dim-huge": ([*TINY, "--epochs", "1", "--latent-dim", str(10 ** 13), "--out", "huge"], "example"),
        "sample-n-huge": (["sample", "--checkpoint", "base/checkpoint.npz", "--n", str(10 ** 12), "--out", "s"],
                          "module"),
        "bogus-command": (["bogus"], "module"),
        "no-command": ([], "module"),
        "short-run": ([*TINY, "--epochs", "1", "--log-every", "100", "--out", "short"], "example"),
        "evaluate-json-under-a-file": (["evaluate", "--checkpoint", "base/checkpoint.npz",
                                        "--json", "afile/eval.json"], "module"),
    }
    if os.path.ismount("/sys"):
        cases["sysfs"] = ([*TINY, "--epochs", "1", "--out", "/sys/scratchgan-test-run"], "example")
    drivers = {"read-only": READ_ONLY, "read-only-existing": READ_ONLY, "full-disk": FULL_DISK}
    procs = {name: launch(args, tmp, kind, drivers.get(name), READ_ONLY_ROOT=str(tmp / "ro"))
             for name, (args, kind) in cases.items()}
    try:
        results = {name: finish(proc) for name, proc in procs.items()}
    finally:
        os.close(lock_fd)
    return tmp, results, before, stale


def result(faults, name):
    tmp, results, _, _ = faults
    if name not in results:
        pytest.skip(f"case {name} not run here")
    return results[name]


# ---------------------------------------------------------------------------------- 3: one run per folder
@pytest.mark.parametrize("case", ["used", "used-module"])
def test_a_used_out_is_refused_and_left_alone(faults, case):
    tmp, _, before, _ = faults
    code, out, err = result(faults, case)
    line = one_line(err)
    assert code == 2 and re.search(r"--out base holds an earlier run \(checkpoint\.npz, metrics\.csv, .*--resume.*"
                                   r"--overwrite", line), line
    assert out == "", "the refused run trained"
    assert snapshot(tmp / "base") == before["base"], "the earlier run was touched"


def test_overwrite_replaces_the_earlier_run_and_nothing_else(faults):
    tmp, _, _, _ = faults
    code, out, err = result(faults, "overwrite")
    assert code == 0 and err == "", err
    rows = (tmp / "user" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"], "old rows were kept (log-every was 1 before)"
    # one file per grid: the epoch end's is samples/epoch_001.png only
    assert sorted(p.name for p in (tmp / "user" / "samples").glob("*.png")) == ["epoch_001.png"]
    assert (tmp / "user" / "notes.txt").read_text() == "my notes on this run\n"
    assert json.loads((tmp / "user" / "config.json").read_text())["log_every"] == 2
    assert not (tmp / "user" / ".lock").exists()


@pytest.mark.parametrize("case", ["locked-overwrite", "locked-resume"])
def test_a_live_run_keeps_others_out_of_its_folder(faults, case):
    tmp, _, before, _ = faults
    code, out, err = result(faults, case)
    line = one_line(err)
    assert code == 2 and f"--out locked is in use by a running run (pid {os.getpid()})" in line, line
    assert snapshot(tmp / "locked") == before["locked"]


# ---------------------------------------------------------------------------------- 4: resume writes to --out
def test_resuming_a_copy_goes_into_a_new_out_never_beside_the_copy_or_into_the_original_run(faults):
    """A copied checkpoint's folder is not its run's folder (no manifest.json of that run): resuming it there is
    refused in one line naming --out, and with a new --out it continues there."""
    tmp, _, before, _ = faults
    code, out, err = result(faults, "resume-copy")
    assert code == 2 and re.fullmatch(r"mnist_mlp\.py: error: --out copy is not the folder of copy/ckpt\.npz's run "
                                      r"\(it holds ckpt\.npz, .*resume into a new or empty --out.*\n", err), err
    assert snapshot(tmp / "copy") == before["copy"]
    code, out, err = result(faults, "resume-copy-new-out")
    assert code == 0 and err == "", err
    _, meta = load_checkpoint(tmp / "copy-run" / "checkpoint.npz")
    assert meta["global_step"] == 2 * STEPS and meta["config"]["out"] == "copy-run"
    assert json.loads((tmp / "copy-run" / "config.json").read_text())["out"] == "copy-run"
    assert snapshot(tmp / "base") == before["base"], "resuming the copy wrote into the original run"
    assert snapshot(tmp / "copy") == before["copy"]


def test_a_crafted_checkpoint_cannot_choose_where_a_run_writes(faults):
    tmp, _, _, _ = faults
    code, out, err = result(faults, "resume-crafted")
    assert code == 0 and err == "", err
    assert not (tmp / "evil").exists()
    _, meta = load_checkpoint(tmp / "crafted-run" / "checkpoint.npz")
    assert meta["global_step"] == 2 * STEPS and meta["config"]["out"] == "crafted-run"


# ---------------------------------------------------------------------------------- 5: the watchdog
def test_a_poisoned_state_is_never_saved(faults):
    """--lr 1e6 on the default networks: Adam's v overflows to inf while the losses stay finite, in an
    epoch shorter than --log-every. The run stops (exit 3) naming the buffers and the step; it used
    to save that state and exit 0."""
    tmp, _, _, _ = faults
    code, out, err = result(faults, "diverged-state")
    line = one_line(err)
    assert code == train_command.EXIT_DIVERGED, err
    # the run's last step is logged now however short the run, and its gradient norms (inf) stop it first
    assert re.search(rf"(training diverged by step {STEPS}: NaN/Inf in .*opt_G/v \(1,410,960 of 1,410,960 "
                     rf"values\)|grad_norm_G, grad_norm_D became inf at step {STEPS}; stopped without saving)"
                     r".*Last good checkpoint: none yet", line), line
    assert not (tmp / "diverged" / "checkpoint.npz").exists()


def test_absurd_final_losses_warn(faults):
    code, out, err = result(faults, "absurd-loss")
    line = one_line(err)
    assert code == 0 and re.search(r"^mnist_mlp\.py: warning: the run ended with loss_D = \d\.\d+e\+\d+.* "
                                   r"diverged \(try a lower --lr\)$", line), line


# ---------------------------------------------------------------------------------- 6: file-system faults
@pytest.mark.parametrize("case, pattern", [
    ("out-is-a-file", r"--out afile is a file, not a folder; choose another --out"),
    ("out-under-a-file", r"--out afile/run lies under afile, which is a file, not a folder; choose another --out"),
    ("read-only", r"cannot write .*ro/run: Read-only file system; choose another --out"),
    ("read-only-existing", r"cannot write .*ro: Read-only file system; choose another --out"),
    ("sysfs", r"cannot write /sys/scratchgan-test-run: Operation not permitted; choose another --out"),
])
def test_an_unwritable_out_is_one_line(faults, case, pattern):
    """read-only*: simulated EROFS (see the module docstring); sysfs: a real file system that refuses."""
    tmp, _, _, _ = faults
    code, out, err = result(faults, case)
    line = one_line(err)
    assert code == 2 and line.startswith("mnist_mlp.py: error: ") and re.search(pattern, line), line
    assert not list((tmp / "ro").iterdir())


def test_a_full_disk_keeps_the_last_good_checkpoint(faults):
    """Simulated ENOSPC in the middle of the epoch-2 checkpoint."""
    tmp, _, _, _ = faults
    code, out, err = result(faults, "full-disk")
    line = one_line(err)
    assert code == 2, err
    assert re.search(rf"cannot write full/checkpoint\.npz: No space left on device; the last good checkpoint "
                     rf"full/checkpoint\.npz \(step {STEPS}\) is intact: free some space, then continue with "
                     r"--resume full/checkpoint\.npz$", line), line
    _, meta = load_checkpoint(tmp / "full" / "checkpoint.npz")
    assert meta["global_step"] == STEPS
    assert not [p for p in (tmp / "full").rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]


def test_stale_temp_files_are_removed_at_the_next_start(faults):
    tmp, _, _, stale = faults
    code, out, err = result(faults, "stale-temps")
    assert code == 0 and err == "", err
    assert not [p for p in stale["dead"] if p.exists()], "temp files of a dead writer were left"
    assert all(p.exists() for p in stale["live"]), "a live process's temp file was removed"


# ---------------------------------------------------------------------------------- 10: smaller items
@pytest.mark.parametrize("case, pattern", [
    ("batch-size-1", r"^mnist_mlp\.py: error: --batch-size 1: BatchNorm needs at least 2 .*--no-batchnorm$"),
    ("latent-dim-huge", rf"^mnist_mlp\.py: error: out of memory .*lower --latent-dim {10 ** 13}$"),
    ("sample-n-huge", rf"^scratchgan sample: error: --n {10 ** 12}: out of memory .*ask for fewer images$"),
    ("evaluate-json-under-a-file", r"^scratchgan evaluate: error: --json afile/eval\.json: afile is a file"),
])
def test_smaller_items_are_one_line_before_anything_is_written(faults, case, pattern):
    tmp, _, _, _ = faults
    code, out, err = result(faults, case)
    line = one_line(err)
    assert code == 2 and re.search(pattern, line), line
    assert not (tmp / "bs1").exists() and not (tmp / "huge").exists() and not (tmp / "s.npy").exists()


@pytest.mark.parametrize("case, problem", [("bogus-command", "unknown command 'bogus'"),
                                           ("no-command", "a command is required")])
def test_an_unknown_command_is_an_error_on_stderr(faults, case, problem):
    code, out, err = result(faults, case)
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert lines[0] == "usage: python -m scratchgan [-h] [--version] COMMAND ..."  # argparse's, as --help's
    assert lines[-1] == f"scratchgan: error: {problem}; choose one of: train, sample, evaluate, evaluator, export, interpolate"


def test_done_lists_only_what_was_written(faults):
    tmp, _, _, _ = faults
    code, out, err = result(faults, "short-run")
    assert code == 0 and err == "", err
    done = [line for line in out.splitlines() if line.startswith("done:")]
    assert (tmp / "short" / "metrics.csv").exists()  # a run shorter than --log-every logs its last step
    assert done == ["done: short/ has samples/, log.txt, losses.png, progress.gif, real_vs_fake.png, metrics.csv, "
                    "metrics.jsonl, checkpoint.npz"], done


# ---------------------------------------------------------------------------------- 7: SIGTERM
def test_sigterm_saves_after_the_step_in_flight(tmp_path):
    """kill -TERM (what schedulers, `timeout` and container runtimes send) during a real run: the step
    finishes, a checkpoint is saved, one line says so, exit 143; the lock is released and --resume
    continues from that step."""
    proc = launch([*DEFAULT_NETS[:-2], "--limit", "1024", "--epochs", "50", "--log-every", "1", "--out", "run"],
                  tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / "metrics.csv").exists():  # written at step 1, after the handlers are in
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    # meanwhile, a second run into the same folder is refused, naming the live one
    second = launch([*TINY, "--epochs", "1", "--out", "run", "--overwrite"], tmp_path)
    code2, _, err2 = finish(second)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code2 == 2 and f"is in use by a running run (pid {proc.pid})" in one_line(err2), err2
    line = one_line(err)
    assert code == 128 + signal.SIGTERM, err
    m = re.fullmatch(r"mnist_mlp\.py: interrupted at step (\d+) by SIGTERM; checkpoint saved to "
                     r"run/checkpoint\.npz \(step \1\); continue with --resume run/checkpoint\.npz", line)
    assert m, line
    assert "SIGTERM: saving a checkpoint after this step" in out
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert meta["global_step"] == int(m.group(1)) >= 1
    assert not (tmp_path / "run" / ".lock").exists()
    # the epoch the signal came in depends on the machine's speed (16 steps an epoch): resume into that one
    epoch = meta["epoch"] + 1
    code, out, err = finish(launch(["--out", "run", "--resume", "--epochs", str(epoch), "--no-progress"], tmp_path))
    assert code == 0 and f"resumed from run/checkpoint.npz at epoch {epoch}, step {m.group(1)}" in out, err


# ---------------------------------------------------------------------------------- the run folder, in process
def test_rundir_rules(tmp_path):
    from scratchgan.run import rundir
    run = tmp_path / "run"
    rundir.check(run)  # a fresh folder (not even there yet)
    (run / "samples").mkdir(parents=True)
    rundir.check(run)  # an empty samples/ is no earlier run
    (run / "samples" / "step_0000004.png").write_bytes(b"png")
    # where a run would write, a file that no run recorded writing (the run manifest's rule): refused, never deleted
    with pytest.raises(rundir.RunDirError, match=r"holds samples/step_0000004\.png, which a run would write but no "
                                                 r"run recorded writing \(no manifest\.json\)"):
        rundir.check(run, overwrite=True)
    manifest = rundir.Manifest.start(run)  # now a run's own, recorded file
    manifest.record_folder("samples")
    manifest.record(run / "samples" / "step_0000004.png", 4)
    with pytest.raises(rundir.RunDirError, match=r"holds an earlier run \(samples/step_0000004\.png\)"):
        rundir.check(run)
    rundir.check(run, overwrite=True)
    rundir.check(run, resume=run / "checkpoint.npz", resume_run_id=manifest.run_id)  # continuing the run that is there
    with pytest.raises(rundir.RunDirError, match="--overwrite would delete the run that --resume continues"):
        rundir.check(run, resume=run / "checkpoint.npz", overwrite=True)
    with pytest.raises(rundir.RunDirError, match="replace it with --overwrite.*FILE's folder"):
        rundir.check(run, resume=tmp_path / "elsewhere" / "checkpoint.npz")
    (run / "mine.txt").write_text("keep")
    assert rundir.clear_outputs(run) == [run / "samples" / "step_0000004.png"]
    assert sorted(p.name for p in run.iterdir()) == ["mine.txt"]
    assert rundir.temp_target(run / ".checkpoint.npz.123.0a1b2c3d.tmp") == run / "checkpoint.npz"


def test_a_lock_file_left_by_a_killed_run_does_not_block(tmp_path, monkeypatch):
    """SIGKILL leaves OUT/.lock behind, but the kernel dropped its flock: the next run takes it."""
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))
    train_in_process(tmp_path / "run")
    (tmp_path / "run" / ".lock").write_text(f"{dead_pid()}\n")
    assert train_command.train_main(["--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert not (tmp_path / "run" / ".lock").exists()


def test_sigterm_while_loading_data_is_one_line(tmp_path, monkeypatch, capsys):
    """SIGTERM before the training loop (here: while the data loads, which can take minutes for a
    download or an image folder) stops with one line and 143, as Ctrl-C does; nothing is written."""
    real = train_command.load_images

    def load_images(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(train_command, "load_images", load_images)
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))
    before = signal.getsignal(signal.SIGTERM)
    assert train_command.train_main([*TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    assert capsys.readouterr().err == "mnist_mlp.py: aborted by SIGTERM; last good checkpoint: none (nothing was saved)\n"
    assert not (tmp_path / "run").exists()
