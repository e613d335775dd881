"""docs/notebooks/: each notebook runs as a reader runs it, so that it cannot rot.

In a Jupyter kernel with nbclient and ipykernel (both in the [dev] extra; without them that test skips, saying
how to install them), and, needing nothing beyond the package's own dependencies, its code cells in order in a
fresh Python (json + exec), so that a checkout without Jupyter runs them too. The repository keeps them clean:
no stored outputs.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
TUTORIAL = ROOT / "docs" / "notebooks" / "train_by_hand.ipynb"
# in a fresh process, the code cells in order in one namespace; then what they left, as JSON
RUN_CELLS = """
import json, math, sys
cells = [c for c in json.load(open(sys.argv[1], encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
namespace = {"__name__": "__main__"}
for k, cell in enumerate(cells):
    exec(compile("".join(cell["source"]), f"{sys.argv[1]}, code cell {k + 1}", "exec"), namespace)
import matplotlib.pyplot as plt
print(json.dumps({"history": namespace["history"], "figures": len(plt.get_fignums()),
                  "samples": list(namespace["samples"].shape)}))
"""


def quiet_env(monkeypatch):
    """This checkout's package; one BLAS thread (the machine's cores are shared with the rest of the suite)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def check_losses(history, steps=400):
    assert len(history) == steps
    assert all(math.isfinite(v) for row in history for v in row)
    late = history[-100:]  # trained, not collapsed: D cannot be sure, G's loss is not exploding
    assert 0.5 < sum(d for d, _ in late) / len(late) < 1.6
    assert 0.4 < sum(g for _, g in late) / len(late) < 3.0


def test_the_tutorial_is_there_and_kept_without_outputs():
    assert TUTORIAL in NOTEBOOKS
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


def test_the_tutorials_code_cells_run_in_order(tmp_path, monkeypatch):
    quiet_env(monkeypatch)
    done = subprocess.run([sys.executable, "-c", RUN_CELLS, str(TUTORIAL)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed, result = done.stdout.splitlines()[:-1], json.loads(done.stdout.splitlines()[-1])
    assert any(line.startswith("step  399  loss_D") for line in printed), done.stdout
    check_losses(result["history"])
    assert result["figures"] == 2 and result["samples"] == [32, 28, 28]  # the losses, the samples


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_runs_in_a_jupyter_kernel(path, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason='needs nbclient and ipykernel: pip install -e ".[dev]"')
    pytest.importorskip("ipykernel", reason='needs nbclient and ipykernel: pip install -e ".[dev]"')
    import nbformat
    quiet_env(monkeypatch)
    monkeypatch.delenv("MPLBACKEND")  # the kernel's own inline backend, as a reader sees it
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # a failing cell raises
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure shown"
    if path == TUTORIAL:  # each plotting cell shows its figure (with the floors' matplotlib 3.6 and a current
        # IPython, the kernel's first figure comes as text only: "<Figure size 800x300 with 1 Axes>")
        text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        figures = [o for o in outputs if o.output_type == "display_data" and "<Figure" in o["data"]["text/plain"]]
        assert "step  399  loss_D" in text and len(figures) == 2
