"""examples/gan_by_hand.py: it runs, it stays one short file, and its step is GANStep's step."""
from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from scratchgan.cli.train import MLP_DEFAULTS
from scratchgan.data import load_mnist_bundled
from scratchgan.gan.models import build_step

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gan_by_hand.py"


def load_example():
    spec = importlib.util.spec_from_file_location("gan_by_hand", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_a_few_steps_prints_finite_losses_and_writes_its_grid(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "4", "--batch-size", "32", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"step +(\d+) +loss_D (\S+) +loss_G (\S+) +D\(x\) (\S+) +D\(G\(z\)\) (\S+)", done.stdout)
    assert [int(r[0]) for r in rows] == [0, 3], done.stdout  # the first step and the last
    for _, loss_D, loss_G, d_x, d_g_z in rows:
        assert math.isfinite(float(loss_D)) and math.isfinite(float(loss_G))
        assert 0.0 <= float(d_x) <= 1.0 and 0.0 <= float(d_g_z) <= 1.0
    with Image.open(out / "samples.png") as grid:  # 8x8 tiles of 28 + 2 padding, upscaled twice
        assert grid.size == (2 * (8 * 30 + 2), 2 * (8 * 30 + 2))


ROW = r"step +(\d+) +loss_D (\S+) +loss_G (\S+) +D\(x\) \S+ +D\(G\(z\)\) \S+"
FAST = r" +\| fast: loss_D (\S+) +loss_G (\S+) +\| ms/step reference (\S+), fast (\S+)"


def run_example(package_root, tmp_path, *flags):
    """The example's printed rows (steps 0 and 2), run for 3 steps with scratchgan imported from ``package_root``."""
    env = dict(os.environ, PYTHONPATH=str(package_root))
    env.pop("SCRATCHGAN_REFERENCE", None)
    done = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "3", "--batch-size", "16",
                           "--out", str(tmp_path / "out"), *flags],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return re.findall(ROW + (FAST if "--fast" in flags else ""), done.stdout)


def test_a_bug_planted_in_a_reference_function_changes_what_the_example_prints(tmp_path):
    """The example runs the textbook: break nn/activations.py's leaky_relu_backward in a copy of the package and
    the losses move; --fast's twin runs the replacement instead (on NumPy) and does not see the bug."""
    planted = tmp_path / "planted"
    shutil.copytree(ROOT / "scratchgan", planted / "scratchgan", ignore=shutil.ignore_patterns("__pycache__"))
    path = planted / "scratchgan" / "nn" / "activations.py"
    source = path.read_text(encoding="utf-8")
    broken = source.replace("return xp.where(x > 0, dy, dy * slope)", "return xp.where(x > 0, dy, dy * slope * 5.0)")
    assert broken != source, "the line to break is no longer in nn/activations.py"
    path.write_text(broken, encoding="utf-8")

    clean, bugged = run_example(ROOT, tmp_path, "--fast"), run_example(planted, tmp_path, "--fast")
    bugged_default = run_example(planted, tmp_path)
    assert [r[0] for r in clean] == [r[0] for r in bugged] == ["0", "2"]
    assert clean[0][1] == bugged[0][1], "step 0's loss_D comes before any backward"
    assert clean[-1][1:3] != bugged[-1][1:3], "the planted bug in the reference must change the losses"
    assert clean[-1][3:5] == bugged[-1][3:5], "the fast path's twin runs fast/cpu.py's form, not the planted one"
    assert [r[:3] for r in bugged_default] == [r[:3] for r in bugged], "by default the example runs the reference"
    assert clean[0][1:3] == clean[0][3:5], "the twins start equal (to the printed digits)"
    for row in clean:
        assert float(row[5]) > 0 and float(row[6]) > 0, "both times per step are printed"


def test_it_stays_about_150_lines():
    n = len(EXAMPLE.read_text(encoding="utf-8").splitlines())
    assert n <= 180, f"examples/gan_by_hand.py has {n} lines; it is meant to be read in one sitting (~150)"


def test_its_step_is_ganstep_step_bit_for_bit():
    """The same networks (same seeds) and the same batches: the textbook loop and GANStep agree exactly."""
    example = load_example()
    batch, seed = 16, 5
    step = build_step(dict(MLP_DEFAULTS, image_size=784, batch_size=batch, seed=seed), np)
    G, D = example.make_generator(seed), example.make_discriminator(seed)
    for ours, theirs in ((G, step.G), (D, step.D)):
        for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            assert np.array_equal(p.data, q.data), name
    opt_G = example.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = example.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))

    images, _ = load_mnist_bundled()
    rng = np.random.default_rng(0)
    for i in range(3):
        real = images[i * batch:(i + 1) * batch].reshape(batch, 784).astype(np.float32) / 127.5 - 1.0
        z = rng.standard_normal((batch, example.LATENT), dtype=np.float32)
        step.noise.sample = lambda z=z: z.copy()
        stats = step.step([real])
        loss_D, loss_G, d_x, d_g_z = example.train_step(G, D, opt_G, opt_D, real, z)
        assert float(loss_D) == float(stats["loss_D"]) and float(loss_G) == float(stats["loss_G"])
        assert math.isclose(float(d_x), float(stats["D_x"]), rel_tol=1e-6)  # sigmoid written another way
        assert math.isclose(float(d_g_z), float(stats["D_G_z"]), rel_tol=1e-6)
    for ours, theirs in ((G, step.G), (D, step.D)):
        for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            assert np.array_equal(p.data, q.data), name
        for (name, a), (_, b) in zip(ours.named_buffers(), theirs.named_buffers(), strict=True):
            assert np.array_equal(a, b), name
