"""Running the commands in a child process, as a user would: this checkout's package, an empty data cache."""
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


EXAMPLE = REPO / "examples" / "mnist_mlp.py"


def env_for(tmp):
    env = dict(os.environ)
    env["SCRATCHGAN_DATA"] = str(tmp / "empty-cache")
    env["PYTHONPATH"] = str(REPO)  # this checkout's package, not whichever one is installed
    return env


def launch(args, tmp, module=False):
    """Start ``python examples/mnist_mlp.py ARGS`` (or ``python -m scratchgan ARGS``) in ``tmp``."""
    cmd = [sys.executable, "-m", "scratchgan", *args] if module else [sys.executable, str(EXAMPLE), *args]
    return subprocess.Popen(cmd, cwd=tmp, env=env_for(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run(args, tmp, module=False):
    return finish(launch(args, tmp, module))


def call(main, argv, capsys):
    """(exit code, stderr lines) of an entry point run in this process, argparse's own exits included."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


def one_line(capsys):
    """The one line on stderr (no traceback) of what ran in this process."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, f"expected one line on stderr, got {err!r}"
    return lines[0]
