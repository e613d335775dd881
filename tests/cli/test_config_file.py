"""`scratchgan train --config FILE`: the flags' keys from a JSON (or YAML) file, a run's own config.json included;
flags given on the command line win; the places a run writes come from the command line only; a bad key or
value is one line naming the file and the key, before anything is written."""
from __future__ import annotations

import json
import sys

import pytest
from commands import run

TINY = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "32", "--g-hidden", "16,32", "--d-hidden", "16",
        "--latent-dim", "8", "--epochs", "1", "--no-progress", "--sample-every", "0"]


def _config(path):
    return json.loads(path.read_text())


def test_a_runs_own_config_json_trains_it_again_and_flags_win(tmp_path):
    code, _, err = run(["train", *TINY, "--loss", "wgan-gp", "--lr", "0.001", "--out", "first"], tmp_path, module=True)
    assert code == 0, err
    code, out, err = run(["train", "--config", "first/config.json", "--seed", "3", "--out", "again"], tmp_path,
                         module=True)
    assert code == 0, err
    first, again = _config(tmp_path / "first" / "config.json"), _config(tmp_path / "again" / "config.json")
    differ = {k for k in set(first) | set(again) if first.get(k) != again.get(k)} - {"provenance"}  # its own start
    assert differ == {"seed", "out"}, differ  # every setting replayed, the objective's defaults included
    assert again["seed"] == 3 and again["lr"] == 0.001 and again["gp_lambda"] == 10.0
    # its out was not applied, and one line says so
    assert "--config first/config.json: out not applied (where a run writes comes from the command line only)" in out


def test_a_file_counts_as_given_for_the_objectives_defaults(tmp_path):
    (tmp_path / "wgan.json").write_text(json.dumps({"loss": "wgan", "d_steps": 2}))
    code, _, err = run(["train", *TINY, "--config", "wgan.json", "--out", "w"], tmp_path, module=True)
    assert code == 0, err
    config = _config(tmp_path / "w" / "config.json")
    # the file's d_steps wins over WGAN's 5; what neither gives takes WGAN's paper values
    assert (config["loss"], config["d_steps"], config["optimizer"], config["lr"]) == ("wgan", 2, "rmsprop", 5e-5)


def test_the_dcgan_architecture_comes_from_the_file(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"arch": "dcgan", "g_width": 2, "d_width": 2}))
    code, _, err = run(["train", "--config", "d.json", "--dataset", "mnist-bundled", "--limit", "16", "--batch-size",
                        "8", "--latent-dim", "4", "--epochs", "1", "--no-progress", "--out", "d"], tmp_path, module=True)
    assert code == 0, err
    config = _config(tmp_path / "d" / "config.json")
    assert (config["arch"], config["g_width"], config["sample_every"]) == ("dcgan", 2, 200)  # DCGAN's default


@pytest.mark.parametrize("content, line", [
    ({"lr": -1}, "--config c.json: lr: must be a positive number, got -1"),
    ({"batch_size": 2.5}, "--config c.json: batch_size: expected a positive integer, got '2.5'"),
    ({"lr_gg": 0.1}, "--config c.json: unknown key 'lr_gg' (did you mean 'lr_g'?); the keys are the train flags' "
                     "names with underscores (batch_size for --batch-size)"),
    ({"loss": "gan"}, "--config c.json: loss: 'gan' is not one of bce, wgan, wgan-gp, lsgan, hinge"),
    ({"spectral_norm": "yes"}, "--config c.json: spectral_norm: expected true or false, got 'yes'"),
    ({"epochs": None}, "--config c.json: epochs: null is not a value of --epochs"),
    ({"diffaugment": "zoom"}, "--config c.json: diffaugment 'zoom': unknown 'zoom'; give a comma-separated list of "
                              "color, translation, cutout"),  # checked where it is used, said of the file
    ({"g_width": 8}, "--config c.json: g_width is a setting of --arch dcgan; this run is --arch mlp"),
    ([1, 2], "--config c.json: expected an object of settings (key: value), got list"),
    ("{", "--config c.json: not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"),
    (None, "--config c.json: no such file"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, content, line):
    if content is not None:
        (tmp_path / "c.json").write_text(content if isinstance(content, str) else json.dumps(content))
    code, out, err = run(["train", *TINY, "--config", "c.json", "--out", "o"], tmp_path, module=True)
    assert (code, out, err) == (2, "", f"scratchgan train: error: {line}\n")
    assert not (tmp_path / "o").exists()


def test_the_examples_take_a_file_but_not_another_architecture(tmp_path):
    from commands import EXAMPLE
    (tmp_path / "d.json").write_text(json.dumps({"arch": "dcgan"}))
    code, out, err = run(["--config", "d.json", *TINY, "--out", "o"], tmp_path)
    assert code == 2 and err == (f"{EXAMPLE.name}: error: --config d.json: arch is dcgan, and this program trains "
                                 "--arch mlp; use `scratchgan train --config` instead\n"), err


def test_yaml_without_pyyaml_is_one_line_naming_the_extra(tmp_path):
    import subprocess

    from commands import env_for
    (tmp_path / "c.yaml").write_text("lr: 1e-3\n")
    hide = "import sys; sys.modules['yaml'] = None; from scratchgan.__main__ import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", hide, "train", "--config", "c.yaml", *TINY, "--out", "o"],
                          cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == (
        'scratchgan train: error: --config c.yaml: YAML needs pyyaml, which is not installed: pip install '
        '"scratchgan[yaml]" (or write the file as JSON)\n'), proc.stderr
    assert not (tmp_path / "o").exists()


def test_yaml_with_pyyaml(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("lr: 2e-4  # YAML 1.1 reads this as text; the flag's check converts it\n"
                                     "loss: lsgan\n")
    code, _, err = run(["train", *TINY, "--config", "c.yaml", "--out", "y"], tmp_path, module=True)
    assert code == 0, err
    config = _config(tmp_path / "y" / "config.json")
    assert (config["lr"], config["loss"]) == (2e-4, "lsgan")


def test_a_resume_takes_the_files_settings_over_the_checkpoints_and_the_flags_over_both(tmp_path):
    code, _, err = run(["train", *TINY, "--lr", "0.001", "--out", "r"], tmp_path, module=True)
    assert code == 0, err
    (tmp_path / "more.json").write_text(json.dumps({"lr": 0.002, "epochs": 3, "out": "elsewhere"}))
    code, out, err = run(["train", "--config", "more.json", "--resume", "r/checkpoint.npz", "--epochs", "2"], tmp_path,
                         module=True)
    assert code == 0, err
    config = _config(tmp_path / "r" / "config.json")
    assert (config["lr"], config["epochs"], config["batch_size"]) == (0.002, 2, 32)  # file, flag, checkpoint
    assert not (tmp_path / "elsewhere").exists() and "resumed from r/checkpoint.npz at epoch 2" in out
