"""``scratchgan.train(config, callbacks=...)``: a training run from Python, by the steps of `scratchgan train`.

    folder, last = scratchgan.train({"dataset": "mnist-bundled", "epochs": 2, "out": "runs/mine"},
                                    callbacks=[lambda row: print(row["step"], row["loss_D"])])

``config`` holds the flags' keys (flags.FLAGS: ``batch_size`` for --batch-size, ``resolution`` for --image-size,
``batchnorm=False`` for --no-batchnorm); each value is checked by its flag's own check and turned into that
flag, and the command line's parser, config resolution, checks, run folder, manifest and Trainer do the rest,
as for `scratchgan train` (cli/train.py's ``_train``): there is no second training loop. It lives in cli/
because it runs the command line's steps; nothing below cli/ imports it (tests/project/test_layout.py), and
``scratchgan.train`` loads it on first use only.

Where the command prints one line and exits 2, this raises: SettingError (``.setting``: the key) for a key or
value the flag table refuses, UserError / DataError / CheckpointError / RunDirError for the rest, with the
command's words. A callback receives a copy of each logged metrics row (the metrics.csv row: step, epoch,
loss_D, ...); one that returns True stops the run after that step, with its checkpoint saved (resumable with
``"resume": True``), and ``train`` returns normally.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from .. import fast
from ..errors import SettingError
from ..run import runlog
from ..run.trainer import TrainingStopped
from . import flags, train_options
from . import train as train_command
from .common import UserError
from .common import log as _log

PROG = "scratchgan.train"
SETTINGS = tuple(f.key for f in flags.FLAGS if f.action != "version")


def train(config, callbacks=(), log=_log):
    """Train as `scratchgan train` with the flags ``config`` names; returns (the run's folder, its last metrics row
    or None). ``callbacks``: functions of a metrics row, called at every logged step (return True to stop);
    ``log``: a function for the run's lines (the command line's printer by default)."""
    callbacks = (callbacks,) if callable(callbacks) else tuple(callbacks)  # one function, or several
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks: {callback!r} is not a function of a metrics row")
    argv = to_argv(config)
    defaults = flags.defaults(train_options.arch_of(argv), both=True)
    args = _parse(argv, defaults, suppress=False)
    explicit = vars(_parse(argv, defaults, suppress=True))
    run = train_command._Run(PROG, args, explicit, defaults, both=True, log=log, callbacks=callbacks)
    train_command._apply_config_file(run, None, {})  # as the command does without --config: no file's settings
    run.console = runlog.ConsoleLog().start()  # what the run prints, also into its log.txt, as for the command
    try:
        with fast.disabled() if args.reference else contextlib.nullcontext():  # --reference, for this run only
            train_command._train(run)
    except TrainingStopped as e:
        log(f"{e}; to go on, train again with \"resume\": True")
    finally:
        run.console.stop()
        if run.dry_folder is not None:  # a dry run that stopped before training: its empty folder goes
            with contextlib.suppress(OSError):
                os.rmdir(run.dry_folder)
    folder = Path(run.config["out"])
    rows = runlog.MetricsJSONL(folder / runlog.JSONL_NAME).rows()
    return folder, rows[-1][1] if rows else None


def to_argv(config):
    """The `scratchgan train` flags of ``config`` ({key: value}); SettingError for a key that is no flag's or a
    value its flag refuses. None leaves a setting at its default."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of settings (the flags' keys), got {type(config).__name__}")
    argv = []
    for key, value in config.items():
        flag = flags.BY_KEY.get(key)
        if flag is None or flag.action == "version":
            raise SettingError(key, "is not a setting of scratchgan.train; the settings are the keys of "
                                    f"`scratchgan train`'s flags: {', '.join(SETTINGS)}")
        if value is not None:
            argv += _flag_args(flag, value)
    return argv


def _flag_args(flag, value):
    """The command-line words that set ``flag`` to ``value``, checked by the flag's own type and choices."""
    if flag.action in ("store_true", "store_false"):
        if not isinstance(value, bool):
            raise SettingError(flag.key, f"is True or False, got {value!r}")
        if value == (flag.action == "store_true"):
            return [flag.flag]
        return [flag.negation[0]] if flag.negation else []
    if flag.key == "resume":  # True: the run folder's checkpoint.npz, as a bare --resume
        if value is True:
            return [flag.flag]
        if value is False:
            return []
    if isinstance(value, bool):
        raise SettingError(flag.key, f"takes a value, not {value!r}")
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else os.fspath(value) \
        if isinstance(value, os.PathLike) else str(value)
    checked = text
    if flag.type is not None:
        try:
            checked = flag.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise SettingError(flag.key, str(e)) from None
    choices = tuple(flag.choices or ()) + tuple(flag.dcgan_choices)
    if choices and checked not in choices:
        raise SettingError(flag.key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
    return [f"{flag.flag}={text}"]  # one word: a value that starts with '-' stays a value


def _parse(argv, defaults, suppress):
    """`scratchgan train`'s own parser on ``argv`` (``suppress``: the settings given, without defaults)."""
    parser = train_command.make_train_parser(PROG, train_command.TRAIN_DESCRIPTION, defaults, suppress=suppress, both=True)
    try:
        return parser.parse_args(argv)
    except SystemExit:  # to_argv checked every value; argparse has said what else it refuses
        raise UserError(f"the settings do not parse as `scratchgan train`'s flags: {' '.join(argv)}") from None
