"""The run folder (``--out``): one run per folder, never two at once, no leftovers of a crash, and a run
owns exactly the files it wrote.

- ``Manifest``: ``OUT/manifest.json``, the run's id (a random id made when the run starts, stored in every
  checkpoint's meta too) and every file the run wrote, relative to OUT, each with the step that wrote it
  where that matters (the sample grids). A file is recorded *before* it is written, and the manifest is
  replaced atomically, so a crash can leave a recorded file that was never written, never a written file
  that is not recorded.
- ``check(out, resume, overwrite, resume_run_id)``: before anything is written, refuse a folder that holds
  another run's recorded outputs (unless ``--resume`` continues that very run, same run id, or
  ``--overwrite`` replaces it), a folder where a run would write over a file that no run recorded (the
  user's own, or a run of a scratchgan from before the manifest), a ``samples`` that is a link or a file,
  a folder a live run holds, and an ``--out`` that is a file or lies under one.
- ``claim(...)``: for the duration of a run, hold ``OUT/.lock`` (``flock``, the holder's pid inside; the
  kernel releases it when the process ends, however it ends), check again under the lock, delete the old
  run's recorded outputs on ``--overwrite``, remove the temp files of writes that a crash cut short, and
  hand over the manifest the run records its files in.
Deleting goes by the manifest only: never by a file's name, never through a symbolic link (each folder on
the way is opened without following links), never a file the manifest does not list. Only read-only
file-system calls happen in ``check``; ``claim`` is the first to write.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from pathlib import Path, PurePosixPath

from ..fileio import atomic_write

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock below
    fcntl = None
    import msvcrt

LOCK_NAME = ".lock"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
SAMPLES = "samples"
# What a run writes into OUT (trainer.py), relative to OUT: these names, and the numbered ones below as the
# trainer spells them. They are matched only to REFUSE a folder where a write would land on a file that no
# run recorded; what is deleted is what the manifest lists, never what a name looks like.
OUTPUT_FILES = ("checkpoint.npz", "metrics.csv", "metrics.jsonl", "config.json", "progress.gif", "losses.png",
                "real_vs_fake.png")
OUTPUT_FILES += ("checkpoint_best.npz",)  # with --eval-every
OUTPUT_FILES += ("log.txt",)  # what the command printed (runlog.ConsoleLog)
NUMBERED_OUTPUTS = re.compile(r"(checkpoint_epoch\d{4,}\.npz"       # --snapshot-every: checkpoint_epoch%04d.npz
                              r"|samples/step_\d{7,}\.png"           # samples/step_%07d.png
                              r"|samples/epoch_\d{3,}\.png)")        # samples/epoch_%03d.png
# fileio.atomic_write's temp names: ".<target>.<pid>.<8 hex>.tmp"
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
_RUN_ID = re.compile(r"[0-9a-f]{8,64}")


class RunDirError(Exception):
    """The --out folder cannot take this run; the message says why and what to do."""


def is_output_path(rel):
    """Whether ``rel`` (relative to OUT, POSIX) is a path a run may write (its manifest included)."""
    return rel in OUTPUT_FILES or rel == MANIFEST_NAME or NUMBERED_OUTPUTS.fullmatch(rel) is not None


def new_run_id():
    """A random run id: 16 hex digits."""
    return secrets.token_hex(8)


# ------------------------------------------------------------------------------------------- the manifest
class Manifest:
    """OUT/manifest.json: ``run_id``, ``files`` ({path relative to OUT: step or None}), the ``folders`` the
    run created, and where a resumed run came from (``resumed_from``)."""

    def __init__(self, out, run_id, files=None, folders=(), resumed_from=None, created=None):
        self.out, self.run_id = Path(out), run_id
        self.files = dict(files or {})
        self.folders = list(folders)
        self.resumed_from, self.created = resumed_from, created

    @property
    def path(self):
        return self.out / MANIFEST_NAME

    @classmethod
    def start(cls, out, resumed_from=None):
        """A new run's manifest (a new run id, no files yet), written at once."""
        manifest = cls(out, new_run_id(), resumed_from=resumed_from,
                       created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest.save()
        return manifest

    @classmethod
    def read(cls, out):
        """The manifest in ``out``, or None where there is none; RunDirError for one that is not a run's."""
        out = Path(out)
        path = out / MANIFEST_NAME
        if not os.path.lexists(path):
            return None
        try:
            if path.is_symlink() or not path.is_file():
                raise ValueError("it is a link or a folder, not a file")
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls._from_json(out, data)
        except (OSError, UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
            raise RunDirError(f"--out {out}: {MANIFEST_NAME} is not a scratchgan run manifest ({reason}); a run "
                              "changes nothing in a folder it cannot account for: move that file away, or choose "
                              "another --out") from None

    @classmethod
    def _from_json(cls, out, data):
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"expected a JSON object with \"format\": {MANIFEST_FORMAT}")
        run_id, files, folders = data.get("run_id"), data.get("files"), data.get("folders", [])
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"run_id {run_id!r} is not a run id")
        if not isinstance(files, dict) or not isinstance(folders, list):
            raise ValueError("files must be an object and folders a list")
        for rel, step in files.items():
            if _parts(rel) is None or not (step is None or (type(step) is int and step >= 0)):
                raise ValueError(f"entry {rel!r}: {step!r} is not a relative path inside the folder with its step")
        if not all(isinstance(rel, str) and _parts(rel) for rel in folders):
            raise ValueError("folders must be relative paths inside the folder")
        return cls(out, run_id, files, folders, data.get("resumed_from"), data.get("created"))

    def to_json(self):
        data = {"format": MANIFEST_FORMAT, "run_id": self.run_id, "created": self.created,
                "files": dict(sorted(self.files.items())), "folders": self.folders}
        if self.resumed_from is not None:
            data["resumed_from"] = self.resumed_from
        return data

    def save(self):
        with atomic_write(self.path) as f:
            f.write((json.dumps(self.to_json(), indent=1) + "\n").encode("utf-8"))

    def relative(self, path):
        """``path`` (OUT/... or already relative) as the POSIX path relative to OUT the manifest keys on."""
        path = Path(path)
        try:
            path = path.relative_to(self.out)
        except ValueError:  # already relative to OUT
            pass
        rel = PurePosixPath(*path.parts).as_posix()
        if _parts(rel) is None:
            raise ValueError(f"{path} is not a path inside {self.out}")
        return rel

    def record(self, path, step=None):
        """Record that the run is about to write ``path``, by ``step`` where that matters; returns ``path``."""
        rel = self.relative(path)
        if self.files.get(rel, "absent") != step:
            self.files[rel] = None if step is None else int(step)
            self.save()
        return path

    def record_folder(self, rel):
        if rel not in self.folders:
            self.folders.append(rel)
            self.save()

    def forget(self, rels):
        """Drop entries (their files are gone); written once."""
        rels = [rel for rel in rels if rel in self.files]
        for rel in rels:
            del self.files[rel]
        if rels:
            self.save()

    def existing(self):
        """The recorded files that are there (a recorded file may never have been written: a crash)."""
        order = {name: i for i, name in enumerate(OUTPUT_FILES)}  # the main outputs first, as a user looks for them
        found = [rel for rel in self.files if os.path.lexists(self.out / rel)]
        return sorted(found, key=lambda rel: (order.get(rel, len(order)), rel))

    def steps(self, prefix):
        """(step, relative path) of the recorded files under ``prefix`` that have a step, in step order."""
        return sorted((step, rel) for rel, step in self.files.items() if rel.startswith(prefix) and step is not None)


# ------------------------------------------------------------------------------------------- checks
def outputs_in(out):
    """The files of the run recorded in ``out``'s manifest that are there (empty when none)."""
    out = Path(out)
    manifest = Manifest.read(out) if out.is_dir() else None
    return [out / rel for rel in manifest.existing()] if manifest else []


def unrecorded_outputs(out, manifest=None):
    """The paths in ``out`` where a run would write over something that no run recorded writing, relative."""
    out = Path(out)
    listed = set(manifest.files) if manifest else set()
    found = []
    for folder, prefix in ((out, ""), (out / SAMPLES, SAMPLES + "/")):
        if folder.is_symlink() or not folder.is_dir():
            continue
        for name in sorted(os.listdir(folder)):
            rel = prefix + name
            if rel != MANIFEST_NAME and is_output_path(rel) and rel not in listed:
                found.append(rel)
    return found


def holder(out):
    """The pid of the live run holding ``out``'s lock (0 when unreadable), or None; writes nothing."""
    path = Path(out) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:  # no lock file (or unreadable, or a link): nobody we can see holds it
        return None
    try:
        if not _try_lock(fd):
            return _read_pid(fd)
        _unlock(fd)
        return None
    finally:
        os.close(fd)


def check(out, resume=None, overwrite=False, probe_lock=True, resume_run_id=None):
    """Raise RunDirError unless a run may write into ``out``; reads only.

    ``resume``: the checkpoint being resumed, ``resume_run_id`` its run id (None: from before run ids);
    a folder holding a run's outputs takes a resume of that run only.
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
    if overwrite and resume is not None and _same_folder(Path(resume).parent, out):
        raise RunDirError(f"--overwrite would delete the run that --resume continues ({resume}); "
                          "drop --overwrite, or resume into another --out")
    if not out.is_dir():
        return
    _check_not_links(out)
    manifest = Manifest.read(out)
    unrecorded = unrecorded_outputs(out, manifest)
    if unrecorded:
        whose = "its run did not record writing" if manifest else f"no run recorded writing (no {MANIFEST_NAME})"
        what = "resume into a new --out" if resume is not None else "choose another --out"
        raise RunDirError(f"--out {out} holds {_names(unrecorded)}, which a run would write but {whose}: your own "
                          f"files, or a run of a scratchgan older than the run manifest; they are never written "
                          f"over or deleted: {what}, or move them away")
    recorded = manifest.existing() if manifest else []
    if resume is not None and not recorded and not (overwrite and manifest):
        _check_resume_target(out, manifest, resume, resume_run_id)
    if not recorded or overwrite:
        return
    if resume is None:
        raise RunDirError(f"--out {out} holds an earlier run ({_names(recorded)}): continue it with --resume, "
                          "replace it with --overwrite, or choose another --out")
    if resume_run_id != manifest.run_id:
        if resume_run_id is None:
            whose = f"{resume} is from a scratchgan that did not record run ids, so it cannot be that run's"
        else:
            whose = f"{resume} is a checkpoint of run {resume_run_id}"
        inside = _same_folder(Path(resume).parent, out)
        what = "resume into a new --out" + ("" if inside else ", or replace it with --overwrite")
        raise RunDirError(f"--out {out} holds run {manifest.run_id} ({_names(recorded)}), and {whose}: {what} "
                          "(with --resume FILE, --out defaults to FILE's folder)")


def _check_resume_target(out, manifest, resume, resume_run_id):
    """A resume writes into its own run's folder, or into an empty or new one: never beside other files
    (a downloaded checkpoint's folder is not a run folder)."""
    if manifest is not None and manifest.run_id == resume_run_id:
        return
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if others:
        names = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise RunDirError(f"--out {out} is not the folder of {resume}'s run (it holds {names}, and no "
                          f"{MANIFEST_NAME} of that run): resume into a new or empty --out (with --resume FILE, "
                          "--out defaults to FILE's folder)")


def run_id_of(meta):
    """The run id a checkpoint's ``meta`` records, or None (a checkpoint from before run ids, or not one)."""
    run_id = meta.get("run_id") if isinstance(meta, dict) else None
    return run_id if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id) else None


def probe_writable(path, flag):
    """RunDirError naming ``flag`` unless files can be made in ``path``: found by making (and removing at
    once) a folder in it, or in its nearest existing folder when it is not there yet; nothing stays behind."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise RunDirError(f"{flag} {path} {where}, not a folder; choose another {flag}")
    probe = existing / f".scratchgan-probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e.strerror or e}; choose another {flag}") from None


def _check_not_links(out):
    """A run writes inside its folder only: a ``samples`` that is a link (or a file) is refused."""
    samples = out / SAMPLES
    if samples.is_symlink():
        raise RunDirError(f"--out {out}: {SAMPLES} is a symbolic link (to {os.readlink(samples)}), and a run writes "
                          f"only inside its own folder: remove the link, or choose another --out")
    if samples.exists() and not samples.is_dir():
        raise RunDirError(f"--out {out}: {SAMPLES} is a file, where a run keeps its sample grids: move it away, "
                          "or choose another --out")


def _names(rels, n=3):
    return ", ".join(rels[:n]) + (", ..." if len(rels) > n else "")


@contextlib.contextmanager
def claim(out, resume=None, overwrite=False, resume_run_id=None, resumed_step=None):
    """Hold ``out`` for one run: lock it, check again, clear the old run's recorded outputs (``overwrite``),
    remove stale temps; yields the run's ``Manifest`` (the resumed run's own, or a new one)."""
    out = Path(out)
    check(out, resume, overwrite, resume_run_id=resume_run_id)  # the cheap checks again: the folder may have changed
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(out)) from None
    fd = _acquire(out)
    try:
        # under the lock: no run slips in between check and write
        check(out, resume, overwrite, probe_lock=False, resume_run_id=resume_run_id)
        manifest = Manifest.read(out)
        if overwrite:
            clear_outputs(out, manifest)
            manifest = None
        remove_stale_temp_files(out)
        continues = (manifest is not None and resume is not None and resume_run_id == manifest.run_id)
        if not continues:  # a new run, or a resumed checkpoint going on in a folder of its own
            origin = None if resume is None else {"run_id": resume_run_id, "checkpoint": str(resume),
                                                  "step": resumed_step}
            manifest = Manifest.start(out, resumed_from=origin)
        yield manifest
    finally:
        _release(out, fd)


def clear_outputs(out, manifest=None):
    """Delete the files the manifest of ``out`` records (and the manifest), nothing else: never a file it
    does not list, never through a link; returns what was deleted."""
    out = Path(out)
    manifest = manifest or Manifest.read(out)
    if manifest is None:
        return []
    removed = [out / rel for rel in sorted(manifest.files) if unlink_inside(out, rel)]
    for rel in manifest.folders:  # only when empty: a user's own files stay
        rmdir_inside(out, rel)
    unlink_inside(out, MANIFEST_NAME)
    return removed


def remove_stale_temp_files(out):
    """Delete the temp files that atomic writes of a run's outputs left when a crash or kill cut them short
    (``.<output>.<pid>.<8 hex>.tmp`` of a writer that is gone); nothing else."""
    removed = []
    for folder, prefix in ((Path(out), ""), (Path(out) / SAMPLES, SAMPLES + "/")):
        if folder.is_symlink() or not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            m = TEMP_PATTERN.match(path.name)
            if not m or not is_output_path(prefix + m["target"]):
                continue
            if (int(m["pid"]) == os.getpid() or not _alive(int(m["pid"]))) and unlink_inside(out, prefix + path.name):
                removed.append(path)
    return removed


def temp_target(path):
    """The file an atomic-write temp file stands for (``.x.npz.12.ab12cd34.tmp`` -> ``x.npz``), else ``path``."""
    m = TEMP_PATTERN.match(Path(path).name)
    return Path(path).with_name(m["target"]) if m else Path(path)


# ------------------------------------------------------------------------------------------- deleting safely
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _parts(rel):
    """The components of a relative POSIX path that stays inside its folder, else None."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or (len(parts[0]) > 1 and parts[0][1] == ":"):
        return None
    return parts


def _open_folder_inside(out, parts):
    """A descriptor of OUT/parts[0]/..., each folder opened without following a link; None when one is a link,
    not a folder, or gone."""
    fd = os.open(out, os.O_RDONLY | _DIRECTORY)
    try:
        for part in parts:
            inner = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)  # ELOOP / ENOTDIR on a link
            os.close(fd)
            fd = inner
    except OSError:
        os.close(fd)
        return None
    return fd


def _safe_by_path(out, parts):
    """Where descriptors relative to a folder are not available (Windows): the same checks on paths."""
    path = Path(out)
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink() or not path.is_dir():
            return None
    path = path / parts[-1]
    try:
        inside = os.path.realpath(path.parent).startswith(os.path.realpath(out))
    except OSError:
        return None
    return path if inside and not path.is_symlink() else None


def unlink_inside(out, rel):
    """Delete the regular file OUT/rel, never through a link (a link, a folder or a FIFO there is left
    alone, as is a path that leaves OUT); returns whether a file was deleted."""
    return _remove_inside(out, rel, os.unlink, stat.S_ISREG, FileNotFoundError)


def rmdir_inside(out, rel):
    """Remove the folder OUT/rel when it is empty and no link; returns whether it was removed."""
    return _remove_inside(out, rel, os.rmdir, stat.S_ISDIR, OSError)  # OSError: not empty, the user's files stay


def _remove_inside(out, rel, remove, is_kind, tolerated):
    """``remove`` (os.unlink or os.rmdir) OUT/rel when the entry itself, never a link's target, passes
    ``is_kind``; ``tolerated`` errors mean "not removed" (False), others propagate."""
    parts = _parts(rel)
    if parts is None:
        return False
    if remove not in os.supports_dir_fd or not _NOFOLLOW:  # Windows: the same checks on paths
        path = _safe_by_path(out, parts)
        try:
            if path is None or not is_kind(os.lstat(path).st_mode):
                return False
            remove(path)
            return True
        except tolerated:
            return False
    fd = _open_folder_inside(out, parts[:-1])
    if fd is None:
        return False
    try:
        if not is_kind(os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode):
            return False
        remove(parts[-1], dir_fd=fd)
        return True
    except tolerated:
        return False
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- locking
def _acquire(out):
    path = out / LOCK_NAME
    while True:
        try:  # never through a link: the pid would be written into the file it points to
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        except OSError as e:
            if path.is_symlink():
                raise RunDirError(f"--out {out}: {LOCK_NAME} is a symbolic link, not a run's lock: remove it, or "
                                  "choose another --out") from None
            raise OSError(e.errno, e.strerror, str(out)) from None
        if not _is_a_lock(fd):
            os.close(fd)
            raise RunDirError(f"--out {out}: {LOCK_NAME} is not a run's lock (a run's holds its pid alone): move "
                              "it away, or choose another --out")
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


def _is_a_lock(fd):
    """A regular file holding nothing, or a pid and a newline (what _acquire writes): a file of the user's
    that happens to be called .lock is not truncated."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        content = os.pread(fd, 64, 0) if hasattr(os, "pread") else b""
    except OSError:
        return False
    return re.fullmatch(rb"(\d{1,20}\n)?", content) is not None


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
