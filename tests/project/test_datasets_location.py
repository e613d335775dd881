"""The tests find the real data relative to the repository, skip with what to fetch when it is
missing, and fail instead of skipping under CI=true (tests/support/datasets.py)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import datasets

TESTS = Path(__file__).resolve().parents[1]  # tests/


def test_found_relative_to_the_repository():
    if "SCRATCHGAN_TEST_DATASETS" not in os.environ:
        assert datasets.ROOT.resolve() == (TESTS.parent.parent / "shared" / "datasets").resolve()


def test_no_test_names_an_absolute_machine_path():
    pattern = re.compile(r"""["'](/work/|/home/|/root/|/Users/|[A-Z]:\\\\)""")
    offenders = [f"{p.name}:{i}" for p in TESTS.rglob("*.py") if p.name != Path(__file__).name
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"absolute paths in tests: {offenders}"


def test_missing_data_skips_with_what_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "ROOT", tmp_path / "nowhere")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"missing data: .*t10k-images-idx3-ubyte\.gz"):
        datasets.dataset_dir("fashion-mnist")


def test_missing_data_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "ROOT", tmp_path / "nowhere")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing data"):
        datasets.dataset_dir("mnist")


def test_ci_run_without_the_data_stops_with_one_clear_line(tmp_path):
    """A whole pytest session under CI=true with no data folder ends at once, naming what is missing."""
    env = {**os.environ, "CI": "true", "SCRATCHGAN_TEST_DATASETS": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{Path(__file__)}::test_found_relative_to_the_repository"],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "missing data" in proc.stdout + proc.stderr
