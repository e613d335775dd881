"""`--config FILE`: the train command's settings from a JSON (or, with the ``[yaml]`` extra, YAML) file whose keys
are the flags' config keys (flags.FLAGS: ``batch_size``, ``lr``, ``g_hidden``, ...), a run's own ``config.json``
included, so that "train it again like that one" is one command. Flags given on the command line win.

- A run's ``config.json`` (it records ``image_shape`` and ``num_images``) also holds what the run recorded
  about itself (the data's shape, the environment, the best distance, ...): those keys are not settings and
  are ignored. In a file written by hand, a key that is no flag's is refused.
- The places a run writes or deletes (``out``, ``resume``, ``overwrite``, ``tensorboard``) come from the
  command line only, as for a checkpoint: a file's values for them are ignored, and one line says so.
- Every value is checked as its flag checks it (type, range, choices); a bad one is refused in one line that
  names the file and the key.
"""
from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

from . import flags
from .common import Parser, UserError

PLACES = ("out", "name", "resume", "overwrite", "tensorboard")  # where a run writes: the command line's alone
RECORD_MARKS = ("image_shape", "num_images")  # a run's config.json: what its data made of the config
YAML_HINT = 'pip install "scratchgan[yaml]"'


def path_of(argv):
    """The ``--config FILE`` of a command line (None without it)."""
    pre = Parser(prog="", add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    return known.config


def read(path):
    """The file's top-level mapping (JSON; YAML for .yaml/.yml); UserError in one line for what cannot be."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if file.suffix.lower() in (".yaml", ".yml"):
        data = _yaml(text, path)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"--config {path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected an object of settings (key: value), got {type(data).__name__}")
    return data


def _yaml(text, path):
    try:
        import yaml
    except ImportError:
        raise UserError(f"--config {path}: YAML needs pyyaml, which is not installed: {YAML_HINT} "
                        "(or write the file as JSON)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None


def settings(data, path, arch, fixed_arch=None):
    """The checked settings of ``data`` (read from ``path``) for ``arch``: {key: value}, and the keys of the
    places it held (ignored). ``fixed_arch``: the example's own architecture, which a file cannot change."""
    record = all(key in data for key in RECORD_MARKS)
    if data.get("dry_run_of") is not None:
        raise UserError(f"--config {path}: the config.json of a --dry-run (random images, 1 epoch); use the "
                        "real run's config, or give the flags")
    keys = flags.defaults(arch, both=True)
    other = {key for key in flags.arch_only()["dcgan" if arch == "mlp" else "mlp"]}
    values, places = {}, []
    for key, value in data.items():
        if key not in keys:
            if record:  # what the run recorded about itself: not a setting
                continue
            raise UserError(f"--config {path}: unknown key {key!r}{_close(key, keys)}; the keys are the train "
                            "flags' names with underscores (batch_size for --batch-size)")
        if key in PLACES:
            if value not in (None, False, ""):
                places.append(key)
            continue
        if key in other and not record:
            raise UserError(f"--config {path}: {key} is a setting of --arch {flags.BY_KEY[key].arch[0]}; this run "
                            f"is --arch {arch}")
        if key in other:  # (a record holds its own architecture's keys only)
            continue
        values[key] = check(flags.BY_KEY[key], value, path)
    if fixed_arch is not None and values.pop("arch", fixed_arch) != fixed_arch:
        raise UserError(f"--config {path}: arch is {data['arch']}, and this program trains --arch {fixed_arch}; "
                        "use `scratchgan train --config` instead")
    return values, places


def _close(key, keys):
    near = difflib.get_close_matches(key, list(keys), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def check(flag, value, path):
    """``value`` as ``flag`` would give it after parsing, checked as the flag checks its text."""
    where = f"--config {path}: {flag.key}"
    if value is None:
        if None in (flag.default_for(a) for a in flags.ARCHES):
            return None
        raise UserError(f"{where}: null is not a value of {flag.flag}")
    if flag.action in ("store_true", "store_false"):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(value, (bool, list, dict)):
        raise UserError(f"{where}: expected a value as {flag.flag} takes it, got {json.dumps(value)}")
    text = value if isinstance(value, str) else repr(value)
    try:
        converted = flag.type(text) if flag.type is not None else text
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None
    choices = (flag.choices or ()) + flag.dcgan_choices
    if flag.choices is not None and converted not in choices:
        raise UserError(f"{where}: {converted!r} is not one of {', '.join(map(str, choices))}")
    return converted
