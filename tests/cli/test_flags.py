"""The train command's one table of flags (scratchgan/cli/flags.py): everything derived from it agrees with it,
and the library's errors name settings, which the command line turns into its flags."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from scratchgan.cli import flags
from scratchgan.cli import train as train_command
from scratchgan.cli.main import main as cli_main
from scratchgan.gan import checkpoint_schema, objectives, presets

PACKAGE = Path(__file__).resolve().parents[2] / "scratchgan"
TINY = ["--dataset", "mnist-bundled", "--limit", "64", "--batch-size", "16", "--epochs", "1", "--g-hidden", "8",
        "--d-hidden", "8", "--latent-dim", "4", "--sample-every", "0", "--no-progress"]


def test_every_flag_has_a_checkpoint_rule_so_a_new_flag_cannot_be_forgotten_there():
    keys = {f.key for f in flags.FLAGS if f.action != "version"}
    assert sorted(keys - set(checkpoint_schema.CONFIG)) == []


def test_each_flag_is_stated_once_and_the_defaults_come_from_the_table():
    assert len(flags.BY_KEY) == len(flags.FLAGS)
    names = [f.flag for f in flags.FLAGS] + [f.negation[0] for f in flags.FLAGS if f.negation]
    assert len(names) == len(set(names))
    for arch, defaults in train_command.ARCH_DEFAULTS.items():
        assert defaults["arch"] == arch
        for key, value in defaults.items():
            assert flags.BY_KEY[key].default_for(arch) == value, key
    assert set(flags.arch_only()["dcgan"]) == set(train_command.DCGAN_DEFAULTS) - set(train_command.MLP_DEFAULTS)
    assert set(flags.arch_only()["mlp"]) == set(train_command.MLP_DEFAULTS) - set(train_command.DCGAN_DEFAULTS)


def test_presets_and_objective_defaults_name_flags_and_values_the_flags_accept():
    for name, recipe in presets.PRESETS.items():
        for key, value in recipe.items():
            flag = flags.BY_KEY[key]  # KeyError: a preset sets something that is no flag
            assert flag.choices is None or value in flag.choices, (name, key)
    for loss in objectives.NAMES:
        for key, value in flags.loss_defaults(loss).items():
            flag = flags.BY_KEY[key]
            assert flag.choices is None or value in flag.choices, (loss, key)
            assert flag.type is None or flag.type(str(value)) == value, (loss, key)
    assert flags.loss_defaults("bce") == {}  # the standard objective trains with the flags' own defaults
    assert flags.loss_defaults("wgan-gp")["gp_lambda"] == objectives.WGANGPObjective().gp_lambda


def test_a_resume_never_takes_places_or_process_settings_from_the_checkpoint():
    assert set(train_command.COMMAND_LINE_ONLY) == {"out", "name", "resume", "overwrite", "tensorboard", "reference", "cuda_graph",
                                          "tf32"}


@pytest.mark.parametrize("defaults, both", [(train_command.MLP_DEFAULTS, False), (train_command.DCGAN_DEFAULTS, False),
                                            (train_command.MLP_DEFAULTS, True)])
def test_every_flag_of_a_parser_says_its_default(defaults, both):
    parser = train_command.make_train_parser("t", "", defaults, both=both)
    for action in parser._actions:  # argparse keeps them there; it has no public list
        if action.dest in ("help", "version"):
            continue
        assert "default" in action.help, action.option_strings  # --no-cuda-graph: "the default"


def _engine_raise_texts(path):
    """The string pieces of every ``raise`` in a module."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for piece in ast.walk(node.exc):
                if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                    yield node.lineno, piece.value


# gradient_penalty.py is left out: its rewrite (one second-order pass per layer) is under way elsewhere
ENGINE = [*sorted((PACKAGE / "nn").glob("*.py")), *(PACKAGE / f"{m}.py" for m in (
    "losses", "optim", "params", "gan/step", "gan/objectives", "gan/models", "gan/ema", "gan/diffaugment",
    "eval/metrics"))]


@pytest.mark.parametrize("path", ENGINE, ids=lambda p: p.name)
def test_the_engine_speaks_the_librarys_words_not_flags(path):
    flagged = [(line, text) for line, text in _engine_raise_texts(path) if re.search(r"--[a-z]", text)]
    assert flagged == []


@pytest.mark.parametrize("argv, line", [
    (["--loss", "wgan", "--loss-on", "probs"], "--loss-on probs is for the bce objective only: wgan works on D's raw"),
    (["--loss", "hinge", "--label-smoothing", "0.1"], "--label-smoothing is for the bce or lsgan objective, not hinge"),
    (["--g-hidden", "8,x"], "--g-hidden must be comma-separated positive integers, got '8,x'"),
    (["--diffaugment", "flip"], "--diffaugment 'flip': unknown 'flip'"),
])
def test_the_command_line_turns_a_settings_name_into_its_flag(argv, line, tmp_path, capsys):
    assert cli_main(["train", *TINY, *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and line in err[0], err


def test_the_checkpoint_rules_accept_every_choice_and_default_the_flags_allow():
    """A config key's rule and its flag agree: what the flag can give, a checkpoint may record."""
    for flag in flags.FLAGS:
        if flag.action == "version":
            continue
        rule = checkpoint_schema.CONFIG[flag.key]
        values = [*(flag.choices or ()), *flag.dcgan_choices, *flag.by_loss.values()]
        values += [flag.default_for(arch) for arch in flag.arch]
        for value in values:
            rule(value, f"config.{flag.key}")  # raises when the rule refuses what the flag gives
        if flag.choices is not None and flag.type is None:  # and a name no flag gives is refused
            with pytest.raises(checkpoint_schema._Bad):
                rule("no-such-choice", f"config.{flag.key}")
