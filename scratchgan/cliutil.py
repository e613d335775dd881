"""What every command shares: one-line user errors, exit code 2, checked number flags, logging.

cli.py (train, sample) and evaluate_cli.py (evaluate) import this; nothing imports cli.py, so the
commands stay independent of each other and of the builders (models.py).
"""
from __future__ import annotations

import argparse
import errno
import sys

from .rundir import temp_target

EXIT_USAGE = 2


class UserError(Exception):
    """A mistake the user can fix; printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (plus a pointer to --help) and exits 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


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


def log(message):
    """One line to the terminal, above a progress bar if one is showing."""
    from tqdm.auto import tqdm
    tqdm.write(message)


def fail(prog, error):
    """Print ``error``'s first line as ``prog: error: ...`` on stderr; returns exit code 2."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


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
        advice = "free some space, then continue with --resume" if kept else "free some space and start again"
    if kept:
        return f"{line}; the last good checkpoint {kept} is intact: {advice}"
    return f"{line}; {advice}"
