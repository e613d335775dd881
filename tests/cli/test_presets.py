"""--preset: a measured recipe fills the flags not given; given flags win; a preset's architecture is the run's
unless --arch says otherwise (then it is refused); the objective's defaults fill what neither sets; a preset is
refused where it was not measured and cannot change on resume."""
from __future__ import annotations

import json
import re

import pytest

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import flags
from scratchgan.cli.main import main as cli_main
from scratchgan.cli.train import train_main
from scratchgan.gan import presets

from datasets import dataset_dir

# small enough for a test: every flag here is one the preset sets too, and a given flag wins
SMALL = ["--limit", "128", "--batch-size", "16", "--epochs", "1", "--no-progress", "--sample-every", "0"]
TINY = ["--dataset", "mnist-bundled", "--g-hidden", "8", "--d-hidden", "8", "--latent-dim", "4", *SMALL]


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))


@pytest.fixture
def fashion():
    """The flags of a Fashion-MNIST run from the test data: the dataset the quality preset was chosen on."""
    return ["--dataset", "fashion-mnist", "--data-dir", str(dataset_dir("fashion-mnist"))]


def config_of(out):
    return load_checkpoint(out / "checkpoint.npz")[1]["config"]


def test_quality_preset_is_a_dcgan_run_with_its_settings_where_not_given(tmp_path, capsys, fashion):
    out = tmp_path / "q"
    assert cli_main(["train", *fashion, "--preset", "quality", *SMALL, "--latent-dim", "8", "--out", str(out)]) == 0
    config = config_of(out)
    assert config["preset"] == "quality" and config["arch"] == "dcgan"
    given = {"batch_size": 16, "epochs": 1}
    for key, value in presets.PRESETS["quality"].items():
        assert config[key] == given.get(key, value), key
    assert config["resolution"] == 28 and config["channels"] == 1  # the DCGAN's defaults for MNIST-like data
    # the objective's own settings (bce: the DCGAN paper's Adam) where neither the preset nor a flag gave them
    assert config["loss"] == "bce" and config["lr"] == 2e-4 and config["beta1"] == 0.5
    assert "--preset quality: " + presets.describe("quality") in capsys.readouterr().out


def test_a_config_file_naming_the_preset_chooses_its_architecture_too(tmp_path, fashion):
    (tmp_path / "q.json").write_text(json.dumps({"preset": "quality", "d_width": 8, "g_width": 8}))
    out = tmp_path / "q"
    assert cli_main(["train", *fashion, "--config", str(tmp_path / "q.json"), *SMALL, "--out", str(out)]) == 0
    config = config_of(out)
    assert config["arch"] == "dcgan" and config["g_width"] == config["d_width"] == 8  # the file wins over it


def test_given_flags_win_over_the_preset(tmp_path, fashion):
    out = tmp_path / "q"
    assert cli_main(["train", *fashion, "--preset", "quality", *SMALL, "--g-width", "8", "--d-width", "4",
                     "--loss", "hinge", "--ema", "0", "--out", str(out)]) == 0
    config = config_of(out)
    assert (config["g_width"], config["d_width"], config["loss"], config["ema"]) == (8, 4, "hinge", 0.0)


def test_without_a_preset_nothing_changes(tmp_path):
    out = tmp_path / "d"
    assert cli_main(["train", *TINY, "--out", str(out)]) == 0
    config = config_of(out)
    assert config["preset"] is None and config["arch"] == "mlp" and config["loss"] == "bce"


@pytest.mark.parametrize("args, pattern", [
    (["--dataset", "fashion-mnist", "--arch", "mlp", "--preset", "quality"],
     r"--preset quality is a --arch dcgan recipe: run it with `scratchgan train --preset quality --dataset "
     r"fashion-mnist` \(without --arch mlp\)$"),
    (["--dataset", "mnist-bundled", "--preset", "fastest"], r"argument --preset: invalid choice: 'fastest'"),
    # chosen on Fashion-MNIST: elsewhere what is best differs
    (["--dataset", "mnist-bundled", "--preset", "quality"],
     r"--preset quality was chosen by measurement on --dataset fashion-mnist only .*drop --preset for --dataset "
     r"mnist-bundled"),
])
def test_bad_presets_exit_2_with_one_line(tmp_path, capsys, args, pattern):
    try:
        code = cli_main(["train", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    except SystemExit as e:  # argparse's errors exit from inside parse_args
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
    assert not (tmp_path / "o").exists()


def test_the_mlp_example_points_to_the_command_that_runs_the_preset(tmp_path, capsys, fashion):
    assert train_main([*fashion, "--preset", "quality", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("--preset quality is a --arch dcgan recipe: run it with `scratchgan "
                                             "train --preset quality --dataset fashion-mnist` (without --arch mlp)"), err
    assert not (tmp_path / "o").exists()


def test_resume_keeps_the_recipe_and_refuses_another(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli_main(["train", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli_main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress",
                     "--preset", "quality"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a run's recipe is set when it starts" in err[0], err
    assert cli_main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert config_of(out)["loss"] == "bce"


def test_help_documents_every_preset(capsys):
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in presets.PRESETS:
        assert f"{name}: {presets.describe(name)}" in text


def test_the_dry_run_names_the_preset_as_a_source_and_a_file_wins_over_it(tmp_path, capsys, fashion):
    (tmp_path / "base.json").write_text('{"loss": "hinge"}')
    assert cli_main(["train", *fashion, "--config", str(tmp_path / "base.json"), "--preset", "quality",
                     "--dry-run", "--out", str(tmp_path / "p")]) == 0
    rows = capsys.readouterr().out.split("  settings  ", 1)[1].splitlines()
    said = {m.group(1): (m.group(2), m.group(3)) for m in (re.match(r"    (\w+) +(\S+) +(.+)$", r) for r in rows) if m}
    assert said["preset"] == ("quality", "flag --preset")
    assert said["arch"][0] == "dcgan" and said["g_width"] == ("32", "preset quality"), said
    assert said["loss"][0] == "hinge" and said["loss"][1].startswith("config file"), said["loss"]
