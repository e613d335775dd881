"""Data-parallel training (scratchgan/run/distributed.py) equals one process on the global batch.

The maths in-process first (the sharded noise, masks and batches put back together; the synchronised
BatchNorm over two threads is in tests/engine/test_sync_batchnorm.py), then real runs under ``mpiexec -n 2`` on
the CPU in float64: G's and D's weights, BatchNorm buffers and Adam moments equal the single-process
run's to 1e-9 (relative), and a 2-rank checkpoint resumes in one process. The MPI tests skip where
mpi4py / mpiexec are missing (the floor venv): ``pip install "scratchgan[mpi]"``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_device import xp as fake_xp  # tests/support/fake_device.py: CuPy's rules on the CPU

from scratchgan import nn
from scratchgan.data import BatchLoader
from scratchgan.gan.step import NoiseSource
from scratchgan.run import distributed

REPO = Path(__file__).resolve().parents[2]
RTOL = 1e-9  # float64 runs; the sums are only reordered


# ------------------------------------------------------------------------------ in-process maths
def host(a):
    """A fake-device array's NumPy copy; NumPy arrays as they are."""
    return a.get() if hasattr(a, "get") else a


class Slicing:
    """What the sharding helpers read of a world: its rank and size."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("device", [np, fake_xp], ids=["numpy", "fake-device"])
def test_sharded_noise_is_the_global_noise_sliced_and_resumes_with_another_rank_count(device):
    whole = NoiseSource(np, 12, 5, seed=3, dtype="float64")
    ranks = [distributed.ShardedNoise(device, 12, 5, 3, "float64", Slicing(r, 3)) for r in range(3)]
    for _ in range(2):
        np.testing.assert_array_equal(np.concatenate([host(s.sample()) for s in ranks]), whole.sample())
        np.testing.assert_array_equal(
            np.concatenate([host(s.extra("gp_alpha", (4, 1), "uniform")) for s in ranks]),
            whole.extra("gp_alpha", (12, 1), "uniform"))
    assert ranks[0].state() == whole.state()  # the global draws: a checkpoint is the single-process one
    two = [distributed.ShardedNoise(np, 12, 5, 3, "float64", Slicing(r, 2)) for r in range(2)]
    for s in two:
        s.restore(ranks[1].state())
    np.testing.assert_array_equal(np.concatenate([s.sample() for s in two]), whole.sample())
    np.testing.assert_array_equal(np.concatenate([s.extra("gp_alpha", (6, 1), "uniform") for s in two]),
                                  whole.extra("gp_alpha", (12, 1), "uniform"))


def test_sharded_dropout_masks_and_batches_are_the_global_ones():
    x = np.ones((8, 6))
    whole = nn.Dropout(0.4, seed=7)
    expected = whole.forward(x)
    parts = []
    for r in range(2):
        layer = nn.Dropout(0.4, seed=7)
        distributed.shard_dropout([layer], Slicing(r, 2), np)
        parts.append(layer.forward(x[:4]))
    np.testing.assert_array_equal(np.concatenate(parts), expected)

    images = np.random.default_rng(0).integers(0, 256, (20, 4, 4), dtype=np.uint8)
    loader = BatchLoader(images, 6, labels=np.arange(20), seed=1)
    shards = [distributed.ShardedLoader(loader, Slicing(r, 3)) for r in range(3)]
    for batches in zip(loader.epoch(1, 1), *[s.epoch(1, 1) for s in shards]):
        whole_batch, *slices = batches
        np.testing.assert_array_equal(np.concatenate([s[0] for s in slices]), whole_batch[0])
        np.testing.assert_array_equal(np.concatenate([s[1] for s in slices]), whole_batch[1])
    with pytest.raises(distributed.DistributedError, match="multiple of 4"):
        distributed.ShardedLoader(loader, Slicing(0, 4))


def test_a_run_outside_mpi_never_imports_mpi4py():
    code = ("import sys, scratchgan, scratchgan.cli.train, scratchgan.run.distributed as d; "
            "assert d.init() is None; assert 'mpi4py' not in sys.modules, 'imported'")
    env = {k: v for k, v in os.environ.items() if k not in distributed._SIZE_VARS + distributed._RANK_VARS}
    env["PYTHONPATH"] = str(REPO)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_mpiexec_without_mpi4py_says_what_to_install(tmp_path, monkeypatch, capsys):
    """Started by a launcher (its environment) where mpi4py cannot be imported: one line, exit 2."""
    from scratchgan.cli import train as train_command
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # what `import mpi4py` meets where it is not installed
    code = train_command.train_main(["--dataset", "mnist-bundled", "--limit", "16", "--batch-size", "8",
                           "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and 'pip install "scratchgan[mpi]"' in err[0], err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ mpiexec -n 2
def _mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), or on PATH; None without mpi4py."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason='needs mpi4py and mpiexec: pip install "scratchgan[mpi]"')

TINY_MLP = ["--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "16", "--dtype", "float64",
            "--g-hidden", "32,64", "--d-hidden", "64,32", "--latent-dim", "16", "--dropout", "0.3"]
RUNS = {
    # BatchNorm in G, Dropout in D, the BCE objective
    "mlp": ("mnist_mlp.py", TINY_MLP),
    # WGAN-GP (per-sample penalty, its alphas), instance noise, 2 D steps, a conditional pair with embeddings
    "mlp-wgan-gp": ("mnist_mlp.py", TINY_MLP + ["--loss", "wgan-gp", "--d-steps", "2", "--instance-noise", "0.1",
                                                "--conditional", "--embedding-dim", "4"]),
    # the tools of issue 18: DiffAugment's per-sample draws (sharded like z), spectral norm's power
    # iteration on every rank, the EMA of G's weights; with the hinge objective
    "mlp-tools": ("mnist_mlp.py", TINY_MLP + ["--loss", "hinge", "--diffaugment", "translation,cutout,color",
                                              "--spectral-norm", "--ema", "0.9"]),
    # BatchNorm2d in G and D, 28x28, tiny width
    "dcgan": ("dcgan.py", ["--dataset", "mnist-bundled", "--limit", "32", "--batch-size", "8", "--dtype", "float64",
                           "--g-width", "8", "--d-width", "8", "--latent-dim", "16"]),
}


def train(tmp, name, out, ranks, extra=()):
    script, args = RUNS[name]
    cmd = [sys.executable, str(REPO / "examples" / script), *args, "--epochs", "1", "--no-progress",
           "--sample-every", "0", "--out", str(out), *extra]
    if ranks:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    env = {k: v for k, v in os.environ.items() if k not in distributed._SIZE_VARS + distributed._RANK_VARS}
    env.update(PYTHONPATH=str(REPO), SCRATCHGAN_DATA=str(tmp / "empty-cache"))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


def assert_same_state(a_path, b_path):
    """Every weight, BatchNorm buffer and Adam moment equal to RTOL (relative to the array's scale);
    the random streams' positions (noise, Dropout) exactly equal."""
    a, b = np.load(a_path), np.load(b_path)
    assert sorted(a.files) == sorted(b.files)
    keys = [k for k in a.files if k != "__meta__"]
    assert any("running_var" in k for k in keys)
    for k in keys:
        scale = max(float(np.abs(a[k]).max()), 1e-300)
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=RTOL * scale, err_msg=k)  # float64: relative scale
    meta_a, meta_b = json.loads(str(a["__meta__"])), json.loads(str(b["__meta__"]))
    for key in ("epoch", "batch_in_epoch", "global_step", "noise", "dropout", "opt_G_t", "opt_D_t"):
        assert meta_a.get(key) == meta_b.get(key), key


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each RUNS entry trained one epoch in one process and under mpiexec -n 2 (run once, shared)."""
    tmp = tmp_path_factory.mktemp("dist")
    done = {}
    for name in RUNS:
        for ranks in (0, 2):
            out = tmp / f"{name}-{ranks}"
            proc = train(tmp, name, out, ranks)
            assert proc.returncode == 0, proc.stderr
            done[name, ranks] = (out, proc)
    return tmp, done


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_equal_one_process_on_the_global_batch(runs, name):
    tmp, done = runs
    (one, _), (two, proc) = done[name, 0], done[name, 2]
    assert_same_state(one / "checkpoint.npz", two / "checkpoint.npz")
    # rank 0 wrote the outputs, once: one "done" line, the same files as the single process
    assert proc.stdout.count("done:") == 1 and proc.stderr.count("error") == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert json.loads((two / "config.json").read_text())["ranks"] == 2


@needs_mpi
@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process(runs):
    tmp, done = runs
    results = []
    for ranks in (0, 2):
        out = tmp / f"resumed-{ranks}"
        shutil.copytree(done["mlp", ranks][0], out)
        proc = train(tmp, "mlp", out, 0, ["--resume", str(out / "checkpoint.npz"), "--epochs", "2"])
        assert proc.returncode == 0, proc.stderr
        results.append(out / "checkpoint.npz")
    assert json.loads(str(np.load(results[1])["__meta__"]))["epoch"] == 2
    assert_same_state(*results)


@needs_mpi
def test_an_error_on_one_rank_ends_the_job_with_one_line(tmp_path):
    """Rank 0 alone checks --out; its error ends rank 1 too (MPI_Abort): exit 2, our one line first."""
    (tmp_path / "afile").write_text("not a folder")
    proc = train(tmp_path, "mlp", tmp_path / "afile", 2)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("mnist_mlp.py:")]
    assert proc.returncode == 2 and len(ours) == 1 and "is a file, not a folder" in ours[0], proc.stderr
    proc = train(tmp_path, "mlp", tmp_path / "b", 2, ["--batch-size", "15"])
    ours = [line for line in proc.stderr.splitlines() if line.startswith("mnist_mlp.py:")]
    assert proc.returncode == 2 and len(ours) == 1 and "multiple of 2" in ours[0], proc.stderr
    assert not (tmp_path / "b" / "checkpoint.npz").exists()


@needs_mpi
def test_nccl_backend_without_cupy_says_what_to_install(tmp_path):
    """--backend cupy under mpiexec needs CuPy with NCCL: where CuPy is missing, one line and exit 2."""
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here: the NCCL path runs instead of failing")
    except ImportError:
        pass
    proc = train(tmp_path, "mlp", tmp_path / "run", 1, ["--backend", "cupy"])
    ours = [line for line in proc.stderr.splitlines() if line.startswith("mnist_mlp.py:")]
    assert proc.returncode == 2 and len(ours) == 1, proc.stderr
    assert "needs CuPy with NCCL" in ours[0] and "pip install" in ours[0]
    assert not (tmp_path / "run").exists()


@needs_mpi
def test_sigterm_stops_every_rank_after_the_same_step_and_rank_0_saves(tmp_path):
    """mpiexec forwards SIGTERM to the ranks; they agree on the step to stop after, and rank 0 saves it."""
    import signal
    import time
    script, args = RUNS["mlp"]
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(REPO / "examples" / script), *args, "--limit", "512",
           "--batch-size", "4", "--epochs", "1000", "--no-progress", "--sample-every", "0", "--log-every", "1",
           "--snapshot-every", "1",  # every rank goes through save(path) at each epoch's end; rank 0 writes
           "--out", str(tmp_path / "run")]
    env = {k: v for k, v in os.environ.items() if k not in distributed._SIZE_VARS + distributed._RANK_VARS}
    env.update(PYTHONPATH=str(REPO), SCRATCHGAN_DATA=str(tmp_path / "empty-cache"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # the first epoch's checkpoint: training is under way on both ranks
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert "interrupted at step" in err and "checkpoint saved" in err, err
    meta = json.loads(str(np.load(tmp_path / "run" / "checkpoint.npz")["__meta__"]))
    step = int(err.split("interrupted at step ")[1].split()[0])
    assert meta["global_step"] == step and meta["epoch"] >= 1


@needs_mpi
@pytest.mark.slow
def test_bench_distributed_quick_prints_its_table():
    """benchmarks/bench_distributed.py --quick runs 1 and 2 ranks and prints the table (a smoke test)."""
    env = {k: v for k, v in os.environ.items() if k not in distributed._SIZE_VARS + distributed._RANK_VARS}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_distributed.py"), "--quick"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) >= 4 and any(r.startswith("| 2 (mpiexec)") for r in rows), out.stdout
    assert "7909" in out.stdout  # 4 x 1,977,233 parameters of the default MLP pair, in KB


def test_the_readme_launch_lines_use_the_examples_flags():
    """README.md's `mpiexec -n N python examples/...` lines: flags each example's parser accepts (the
    runs themselves are the mpiexec tests above, on the bundled digits; MNIST itself would download)."""
    import shlex

    from scratchgan.cli.train import DCGAN_DEFAULTS, MLP_DEFAULTS, make_train_parser
    text = (REPO / "README.md").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines() if line.startswith("mpiexec -n ")]
    examples = [shlex.split(line) for line in lines if "examples/" in line]
    assert len(examples) >= 2, lines
    for words in examples:
        assert words[0] == "mpiexec" and words[1] == "-n" and int(words[2]) >= 2 and words[3] == "python"
        script = words[4]
        defaults = DCGAN_DEFAULTS if script.endswith("dcgan.py") else MLP_DEFAULTS
        assert (REPO / script).exists(), script
        make_train_parser(script, "", defaults).parse_args(words[5:])  # exits 2 on an unknown flag
