"""`scratchgan train --dry-run` prints the plan of the real run before its synthetic steps: the dataset and its
size, the steps per epoch, every resolved setting with where it came from, the output folder and the estimated
memory; what the real run would refuse is refused (or said, for its output folder) there."""
from __future__ import annotations

import json
import re

from commands import env_for, run

TINY = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "32", "--g-hidden", "16,32", "--d-hidden", "16",
        "--latent-dim", "8", "--no-progress"]


def _dry(args, tmp_path):
    env = env_for(tmp_path)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    import subprocess
    import sys
    env["TMPDIR"] = str(tmp_path / "tmp")  # the dry run's temporary folder
    proc = subprocess.run([sys.executable, "-m", "scratchgan", "train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def _settings(out):
    """{key: (value, source)} of the plan's settings table."""
    table = out.split("  settings  ", 1)[1].split("\ndry run:", 1)[0].splitlines()[1:]
    return {m.group(1): (m.group(2), m.group(3)) for m in (re.match(r"    (\w+) +(\S+) +(.+)$", row) for row in table)}


def test_the_plan_of_the_real_run_comes_before_the_synthetic_steps(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({"loss": "wgan", "d_steps": 2, "seed": 7}))
    code, out, err = _dry([*TINY, "--config", "base.json", "--seed", "3", "--dry-run"],
                          tmp_path)
    assert code == 0 and err == "", err
    lines = out.splitlines()
    plan = lines.index("plan of the real run (then the dry run trains its steps on random images):")
    assert plan < next(i for i, line in enumerate(lines) if line.startswith("dry run: 3 steps on random images"))
    assert "  dataset   mnist-bundled, split test: 256 images (--limit 256 of 10,000), each 28x28" in lines
    # 256 // 32 = 8 batches, 2 D steps each: 4 steps; 20 epochs by default
    assert "  steps     4 per epoch (256 images // batch size 32 // 2 D steps), 80 in 20 epochs" in lines
    # the real run's folder, not the dry run's temporary one: with no --out or --name, its new numbered folder
    assert any(re.fullmatch(r"  output    runs/00000-mlp-mnist-bundled-\S+ \(a new numbered folder: no --out or "
                            r"--name given\)", line) for line in lines), lines
    settings = _settings(out)
    assert settings["seed"] == ("3", "flag --seed")  # the flag wins over the file
    assert settings["d_steps"] == ("2", "config file base.json")
    assert settings["loss"] == ("wgan", "config file base.json")
    assert settings["lr"] == ("5e-05", "objective default (--loss wgan)")
    assert settings["beta1"] == ("0.5", "default")
    assert settings["sample_every"] == ("500", "default for --arch mlp")
    assert settings["split"][1] == "default (the bundled digits are MNIST's test split)"
    assert settings["dataset"] == ("mnist-bundled", "flag --dataset")
    # then the dry run trains as before, into its temporary folder
    assert re.search(r"^done: .*scratchgan-dry-run-\w+/ has samples/", out, flags=re.M)


def _memory(out):
    return {m.group(1): m.group(2) for m in re.finditer(r"^    (parameters|optimizer state|activations|dataset) +"
                                                        r"([\d.,]+ \w+)  ", out, flags=re.M)}


def test_the_memory_is_estimated_part_by_part_and_says_how(tmp_path):
    code, out, err = _dry([*TINY, "--dry-run"], tmp_path)
    assert code == 0, err
    params = sum(int(n.replace(",", "")) for n in re.search(r"G ([\d,]+) and D ([\d,]+) parameters", out).groups())
    memory = _memory(out)
    assert memory["parameters"] == f"{2 * params * 4 / 1024:,.1f} KiB"  # values and gradients, float32
    assert memory["optimizer state"] == f"{2 * params * 4 / 1024:,.1f} KiB"  # Adam's m and v
    assert memory["dataset"] == f"{256 * 784 * 5 / 1024:,.1f} KiB"  # uint8 as read, float32 in the loader
    assert "that the layers keep for their backward (one forward of G and D on 2 images less one on 1" in out
    # the activations grow with the batch size, and only they
    code, out2, err = _dry([*TINY, "--batch-size", "64", "--dry-run"], tmp_path)
    assert code == 0, err
    per_image = [re.search(r"([\d.]+) KiB per image", text).group(1) for text in (out, out2)]
    assert per_image[0] == per_image[1]
    doubled = _memory(out2)
    assert abs(float(doubled["activations"].split()[0]) - 2 * float(memory["activations"].split()[0])) <= 0.1
    assert doubled["parameters"] == memory["parameters"]


def test_what_the_real_run_would_refuse_is_checked(tmp_path):
    # its epoch has fewer batches than the D steps of one iteration: refused before anything is made
    code, out, err = _dry([*TINY, "--d-steps", "9", "--dry-run"], tmp_path)
    assert code == 2 and err == ("scratchgan train: error: the real run's epoch has 8 batches of 32, fewer than the 9 "
                                 "D steps of one iteration; use a smaller --batch-size or --d-steps\n"), err
    assert list((tmp_path / "tmp").iterdir()) == []
    # its output folder holds files no run recorded: refused as the real run would refuse it, nothing written
    (tmp_path / "runs" / "mnist_mlp").mkdir(parents=True)
    (tmp_path / "runs" / "mnist_mlp" / "checkpoint.npz").write_bytes(b"mine")
    code, out, err = _dry([*TINY, "--name", "mnist_mlp", "--dry-run"], tmp_path)
    assert code == 2 and re.fullmatch(r"scratchgan train: error: --out runs/mnist_mlp holds checkpoint\.npz, which .*\n",
                                      err), err
    assert (tmp_path / "runs" / "mnist_mlp" / "checkpoint.npz").read_bytes() == b"mine"


def test_a_download_is_planned_with_its_known_size(tmp_path):
    code, out, err = _dry(["--arch", "dcgan", "--dataset", "cifar10", "--g-width", "2", "--d-width", "2",
                           "--latent-dim", "4", "--no-progress", "--dry-run"], tmp_path)
    assert code == 0, err
    assert "  dataset   cifar10, split train: 50,000 images, each 3x32x32" in out.splitlines()
    assert "  steps     390 per epoch (50,000 images // batch size 128 // 1 D step), 7,800 in 20 epochs" in out
    assert not (tmp_path / "empty-cache" / "cifar10").exists()  # nothing downloaded


def test_a_dry_run_of_a_npy_run_without_its_file_is_refused_as_the_real_run(tmp_path):
    """It reads the file's header for the plan, so it needs the file as the real run does (a traceback before)."""
    lines = {}
    for kind, extra in (("real", ["--out", "real"]), ("dry", ["--dry-run"])):
        code, out, err = _dry(["--dataset", "npy", "--no-progress", *extra], tmp_path)
        assert code == 2 and out == "", err
        lines[kind] = err
    assert lines["dry"] == lines["real"] == "scratchgan train: error: --dataset npy needs --data-dir FILE.npy, your " \
                                            "array of images\n"
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "real").exists()
