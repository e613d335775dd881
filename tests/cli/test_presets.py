"""--preset: a measured recipe fills the flags not given; given flags win; the objective's defaults
fill what neither sets; a preset is refused where it was not measured and cannot change on resume."""
from __future__ import annotations

import re

import pytest

from scratchgan.checkpoint import load_checkpoint
from scratchgan.cli import flags
from scratchgan.cli.main import main as cli_main
from scratchgan.gan import presets
from datasets import dataset_dir

SMALL = ["--g-hidden", "8", "--d-hidden", "8", "--latent-dim", "4", "--limit", "160", "--batch-size", "16",
         "--epochs", "1", "--no-progress", "--sample-every", "0"]
TINY = ["--dataset", "mnist-bundled", *SMALL]


@pytest.fixture
def fashion():
    """A tiny Fashion-MNIST run's flags: the dataset the quality preset was chosen on."""
    return ["--dataset", "fashion-mnist", "--data-dir", str(dataset_dir("fashion-mnist")), *SMALL]


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))


def config_of(out):
    return load_checkpoint(out / "checkpoint.npz")[1]["config"]


def test_quality_preset_fills_the_flags_not_given_and_says_so(tmp_path, capsys, fashion):
    out = tmp_path / "q"
    assert cli_main(["train", *fashion, "--preset", "quality", "--out", str(out)]) == 0
    config = config_of(out)
    assert config["preset"] == "quality"
    for key, value in presets.PRESETS["quality"].items():
        assert config[key] == value
    # the preset's objective brings its paper's settings for the flags neither the preset nor the user gave
    for key, value in flags.loss_defaults(config["loss"]).items():
        assert config[key] == value, key
    assert "--preset quality: loss=wgan-gp" in capsys.readouterr().out


def test_given_flags_win_over_the_preset(tmp_path, fashion):
    out = tmp_path / "q"
    assert cli_main(["train", *fashion, "--preset", "quality", "--loss", "hinge", "--lr", "3e-4",
                     "--out", str(out)]) == 0
    config = config_of(out)
    assert config["loss"] == "hinge" and config["lr"] == 3e-4 and config["d_steps"] == 1


def test_without_a_preset_nothing_changes(tmp_path):
    out = tmp_path / "d"
    assert cli_main(["train", *TINY, "--out", str(out)]) == 0
    config = config_of(out)
    assert config["preset"] is None and config["loss"] == "bce" and config["d_steps"] == 1


@pytest.mark.parametrize("args, pattern", [
    (["--arch", "dcgan", "--preset", "quality"], r"--preset quality was measured for --arch mlp only"),
    (["--preset", "fastest"], r"argument --preset: invalid choice: 'fastest'"),
    # chosen on Fashion-MNIST: on the bundled digits the objectives rank otherwise
    (["--preset", "quality"], r"--preset quality was chosen by measurement on --dataset fashion-mnist only .*"
                              r"drop --preset for --dataset mnist-bundled"),
])
def test_bad_presets_exit_2_with_one_line(tmp_path, capsys, args, pattern):
    try:
        code = cli_main(["train", "--dataset", "mnist-bundled", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    except SystemExit as e:  # argparse's errors exit from inside parse_args
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
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
    assert said["loss"][0] == "hinge" and said["loss"][1].startswith("config file"), said["loss"]
