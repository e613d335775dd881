"""The replacement registry (scratchgan/replace.py) and what a reader sees of it in the maths' own files.

- every ``@replaceable`` function carries a ``# fast:`` mark that names the files of its replacements,
  and the mark agrees with the registry's table (so it cannot rot);
- the maths (nn/, losses, optim, params, ema) imports the registry, never scratchgan.fast;
- every layer class runs its own pure pair: a replacement of the pair changes what the layer computes.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from scratchgan import nn, replace
from scratchgan.nn import linear

PACKAGE = Path(__file__).resolve().parents[2] / "scratchgan"
MATHS = [*sorted((PACKAGE / "nn").glob("*.py")), *(PACKAGE / f"{name}.py" for name in
                                                      ("losses", "optim", "params", "gan/ema"))]
MARKED = MATHS
KIND = {"numpy": "CPU", "cupy": "CuPy"}


def module_name(path):
    return "scratchgan." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def marks(path):
    """{reference name: the text of its ``# fast:`` mark, or None} for each @replaceable function of ``path``."""
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and any(getattr(d, "id", None) == "replaceable"
                                                     for d in node.decorator_list):
            line = path.read_text(encoding="utf-8").split("\n")[node.decorator_list[0].lineno - 1]
            mark = re.search(r"#\s*fast:\s*(.*)$", line)
            found[f"{module_name(path)}.{node.name}"] = mark.group(1) if mark else None
    return found


def expected_files(name):
    """{(file, kind)} of the replacements the registry lists for ``name`` (active or not)."""
    files = set()
    for kind, entry in replace.TABLE.get(name, {}).items():
        files.add((f"fast/{entry[0].split('.')[2]}.py", KIND[kind]))
    for kind, entry in replace.INACTIVE.get(name, {}).items():
        files.add((f"fast/{entry[0].split('.')[2]}.py", KIND[kind]))
    return files


def mark_problems(seen):
    """What is wrong with the marks ``seen`` ({reference name: mark text or None}), as sentences."""
    problems = []
    for name, mark in seen.items():
        files = expected_files(name)
        if mark is None:
            problems.append(f"{name} is @replaceable but its line has no '# fast:' mark")
        elif not files:
            problems.append(f"{name} is marked but the registry lists no replacement for it")
        elif (set(re.findall(r"(fast/\w+\.py)", mark)) != {f for f, _ in files}
              or set(re.findall(r"\b(CPU|CuPy)\b", mark)) != {k for _, k in files}):
            problems.append(f"{name}: the mark says {mark!r}, the table {sorted(files)}")
    for name in [*replace.TABLE, *replace.INACTIVE]:  # the other way: every entry of these files is marked
        module = name.rpartition(".")[0]
        if any(module == module_name(path) for path in MARKED) and name not in seen:
            problems.append(f"the table lists {name}, but no @replaceable function of that name is marked")
    return problems


def all_marks():
    seen = {}
    for path in MARKED:
        seen.update(marks(path))
    return seen


def test_every_replaceable_function_has_a_mark_that_agrees_with_the_table():
    seen = all_marks()
    assert "scratchgan.nn.activations.leaky_relu_backward" in seen and "scratchgan.optim.adam_update" in seen
    assert mark_problems(seen) == []


def test_a_wrong_or_missing_mark_is_caught():
    seen = all_marks()
    name = "scratchgan.nn.activations.leaky_relu_backward"
    assert mark_problems({**seen, name: "fast/cpu.py (CPU)"})  # the CuPy kernel left out
    assert mark_problems({**seen, name: None})
    assert mark_problems({k: v for k, v in seen.items() if k != name})  # a table entry without a marked function
    assert mark_problems({**seen, "scratchgan.optim.sgd_update": "fast/cpu.py (CPU)"})  # marked, not in the table


def test_the_maths_imports_the_registry_not_fast():
    for path in MATHS:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "fast" not in (node.module or "").split("."), f"{path.name} imports from {node.module}"
            elif isinstance(node, ast.Import):
                assert not any("fast" in a.name.split(".") for a in node.names), f"{path.name} imports fast"
    registry = ast.parse((PACKAGE / "replace.py").read_text(encoding="utf-8"))
    imported = [n.module or "" for n in ast.walk(registry) if isinstance(n, ast.ImportFrom)] + \
        [a.name for n in ast.walk(registry) if isinstance(n, ast.Import) for a in n.names]
    assert imported and not [name for name in imported if "fast" in name.split(".")], \
        "the registry names its replacements by dotted path and imports them only when chosen (_resolve)"


def test_linear_runs_its_own_pair(monkeypatch):
    """Linear.forward / backward call linear_forward / linear_backward: a planted change in either shows."""
    layer = nn.Linear(4, 3, seed=0, dtype="float64")
    x = np.random.default_rng(1).standard_normal((5, 4))
    dy = np.random.default_rng(2).standard_normal((5, 3))
    y = layer.forward(x)
    dx = layer.backward(dy)
    dW = layer.W.grad.copy()
    layer.zero_grad()
    real_forward, real_backward = linear.linear_forward, linear.linear_backward
    monkeypatch.setattr(linear, "linear_forward", lambda x, W, b: (lambda y, c: (2 * y, c))(*real_forward(x, W, b)))
    monkeypatch.setattr(linear, "linear_backward",
                        lambda dy, cache, *a, **k: real_backward(3 * dy, cache, *a, **k))
    assert np.allclose(layer.forward(x), 2 * y)
    assert np.allclose(layer.backward(dy), 3 * dx)
    assert np.allclose(layer.W.grad, 3 * dW)


@pytest.mark.parametrize("fast_on", [False, True])
def test_linear_backward_adds_into_the_given_gradients(fast_on):
    rng = np.random.default_rng(3)
    x, W, dy = rng.standard_normal((6, 4)), rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    dW0, db0 = rng.standard_normal((4, 3)), rng.standard_normal(3)
    dW, db = dW0.copy(), db0.copy()
    replace.set_enabled(fast_on)
    try:
        dx, dW_out, db_out = linear.linear_backward(dy, (x, W), dW, db)
    finally:
        replace.set_enabled(None)
    assert dW_out is dW and db_out is db, "the gradients are added in place, into the arrays given"
    assert np.allclose(dW, dW0 + x.T @ dy, rtol=1e-12) and np.allclose(db, db0 + dy.sum(axis=0), rtol=1e-12)
    assert np.allclose(dx, dy @ W.T, rtol=1e-12)
    fresh = linear.linear_backward(dy, (x, W))
    assert np.allclose(fresh[1], x.T @ dy) and np.allclose(fresh[2], dy.sum(axis=0))


def test_every_pure_pair_in_nn_is_called_by_its_layer_class():
    """No orphan pair (as linear_backward once was): each module-level ``*_forward`` / ``*_backward`` of nn/ is
    called from a method of a class in the same file, so the pair a derivation page names is what runs."""
    for path in MARKED:
        if path.parent.name != "nn":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        pairs = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                 and re.search(r"_(forward|backward)$", node.name)}
        called = {node.func.id for cls in tree.body if isinstance(cls, ast.ClassDef)
                  for node in ast.walk(cls) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        # a pair may be called through a helper function of the file that a class calls (conv's data passes)
        helpers = {node.name: {c.func.id for c in ast.walk(node)
                               if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
                   for node in tree.body if isinstance(node, ast.FunctionDef)}
        reached, frontier = set(called), set(called)
        while frontier:
            frontier = {f for name in frontier for f in helpers.get(name, ())} - reached
            reached |= frontier
        assert pairs <= reached, f"{path.name}: {sorted(pairs - reached)} never called by a layer class"
