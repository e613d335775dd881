"""The fast paths' process settings and CPU threads (scratchgan/fast/process.py, fast/cpu.py).

Importing scratchgan changes nothing in the process; ``fast.configure_process()``, called by the entry
points before NumPy loads, sets OpenBLAS's thread wait for NumPy's import and glibc's heap threshold;
``--reference`` / SCRATCHGAN_REFERENCE=1 sets neither. (These tests were in test_backend.py, where
``import scratchgan`` applied the thread wait and ``get_xp("numpy")`` the heap setting.)
"""
import os
import re
import platform
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from scratchgan.fast import cpu

ROOT = Path(__file__).resolve().parents[2]


def _run(code, env=None, argv=()):
    child_env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "SCRATCHGAN_REFERENCE")}
    child_env["PYTHONPATH"] = str(ROOT)
    child_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=child_env,
                         check=True)
    return out.stdout.split()


# ------------------------------------------------------------------ OpenBLAS's thread wait
_SPY_NUMPY_IMPORT = """
import importlib.abc, os, sys
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "numpy" and not seen:
            seen.append(os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
        return None
sys.meta_path.insert(0, Spy())
{before}
import scratchgan
from scratchgan import fast
{call}
import numpy  # now, if the call did not load it
from scratchgan.fast.process import applied, environment
print(seen[0] if seen else "numpy-was-loaded", os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
      applied()["OPENBLAS_THREAD_TIMEOUT"], environment()["OPENBLAS_THREAD_TIMEOUT"])
"""


@pytest.mark.parametrize("env, before, call, expected", [
    # import alone: NumPy loads later with OpenBLAS's default, nothing recorded
    ({}, "", "import scratchgan.nn, scratchgan.optim", "None None None None"),
    # the entry points' call: set while NumPy loads, gone afterwards, recorded for config.json
    ({}, "", "fast.configure_process()", "18 None 18 18"),
    ({}, "import json", "fast.configure_process(sys.argv[1:])", "18 None 18 18"),
    ({"OPENBLAS_THREAD_TIMEOUT": "7"}, "", "fast.configure_process()", "7 7 None 7"),  # the user's value wins
    ({}, "", "fast.configure_process(['--reference'])", "None None None None"),  # the textbook path: nothing
    ({"SCRATCHGAN_REFERENCE": "1"}, "", "fast.configure_process()", "None None None None"),
])
def test_configure_process_loads_numpy_with_a_short_openblas_thread_wait(env, before, call, expected):
    assert _run(_SPY_NUMPY_IMPORT.format(before=before, call=call), env) == expected.split()


def test_numpy_loaded_before_configure_process_is_left_as_it_is():
    code = ("import numpy, os\nimport scratchgan\nfrom scratchgan import fast\nfast.configure_process()\n"
            "from scratchgan.fast.process import applied\n"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), applied()['OPENBLAS_THREAD_TIMEOUT'])")
    assert _run(code) == ["None", "None"]


def test_import_loads_no_numpy_and_the_entry_points_call_configure_process_first():
    assert _run("import sys, scratchgan, scratchgan.fast\nprint('numpy' in sys.modules)") == ["False"]
    for entry in ("examples/mnist_mlp.py", "examples/dcgan.py", "scratchgan/__main__.py"):
        source = (ROOT / entry).read_text()
        first_cli_import = re.search(r"cli[.\w]* import", source).start()  # the command line's modules
        assert -1 < source.index("configure_process(") < first_cli_import, entry


# ------------------------------------------------------------------ glibc's heap threshold
_FAULTS_PER_TEMPORARY = """
import resource, sys
import numpy as np
if sys.argv[1] == "configured":
    from scratchgan import fast
    fast.configure_process()
elif sys.argv[1] == "imported":
    import scratchgan.nn, scratchgan.backend
    scratchgan.backend.get_xp("numpy")
x = np.ones((1024, 1024), np.float32)
for _ in range(3):
    y = x * 2.0
    del y
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    y = x * 2.0  # a fresh 4 MiB temporary, as in a training step at batch 1024
    z = y + 1.0
    del y, z
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the dynamic mmap threshold is glibc's")
def test_configure_process_makes_freed_temporaries_reused_instead_of_faulted_in_again():
    """After configure_process(), a 4 MiB temporary reuses freed heap memory: no fresh zero-filled pages.
    Importing and get_xp("numpy") alone change nothing."""
    def faults(mode):
        return float(_run(_FAULTS_PER_TEMPORARY, argv=(mode,))[0])

    plain = faults("plain")
    if plain < 100:  # this allocator reuses the memory anyway: nothing to show
        pytest.skip(f"plain NumPy takes only {plain:.0f} page faults per 4 MiB temporary here")
    assert faults("imported") > plain / 2  # no side effect of importing
    reused = faults("configured")  # a 4 MiB array spans 1,024 pages: a handful of faults is heap growth
    assert reused < plain / 10, f"{reused:.0f} vs {plain:.0f} page faults per temporary: freed " \
                                "activations are returned to the OS and faulted in again"


# ------------------------------------------------------------------ CPU threads: run_in_parts
def test_run_in_parts_covers_the_range_once_and_on_several_threads(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_threads", lambda: 3)
    seen = []
    all_running = threading.Barrier(3, timeout=10)  # passes only if the 3 parts run at the same time

    def task(start, stop):
        seen.append((start, stop))
        all_running.wait()

    cpu.run_in_parts(task, 10, elements=cpu.PARALLEL_MIN_ELEMENTS)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]
    seen.clear()

    def task(start, stop):
        seen.append((start, stop))
    cpu.run_in_parts(task, 10, elements=cpu.PARALLEL_MIN_ELEMENTS - 1)  # too small for threads
    assert seen == [(0, 10)]
    seen.clear()
    cpu.run_in_parts(task, 2, elements=cpu.PARALLEL_MIN_ELEMENTS)  # never more parts than items
    assert sorted(seen) == [(0, 1), (1, 2)]
    seen.clear()
    cpu.run_in_parts(task, 10, elements=cpu.PARALLEL_MIN_ELEMENTS, threads=1)
    assert seen == [(0, 10)]


def test_cpu_threads_follow_the_blas_thread_limit(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cpu.cpu_threads() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu.cpu_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # not a count: ignored
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert cpu.cpu_threads() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", str(cores + 5))  # never more than the cores
    assert cpu.cpu_threads() == cores


def test_run_in_parts_raises_an_error_of_any_part(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_threads", lambda: 2)

    def task(start, stop):
        if start > 0:  # the part on the other thread
            raise ValueError("bad part")

    with pytest.raises(ValueError, match="bad part"):
        cpu.run_in_parts(task, 4, elements=cpu.PARALLEL_MIN_ELEMENTS)
    cpu.run_in_parts(lambda start, stop: None, 4, elements=cpu.PARALLEL_MIN_ELEMENTS)  # the pool still works


def test_a_fill_in_parts_fills_everything(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_threads", lambda: 3)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)
    a = np.ones(1001, np.float32)
    cpu.run_in_parts(lambda start, stop: a[start:stop].fill(0), a.size, a.size)
    assert not a.any()


# ------------------------------------------------------------------ --reference on the example
def test_the_example_trains_on_the_reference_path_with_reference(tmp_path):
    """`examples/mnist_mlp.py --reference`: no process setting, the textbook code only, said in config.json;
    without the flag the fast paths run and the thread wait is recorded."""
    import json
    tiny = ["--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "32", "--epochs", "1",
            "--g-hidden", "16,32", "--d-hidden", "32,16", "--latent-dim", "8", "--no-progress",
            "--sample-every", "0", "--log-every", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "SCRATCHGAN_REFERENCE")}
    env["PYTHONPATH"] = str(ROOT)
    env["SCRATCHGAN_DATA"] = str(tmp_path / "cache")
    for flag, fast_paths, timeout in (("--reference", False, None), (None, True, "18")):
        out = tmp_path / str(flag)
        argv = [sys.executable, str(ROOT / "examples" / "mnist_mlp.py"), *tiny, "--out", str(out)] + \
            ([flag] if flag else [])
        subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd=tmp_path, timeout=300)
        environment = json.loads((out / "config.json").read_text())["environment"]
        assert environment["fast_paths"] is fast_paths
        assert environment["OPENBLAS_THREAD_TIMEOUT"] == timeout
