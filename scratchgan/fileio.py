"""Atomic file writes: a new file replaces the old one whole, or not at all.

Checkpoints, config.json, plots, downloaded datasets and image-folder caches are all written the same
way: to a temporary file beside the target (a dot name, so globs like ``*.npz`` never see it), flushed
and fsynced, then renamed over the target with ``os.replace``, which is atomic within one file system.
A crash, a full disk or Ctrl-C at any moment leaves the old file or the new one, never half of one;
on any exception (KeyboardInterrupt included) the temporary file is removed.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def _fsync_dir(directory):
    """Make a rename inside ``directory`` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories are not openable, and rename is durable there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, durable=True, suffix=".tmp"):
    """Yield the path of a new, empty temporary file beside ``path``; when the block completes, the
    file is renamed over ``path`` (for writers that need a file name, e.g. ``np.lib.format.open_memmap``).

    Parent directories are created. The temporary name is ``.<name>.<pid>.<random><suffix>`` (``<name>`` without leading dots).
    ``durable`` adds the fsyncs (file, then directory) that survive power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory so os.replace is a rename, not a copy; a dot name keeps globs like *.npz clean.
    tmp = path.with_name(f".{path.name.lstrip('.')}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    # os.open with 0o666 (not mkstemp's 0o600) so the final file gets the usual umask permissions.
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
    except OSError as e:  # nothing was created (EEXIST: another writer's file, left alone)
        raise _naming(e, path) from None
    except BaseException:  # Ctrl-C / SIGTERM: Python runs the handler as os.open returns, the file just made
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, str(tmp)):
            raise _naming(e, path) from e  # a full disk names the file being written, not the temp file
        raise
    if durable:
        _fsync_dir(path.parent)


def _naming(error, path):
    """The same OSError (same errno, so the same subclass), naming ``path`` instead of a temp file."""
    return OSError(error.errno, error.strerror, str(path)) if error.errno is not None else error


@contextlib.contextmanager
def atomic_write(path, durable=True, suffix=".tmp"):
    """Yield a binary file object (readable too) whose content replaces ``path`` only if the block
    completes; see ``atomic_path``."""
    with atomic_path(path, durable, suffix) as tmp:
        with open(tmp, "r+b") as f:
            yield f
