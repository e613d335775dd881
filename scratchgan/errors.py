"""The package's two errors: a mistake the user can fix, and a setting the library cannot use.

``SettingError("ema", "must be in (0, 1), got 1.5")`` names the setting by its config key; a command line
that knows which flag sets that key says the flag instead (cli/train.py: ``--ema must be in (0, 1), got 1.5``).
"""
from __future__ import annotations


class SettingError(ValueError):
    """``setting`` (a config key, e.g. "label_smoothing") cannot be used: ``why``."""

    def __init__(self, setting, why):
        super().__init__(f"{setting} {why}")
        self.setting, self.why = setting, why


class UserError(Exception):
    """A mistake the user can fix (a flag, a file, a folder); every command prints it as one line and exits 2."""
