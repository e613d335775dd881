"""--eval-every: quality metrics logged during training, plotted, and refused where they cannot apply."""
import json

import numpy as np
import pytest

from scratchgan.cli import train as train_command
from scratchgan.eval import evaluator
from scratchgan.run import viz

TINY = ["--dataset", "mnist-bundled", "--limit", "512", "--batch-size", "32", "--g-hidden", "32,64",
        "--d-hidden", "64,32", "--no-progress", "--log-every", "4", "--sample-every", "0"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    # the evaluator trained here (default epochs) takes about 60 Adam steps, not thousands
    monkeypatch.setitem(evaluator.TARGET_STEPS_BY_KIND, "cnn", 60)
    monkeypatch.setitem(evaluator.TARGET_STEPS_BY_KIND, "mlp", 60)
    return tmp_path / "cache"


def test_eval_every_logs_metrics_into_the_csv_and_the_plot(tmp_path, monkeypatch):
    plotted = {}
    real_plot = viz.plot_losses

    def spy(rows, path, **kwargs):
        plotted["panels"] = kwargs.get("extra_panels")
        return real_plot(rows, path, **kwargs)
    monkeypatch.setattr(viz, "plot_losses", spy)
    out = tmp_path / "run"
    assert train_command.train_main(TINY + ["--epochs", "1", "--eval-every", "8", "--out", str(out)]) == 0
    rows = viz.read_metrics_csv(out / "metrics.csv")
    evaluated = [r for r in rows if r.get("frechet_distance") not in (None, "")]
    assert [r["step"] for r in evaluated] == [8, 16]  # 16 steps in the epoch, every 8th evaluated
    for r in evaluated:
        assert np.isfinite(r["frechet_distance"]) and r["frechet_distance"] > 0
        assert 1 <= r["classes_covered"] <= 10 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
        assert np.isfinite(r["loss_D"])  # the same row also holds the losses of that step
    assert ("frechet_distance",) in plotted["panels"]
    assert (out / "losses.png").stat().st_size > 0
    # the CNN evaluator is the default: the run records it, and its cache file is the CNN's
    assert json.loads((out / "config.json").read_text())["evaluator"] == "cnn"


def test_eval_every_with_the_mlp_evaluator(tmp_path, isolated_cache):
    out = tmp_path / "run"
    assert train_command.train_main(TINY + ["--epochs", "1", "--eval-every", "16", "--evaluator", "mlp",
                                  "--out", str(out)]) == 0
    rows = [r for r in viz.read_metrics_csv(out / "metrics.csv") if r.get("frechet_distance") not in (None, "")]
    assert len(rows) == 1 and np.isfinite(rows[0]["frechet_distance"])
    assert json.loads((out / "config.json").read_text())["evaluator"] == "mlp"
    names = [p.name for p in (isolated_cache / "evaluators").glob("*.npz")]
    assert len(names) == 1 and "_mlp784-" in names[0]


def test_evaluator_flag_is_documented_and_checked(capsys):
    with pytest.raises(SystemExit) as e:
        train_command.train_main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--evaluator {cnn,mlp}" in text and "(default: cnn)" in text.split("--evaluator {cnn,mlp}")[-1][:200]
    with pytest.raises(SystemExit) as e:
        train_command.train_main(TINY + ["--eval-every", "8", "--evaluator", "vgg"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--evaluator" in err[0] and "invalid choice" in err[0]


def test_eval_every_is_refused_for_images_the_classifier_does_not_know(tmp_path, capsys):
    from scratchgan.data import load_mnist_bundled, make_demo_folder
    folder = tmp_path / "faces"
    make_demo_folder(folder, load_mnist_bundled()[0][:40], size=28, n=40)
    code = train_command.train_main(["--dataset", "folder", "--data-dir", str(folder), "--epochs", "1", "--eval-every", "5",
                           "--out", str(tmp_path / "d"), "--no-progress", "--batch-size", "8",
                           "--g-width", "4", "--d-width", "4", "--image-size", "28"],
                          prog="dcgan.py", defaults=train_command.DCGAN_DEFAULTS)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--eval-every" in err[0]


def test_resuming_a_run_of_an_earlier_release_keeps_the_mlp_evaluator(tmp_path):
    """A checkpoint whose config predates --evaluator measured --eval-every in the MLP's features: its
    metrics.csv (and the collapse check over it) stays in that embedding unless --evaluator says otherwise."""
    from scratchgan.checkpoint import save_checkpoint
    old_config = {k: v for k, v in train_command.MLP_DEFAULTS.items() if k != "evaluator"}
    path = save_checkpoint(tmp_path / "checkpoint.npz", {"w": np.zeros(2)},
                           {"config": {**old_config, "eval_every": 100}})
    for argv, kind in ((["--resume", str(path)], "mlp"), (["--resume", str(path), "--evaluator", "cnn"], "cnn")):
        parser = train_command.make_train_parser("t", "", train_command.MLP_DEFAULTS)
        explicit = vars(train_command.make_train_parser("t", "", train_command.MLP_DEFAULTS, suppress=True).parse_args(argv))
        config, _ = train_command.resolve_config(parser.parse_args(argv), explicit, train_command.MLP_DEFAULTS, log=None)
        assert config["evaluator"] == kind
    path = save_checkpoint(tmp_path / "off.npz", {"w": np.zeros(2)}, {"config": {**old_config, "eval_every": 0}})
    argv = ["--resume", str(path)]
    explicit = vars(train_command.make_train_parser("t", "", train_command.MLP_DEFAULTS, suppress=True).parse_args(argv))
    config, _ = train_command.resolve_config(train_command.make_train_parser("t", "", train_command.MLP_DEFAULTS).parse_args(argv), explicit,
                                   train_command.MLP_DEFAULTS, log=None)
    assert config["evaluator"] == "cnn"  # it measured nothing: the default applies
