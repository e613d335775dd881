"""The run folder (``--out``): one run per folder, never two at once, no leftovers of a crash.

- ``check(out, resume, overwrite)``: before anything is written, refuse a folder that holds another
  run's outputs (unless ``--resume`` continues that very run or ``--overwrite`` replaces it), a folder
  a live run holds, and an ``--out`` that is a file or lies under one.
- ``claim(...)``: for the duration of a run, hold ``OUT/.lock`` (``flock``, the holder's pid inside;
  the kernel releases it when the process ends, however it ends), check again under the lock, clear
  the old outputs on ``--overwrite`` and remove the temp files of writes that a crash cut short.
Only read-only file-system calls happen in ``check``; ``claim`` is the first to write.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock below
    fcntl = None
    import msvcrt

LOCK_NAME = ".lock"
# What a run writes into OUT (trainer.py); a folder holding any of these is another run's.
OUTPUT_FILES = ("checkpoint.npz", "metrics.csv", "metrics.jsonl", "config.json", "progress.gif", "losses.png",
                "real_vs_fake.png")
OUTPUT_FILES += ("checkpoint_best.npz",)  # with --eval-every
CHECKPOINT_GLOBS = ("checkpoint_epoch[0-9]*.npz",)  # --snapshot-every
SAMPLE_GLOBS = ("step_*.png", "epoch_*.png")
# checkpoint.atomic_write's temp names: ".<target>.<pid>.<8 hex>.tmp"
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


class RunDirError(Exception):
    """The --out folder cannot take this run; the message says why and what to do."""


def outputs_in(out):
    """The files of an earlier run in ``out`` (empty when it has none or does not exist)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [out / name for name in OUTPUT_FILES if (out / name).exists()]
    found += sorted(p for g in CHECKPOINT_GLOBS for p in out.glob(g))
    if (out / "samples").is_dir():
        found += sorted(p for g in SAMPLE_GLOBS for p in (out / "samples").glob(g))
    return found


def holder(out):
    """The pid of the live run holding ``out``'s lock (0 when unreadable), or None; writes nothing."""
    path = Path(out) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or unreadable): nobody we can see holds it
        return None
    try:
        if not _try_lock(fd):
            return _read_pid(fd)
        _unlock(fd)
        return None
    finally:
        os.close(fd)


def check(out, resume=None, overwrite=False, probe_lock=True):
    """Raise RunDirError unless a run may write into ``out``; reads only.

    ``resume``: the checkpoint being resumed (its own folder may hold its run's outputs).
    ``probe_lock``: also refuse a folder whose lock a live run holds (False: we hold it ourselves).
    """
    out = Path(out)
    for parent in (out, *out.parents):  # the nearest existing path must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is a file" if parent == out else f"lies under {parent}, which is a file"
                raise RunDirError(f"--out {out} {where}, not a folder; choose another --out")
            break
    pid = holder(out) if probe_lock else None
    if pid is not None:
        raise RunDirError(f"--out {out} is in use by a running run (pid {pid or 'unknown'}); wait for it to "
                          "end, or choose another --out")
    own_run = resume is not None and _same_folder(Path(resume).parent, out)
    if overwrite and own_run:
        raise RunDirError(f"--overwrite would delete the run that --resume continues ({resume}); "
                          "drop --overwrite, or resume into another --out")
    used = outputs_in(out)
    if used and not overwrite and not own_run:
        names = ", ".join(str(p.relative_to(out)) for p in used[:3]) + (", ..." if len(used) > 3 else "")
        if resume is None:
            what = "continue it with --resume, replace it with --overwrite, or choose another --out"
        else:
            what = "replace it with --overwrite, or choose another --out (with --resume FILE it defaults to FILE's folder)"
        raise RunDirError(f"--out {out} holds an earlier run ({names}): {what}")


@contextlib.contextmanager
def claim(out, resume=None, overwrite=False):
    """Hold ``out`` for one run: lock it, check again, clear old outputs (``overwrite``), remove stale temps."""
    out = Path(out)
    check(out, resume, overwrite)  # the cheap checks again: the folder may have changed since
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(out)) from None
    fd = _acquire(out)
    try:
        check(out, resume, overwrite, probe_lock=False)  # under the lock: no run slips in between check and write
        if overwrite:
            clear_outputs(out)
        remove_stale_temp_files(out)
        yield out
    finally:
        _release(out, fd)


def clear_outputs(out):
    """Delete an earlier run's outputs (``outputs_in``) and nothing else; returns what was deleted."""
    out = Path(out)
    removed = outputs_in(out)
    for path in removed:
        path.unlink()
    with contextlib.suppress(OSError):  # only when empty: a user's own files stay
        (out / "samples").rmdir()
    return removed


def remove_stale_temp_files(out):
    """Delete the temp files of atomic writes that a crash or kill cut short (their writer is gone)."""
    removed = []
    for folder in (Path(out), Path(out) / "samples"):
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            m = TEMP_PATTERN.match(path.name)
            if m and (int(m["pid"]) == os.getpid() or not _alive(int(m["pid"]))):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def temp_target(path):
    """The file an atomic-write temp file stands for (``.x.npz.12.ab12cd34.tmp`` -> ``x.npz``), else ``path``."""
    m = TEMP_PATTERN.match(Path(path).name)
    return Path(path).with_name(m["target"]) if m else Path(path)


# ------------------------------------------------------------------------------------------- locking
def _acquire(out):
    path = out / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(out)) from None
        if not _try_lock(fd):
            pid = _read_pid(fd)
            os.close(fd)
            raise RunDirError(f"--out {out} is in use by a running run (pid {pid or 'unknown'}); wait for it to "
                              "end, or choose another --out")
        try:  # the previous holder may have unlinked the file between our open and our lock: retry
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _release(out, fd):
    with contextlib.suppress(OSError):
        os.unlink(out / LOCK_NAME)  # while still locked, so no one else holds that file
    os.close(fd)


def _try_lock(fd):
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:  # BlockingIOError on POSIX, PermissionError on Windows
        return False


def _unlock(fd):
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_pid(fd):
    try:
        return int(os.pread(fd, 32, 0).split()[0]) if hasattr(os, "pread") else 0
    except (OSError, ValueError, IndexError):
        return 0


def _alive(pid):
    if os.name == "nt":  # os.kill would terminate it there: assume alive, leave its file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _same_folder(a, b):
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
