"""The run's logs besides metrics.csv: ``metrics.jsonl`` (always) and TensorBoard event files (``--tensorboard DIR``).

    metrics.jsonl   one JSON object per logged step, the same keys and values as the metrics.csv row
                    ({"step": 10, "epoch": 1, "loss_D": 1.38, ...}); resumable like the CSV: a resumed run
                    first drops the lines after its checkpoint's step, and a line cut off by a crash
    TensorBoard     every metrics.csv value as a scalar (tag = the column name, at its step), and every
                    sample grid the run saves as an image (tag "samples"), written with tensorboardX, a small
                    writer that needs neither TensorFlow nor torch: ``pip install "scratchgan[tensorboard]"``
                    (which brings the ``tensorboard`` viewer too); each run has an event folder of its own
                    (``event_folder``): OUT/tb, or DIR/OUTNAME-RUNID under a --tensorboard DIR

``tensorboard_available()`` is what the CLI asks before a run starts, so a missing extra is a one-line
error, not a failure after the first epoch.
"""
from __future__ import annotations

import importlib.util
import json
import math
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

JSONL_NAME = "metrics.jsonl"
CONSOLE_NAME = "log.txt"
INSTALL_HINT = 'pip install "scratchgan[tensorboard]"'


GIT_TIMEOUT_S = 3  # `git rev-parse HEAD` beyond this: no commit recorded, the run goes on


def provenance(command=None):
    """Where and how a run (or a resume) started, for config.json: the scratchgan version, the command line
    (``command``: its words, else sys.argv), the git commit when scratchgan runs from a checkout, the start time
    (UTC), the host, and the Python, NumPy and CuPy versions (CuPy's only when it is loaded). Never fails."""
    from .. import __version__
    words = list(sys.argv if command is None else command)
    cupy = sys.modules.get("cupy")  # never imported here: only a run on --backend cupy has loaded it
    return {"scratchgan": __version__, "command": shlex.join(str(w) for w in words), "git_commit": git_commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node() or None,
            "python": platform.python_version(), "numpy": np.__version__,
            "cupy": getattr(cupy, "__version__", None) if cupy is not None else None}


def git_commit(root=None):
    """The commit of the checkout scratchgan runs from (its HEAD, with "+dirty" when files differ from it), or
    None: an installed package, no git, a timeout, anything else."""
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)
    if not (root / ".git").exists():  # a folder (a clone) or a file (a worktree)
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def changed_settings(before, after, ignore=("resume",)):
    """{key: [before, after]} of the settings a resume changed (JSON values compared as config.json holds them)."""
    norm = lambda v: json.loads(json.dumps(v))  # noqa: E731  (tuples as lists, as in the checkpoint)
    keys = [k for k in sorted(set(before) | set(after)) if k not in ignore]
    return {k: [before.get(k), after.get(k)] for k in keys if norm(before.get(k)) != norm(after.get(k))}


class LogError(ValueError):
    """metrics.jsonl holds a line that is not a logged step; the message names the file and the line."""


def tensorboard_available():
    """True when tensorboardX can be imported (without importing it)."""
    return importlib.util.find_spec("tensorboardX") is not None


def _json_value(value):
    """A finite float as itself; NaN/Inf as null (JSON has no NaN); ints and text unchanged."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    value = float(value)
    return value if math.isfinite(value) else None


class MetricsJSONL:
    """Append-only ``metrics.jsonl``: one object per ``append(row)``, flushed at once."""

    def __init__(self, path):
        self.path = Path(path)
        self._file = None
        if self.path.exists() and self.path.stat().st_size > 0:
            raw = self.path.read_bytes()
            if not raw.endswith(b"\n"):  # the last line was cut off by a crash mid-write: drop it
                with open(self.path, "r+b") as f:
                    f.truncate(raw.rfind(b"\n") + 1)

    def append(self, row):
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")
        self._file.flush()

    def rows(self):
        """(line, row) of every line logged so far; reads only. LogError, naming the file and the line, for a
        line that is not a JSON object with a numeric step (a damaged disk, an edit by hand)."""
        if not self.path.exists():
            return []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        except UnicodeDecodeError as e:
            raise LogError(f"{self.path}: not UTF-8 text (byte {e.start}); the run's log is damaged: repair or "
                           "delete it, then resume") from None
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:  # json.JSONDecodeError
                reason = f"not JSON: {e.msg}"
            else:
                step = row.get("step", 0) if isinstance(row, dict) else None
                if isinstance(step, (int, float)) and not isinstance(step, bool):
                    rows.append((line, row))
                    continue
                reason = "not a logged step (a JSON object with a numeric \"step\")"
            raise LogError(f"{self.path}, line {number}: {reason}; the run's log is damaged: repair or delete that "
                           "line, then resume")
        return rows

    def truncate_after(self, step):
        """Forget the lines logged after ``step`` (a resumed run continues from there)."""
        self.close()
        if not self.path.exists():
            return
        raw = self.path.read_text(encoding="utf-8")
        kept = [line for line, row in self.rows() if row.get("step", 0) <= step]
        if "".join(kept) != raw:
            with atomic_write(self.path) as f:  # the whole log or the old one, whatever happens meanwhile
                f.write("".join(kept).encode("utf-8"))

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


TB_FOLDER = "tb"  # --tensorboard with no folder: OUT/tb


def event_folder(tensorboard, out, run_id=None):
    """The run's own TensorBoard event folder: OUT/tb for ``tensorboard`` "" (the flag alone) or a folder inside
    OUT; else a folder of this run under that one, named after OUT and the run id, so that two runs never
    write into one event folder (TensorBoard would draw them as one run)."""
    out = Path(out)
    if tensorboard == "":
        return out / TB_FOLDER
    tensorboard = Path(tensorboard)
    try:
        if tensorboard.resolve().is_relative_to(out.resolve()):
            return tensorboard
    except OSError:
        pass
    return tensorboard / (out.resolve().name + (f"-{run_id[:8]}" if run_id else ""))


class TensorBoardLog:
    """Scalars and sample grids into TensorBoard event files under ``logdir`` (tensorboardX's SummaryWriter)."""

    def __init__(self, logdir):
        from tensorboardX import SummaryWriter  # the optional extra: only here, only when asked for
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(logdir=str(self.logdir))

    @property
    def event_file(self):
        """The event file the writer made (None where this tensorboardX does not say)."""
        writer = getattr(self.writer._get_file_writer().event_writer, "_ev_writer", None)
        return Path(writer._file_name) if getattr(writer, "_file_name", None) else None

    def scalars(self, row):
        step = int(row["step"])
        for key, value in row.items():
            if key in ("step", "epoch") or value is None:
                continue
            value = float(value)
            if math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def image(self, tag, png_path, step):
        """The grid PNG the run just wrote, as TensorBoard shows it: (H, W, 3) uint8."""
        from PIL import Image
        with Image.open(png_path) as im:
            grid = np.asarray(im.convert("RGB"))
        self.writer.add_image(tag, grid, int(step), dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


class RunLog:
    """What the trainer calls: ``append(row)`` at each logged step, ``image(path, step)`` for each sample grid."""

    def __init__(self, out, tensorboard=None):
        self.jsonl = MetricsJSONL(Path(out) / JSONL_NAME)
        self.tensorboard = TensorBoardLog(tensorboard) if tensorboard else None

    def append(self, row):
        self.jsonl.append(row)
        if self.tensorboard is not None:
            self.tensorboard.scalars(row)

    def image(self, png_path, step):
        if self.tensorboard is not None:
            self.tensorboard.image("samples", png_path, step)

    def close(self):
        self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class ConsoleLog:
    """Everything a command prints (stdout and stderr) also goes, line by line, into the run folder's log.txt:
    ``start()`` tees both streams and keeps the lines until ``attach(path)`` names the file (once the run holds
    its folder), ``stop()`` puts the streams back. A progress bar's redraws (``\\r``) keep only their last state."""

    def __init__(self):
        self.lines, self.file, self._partial, self._streams = [], None, "", None

    def start(self):
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self), _Tee(sys.stderr, self)
        return self

    def attach(self, path):
        """From now on into ``path`` (appended: a resumed run's log goes on), the lines so far first."""
        if self.file is None:
            self.file = open(path, "a", encoding="utf-8")
            self.file.write("".join(self.lines))
            self.file.flush()
            self.lines = []

    def write(self, text):
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self._emit(line.rsplit("\r", 1)[-1] + "\n")

    def _emit(self, line):
        if self.file is None:
            self.lines.append(line)
        else:
            self.file.write(line)
            self.file.flush()

    def stop(self):
        if self._streams is not None:
            if isinstance(sys.stdout, _Tee) and sys.stdout.console is self:
                sys.stdout = self._streams[0]
            if isinstance(sys.stderr, _Tee) and sys.stderr.console is self:
                sys.stderr = self._streams[1]
            self._streams = None
        if self._partial.rsplit("\r", 1)[-1]:
            self._emit(self._partial.rsplit("\r", 1)[-1] + "\n")
        self._partial = ""
        if self.file is not None:
            self.file.close()
            self.file = None


class _Tee:
    """A text stream that writes to ``stream`` and to a ConsoleLog; everything else is the stream's."""

    def __init__(self, stream, console):
        self.stream, self.console = stream, console

    def write(self, text):
        written = self.stream.write(text)
        try:
            self.console.write(text)
        except (OSError, ValueError):  # a full disk for log.txt: the terminal still gets it
            pass
        return written

    def __getattr__(self, name):  # flush, isatty, fileno, encoding, ...
        return getattr(self.stream, name)
