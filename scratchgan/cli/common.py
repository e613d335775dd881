"""What every command shares: one-line user errors, exit code 2, checked number flags, logging, signals
and output to a reader that has gone.

- Ctrl-C and SIGTERM: ``run_command(prog, work)`` makes SIGTERM stop the work as Ctrl-C does and ends
  either in one line on stderr, ``prog: interrupted by SIGTERM; <what the command leaves>``, and exit
  code 143 (130 for Ctrl-C), as a shell reports them. A command says what it leaves behind by raising
  ``interruption(e, note)``. `train` saves a checkpoint first (trainer.py), with the same two pieces.
- A closed stdout (``scratchgan -h | head -1``, ``... | true``): ``say`` and ``log`` send the rest of the
  output to the null device and the work goes on; the process entry point (``finish_output``) flushes
  stdout where its failure can be handled. No ``BrokenPipeError`` traceback, ever.

Every command module of cli/ imports this; nothing outside cli/ imports cli/ (tests/project/test_layout.py), so the
library never depends on the command line.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys

from ..errors import UserError  # every command prints it as one line (fail) and exits 2
from ..run.rundir import temp_target

EXIT_USAGE = 2




class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (plus a pointer to --help) and exits 2, and whose
    --help stops quietly when its reader has gone (``--help | head -1``)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def _print_message(self, message, file=None):
        if message:
            say(message, file=file or sys.stderr, end="")


def with_version(parser):
    """``parser`` with ``--version``, which prints the version and exits 0 before any required flag is asked for."""
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"scratchgan {__version__}",
                        help="print the version and exit")
    return parser


def number_type(convert, expected, valid, rule):
    """An argparse ``type``: ``convert`` the text, then check ``valid(value)``; both failures say why."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):  # NaN fails every comparison, so it is refused too
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return parse


INF = float("inf")
positive_int = number_type(int, "a positive integer", lambda v: v > 0, "a positive integer")
non_negative_int = number_type(int, "a non-negative integer", lambda v: v >= 0, "0 or more")
positive_float = number_type(float, "a number", lambda v: 0 < v < INF, "a positive number")
non_negative_float = number_type(float, "a number", lambda v: 0 <= v < INF, "0 or more")


def unit_interval(low_open=False, high_open=True):
    rule = f"in {'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    return number_type(float, "a number", lambda v: (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1),
                       rule)


def check_new_files(paths, flag, overwrite, ours=()):
    """UserError when a file of ``paths`` (the outputs of ``flag``) exists and may not be replaced: users'
    files are replaced only with --overwrite (``overwrite``), or where ``ours`` (the paths, as text, that an
    interrupted run of the same command recorded writing) lists them. A folder is never replaced, and a
    symlink is replaced itself (os.replace), never the file it points to."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            raise UserError(f"{flag} {path} is a folder; choose another {flag}")
        if (path.exists() or path.is_symlink()) and not overwrite and str(path) not in ours:
            others = " and ".join(str(p) for p in paths)
            raise UserError(f"{flag}: {path} exists; add --overwrite to replace {others}, or choose another {flag}")
    for path in paths:
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"{flag} {path} lies under {parent}, which is a file; choose another {flag}")
                break


def log(message):
    """One line to the terminal, above a progress bar if one is showing (dropped once stdout's reader has gone)."""
    from tqdm.auto import tqdm
    try:
        tqdm.write(message)
    except BrokenPipeError:
        _to_null_device(sys.stdout)


def say(text, file=None, end="\n"):
    """print(text) to ``file`` (stdout by default); once the reader of a pipe has gone (``| head -1``),
    the rest of that stream's output goes to the null device instead of raising BrokenPipeError."""
    stream = sys.stdout if file is None else file
    try:
        print(text, file=stream, end=end)
        if stream is sys.stderr:
            stream.flush()
    except BrokenPipeError:
        _to_null_device(stream)


def _to_null_device(stream):
    """Point ``stream``'s file descriptor at the null device: its reader has gone, and the output still
    buffered (or written later) must not fail again, at exit least of all."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing to redirect
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


EXIT_CLOSED_PIPE = 128 + getattr(signal, "SIGPIPE", 13)  # 141: what a shell reports for a writer whose reader went


def finish_output(main, argv):
    """``main(argv)``'s exit code, with stdout flushed here, where a closed pipe can be handled: the
    process entry point's wrapper. argparse's exits (--help, a usage error) return their code."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    except BrokenPipeError:  # a write to stdout outside say/log stopped the work: as a writer killed by SIGPIPE
        _to_null_device(sys.stdout)
        code = EXIT_CLOSED_PIPE
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the output was written into a pipe whose reader has gone; the work is done
        _to_null_device(sys.stdout)
    return code


def fail(prog, error):
    """Print ``error``'s first line as ``prog: error: ...`` on stderr; returns exit code 2."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    say(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------------------------- Ctrl-C and SIGTERM
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + getattr(signal, "SIGTERM", 15)  # 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, schedulers, containers): stops the work as Ctrl-C does."""


def stop_on_sigterm():
    """Make SIGTERM raise Terminated; returns the previous handler (None where it cannot be set)."""
    def handler(signum, frame):
        raise Terminated()
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, AttributeError):  # not the main thread, or no SIGTERM here
        return None


def interruption(error, note):
    """The same kind of interruption as ``error`` (Ctrl-C or SIGTERM), saying ``note``: what the
    interrupted command leaves behind and what to do (raise it ``from None``)."""
    return type(error)(note)


def signal_name(error):
    return "SIGTERM" if isinstance(error, Terminated) else "Ctrl-C"


def interrupted(prog, error):
    """The one line of an interrupted command (``error``'s note, if it has one); returns 130 or 143."""
    note = str(error)
    say(f"{prog}: interrupted by {signal_name(error)}" + (f"; {note}" if note else ""), file=sys.stderr)
    return EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED


@contextlib.contextmanager
def _signals_ignored():
    """Ctrl-C and SIGTERM ignored inside the block, their handlers as before afterwards."""
    saved = {}
    for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        try:
            saved[signum] = signal.signal(signum, signal.SIG_IGN)
        except (ValueError, TypeError, AttributeError):  # not the main thread, or no such signal here
            pass
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, handler)


def run_command(prog, work):
    """``work()``'s exit code, with the signal promise of every command: Ctrl-C or SIGTERM at any moment
    ends in one line on stderr and exit code 130 / 143, never a traceback. The SIGTERM handler is the
    previous one again afterwards."""
    previous = stop_on_sigterm()
    try:
        return work()
    except KeyboardInterrupt as e:  # Terminated too
        with _signals_ignored():  # a second signal must not cut the line short
            return interrupted(prog, e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def os_error_message(error, trainer=None, verb="cannot write", advice="choose another --out"):
    """One line for a file-system error: which file (never a temp file), why, what to do, and the
    last good checkpoint when a run has one."""
    if error.errno is None or not error.strerror:
        return str(error)
    path = temp_target(error.filename) if error.filename else None
    where = f" in {trainer.out}/" if trainer is not None else ""
    line = f"{verb} {path}: {error.strerror}" if path else f"a write{where} failed: {error.strerror}"
    kept = trainer.last_good if trainer is not None else None
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        advice = (f"free some space, then continue with --resume {trainer.checkpoint_path}" if kept
                  else "free some space and start again")
    if kept:
        return f"{line}; the last good checkpoint {kept} is intact: {advice}"
    return f"{line}; {advice}"
