"""Where things live: the engine at the top level, the product around it in wings by role, and imports that
run one way (cli -> run -> gan / eval -> engine, with data beside and fast above the maths it replaces), so
the shape of the package cannot silently decay. The builders are in gan/models.py, every objective in
gan/objectives.py."""
from __future__ import annotations

import ast
from pathlib import Path

from scratchgan.gan import models, objectives

PACKAGE = Path(__file__).resolve().parents[2] / "scratchgan"
WINGS = ("gan", "run", "eval", "cli", "data", "fast")
# what each part may import, besides itself; "engine" is the top level: nn/, losses, optim, params, backend, ...
MAY_IMPORT = {
    "engine": {"engine"},
    "data": {"engine"},
    "gan": {"engine", "data"},
    "eval": {"engine", "data"},
    "run": {"engine", "data", "gan", "eval"},
    "cli": {"engine", "data", "gan", "eval", "run", "fast"},  # the commands are entry points: they may set fast up
    "fast": {"engine", "data", "gan"},  # above the maths it replaces; the registry (replace.py) loads it by name
    "entry": {"engine", "data", "gan", "eval", "run", "cli", "fast"},  # __main__.py
}


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
    return {name for name in names if name == "scratchgan" or name.startswith("scratchgan.")}


def part_of(module):
    """'gan', 'run', ..., 'entry' (scratchgan.__main__) or 'engine' for a dotted module name."""
    parts = module.split(".")
    if len(parts) < 2:
        return "engine"
    if parts[1] == "__main__":
        return "entry"
    return parts[1] if parts[1] in WINGS else "engine"


def module_of(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("scratchgan", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def wrong_way_imports():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = part_of(module_of(path))
        for name in sorted(imported_modules(path)):
            imported = part_of(name)
            if name != "scratchgan" and imported != importer and imported not in MAY_IMPORT[importer]:
                found.append(f"{path.relative_to(PACKAGE)} ({importer}) imports {name} ({imported})")
    return found


def test_imports_run_one_way_between_the_wings():
    assert wrong_way_imports() == []


def test_the_rule_catches_a_wrong_way_import(tmp_path, monkeypatch):
    """A module of the engine that imported the trainer would be reported (the check is not vacuous)."""
    planted = PACKAGE / "losses.py"
    text = planted.read_text(encoding="utf-8")
    copy = tmp_path / "scratchgan"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (copy / "losses.py").write_text(text + "\nfrom .run import trainer\n", encoding="utf-8")
    monkeypatch.setitem(globals(), "PACKAGE", copy)
    assert wrong_way_imports() == ["losses.py (engine) imports scratchgan.run (run)",
                                   "losses.py (engine) imports scratchgan.run.trainer (run)"]


def test_only_the_entry_points_and_the_registry_reach_fast():
    """The maths never imports its replacements: replace.py loads them by their dotted names."""
    reaching = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                      if part_of(module_of(path)) not in ("fast", "cli", "entry")
                      and any(part_of(name) == "fast" for name in imported_modules(path)))
    assert reaching == []


def test_no_module_outside_the_command_line_imports_it():
    for path in sorted(PACKAGE.rglob("*.py")):
        if part_of(module_of(path)) in ("cli", "entry"):
            continue
        assert not any(part_of(name) == "cli" for name in imported_modules(path)), f"{path} imports scratchgan.cli"


def test_builders_live_in_models_and_objectives_in_objectives():
    for name in ("build_mlp_gan", "build_dcgan", "build_gan", "make_optimizer", "build_step", "parse_sizes"):
        assert getattr(models, name).__module__ == "scratchgan.gan.models"
    for name in objectives.NAMES:
        assert type(objectives.make_objective(name)).__module__ == "scratchgan.gan.objectives", name
