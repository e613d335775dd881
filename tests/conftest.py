"""Shared fixtures: the optional PyTorch import, the backend parametrisation, the fake device.

- ``torch``: PyTorch, or a clean skip with the install command where it is absent.
- ``backend``: runs a test once per backend name, "numpy" and "cupy"; cupy is skipped with a
  reason unless CuPy imports and a GPU is visible (``scratchgan.backend.cupy_available()``).
  Use it as a fixture argument: ``def test_x(backend): xp = get_xp(backend)``.
- ``fake_xp``: the guarded stand-in device module (tests/support/fake_device.py).
At the end of a session the worst-error tables recorded by the gradient-check, parity and
directional tests are printed: the worst per layer, or every layer/quantity/mode with -s or -v
(tests/support/layer_cases.py: ``record_error``).
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))  # the helper modules (tests/support/)

import datasets  # noqa: E402
import layer_cases  # noqa: E402
from layer_cases import import_torch, skip_unless_cupy  # noqa: E402


def pytest_sessionstart(session):
    """Under CI=true the real datasets must be there: one clear line instead of a green run of skips."""
    if datasets.in_ci():
        problems = [m for m in map(datasets.missing, datasets.FILES) if m]
        if problems:
            pytest.exit("; ".join(problems), returncode=1)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, or a skip that says `pip install torch==2.13.0`."""
    return import_torch()


BACKEND_NAMES = ("numpy", "cupy")
BACKEND_PARAMS = [pytest.param(name, id=name) for name in BACKEND_NAMES]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """A backend name, once per backend; "cupy" skips with a reason where it cannot run."""
    if request.param == "cupy":
        skip_unless_cupy()
    return request.param


@pytest.fixture
def fake_xp():
    from fake_device import xp
    return xp


def pytest_terminal_summary(terminalreporter, config):
    """The worst errors per layer (every layer/quantity/mode with -s or -v), for quoting."""
    full = config.getoption("verbose") > 0 or config.getoption("capture") == "no"
    for table in layer_cases.REPORT:
        terminalreporter.write_sep("-", table.split(":")[0])
        terminalreporter.write_line(layer_cases.format_report(table, full=full))
