"""A run owns exactly the files it wrote (scratchgan/run/rundir.py): OUT/manifest.json records the run's id and
every file it writes, before it writes it; --overwrite, the "drop what came after the resumed step" logic
and the used-folder check act on its entries only, never through a symbolic link, never on a file because
of its name; --resume writes only into the folder of the checkpoint's own run.

Each of the issue's cases is here as the user met it, and a randomized test plants files with output-like
names, links and sub-folders, runs --overwrite and --resume, and checks that every planted byte is still
there. Runs are in process, on 256 bundled digits and tiny networks (about half a second each).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil

import numpy as np
import pytest
from commands import one_line
from PIL import Image

from scratchgan import fileio
from scratchgan.checkpoint import load_checkpoint, save_checkpoint
from scratchgan.cli.main import main as cli_main
from scratchgan.run import rundir

TINY = ["--dataset", "mnist-bundled", "--limit", "256", "--batch-size", "64", "--g-hidden", "16,32",
        "--d-hidden", "16", "--latent-dim", "8", "--no-progress", "--log-every", "1"]
STEPS = 256 // 64  # per epoch
pytestmark = pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "empty-cache"))


def train(*argv):
    """`scratchgan train ARGV` in this process; the exit code."""
    return cli_main(["train", *argv])


def snapshot(*folders):
    """Every path under ``folders`` (not following links): a file's bytes, a link's target, a folder's mark."""
    found = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(root, name)
                if os.path.islink(path):
                    found[path] = ("link", os.readlink(path))
                elif os.path.isdir(path):
                    found[path] = ("folder",)
                else:
                    with open(path, "rb") as f:
                        found[path] = ("file", f.read())
    return found


def manifest_of(out):
    return json.loads((out / "manifest.json").read_text())


def png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


# ------------------------------------------------------------------------------------------- the manifest
def test_the_manifest_records_every_file_with_the_run_id_of_every_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert train(*TINY, "--epochs", "2", "--sample-every", "2", "--snapshot-every", "1", "--out", str(out)) == 0
    manifest = manifest_of(out)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == written
    assert manifest["folders"] == ["samples"]
    grids = {rel: step for rel, step in manifest["files"].items() if rel.startswith("samples/")}
    # one file per grid: a step that ends an epoch has its epoch grid only
    assert grids == {"samples/step_0000002.png": 2, "samples/step_0000006.png": 6,
                     "samples/epoch_001.png": 4, "samples/epoch_002.png": 8}
    assert manifest["files"]["checkpoint_epoch0001.npz"] == STEPS
    assert re.fullmatch(r"[0-9a-f]{16}", manifest["run_id"])
    for name in ("checkpoint.npz", "checkpoint_epoch0001.npz", "checkpoint_epoch0002.npz"):
        assert load_checkpoint(out / name)[1]["run_id"] == manifest["run_id"], name


def test_every_file_is_recorded_before_it_is_written(tmp_path, monkeypatch):
    """At every rename that puts an output in place, the manifest on disk already lists it: a crash at any
    moment leaves no output that the manifest does not list."""
    out = tmp_path / "run"
    unlisted, real_replace = [], os.replace

    def replace(src, dst):
        rel = os.path.relpath(dst, out)
        if not rel.startswith("..") and rel != "manifest.json":
            listed = json.loads((out / "manifest.json").read_text())["files"] if (out / "manifest.json").exists() else {}
            if rel not in listed:
                unlisted.append(rel)
        return real_replace(src, dst)
    monkeypatch.setattr(fileio.os, "replace", replace)
    assert train(*TINY, "--epochs", "2", "--sample-every", "3", "--snapshot-every", "1", "--out", str(out)) == 0
    assert unlisted == []
    assert (out / "checkpoint_epoch0002.npz").exists() and (out / "samples" / "step_0000006.png").exists()


# ------------------------------------------------------------------------------------------- --resume
def test_resuming_a_friends_checkpoint_leaves_the_users_folder_alone(tmp_path, capsys):
    """The issue's case: `train --resume dl/gan_from_friend.npz --epochs 3` in a folder holding the user's own
    config.json, metrics.csv (date,amount), losses.png and samples/step_9999999.png overwrote three of them
    and deleted the fourth, exit 0."""
    assert train(*TINY, "--epochs", "1", "--out", str(tmp_path / "friend")) == 0
    dl = tmp_path / "dl"
    dl.mkdir()
    shutil.copy(tmp_path / "friend" / "checkpoint.npz", dl / "gan_from_friend.npz")
    (dl / "config.json").write_text('{"my": "settings"}\n')
    (dl / "metrics.csv").write_text("date,amount\n2024-01-05,12.50\n2024-01-06,3.99\n")
    png(dl / "losses.png", 17)
    png(dl / "samples" / "step_9999999.png", 99)
    before = snapshot(dl)
    capsys.readouterr()
    assert train("--resume", str(dl / "gan_from_friend.npz"), "--epochs", "3", "--no-progress") == 2
    line = one_line(capsys)
    assert re.search(rf"--out {re.escape(str(dl))} holds config\.json, losses\.png, metrics\.csv, \.\.\., which a run "
                     r"would write but no run recorded writing .*resume into a new --out", line), line
    assert snapshot(dl) == before
    # what the line says to do works, and the new folder is a run of its own that says where it came from
    assert train("--resume", str(dl / "gan_from_friend.npz"), "--epochs", "2", "--out", str(tmp_path / "mine"),
                 "--no-progress") == 0
    friend, mine = manifest_of(tmp_path / "friend"), manifest_of(tmp_path / "mine")
    assert mine["run_id"] != friend["run_id"] and mine["resumed_from"]["run_id"] == friend["run_id"]
    assert mine["resumed_from"]["step"] == STEPS
    assert load_checkpoint(tmp_path / "mine" / "checkpoint.npz")[1]["run_id"] == mine["run_id"]
    assert snapshot(dl) == before


def test_a_checkpoint_alone_in_its_folder_is_resumed_only_into_a_new_or_empty_out(tmp_path, capsys):
    """A downloaded checkpoint's folder (the checkpoint and the user's other files, none with an output's name)
    is not a run folder: `train --resume dl/gan.npz` refuses to write beside them, and an empty --out works."""
    assert train(*TINY, "--epochs", "1", "--out", str(tmp_path / "friend")) == 0
    dl = tmp_path / "dl"
    dl.mkdir()
    shutil.copy(tmp_path / "friend" / "checkpoint.npz", dl / "gan.npz")
    (dl / "holiday.jpg").write_bytes(b"not touched")
    before = snapshot(dl)
    capsys.readouterr()
    assert train("--resume", str(dl / "gan.npz"), "--epochs", "2", "--no-progress") == 2
    line = one_line(capsys)
    assert re.search(rf"--out {re.escape(str(dl))} is not the folder of .*gan\.npz's run .*resume into a new or "
                     r"empty --out", line), line
    assert snapshot(dl) == before
    (tmp_path / "empty").mkdir()
    assert train("--resume", str(dl / "gan.npz"), "--epochs", "2", "--out", str(tmp_path / "empty"),
                 "--no-progress") == 0
    assert manifest_of(tmp_path / "empty")["resumed_from"]["step"] == STEPS
    assert snapshot(dl) == before


def test_another_runs_checkpoint_does_not_replace_a_run(tmp_path, capsys):
    """The issue's case: `train --resume runB/runA_backup.npz --epochs 2` replaced run B's checkpoint.npz
    (step 16) with run A's (step 128)."""
    run_a, run_b = tmp_path / "runA", tmp_path / "runB"
    assert train(*TINY, "--epochs", "2", "--out", str(run_a)) == 0
    assert train(*TINY, "--epochs", "1", "--out", str(run_b)) == 0
    shutil.copy(run_a / "checkpoint.npz", run_b / "runA_backup.npz")
    before = snapshot(run_b)
    capsys.readouterr()
    assert train("--resume", str(run_b / "runA_backup.npz"), "--epochs", "3", "--no-progress") == 2
    line = one_line(capsys)
    id_a, id_b = manifest_of(run_a)["run_id"], manifest_of(run_b)["run_id"]
    assert f"--out {run_b} holds run {id_b} (" in line and f"is a checkpoint of run {id_a}: resume into a new --out" \
        in line, line
    assert "--overwrite" not in line  # the checkpoint lies in that folder: --overwrite would delete it
    assert snapshot(run_b) == before
    assert load_checkpoint(run_b / "checkpoint.npz")[1]["global_step"] == STEPS
    # run B's own checkpoint, and a copy of it kept elsewhere, continue run B
    shutil.copy(run_b / "checkpoint.npz", tmp_path / "runB_backup.npz")
    assert train("--resume", str(tmp_path / "runB_backup.npz"), "--out", str(run_b), "--epochs", "2",
                 "--no-progress") == 0
    assert manifest_of(run_b)["run_id"] == id_b
    assert load_checkpoint(run_b / "checkpoint.npz")[1]["global_step"] == 2 * STEPS


def test_a_checkpoint_from_before_run_ids(tmp_path, capsys):
    """A checkpoint without a run id cannot be matched to a run: one line where a run is; a new folder takes it."""
    run = tmp_path / "run"
    assert train(*TINY, "--epochs", "1", "--out", str(run)) == 0
    arrays, meta = load_checkpoint(run / "checkpoint.npz")
    del meta["run_id"]
    old = save_checkpoint(tmp_path / "old.npz", arrays, meta)
    before = snapshot(run)
    capsys.readouterr()
    assert train("--resume", str(old), "--out", str(run), "--epochs", "2", "--no-progress") == 2
    line = one_line(capsys)
    assert re.search(rf"--out {re.escape(str(run))} holds run [0-9a-f]{{16}} .*old\.npz is from a scratchgan that did "
                     r"not record run ids, so it cannot be that run's: resume into a new --out, or replace it with "
                     r"--overwrite", line), line
    assert snapshot(run) == before
    assert train("--resume", str(old), "--out", str(tmp_path / "new"), "--epochs", "2", "--no-progress") == 0
    assert manifest_of(tmp_path / "new")["resumed_from"]["run_id"] is None


def test_a_folder_from_before_the_manifest_is_refused_never_emptied(tmp_path, capsys):
    """A run folder of an older scratchgan (no manifest.json): nothing proves which files are the run's, so
    --resume and --overwrite into it are refused in one line, and nothing is deleted by its name."""
    old = tmp_path / "old"
    assert train(*TINY, "--epochs", "1", "--sample-every", "2", "--out", str(old)) == 0
    (old / "manifest.json").unlink()
    before = snapshot(old)
    for extra in (["--resume"], ["--overwrite"], []):
        capsys.readouterr()
        assert train(*TINY, "--epochs", "2", "--out", str(old), *extra) == 2, extra
        line = one_line(capsys)
        assert re.search(r"holds checkpoint\.npz, config\.json, log\.txt, \.\.\., which a run would write but no "
                         r"run recorded writing \(no manifest\.json\)", line), line
        assert snapshot(old) == before, extra
    # its checkpoint resumes into a new folder
    assert train("--resume", str(old / "checkpoint.npz"), "--out", str(tmp_path / "new"), "--epochs", "2",
                 "--no-progress") == 0


# ------------------------------------------------------------------------------------------- --overwrite
def test_overwrite_deletes_only_what_the_run_recorded(tmp_path):
    """The issue's case: `--overwrite` deleted checkpoint_epoch1_backup.npz, checkpoint_epoch2-good.npz,
    samples/step_final.png and samples/epoch_best_by_hand.png."""
    out = tmp_path / "o" / "ow"
    assert train(*TINY, "--epochs", "1", "--sample-every", "2", "--snapshot-every", "1", "--out", str(out)) == 0
    old_id = manifest_of(out)["run_id"]
    for name in ("checkpoint_epoch1_backup.npz", "checkpoint_epoch2-good.npz"):
        shutil.copy(out / "checkpoint.npz", out / name)
    png(out / "samples" / "step_final.png", 1)
    png(out / "samples" / "epoch_best_by_hand.png", 2)
    planted = {p: v for p, v in snapshot(out).items()
               if os.path.basename(p) in ("checkpoint_epoch1_backup.npz", "checkpoint_epoch2-good.npz",
                                          "step_final.png", "epoch_best_by_hand.png")}
    assert len(planted) == 4
    assert train(*TINY, "--epochs", "1", "--sample-every", "0", "--out", str(out), "--overwrite") == 0
    now = snapshot(out)
    assert {p: now.get(p) for p in planted} == planted
    manifest = manifest_of(out)
    assert manifest["run_id"] != old_id
    assert not (out / "samples" / "step_0000002.png").exists() and not (out / "checkpoint_epoch0001.npz").exists()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_001.png", "epoch_best_by_hand.png",
                                                                   "step_final.png"]  # one file per grid


def test_a_samples_link_out_of_out_is_never_followed(tmp_path, capsys):
    """The issue's case: with `samples` a link to the user's picture folder, --overwrite deleted step_holiday.png
    and epoch_2019.png there. Now the run refuses a linked samples/ (it writes inside its own folder only), and
    deleting never goes through a link, even for a file the manifest lists."""
    out, pictures = tmp_path / "o" / "ow", tmp_path / "Pictures"
    assert train(*TINY, "--epochs", "1", "--sample-every", "2", "--out", str(out)) == 0
    shutil.move(out / "samples", pictures)  # the run's grids (listed in its manifest) now live behind a link
    png(pictures / "step_holiday.png", 3)
    png(pictures / "epoch_2019.png", 4)
    (out / "samples").symlink_to(pictures, target_is_directory=True)
    before = snapshot(out, pictures)
    for extra in (["--overwrite"], ["--resume"]):
        capsys.readouterr()
        assert train(*TINY, "--epochs", "2", "--out", str(out), *extra) == 2
        line = one_line(capsys)
        assert f"--out {out}: samples is a symbolic link (to {pictures})" in line, line
        assert snapshot(out, pictures) == before
    removed = rundir.clear_outputs(out)  # the deleting itself: what lies behind the link stays
    assert sorted(p.name for p in removed) == ["checkpoint.npz", "config.json", "log.txt", "losses.png", "metrics.csv",
                                               "metrics.jsonl", "progress.gif", "real_vs_fake.png"]
    assert {p: v for p, v in snapshot(pictures).items()} == {p: v for p, v in before.items()
                                                            if p.startswith(str(pictures))}
    assert (out / "samples").is_symlink()


# ------------------------------------------------------------------------------------------- resume in place
def test_a_user_file_in_samples_does_not_block_resume_and_later_grids_go_by_the_manifest(tmp_path):
    """The issue's case: samples/step_final.png made `--resume` fail with "invalid literal for int() with base
    10: 'final'". The grids after the resumed step are dropped by the steps the manifest records."""
    out = tmp_path / "o" / "d21"
    assert train(*TINY, "--epochs", "2", "--sample-every", "2", "--snapshot-every", "1", "--out", str(out)) == 0
    png(out / "samples" / "step_final.png", 5)
    png(out / "samples" / "step_0.png", 6)  # output-like, but not a name the run writes (7 digits)
    user = {p: v for p, v in snapshot(out).items() if p.endswith(("step_final.png", "step_0.png"))}
    assert train("--out", str(out), "--resume", str(out / "checkpoint_epoch0001.npz"), "--epochs", "2",
                 "--sample-every", "0", "--no-progress") == 0
    assert {p: v for p, v in snapshot(out).items() if p in user} == user
    steps = {rel: step for rel, step in manifest_of(out)["files"].items() if rel.startswith("samples/step_")}
    # 6 was the abandoned run's; the epoch ends (4, and the resumed run's own 8) have their epoch grids only
    assert steps == {"samples/step_0000002.png": 2}
    assert sorted(p.name for p in (out / "samples").glob("step_*")) == ["step_0.png", "step_0000002.png",
                                                                        "step_final.png"]
    assert manifest_of(out)["files"]["samples/epoch_002.png"] == 8
    with Image.open(out / "progress.gif") as gif:
        assert gif.n_frames == 3  # the run's own grids only (2, epoch 1 at 4, epoch 2 at 8)


def test_a_damaged_metrics_jsonl_line_is_one_line_naming_the_file(tmp_path, capsys):
    """The issue's case: a corrupt line in metrics.jsonl failed the resume with a JSON message naming no file."""
    out = tmp_path / "run"
    assert train(*TINY, "--epochs", "1", "--out", str(out)) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[1] = '{"step": 2, "loss_D": 0.7\x00garbage\n'
    (out / "metrics.jsonl").write_text("".join(lines))
    before = snapshot(out)
    capsys.readouterr()
    assert train("--out", str(out), "--resume", "--epochs", "2", "--no-progress") == 2
    line = one_line(capsys)
    assert re.fullmatch(rf"scratchgan train: error: {re.escape(str(out / 'metrics.jsonl'))}, line 2: not JSON: .*; "
                        r"the run's log is damaged: repair or delete that line, then resume", line), line
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------------- the folder's odd files
def test_a_foreign_manifest_or_lock_file_is_never_written_over(tmp_path, capsys):
    for name, content in (("manifest.json", b'{"my": "bill of lading"}\n'), (".lock", b"my lock notes\n")):
        out = tmp_path / name.strip(".")
        out.mkdir()
        (out / name).write_bytes(content)
        capsys.readouterr()
        assert train(*TINY, "--epochs", "1", "--out", str(out)) == 2
        line = one_line(capsys)
        assert f"--out {out}: {name} is not" in line, line
        assert sorted(os.listdir(out)) == [name] and (out / name).read_bytes() == content
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".lock").symlink_to(outside)
    capsys.readouterr()
    assert train(*TINY, "--epochs", "1", "--out", str(linked)) == 2
    assert f"--out {linked}: .lock is a symbolic link" in one_line(capsys)
    assert outside.read_bytes() == b"precious\n" and (linked / ".lock").is_symlink()


# ------------------------------------------------------------------------------------------- randomized
WORDS = ("final", "best", "old", "holiday", "y2019", "v2", "backup", "good", "by_hand", "x")


def plant(rng, out, outside):
    """Plant a random set of the user's own things in the run folder ``out``: files with output-like names
    that no run writes, sub-folders holding output names, links to files and folders outside. Returns
    whether a file was planted where the next run writes (a name a run writes that its manifest lacks)."""
    word = lambda: rng.choice(WORDS)  # noqa: E731  (no word of digits alone: epoch_2019.png is a name a run writes)
    names = [f"checkpoint_epoch{rng.randrange(10)}_{word()}.npz", f"checkpoint_epoch{rng.randrange(10)}-{word()}.npz",
             f"checkpoint_{word()}.npz", f"samples/step_{word()}.png", f"samples/epoch_{word()}.png",
             f"samples/step_{rng.randrange(10 ** 6)}.png", f"samples/epoch_{rng.randrange(100)}.png",
             "config.json.bak", "losses.png~", f"metrics_{word()}.csv", f".{word()}.tmp",
             f".checkpoint.npz.{rng.randrange(1, 10 ** 6)}.{word()}.tmp",
             f"{word()}/checkpoint.npz", f"{word()}/samples/step_0000004.png", f"{word()}/metrics.csv",
             f"sub/{word()}/manifest.json", "samples/sub/step_0000004.png"]
    for rel in rng.sample(names, rng.randint(4, len(names))):
        path = out / rel
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(1, 64)))
    # links: to a file and to a folder outside --out, under output-like names the run never writes
    (outside / "pictures").mkdir(exist_ok=True)
    for name in ("step_0000004.png", "epoch_001.png", "checkpoint.npz"):
        (outside / "pictures" / name).write_bytes(rng.randbytes(32))
    links = {f"checkpoint_{word()}_link.npz": outside / "pictures" / "checkpoint.npz",
             f"samples/step_link_{word()}.png": outside / "pictures" / "step_0000004.png",
             f"linked_{word()}": outside / "pictures"}
    for rel, target in rng.sample(sorted(links.items()), rng.randint(1, len(links))):
        if not os.path.lexists(out / rel):
            (out / rel).symlink_to(target, target_is_directory=target.is_dir())
    collides = rng.random() < 0.3
    if collides:  # a name the next run writes, not in the manifest: the run must refuse rather than write over it
        path = out / rng.choice(["samples/step_0000099.png", "checkpoint_epoch0007.npz", "samples/epoch_012.png"])
        path.write_bytes(b"the user's, under a run's name")
    return collides


@pytest.mark.parametrize("seed", range(4))
def test_randomized_planted_files_survive_overwrite_and_resume(tmp_path, capsys, seed):
    rng = random.Random(seed)
    out, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    (outside / "untouchable.txt").write_bytes(rng.randbytes(100))
    assert train(*TINY, "--epochs", "2", "--sample-every", "2", "--snapshot-every", "1", "--out", str(out)) == 0
    before = snapshot(out, outside)  # the run's own files (and the outside file, planted already)
    collides = plant(rng, out, outside)
    planted = {p: v for p, v in snapshot(out, outside).items() if p not in before or p.startswith(str(outside))}
    runs = [["--resume", str(out / "checkpoint_epoch0001.npz"), "--epochs", "2"],  # drops grids after step 4
            ["--resume", "--epochs", "3"], ["--overwrite", "--epochs", "1"]]
    for extra in rng.sample(runs, len(runs)):
        capsys.readouterr()
        code = train(*TINY, "--sample-every", str(rng.choice([0, 3])), "--snapshot-every", "1", "--out", str(out),
                     *extra)
        now = snapshot(out, outside)
        assert {p: now.get(p) for p in planted} == planted, (seed, extra)
        if collides:
            assert code == 2 and "which a run would write but its run did not record writing" in one_line(capsys)
        else:
            assert code == 0, (seed, extra, capsys.readouterr().err)
            # and everything else in the folder is the run's own, recorded
            ours = {os.path.relpath(p, out) for p, kind in now.items() if p not in planted and kind[0] != "folder"}
            assert ours - {"manifest.json"} == {rel for rel in manifest_of(out)["files"] if (out / rel).exists()}
        if extra[0] == "--overwrite" and code == 0:  # a new run: the next resume starts from its checkpoint
            assert load_checkpoint(out / "checkpoint.npz")[1]["run_id"] == manifest_of(out)["run_id"]
