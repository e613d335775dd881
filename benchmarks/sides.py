"""What the side-by-side benchmark scripts share: each side in a fresh process, and the checks before any runs.

    from sides import backend_error, run_side, torch_version   # the scripts' own folder is on sys.path
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_side(script, side, argv, threads=None):
    """``python script --worker side *argv`` in a fresh process with this checkout's scratchgan first on the path
    and ``threads`` for every thread pool (BLAS reads its count at import: it must be set for the child); the
    JSON of the worker's last line. A failed worker ends the run with its stderr."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(script), "--worker", side, *argv]
    if threads:
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{os.path.basename(script)}: the {side} worker failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def backend_error(backend):
    """None when ``backend`` can run here, else the one-line reason (CuPy missing, no GPU): checked before any
    worker starts."""
    if backend != "cupy":
        return None
    from scratchgan.backend import BackendError, get_xp
    try:
        get_xp("cupy")
    except BackendError as e:
        return str(e)
    return None


def torch_version():
    """PyTorch's version without importing it here (the workers import it), or None."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
