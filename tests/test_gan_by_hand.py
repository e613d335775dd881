"""examples/gan_by_hand.py: it runs, it stays one short file, and its step is GANStep's step."""
from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from scratchgan.cli import MLP_DEFAULTS
from scratchgan.data import load_mnist_bundled
from scratchgan.models import build_step

ROOT = Path(__file__).resolve().parents[1]
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
