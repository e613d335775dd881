"""metrics.jsonl (always) and --tensorboard DIR (scratchgan/run/runlog.py).

The TensorBoard test reads the event files back without tensorboardX's help: the TFRecord framing
(length, masked CRC-32C of the length, the record, masked CRC-32C of the record) is checked with a
CRC-32C written here, and each record is decoded as a tensorboard Event protobuf; the scalars must
be the metrics.jsonl values at the same steps and the images the sample grids the run saved.
"""
from __future__ import annotations

import csv
import io
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scratchgan.cli.main import main as cli_main
from scratchgan.run import runlog

TINY = ["--dataset", "mnist-bundled", "--g-hidden", "8", "--d-hidden", "8", "--latent-dim", "4", "--limit", "32",
        "--batch-size", "16", "--no-progress", "--sample-every", "2", "--log-every", "2"]


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_jsonl_has_the_metrics_csv_rows_and_resumes(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    with open(out / "metrics.jsonl", "a") as f:  # what an abandoned run logged after the checkpoint
        f.write('{"step": 99, "loss_D": 3.0}\n')
    assert cli_main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == [2, 4] and len(table) == len(rows)
    for row, line in zip(rows, table):
        assert set(row) == set(line) and "loss_D" in row and "grad_norm_G" in row
        for key, value in row.items():
            assert float(line[key]) == pytest.approx(value, rel=1e-6), key  # the CSV rounds its text


def test_jsonl_drops_a_cut_off_line_and_lines_after_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "loss_D": 1.0}\n{"step": 4, "loss_D": 0.5}\n{"step": 6, "lo')
    log = runlog.MetricsJSONL(path)
    log.append({"step": 6, "loss_D": float("nan"), "D_x": np.float32(0.25)})
    log.close()
    assert read_jsonl(path) == [{"step": 2, "loss_D": 1.0}, {"step": 4, "loss_D": 0.5},
                                {"step": 6, "loss_D": None, "D_x": 0.25}]  # JSON has no NaN: null
    runlog.MetricsJSONL(path).truncate_after(4)
    assert [r["step"] for r in read_jsonl(path)] == [2, 4]


def test_tensorboard_without_the_extra_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed: find_spec gives None
    assert not runlog.tensorboard_available()
    code = cli_main(["train", *TINY, "--tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == ('scratchgan train: error: --tensorboard needs tensorboardX, which is not installed: '
                      'pip install "scratchgan[tensorboard]"')
    assert not (tmp_path / "o").exists() and not (tmp_path / "tb").exists()


# ----------------------------------------------------------------------------- reading event files back
def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli polynomial, reflected
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for byte in data:
        c = _TABLE[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    data, records, at = path.read_bytes(), [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[at + 8:at + 12])
        assert length_crc == masked(crc32c(header)), "bad length CRC"
        record = data[at + 12:at + 12 + length]
        (record_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        assert record_crc == masked(crc32c(record)), "bad record CRC"
        records.append(record)
        at += 16 + length
    return records


def test_crc32c_of_the_standard_check_string():
    assert crc32c(b"123456789") == 0xE3069283  # the published CRC-32C check value


def test_tensorboard_writes_the_scalars_and_the_sample_grids(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event

    out, tb = tmp_path / "run", tmp_path / "tb"
    assert cli_main(["train", *TINY, "--epochs", "1", "--tensorboard", str(tb), "--out", str(out)]) == 0
    files = list(tb.glob("*/events.out.tfevents.*"))  # a folder of the run's own under DIR: run-RUNID
    assert len(files) == 1 and files[0].stat().st_size > 0 and files[0].parent.name.startswith("run-")
    scalars, images = {}, {}
    for record in read_records(files[0]):
        event = Event.FromString(record)
        for value in event.summary.value:
            if value.HasField("image"):
                images[event.step] = value
            else:
                scalars[(value.tag, event.step)] = value.simple_value
    rows = read_jsonl(out / "metrics.jsonl")
    expected = {(k, r["step"]): v for r in rows for k, v in r.items() if k not in ("step", "epoch")}
    assert set(scalars) == set(expected)
    for key, value in expected.items():
        assert scalars[key] == np.float32(value), key  # stored as float32
    assert sorted(images) == [2]  # the grid of step 2 (--sample-every 2, 2 steps): one file per grid, epoch_001.png
    for step, value in images.items():
        assert value.tag == "samples"
        shown = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)).convert("RGB"))
        saved = np.asarray(Image.open(out / "samples" / "epoch_001.png").convert("RGB"))
        assert (value.image.height, value.image.width) == saved.shape[:2]
        assert np.array_equal(shown, saved)


def test_the_extra_is_declared_and_installed_by_ci():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["tensorboard"] == ["tensorboardX>=2.6.2", "tensorboard>=2.18.0"]  # the writer and the viewer
    installs = re.search(r'pip install -q -e "\.\[([a-z,]+)\]"', (root / ".ci" / "run").read_text())
    assert installs and "tensorboard" in installs.group(1).split(",")
    assert runlog.INSTALL_HINT == 'pip install "scratchgan[tensorboard]"'


def test_git_commit_is_none_outside_a_checkout_or_without_git_and_never_raises(tmp_path, monkeypatch):
    from scratchgan.run.runlog import git_commit
    assert git_commit(tmp_path) is None  # an installed package: no .git beside it
    (tmp_path / ".git").write_text("gitdir: /nowhere\n")  # a broken worktree link
    assert git_commit(tmp_path) is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git program at all
    assert git_commit(tmp_path) is None
