"""Where things live (issue 15): the builders in models.py, every objective in objectives.py, and no
module of the package imports the command line (cli.py), so the commands depend on the library,
never the other way round."""
from __future__ import annotations

import ast
from pathlib import Path

from scratchgan.gan import models, objectives

PACKAGE = Path(__file__).resolve().parents[1] / "scratchgan"


def imported_modules(path):
    """Absolute names of the scratchgan modules that ``path`` imports (relative imports resolved)."""
    package = ".".join(("scratchgan", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_no_module_imports_the_cli():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("cli.py", "__main__.py"):  # __main__: `python -m scratchgan` is the CLI's entry point
            continue
        assert "scratchgan.cli.train" not in imported_modules(path), f"{path.name} imports scratchgan.cli.train"


def test_builders_live_in_models_and_objectives_in_objectives():
    for name in ("build_mlp_gan", "build_dcgan", "build_gan", "make_optimizer", "build_step", "parse_sizes"):
        assert getattr(models, name).__module__ == "scratchgan.gan.models"
    for name in objectives.NAMES:
        assert type(objectives.make_objective(name)).__module__ == "scratchgan.gan.objectives", name
