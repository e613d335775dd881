"""The top-level `scratchgan --help` (argparse sub-commands: the program's own name, aligned columns) and
`--version` on every command, before any required flag is asked for."""
from __future__ import annotations

import re
import subprocess
import sys

from commands import env_for

from scratchgan import __version__
from scratchgan.cli.main import COMMANDS

LAUNCHER = "import sys\nfrom scratchgan.__main__ import main\nsys.exit(main())\n"  # what pip's console script runs


def _run(cmd, tmp_path):
    proc = subprocess.run(cmd, cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_the_help_names_the_program_as_it_was_started_and_lists_every_command(tmp_path):
    (tmp_path / "scratchgan").write_text(LAUNCHER)  # the installed command: sys.argv[0] ends in scratchgan
    for cmd, prog in (([sys.executable, "-m", "scratchgan"], "python -m scratchgan"),
                      ([sys.executable, str(tmp_path / "scratchgan")], "scratchgan")):
        code, out, err = _run([*cmd, "--help"], tmp_path)
        assert (code, err) == (0, ""), err
        lines = out.splitlines()
        assert lines[0] == f"usage: {prog} [-h] [--version] COMMAND ...", lines[0]
        rows = {m.group(1): m.start(2) for m in (re.match(r"    (\w+) +(\S)", line) for line in lines) if m}
        assert list(rows) == list(COMMANDS), rows  # every command, in order
        assert len(set(rows.values())) == 1, rows  # their lines start in one column
        for name, (_, _, line) in COMMANDS.items():  # each with its own line
            assert re.search(rf"^    {name} +{re.escape(' '.join(line.split()[:3]))}", out, flags=re.M), name
        assert f"Run `{prog} COMMAND --help` for a command's flags." in out


def test_a_bad_command_is_the_usage_and_one_line(tmp_path):
    (tmp_path / "scratchgan").write_text(LAUNCHER)
    code, out, err = _run([sys.executable, str(tmp_path / "scratchgan"), "bogus"], tmp_path)
    assert (code, out) == (2, "")
    assert err == ("usage: scratchgan [-h] [--version] COMMAND ...\nscratchgan: error: unknown command 'bogus'; choose "
                   "one of: train, sample, evaluate, evaluator, export, interpolate\n"), err


def test_every_command_prints_its_version_before_asking_for_its_flags(tmp_path):
    """`scratchgan sample --version` printed "--checkpoint is required"."""
    for args in (["--version"], ["-V"], *([name, "--version"] for name in COMMANDS)):
        code, out, err = _run([sys.executable, "-m", "scratchgan", *args], tmp_path)
        assert (code, out, err) == (0, f"scratchgan {__version__}\n", ""), args
    assert not [p for p in tmp_path.iterdir() if p.name != "empty-cache"]  # nothing written
