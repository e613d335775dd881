"""Packaging says what is true: the licence of the code and of the bundled data, dependency floors that CI
installs and tests (.ci/floors.txt), the CUDA extras that bring NVRTC, and the torch version the README gives."""
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def floors(requirements):
    """{name: version} of every ``name>=version`` requirement (an upper bound beside it is allowed)."""
    out = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)(\s*,\s*<\s*[0-9.]+)?", req)
        assert m, f"requirement {req!r} has no plain '>=' floor, so CI cannot test it"
        out[m.group(1).lower()] = m.group(3)
    return out


def test_license_file_names_mit_for_the_code_and_cc_by_sa_for_the_bundled_mnist():
    text = (ROOT / "LICENSE").read_text()
    assert "MIT License" in text and "Permission is hereby granted, free of charge" in text
    assert "CC BY-SA 3.0" in text and "https://creativecommons.org/licenses/by-sa/3.0/" in text
    assert "MNIST" in text and "LeCun" in text and "Cortes" in text
    bundled = sorted(p.name for p in (ROOT / "scratchgan/data/bundled").glob("*.gz"))
    assert bundled and all(name in text for name in bundled)


def test_license_is_an_spdx_expression_with_its_file(project):
    meta = project["project"]
    assert meta["license"] == "MIT AND CC-BY-SA-3.0"
    assert meta["license-files"] == ["LICENSE"]
    # setuptools >= 77 reads SPDX expressions and license-files, and refuses licence classifiers beside them
    assert any(re.fullmatch(r"setuptools\s*>=\s*(7[7-9]|[89][0-9]|[1-9][0-9]{2,})(\.[0-9]+)*", r)
               for r in project["build-system"]["requires"])
    assert not [c for c in meta["classifiers"] if c.startswith("License ::")]


def test_classifiers_name_python_3_and_the_tested_versions(project):
    classifiers = project["project"]["classifiers"]
    assert "Programming Language :: Python :: 3" in classifiers
    versions = [c.rsplit(" :: ", 1)[1] for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.[0-9]+", c)]
    floor = re.fullmatch(r">=\s*3\.([0-9]+)", project["project"]["requires-python"]).group(1)
    assert versions and all(int(v.split(".")[1]) >= int(floor) for v in versions)
    assert all(c.count(" :: ") >= 1 for c in classifiers)


def test_parity_extra_pins_the_torch_that_readme_and_ci_install(project):
    readme = (ROOT / "README.md").read_text()
    pinned = set(re.findall(r"pip install torch==([0-9][0-9.]*[0-9])", readme))
    assert len(pinned) == 1, f"README.md names torch versions {pinned or 'none'}"
    version = pinned.pop()
    assert project["project"]["optional-dependencies"]["parity"] == [f"torch=={version}"]
    assert f"pip install -q torch=={version}" in (ROOT / ".ci/run").read_text()


def test_ci_floor_pins_are_exactly_the_declared_floors(project):
    meta = project["project"]
    declared = floors(meta["dependencies"] + meta["optional-dependencies"]["dev"])
    pins = {}
    for line in (ROOT / ".ci/floors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    assert pins == declared
    run = (ROOT / ".ci/run").read_text()
    assert "pip install -q -r .ci/floors.txt" in run and "pip install -q --no-deps -e ." in run
    assert re.search(r"\. \.ci-floor-venv/bin/activate && eval \"\$test_command\"", run)
    assert ".ci-floor-venv/" in (ROOT / ".gitignore").read_text()


def test_floors_cover_the_apis_the_code_uses(project):
    """Image.Resampling / Image.Transpose exist from Pillow 9.1; the bare constants (Image.BICUBIC) are the
    deprecated spelling of 9.1-9.3. (NumPy's floor is tested by CI's run on .ci/floors.txt.)"""
    declared = floors(project["project"]["dependencies"])
    pillow = tuple(int(x) for x in declared["pillow"].split("."))
    sources = {p: p.read_text() for p in sorted(ROOT.glob("scratchgan/**/*.py")) + sorted(ROOT.glob("examples/*.py"))}
    old_constants = re.compile(r"\bImage\.(NEAREST|BOX|BILINEAR|HAMMING|BICUBIC|LANCZOS|ANTIALIAS|FLIP_\w+|"
                               r"ROTATE_\w+|TRANSPOSE|TRANSVERSE)\b")
    assert not [f"{p.relative_to(ROOT)}: {m.group(0)}" for p, s in sources.items() for m in old_constants.finditer(s)]
    if any(re.search(r"\bImage\.(Resampling|Transpose)\b", s) for s in sources.values()):
        assert pillow >= (9, 1)


def test_cuda_extras_bring_nvrtc_and_the_numpy_cupy_needs(project):
    extras = project["project"]["optional-dependencies"]
    for cuda in ("12", "13"):
        assert extras[f"cuda{cuda}"] == [f"cupy-cuda{cuda}x[ctk]>=14", "numpy>=2.0,<2.6"]
    numpy = [r for r in project["project"]["dependencies"] if r.startswith("numpy")]
    assert numpy == ["numpy>=1.24"], "only the CUDA extras cap NumPy (CuPy 14 needs <2.6); CPU users keep 1.24+"
    backend = (ROOT / "scratchgan/backend.py").read_text()
    for extra in set(re.findall(r"scratchgan\[(\w+)\]", backend)):
        assert extra in extras
