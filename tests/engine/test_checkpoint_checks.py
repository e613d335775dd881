"""A checkpoint is checked before it is used, and is data, never instructions.

Every command that loads one (``train --resume``, ``sample``, ``interpolate``, ``evaluate``, ``export``)
refuses, in one line with exit code 2 that names the file and what is wrong with it:
- an array holding NaN or Inf (the first one is named);
- metadata that breaks checkpoint_schema's table (the key is named): ``meta.noise={"bogus": 1}``,
  ``config.image_shape=["../../etc", 28]``, ``config.latent_dim=10**12``;
- an array whose ``.npy`` header declares more than the file holds (10^11 floats), and arrays that do
  not fit the networks the config describes, before they are read: the memory a command uses on a
  23 MB file stays far below 23 MB (measured with tracemalloc in the child process).
And the schema accepts every checkpoint that the project's own commands write.

The crafted files are made from one tiny real run; all command cases run as real processes, started
together so that their imports overlap. checkpoint_schema and read_meta are imported where they are
used, so that the command cases also run (and fail) on a scratchgan without them.
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scratchgan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scratchgan.cli import export
from scratchgan.cli import sample as sample_cli
from scratchgan.cli import train as train_command
from scratchgan.gan import generator_file

REPO = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "mnist-bundled", "--limit", "128", "--batch-size", "32", "--g-hidden", "32,64",
        "--d-hidden", "64,32", "--latent-dim", "16", "--no-progress", "--sample-every", "0", "--epochs", "1"]
BIG_COLUMNS = 90_000  # G's last weight as (64, 90000) float32: a 23 MB checkpoint

# `python -m scratchgan ...`, reporting the peak of the memory the command allocates (imports excluded)
DRIVER = """
import os, sys, tracemalloc
from scratchgan.__main__ import main
from scratchgan import fast
from scratchgan.cli import evaluate, export, sample, train  # imported before the measurement starts
fast.configure_process()  # its one deliberate 32 MiB block (fast/process.py), before the measurement too
tracemalloc.start()
try:
    code = main(sys.argv[1:])
finally:
    with open(os.environ["PEAK_FILE"], "w") as f:
        f.write(str(tracemalloc.get_traced_memory()[1]))
sys.exit(code)
"""


def _command(name, checkpoint, out):
    """The argv of each command that loads ``checkpoint``, writing under ``out`` (a new path)."""
    return {"train": ["train", "--resume", str(checkpoint), "--out", str(out), "--epochs", "2", "--no-progress"],
            "sample": ["sample", "--checkpoint", str(checkpoint), "--n", "4", "--out", str(out)],
            "interpolate": ["interpolate", "--checkpoint", str(checkpoint), "--seeds", "0,1", "--steps", "2",
                            "--out", f"{out}.gif"],
            "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--n", "100", "--evaluator-limit", "600",
                         "--evaluator-epochs", "1", "--json", f"{out}.json"],
            "export": ["export", "--checkpoint", str(checkpoint), "--out", f"{out}.npz"]}[name]


COMMANDS = ("train", "sample", "interpolate", "evaluate", "export")


# ---------------------------------------------------------------------------------- crafting files
def crafted(src, dst, arrays=None, meta=None):
    """A copy of checkpoint ``src`` at ``dst`` with ``arrays(dict)`` / ``meta(dict)`` applied in place."""
    a, m = load_checkpoint(src)
    if arrays is not None:
        arrays(a)
    if meta is not None:
        meta(m)
    return save_checkpoint(dst, a, m)


def declaring(src, dst, name, shape):
    """A copy of ``src`` whose array ``name`` keeps its bytes but whose .npy header declares ``shape``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == name + ".npy":
                array = np.lib.format.read_array(io.BytesIO(data))
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(array.dtype),
                                                              "fortran_order": False, "shape": shape})
                data = header.getvalue() + array.tobytes()
            zout.writestr(info.filename, data)
    return dst


def set_nan(name, where=(0, 0)):
    def apply(arrays):
        arrays[name] = arrays[name].copy()
        arrays[name][where] = np.nan
    return apply


def set_config(key, value):
    def apply(meta):
        meta["config"][key] = value
    return apply


def widen_last_weight(arrays):
    """G's last Linear holds (64, BIG_COLUMNS) instead of (64, 784): 23 MB that fits no network of its config."""
    arrays["G/5.W"] = np.random.default_rng(0).standard_normal((64, BIG_COLUMNS)).astype(np.float32)


# case -> (make(src, dst), what the one line must name besides the file)
CASES = {
    # NaN in G: refused, never sampled into NaN images
    "nan-in-G": (lambda s, d: crafted(s, d, arrays=set_nan("G/2.W")), r"NaN/Inf in G/2\.W \(1 of 2,048 values\)"),
    # NaN in D and in opt_D/v, which sampling never uses: still refused, naming the first bad array (D/0.W)
    "nan-in-D": (lambda s, d: crafted(s, d, arrays=lambda a: (set_nan("D/0.W")(a), set_nan("opt_D/v", 3)(a))),
                 r"NaN/Inf in D/0\.W \(1 of"),
    "bogus-noise": (lambda s, d: crafted(s, d, meta=lambda m: m.update(noise={"bogus": 1})),
                    r"meta\.noise\.epoch is missing"),
    "image-shape-path": (lambda s, d: crafted(s, d, meta=set_config("image_shape", ["../../etc", 28])),
                         r"config\.image_shape is \['\.\./\.\./etc', 28\], expected a list of 2 to 3 integers"),
    "latent-dim-huge": (lambda s, d: crafted(s, d, meta=set_config("latent_dim", 10**12)),
                        r"config\.latent_dim is 1000000000000, expected an integer in \[1, 65,536\]"),
    "header-1e11": (lambda s, d: declaring(s, d, "G/0.W", (100_000, 1_000_000)),
                    r"array G/0\.W declares shape \(100000, 1000000\) of float32 \(373 GiB\), but the file holds "
                    r"2 KiB for it"),
    "big-unfit-shapes": (lambda s, d: crafted(s, d, arrays=widen_last_weight),
                         r"describes a generator of 52,736 weights, but the file holds 5,763,696 values under G/"),
}
# NaN in G: `export` already refused it before these checks (export.py's own check), so its case is no news
SKIP = {("nan-in-G", "export")}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny real training checkpoint (MLP, 4 steps), the tree every case is crafted from."""
    tmp = tmp_path_factory.mktemp("source")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHGAN_DATA", str(tmp / "empty-cache"))
        assert train_command.train_main([*TINY, "--out", str(tmp / "run")]) == 0
    return tmp / "run" / "checkpoint.npz"


@pytest.fixture(scope="module")
def outcomes(source, tmp_path_factory):
    """{(case, command): (exit code, stderr, peak bytes, file size, checkpoint, out)}, all run at once."""
    tmp = tmp_path_factory.mktemp("cases")
    files = {case: make(source, tmp / f"{case}.npz") for case, (make, _) in CASES.items()}
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCRATCHGAN_DATA": str(tmp / "cache")}
    procs = {}
    for case, path in files.items():
        for command in COMMANDS:
            if (case, command) in SKIP:
                continue
            out, peak = tmp / "out" / f"{case}-{command}", tmp / f"{case}-{command}.peak"
            procs[case, command] = (subprocess.Popen(
                [sys.executable, "-c", DRIVER, *_command(command, path, out)], cwd=tmp, text=True,
                env={**env, "PEAK_FILE": str(peak)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE), peak, path, out)
    results = {}
    for key, (proc, peak, path, out) in procs.items():
        _, err = proc.communicate(timeout=300)
        peak_bytes = int(peak.read_text()) if peak.exists() else None
        results[key] = (proc.returncode, err, peak_bytes, path.stat().st_size, path, out)
    return results


@pytest.mark.parametrize("case, command", [pytest.param(c, k, id=f"{c}-{k}") for c in CASES for k in COMMANDS
                                           if (c, k) not in SKIP])
def test_a_bad_checkpoint_is_one_line_naming_the_file_and_what_is_wrong(outcomes, case, command):
    code, err, _, _, path, out = outcomes[case, command]
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1, f"exit {code}: {err!r}"
    assert lines[0].startswith(f"scratchgan {command}: error: {path}"), lines[0]
    assert re.search(CASES[case][1], lines[0]), lines[0]
    assert "--n" not in lines[0] and "out of memory" not in lines[0], lines[0]
    written = [p for p in (out.parent.glob(f"{out.name}*") if out.parent.exists() else [])]
    assert written == [], f"a refused checkpoint wrote {written}"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_23_mb_file_is_not_read_before_its_shapes_are_checked(outcomes, command):
    """G's last weight widened to 23 MB: refused on the headers, so the command allocates a small
    fraction of the file (the shapes are compared before the arrays are read)."""
    code, err, peak, size, _, _ = outcomes["big-unfit-shapes", command]
    assert code == 2, err
    assert size > 20e6 and peak is not None and peak < size / 8, f"peak {peak:,} bytes for a file of {size:,}"


# ---------------------------------------------------------------------------------- in process: the rules
def _refused(path, pattern, need="training"):
    from scratchgan.gan import checkpoint_schema
    with pytest.raises(CheckpointError, match=pattern) as info:
        checkpoint_schema.load_run_checkpoint(path, need=need)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("change, pattern", [
    (lambda m: m["config"].update(lr=float("nan")), r"config\.lr is nan, expected a finite number above 0"),
    (lambda m: m["config"].update(batch_size=True), r"config\.batch_size is True, expected an integer"),
    (lambda m: m["config"].update(g_hidden="32,0"), r"config\.g_hidden is '32,0', expected comma-separated"),
    (lambda m: m["config"].update(g_hidden=[32, 64]), r"config\.g_hidden is \[32, 64\]"),
    (lambda m: m["config"].update(arch="transformer"), r"config\.arch is 'transformer', expected one of"),
    (lambda m: m["config"].update(diffaugment="translation,rm -rf"), r"config\.diffaugment is 'translation,rm -rf'"),
    (lambda m: m["config"].update(image_shape=[28, 27]), r"config\.image_shape is \[28, 27\], expected 784 values"),
    (lambda m: m["config"].pop("g_hidden"), r"config\.g_hidden is missing"),
    (lambda m: m.update(config=[1, 2]), r"holds no model config"),
    (lambda m: m.update(epoch=-1), r"meta\.epoch is -1, expected an integer in \[0, "),
    (lambda m: m.pop("opt_G_t"), r"meta\.opt_G_t is missing"),
    (lambda m: m["noise"].update(extra={"gp_alpha": ["normal", [32, "1"], 3]}),
     r"meta\.noise\.extra\.gp_alpha\[1\] is \[32, '1'\]"),
    (lambda m: m.update(dropout=[{"seed": 1, "draws": 2, "shape": [32, 16], "dtype": "object"}]),
     r"meta\.dropout\[0\]\.dtype is 'object'"),
    (lambda m: m.update(best={"frechet_distance": "low", "step": 3}), r"meta\.best\.frechet_distance is 'low'"),
    (lambda m: m.update(kind="scratchgan-evaluator"), r"meta\.kind is 'scratchgan-evaluator'"),
], ids=["lr-nan", "bool-batch", "zero-layer", "list-sizes", "arch", "diffaugment", "shape-size", "no-g-hidden",
        "config-list", "epoch", "no-opt-t", "stream-shape", "dropout-dtype", "best", "kind"])
def test_the_schema_names_the_key_that_breaks_it(source, tmp_path, change, pattern):
    _refused(crafted(source, tmp_path / "c.npz", meta=change), pattern)


def test_the_schema_is_one_table_that_covers_every_training_flag():
    """Every key a run records in its config has a rule (a new flag must say what values a checkpoint may
    give it back), and the rules are data: a table of key -> type and range."""
    from scratchgan.gan import checkpoint_schema
    keys = set(train_command.MLP_DEFAULTS) | set(train_command.DCGAN_DEFAULTS) | {"image_size", "image_shape", "num_images",
                                                               "environment", "num_classes", "ranks", "cuda_graph",
                                                               "tf32", "reference", "dry_run_of", "class_names"}
    assert sorted(keys - set(checkpoint_schema.CONFIG)) == []
    assert all(callable(rule) and hasattr(rule, "expected") or isinstance(rule, checkpoint_schema.Anything)
               for rule in checkpoint_schema.CONFIG.values())


def test_headers_are_checked_against_the_bytes_held(source, tmp_path):
    # a member that declares fewer values than it holds is refused as well as one that declares more
    _refused(declaring(source, tmp_path / "short.npz", "D/0.W", (2, 2)), r"array D/0\.W declares shape \(2, 2\)")
    # compressed members may declare any size: refused before one byte is inflated
    arrays, meta = load_checkpoint(source)
    np.savez_compressed(tmp_path / "deflated.npz", **arrays, __meta__=np.array(json.dumps(meta)))
    _refused(tmp_path / "deflated.npz", r"is compressed; scratchgan reads checkpoints stored uncompressed")
    # objects are refused on their header, never unpickled (allow_pickle stays False)
    with zipfile.ZipFile(tmp_path / "objects.npz", "w") as zf:
        with zf.open("__meta__.npy", "w") as f:
            np.lib.format.write_array(f, np.array(json.dumps(meta)))
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        zf.writestr("G/0.W.npy", header.getvalue() + b"\x80\x04K\x01.")  # a pickle of the number 1
    with pytest.raises(CheckpointError, match=r"objects\.npz: array G/0\.W holds Python objects"):
        load_checkpoint(tmp_path / "objects.npz")


def test_read_meta_reads_no_array(source, monkeypatch):
    from scratchgan import checkpoint
    from scratchgan.checkpoint import read_meta
    real = checkpoint._read_array

    def metadata_only(zf, entry):
        assert entry.info.filename == "__meta__.npy", f"read_meta read {entry.info.filename}"
        return real(zf, entry)
    monkeypatch.setattr(checkpoint, "_read_array", metadata_only)
    assert read_meta(source)["global_step"] == 4


def test_a_crafted_replay_is_refused_before_it_runs(source, tmp_path, capsys):
    """Resuming replays the noise and dropout draws a checkpoint records: a count no epoch of the run makes,
    or a draw larger than a batch, is refused naming the key, before any draw is replayed."""
    cases = {"draws": (lambda m: m["noise"].update(draws=2_000_000), r"meta\.noise\.draws records 2,000,000 draws"),
             "shape": (lambda m: m["noise"].update(extra={"instance_noise": ["normal", [10**6, 10**6], 1]}),
                       r"meta\.noise\.extra\.instance_noise records draws of shape \[1000000, 1000000\]")}
    for name, (change, pattern) in cases.items():
        path = crafted(source, tmp_path / f"{name}.npz", meta=change)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
            code = train_command.train_main(["--resume", str(path), "--out", str(tmp_path / f"r-{name}"), "--epochs", "2",
                                   "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err


# ---------------------------------------------------------------------------------- what the project writes
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """{name: path} of the checkpoints the project's own commands write, from tiny runs: the MLP with
    every tool that records state (--ema, --dropout, wgan-gp's alpha stream, DiffAugment's streams,
    instance noise) and its snapshot, a conditional MLP with a learned embedding, an RGB DCGAN, a
    --dry-run, a run with --eval-every and its checkpoint_best.npz, and `export`'s generator files."""
    tmp = tmp_path_factory.mktemp("written")
    runs = {
        "mlp-tools": [*TINY, "--ema", "0.9", "--dropout", "0.3", "--loss", "wgan-gp", "--d-steps", "2",
                      "--diffaugment", "translation,cutout,color", "--instance-noise", "0.1", "--snapshot-every", "1"],
        "conditional": [*TINY, "--conditional", "--embedding-dim", "4", "--optimizer", "rmsprop", "--spectral-norm"],
        "dry-run": [*TINY, "--dry-run"],
        "best": [*TINY, "--eval-every", "2", "--evaluator", "mlp", "--limit", "64"],
    }
    from scratchgan.eval import evaluator
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHGAN_DATA", str(tmp / "cache"))
        # a real evaluator, trained on fewer images than the default so that the run takes a second
        mp.setattr(evaluator, "get_evaluator", functools.partial(evaluator.get_evaluator, limit=600, epochs=1))
        for name, argv in runs.items():
            assert train_command.train_main([*argv, "--out", str(tmp / name)]) == 0, name
        assert train_command.train_main(["--dataset", "mnist-bundled", "--limit", "32", "--batch-size", "16", "--g-width", "2",
                               "--d-width", "2", "--latent-dim", "8", "--epochs", "1", "--no-progress",
                               "--sample-every", "0", "--channels", "3", "--out", str(tmp / "dcgan")],
                              prog="dcgan.py", defaults=train_command.DCGAN_DEFAULTS) == 0
    paths = {name: tmp / name / "checkpoint.npz" for name in (*runs, "dcgan")}
    paths["snapshot"] = tmp / "mlp-tools" / "checkpoint_epoch0001.npz"
    paths["best-of-run"] = tmp / "best" / "checkpoint_best.npz"
    for name in ("mlp-tools", "conditional", "dcgan"):
        assert export.export_main(["--checkpoint", str(paths[name]), "--out", str(tmp / f"G-{name}.npz")]) == 0
        paths[f"export-{name}"] = tmp / f"G-{name}.npz"
    assert all(p.exists() for p in paths.values()), paths
    return paths


def test_every_checkpoint_the_project_writes_passes_the_checks(written, tmp_path, capsys):
    from scratchgan.checkpoint import read_meta
    from scratchgan.gan import checkpoint_schema
    for name, path in written.items():
        need = "generator" if name.startswith("export-") else "training"
        _, meta = checkpoint_schema.load_run_checkpoint(path, need=need)
        G, config, _ = generator_file.load_generator(path, np)
        assert sample_cli.sample_main(["--checkpoint", str(path), "--n", "2", "--out", str(tmp_path / name)]) == 0
        assert np.isfinite(np.load(tmp_path / f"{name}.npy")).all()
    assert read_meta(written["best-of-run"])["best"]["step"] > 0
    capsys.readouterr()


@pytest.mark.parametrize("name", ["mlp-tools", "conditional", "dcgan", "best-of-run"])
def test_the_project_s_checkpoints_resume(written, tmp_path, name, monkeypatch):
    """Resumed into a new folder: the replay of noise, dropout and augmentation draws passes its bounds."""
    from scratchgan.gan import checkpoint_schema
    checkpoint_schema.load_run_checkpoint(written[name], need="training")
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "cache"))
    argv = ["--resume", str(written[name]), "--out", str(tmp_path / "r"), "--epochs", "2", "--no-progress"]
    if name == "best-of-run":  # its run measured with --eval-every: resumed without it, for speed
        argv += ["--eval-every", "0"]
    assert train_command.train_main(argv, prog="scratchgan train", defaults=None) == 0
    assert load_checkpoint(tmp_path / "r" / "checkpoint.npz")[1]["epoch"] == 2


def test_the_weight_bound_follows_the_builders(written):
    """network_weights is a lower bound of the built networks' parameters, within SLACK_FACTOR of them."""
    from scratchgan.checkpoint import read_meta
    from scratchgan.gan import checkpoint_schema
    from scratchgan.gan.models import build_gan
    for name in ("mlp-tools", "conditional", "dcgan"):
        config = read_meta(written[name])["config"]
        for net, built in zip("GD", build_gan(config, np)):
            weights, params = checkpoint_schema.network_weights(config, net), built.num_parameters()
            assert weights <= params <= checkpoint_schema.SLACK_FACTOR * weights, (name, net, weights, params)
