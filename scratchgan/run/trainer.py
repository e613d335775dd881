"""The training loop around a GANStep: progress bar, samples, plots, GIF, checkpoints, resume.

Everything a run writes goes into one output folder:
  samples/step_XXXXXXX.png  grids from a fixed noise batch every ``sample_every`` steps, and
  samples/epoch_XXX.png     at each epoch end instead (one file per grid: a step that ends an epoch
                            has its epoch grid only)
  progress.gif              those grids over time       losses.png   loss and D(.) curves
  real_vs_fake.png          real batch beside fakes    metrics.csv  one row per logged step
  config.json               the run's settings, provenance and resumes    checkpoint.npz  everything to resume exactly
  log.txt                   what the command printed (with a ConsoleLog as ``console``)
  tb/                       --tensorboard with no folder: the run's TensorBoard events (runlog.event_folder)
  checkpoint_epochNNNN.npz  every ``snapshot_every``-th epoch's checkpoint, kept (0 = none)
  checkpoint_best.npz       with an eval_hook: the state of the lowest Frechet distance so far; its value
                            and step are ``best`` in config.json and in every checkpoint's meta
  manifest.json             the run's id (in every checkpoint's meta too) and every file above, each
                            recorded before it is written (rundir.Manifest); what --overwrite deletes and
                            a resume drops is what it lists, never what a file's name looks like
A checkpoint is written atomically at every epoch end, at the end, and on Ctrl-C or SIGTERM (after
the step in flight), so a crash or interrupt always leaves the last good one in place. A checkpoint
is written only when every parameter, buffer and optimizer moment in it is finite.

A data-parallel run (scratchgan/run/distributed.py) gives the Trainer its ``world``: every rank trains,
rank 0 alone writes, the logged statistics are averaged over ranks, and a stop request stops every
rank after the same step. The default ``World()`` is one process, rank 0 of 1.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import nn
from ..backend import backend_name, synchronize, to_device, to_numpy
from ..checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from ..eval.metrics import PLOT_PANELS
from ..gan.checkpoint_schema import check_replay, load_run_checkpoint
from ..gan.step import DropoutDraws, generate
from . import rundir, runlog, viz
from .distributed import World, shard_dropout

CHECKPOINT_FORMAT = 1
# The columns of metrics.csv for the default (BCE) objective: D(.) are probabilities, grad_norm_* the
# L2 norms of each network's flat gradient buffer after the step (computed at log steps only).
STAT_KEYS = ("loss_D", "loss_G", "D_x", "D_G_z", "D_G_z_after", "grad_norm_G", "grad_norm_D")
# Column order for every objective: critics log C(.) = mean raw scores, WGANs the distance estimate
# mean C(x) - mean C(G(z)), WGAN-GP the penalty and the mean ||grad C(xhat)||, --r1 its penalty and the
# mean ||grad D(x)|| on the real batch; then anything else.
_KEY_ORDER = ("loss_D", "loss_G", "D_x", "D_G_z", "D_G_z_after", "C_x", "C_G_z", "C_G_z_after", "wasserstein",
              "gp", "grad_norm_xhat", "r1", "grad_norm_x", "grad_norm_G", "grad_norm_D", "instance_noise")
# then the evaluation metrics' panels, present when --eval-every is on (the classifier's, or the Inception FID)
_EXTRA_PANELS = (("C_x", "C_G_z"), ("wasserstein", "gp"), ("r1", "grad_norm_x"), ("grad_norm_G", "grad_norm_D"),
                 *PLOT_PANELS, ("fid",))


# |loss| above this at the end of a run: finite, but diverged all the same (a warning, not a stop)
ABSURD_LOSS = 1e6
_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", getattr(signal, "SIGTERM", None): "SIGTERM"}


class TrainingDiverged(RuntimeError):
    """A loss, weight or optimizer moment became NaN or infinite; the message names the step and the
    checkpoint kept."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped the run after a checkpoint was saved; ``signum`` says which."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class TrainingStopped(RuntimeError):
    """A callback (``Trainer.callbacks``, scratchgan.train's) asked to stop; the checkpoint of that step is saved,
    and the run resumes from it as from an interrupted one."""


STOP_BY_CALLBACK = "callback"  # Trainer._stop_requested when a callback asked (else a signal's number)


class Trainer:
    """Runs a GANStep over a BatchLoader for a number of epochs and writes the run's outputs (on rank 0
    of ``world``: one process by default)."""

    runlog = None  # metrics.jsonl and --tensorboard (runlog.RunLog), open while fit runs
    # rundir.Manifest: every file the run writes is recorded there before it is written. The command line
    # sets it (rundir.claim); fit() reads OUT's, or starts one, when the Trainer is used on its own.
    manifest = None

    def __init__(self, step, loader, out_dir, config, *, sample_every=500, log_every=10,
                 n_samples=64, image_shape=None, d_steps=1, progress=True, log=print, instance_noise=0.0,
                 samples_per_class=10, snapshot_every=0, world=None):
        self.step, self.loader, self.config = step, loader, dict(config)
        self.world = World() if world is None else world
        self.instance_noise = float(instance_noise)  # sigma at step 0, annealed linearly to 0 at the end
        self.out = Path(out_dir)
        self.sample_every, self.log_every, self.d_steps = int(sample_every), int(log_every), int(d_steps)
        self.image_shape, self.progress, self.log = image_shape, progress, log
        self.snapshot_every = int(snapshot_every)  # keep checkpoint_epochNNNN.npz every N epochs, 0 = never
        self.best = None  # {"frechet_distance": ..., "step": ...} of checkpoint_best.npz (eval_hook runs)
        if len(loader) < self.d_steps:
            raise ValueError(f"an epoch has {len(loader)} batches, fewer than the {self.d_steps} "
                             "D steps of one iteration; use a smaller batch size or --d-steps")
        self.steps_per_epoch = len(loader) // self.d_steps
        self.xp, self.dtype = step.G.xp, step.G.dtype
        # the fixed noise for sample grids: from the host, so every backend shows the same z
        seed = int(config.get("seed", 0))
        self.fixed_labels, self.sample_nrow = None, None
        num_classes = getattr(step.G, "num_classes", None)  # a conditional G: one grid row per class
        if num_classes:
            n_samples, self.sample_nrow = num_classes * samples_per_class, samples_per_class
            self.fixed_labels = to_device(np.repeat(np.arange(num_classes), samples_per_class), self.xp, np.int64)
        noise = np.random.default_rng([seed, 0xF1]).standard_normal((n_samples, step.latent_dim))
        self.fixed_noise = to_device(noise, self.xp, self.dtype)
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.eval_hook = None  # an evaluation.EvalHook: quality metrics every few steps (--eval-every)
        self.last_good = None  # description of the last checkpoint written
        self.last_stats = None  # the last checked statistics (host floats), for the end-of-run warning
        self._stop_requested = False  # the signal number (truthy) of the first Ctrl-C / SIGTERM, or STOP_BY_CALLBACK
        self.callbacks = []  # called with a copy of each logged metrics row; one that returns True stops the run
        self.command = None  # the command line's words, for config.json (None: sys.argv)
        self.console = None  # a runlog.ConsoleLog: what the command prints, into OUT/log.txt once the run holds OUT
        self.provenance = None  # runlog.provenance() of the run's start (None: a checkpoint from before it)
        self.resumes = []  # one record per resume: its step, checkpoint, changed settings and provenance

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_path(self):
        return self.out / "checkpoint.npz"

    @property
    def best_path(self):
        return self.out / "checkpoint_best.npz"

    def snapshot_path(self, epoch):
        return self.out / f"checkpoint_epoch{epoch:04d}.npz"

    def _sample_path(self, step):
        return self.out / "samples" / f"step_{step:07d}.png"

    # ------------------------------------------------------------------ checkpoints
    def state(self):
        """(arrays, meta) of the whole training state, for ``save_checkpoint``."""
        s = self.step
        arrays = {f"G/{k}": v for k, v in s.G.state_dict().items()}
        arrays.update({f"D/{k}": v for k, v in s.D.state_dict().items()})
        meta = {"format": CHECKPOINT_FORMAT, "config": self.config, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "global_step": self.global_step,
                "noise": s.noise.state(), "backend": backend_name(self.xp), "dtype": str(self.dtype),
                "dropout": [DropoutDraws.state(m) for m in self._dropout_layers()], "best": self.best,
                "run_id": self.manifest.run_id if self.manifest is not None else None,
                "provenance": self.provenance, "resumes": self.resumes}
        for name, opt in (("opt_G", s.opt_G), ("opt_D", s.opt_D)):
            for key, value in opt.state_dict().items():
                if key == "t":
                    meta[f"{name}_t"] = int(value)
                else:
                    arrays[f"{name}/{key}"] = to_numpy(value)
        for rng in meta["dropout"]:  # this rank's draws were its rows of the global batch's
            if rng["shape"]:
                rng["shape"][0] *= self.world.size
        arrays["fixed_noise"] = to_numpy(self.fixed_noise)
        if getattr(s, "ema", None) is not None:  # --ema: the averaged weights of G
            arrays.update(s.ema.state())
        return arrays, meta

    def save(self, path=None):
        """Write the checkpoint (default: the rolling checkpoint.npz; else a snapshot or the best) atomically;
        refuse (TrainingDiverged) when any of it is NaN or infinite. Ranks other than 0 check, and write nothing."""
        self._check_state_finite()
        if not self.world.writes:
            self.last_good = f"{self.checkpoint_path} (step {self.global_step}, written by rank 0)"
            return
        arrays, meta = self.state()
        path = self.checkpoint_path if path is None else Path(path)
        numbered = path not in (self.checkpoint_path, self.best_path)  # a snapshot: the state of one step
        save_checkpoint(self._writing(path, self.global_step if numbered else None), arrays, meta)
        if path == self.checkpoint_path:
            self.last_good = f"{self.checkpoint_path} (step {self.global_step})"

    def _state_buffers(self):
        """(name, device array) of everything a checkpoint holds that training changes: each network's
        flat parameter buffer, its BatchNorm buffers, each optimizer's moment buffers."""
        s = self.step
        for net_name, net in (("G", s.G), ("D", s.D)):
            yield f"{net_name} weights", net.flat_store().data
            for name, buf in net.named_buffers():
                yield f"{net_name}/{name}", buf
        if getattr(s, "ema", None) is not None:
            yield "G's moving average (--ema)", s.ema.params
        for name, opt in (("opt_G", s.opt_G), ("opt_D", s.opt_D)):
            for key, value in opt.state_dict().items():
                if key != "t":
                    yield f"{name}/{key}", value

    def _check_state_finite(self):
        """One isfinite-reduction per buffer and one device sync in all; TrainingDiverged names the
        non-finite buffers, how much of each, the step, and the checkpoint that is kept."""
        xp = self.xp
        buffers = list(self._state_buffers())
        ok = to_numpy(xp.stack([xp.isfinite(buf).all() for _, buf in buffers]))
        if ok.all():
            return
        bad = [(name, int((~xp.isfinite(buf)).sum()), buf.size) for (name, buf), good in zip(buffers, ok) if not good]
        what = ", ".join(f"{name} ({n:,} of {size:,} values)" for name, n, size in bad)
        kept = self.last_good or "none yet (no epoch had finished)"
        raise TrainingDiverged(f"training diverged by step {self.global_step}: NaN/Inf in {what}; stopped without "
                               f"saving. Last good checkpoint: {kept}. Try a lower --lr or --label-smoothing 0.1")

    def restore(self, path):
        """Load a checkpoint written by ``save``; raises ValueError if it belongs to another model, and
        CheckpointError if its metadata, its sizes or its values cannot be those of a training state."""
        arrays, meta = load_run_checkpoint(path, need="training")
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} has checkpoint format {meta.get('format')!r}; "
                             f"this scratchgan reads format {CHECKPOINT_FORMAT}")
        check_replay(path, meta, len(self.loader), *self._draw_sizes())
        s = self.step
        try:
            s.G.load_state_dict(_section(arrays, "G/"))
            s.D.load_state_dict(_section(arrays, "D/"))
            for name, opt in (("opt_G", s.opt_G), ("opt_D", s.opt_D)):
                state = _section(arrays, f"{name}/")
                state["t"] = meta[f"{name}_t"]
                opt.load_state_dict(state)
            if getattr(s, "ema", None) is not None and not s.ema.load(arrays):
                self.log("--ema: the checkpoint has no moving average of G; it starts from the resumed weights")
        except (ValueError, KeyError) as e:
            raise ValueError(f"{path} was made for another architecture or settings: {e}") from None
        if arrays["fixed_noise"].shape != tuple(self.fixed_noise.shape):
            raise ValueError(f"{path}: its fixed noise has shape {arrays['fixed_noise'].shape}, "
                             f"expected {tuple(self.fixed_noise.shape)} (another --latent-dim?)")
        self.fixed_noise[...] = to_device(arrays["fixed_noise"], self.xp, self.dtype)
        self.epoch, self.batch_in_epoch = int(meta["epoch"]), int(meta["batch_in_epoch"])
        self.global_step = int(meta["global_step"])
        s.noise.restore(meta["noise"])
        for m, state in zip(self._dropout_layers(), meta.get("dropout", [])):
            DropoutDraws.restore(m, state, self.xp)  # the global batch's draws on a plain generator ...
        self._shard_dropout()  # ... of which a data-parallel rank then keeps its rows
        self.last_good = f"{path} (step {self.global_step})"
        # the best so far of this folder's run: the checkpoint's, or the one OUT/checkpoint_best.npz records
        # if lower (it can be newer than the checkpoint resumed); none in a new folder, which gets its own
        self.best = _lower_best(meta.get("best"), self._best_on_disk()) if self._written(self.best_path) else None
        return meta

    def _draw_sizes(self):
        """(batch, widest row) of this run, for check_replay: a replayed draw (instance noise, a dropout
        mask) holds at most a batch of images or of a layer's activations."""
        s = self.step
        widest = max([int(self.config.get("image_size") or 0)] +
                     [max(p.data.shape) for net in (s.G, s.D) for p in net.parameters()])
        batch = max(int(self.config.get("batch_size") or 0), s.noise.batch_size) * int(self.config.get("ranks") or 1)
        return batch, widest

    def _best_on_disk(self):
        """The ``best`` that OUT/checkpoint_best.npz records (None when it has none or cannot be read)."""
        try:
            return load_checkpoint(self.best_path)[1].get("best")
        except CheckpointError:  # unreadable: a new best replaces it
            return None

    def _keep_best(self, row):
        """After an evaluation: a lower Frechet distance than any so far saves checkpoint_best.npz."""
        value = row.get("frechet_distance")
        if value is None or not math.isfinite(value):
            return
        previous = self.best
        if previous is not None and value >= previous["frechet_distance"]:
            return
        self.best = {"frechet_distance": float(value), "step": self.global_step}
        try:
            self.save(self.best_path)
        except BaseException:
            self.best = previous
            raise
        self._write_config()
        was = f" (was {previous['frechet_distance']:.4g} at step {previous['step']})" if previous else ""
        self.log(f"step {self.global_step}: lowest Frechet distance so far, {value:.4g}{was}: saved {self.best_path}")

    def _note_resume(self, path, meta):
        """The run's provenance and resumes from the checkpoint's ``meta`` (its start is never lost), and this
        resume's record: its step, the checkpoint, the settings it changed ({key: [before, after]}) and its own
        provenance."""
        started, resumes = meta.get("provenance"), meta.get("resumes")
        self.provenance = started if isinstance(started, dict) else None
        self.resumes = [r for r in resumes if isinstance(r, dict)] if isinstance(resumes, list) else []
        before = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        self.resumes.append({"step": self.global_step, "checkpoint": str(path),
                             "changed": runlog.changed_settings(before, self.config), **runlog.provenance(self.command)})

    def _write_config(self):
        """config.json: the run's settings, ``provenance`` (how and where it started), ``resumes`` (one record per
        resume, with the settings it changed), and ``best`` once checkpoint_best.npz exists (written by rank 0)."""
        if not self.world.writes:
            return
        config = {**self.config, "provenance": self.provenance, "resumes": self.resumes}
        if self.best is not None:
            config["best"] = self.best
        with atomic_write(self._writing(self.out / "config.json")) as f:
            f.write(json.dumps(config, indent=2, sort_keys=True).encode())

    # ------------------------------------------------------------------ outputs
    def _writing(self, path, step=None):
        """Record ``path`` in the run's manifest before it is written (``step``: where it matters); returns it."""
        return self.manifest.record(path, step) if self.manifest is not None else path

    def _written(self, path):
        """Whether this run wrote ``path`` (the manifest lists it) and it is there."""
        listed = self.manifest is None or self.manifest.relative(path) in self.manifest.files
        return listed and Path(path).exists()

    def _make_samples_folder(self):
        samples = self.out / "samples"
        if not samples.is_dir():
            self.manifest.record_folder("samples")  # made by the run: --overwrite removes it when it is empty
            samples.mkdir()

    def _sampling(self):
        """``with self._sampling() as G``: G with the averaged weights under --ema (GANStep.sampling), else G."""
        sampling = getattr(self.step, "sampling", None)
        return sampling() if sampling is not None else contextlib.nullcontext(self.step.G)

    def save_samples(self, epoch_end=False):
        """The fixed noise's grid, as samples/step_XXXXXXX.png or, at an epoch end, samples/epoch_XXX.png (one
        file per grid): (images, path); (None, None) off rank 0."""
        if not self.world.writes:
            return None, None
        with self._sampling() as G:  # the EMA generator when the run keeps one
            images = to_numpy(generate(G, self.fixed_noise, self.fixed_labels))
        name = self.out / "samples" / f"epoch_{self.epoch:03d}.png" if epoch_end else \
            self._sample_path(self.global_step)
        path = viz.save_image_grid(images, self._writing(name, self.global_step),
                                   image_shape=self.image_shape, scale=2, nrow=self.sample_nrow)
        if self.runlog is not None:
            self.runlog.image(path, self.global_step)
        return images, path

    def write_summaries(self, fake_images):
        if not self.world.writes:
            return
        rows = viz.read_metrics_csv(self.out / "metrics.csv") if (self.out / "metrics.csv").exists() else []
        viz.plot_losses(rows, self._writing(self.out / "losses.png"), extra_panels=_EXTRA_PANELS)
        # the run's own grids (step and epoch ones), in step order, from the manifest: a user's
        # samples/step_final.png is no frame
        frames = [self.out / rel for _, rel in self.manifest.steps("samples/") if (self.out / rel).exists()]
        if frames:
            viz.save_progress_gif(frames, self._writing(self.out / "progress.gif"))
        real = to_numpy(self.loader.images(len(fake_images)))
        viz.save_real_vs_fake(real, fake_images, self._writing(self.out / "real_vs_fake.png"),
                              image_shape=self.image_shape, scale=2)

    def _drop_outputs_after(self, step):
        """When resuming from an earlier point, forget what the abandoned run logged and drew after it: the
        metrics rows, and the sample grids whose step in the manifest is later (no file name is parsed)."""
        if not self.world.writes:
            return
        jsonl = runlog.MetricsJSONL(self.out / runlog.JSONL_NAME)
        jsonl.rows()  # reads only: a damaged line stops the resume (one line naming it) before anything changes
        csv_path = self.out / "metrics.csv"
        if csv_path.exists():
            with viz.MetricsCSV(csv_path) as csv:
                csv.truncate_after(step)
        jsonl.truncate_after(step)
        later = [rel for grid_step, rel in self.manifest.steps("samples/") if grid_step > step]
        for rel in later:
            rundir.unlink_inside(self.out, rel)  # never through a link, never outside OUT
        self.manifest.forget(later)

    # ------------------------------------------------------------------ the loop
    def fit(self, epochs, resume_from=None):
        """Train until ``epochs`` epochs are done in total (a resumed run continues to that total)."""
        if self.world.writes:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.manifest is None:  # used on its own, without the command line's rundir.claim
                self.manifest = rundir.Manifest.read(self.out) or rundir.Manifest.start(self.out)
            self._make_samples_folder()
        if resume_from is not None:
            self._note_resume(resume_from, self.restore(resume_from))
            self._drop_outputs_after(self.global_step)
            if self.eval_hook is not None and (self.out / "metrics.csv").exists():
                self.eval_hook.load_history(viz.read_metrics_csv(self.out / "metrics.csv"))
            self.log(f"resumed from {resume_from} at epoch {self.epoch + 1}, step {self.global_step}")
        else:
            self.provenance = runlog.provenance(self.command)
        if self.console is not None and self.world.writes:  # after a resume's checks: a refused one changes nothing
            self.console.attach(self._writing(self.out / runlog.CONSOLE_NAME))
        self._tensorboard = self._event_folder() if self.world.writes else None  # before config.json records it
        if getattr(self.step, "ema", None) is not None:
            self.log(f"sample grids and evaluations use the EMA generator (G's weights averaged, --ema "
                     f"{self.step.ema.beta})")
        self._write_config()
        previous_handlers = self._install_signal_handlers()
        try:
            with self._metrics() as csv:
                self._total_steps = max(1, epochs * self.steps_per_epoch)  # for annealing the instance noise
                self._last_step = epochs * self.steps_per_epoch  # always logged, however short the run
                while self.epoch < epochs:
                    self._run_epoch(epochs, csv)
        finally:
            for signum, handler in previous_handlers.items():
                if handler is not None:  # None: installed outside Python, cannot be put back
                    signal.signal(signum, handler)
        return {"epoch": self.epoch, "global_step": self.global_step}

    @contextlib.contextmanager
    def _metrics(self):
        """``with self._metrics() as csv``: metrics.csv, with metrics.jsonl and --tensorboard as ``self.runlog``,
        open while the run trains; on the ranks that write nothing, a csv that keeps nothing."""
        if not self.world.writes:
            yield _NoMetrics()
            return
        csv = viz.MetricsCSV(self._writing(self.out / "metrics.csv"))
        try:
            self._writing(self.out / runlog.JSONL_NAME)
            self.runlog = runlog.RunLog(self.out, self._tensorboard)
            self._record_event_file()
            try:
                yield csv
            finally:
                self.runlog.close()
                self.runlog = None
        finally:
            csv.close()

    _tensorboard = None  # the run's own TensorBoard event folder (fit sets it), None without --tensorboard

    def _event_folder(self):
        """--tensorboard: this run's own event folder (runlog.event_folder), recorded in the config and the manifest
        when it lies in OUT; None without the flag."""
        if self.config.get("tensorboard") is None:
            return None
        run_id = self.manifest.run_id if self.manifest is not None else None
        folder = runlog.event_folder(self.config["tensorboard"], self.out, run_id)
        self.config["tensorboard"] = str(folder)
        inside = self._inside_out(folder)
        if inside is not None and not folder.is_dir():
            self.manifest.record_folder(inside)  # made by the run: --overwrite removes it when it is empty
        folder.mkdir(parents=True, exist_ok=True)
        self.log(f"TensorBoard events in {folder} (to watch: tensorboard --logdir {folder})")
        return folder

    def _record_event_file(self):
        """The event file tensorboardX made in OUT/tb: the run's own (--overwrite deletes it)."""
        tb = self.runlog.tensorboard if self.runlog is not None else None
        rel = self._inside_out(tb.event_file) if tb is not None and tb.event_file is not None else None
        if rel is not None:
            self._writing(self.out / rel)

    def _inside_out(self, path):
        """``path`` relative to OUT (POSIX), or None when it lies elsewhere or there is no manifest."""
        if self.manifest is None:
            return None
        try:
            return Path(path).resolve().relative_to(self.out.resolve()).as_posix()
        except (ValueError, OSError):
            return None

    def divergence_warning(self):
        """A line when the run's last checked losses are finite but absurd (|loss| > ABSURD_LOSS), else None."""
        stats = self.last_stats or {}
        big = {k: v for k, v in stats.items() if k.startswith("loss_") and abs(v) > ABSURD_LOSS}
        if not big:
            return None
        values = ", ".join(f"{k} = {v:.3g}" for k, v in big.items())
        return (f"the run ended with {values} at step {self.global_step}: it has most likely diverged "
                "(try a lower --lr)")

    _last_step = None  # the run's final step (fit sets it): logged even when log_every does not divide it

    def _run_epoch(self, epochs, csv):
        s, d = self.step, self.d_steps
        start_iter = self.batch_in_epoch // d
        if self.batch_in_epoch == 0:
            s.noise.start_epoch(self.epoch)
            self._reseed_dropout()
        batches = self.loader.epoch(self.epoch, start_batch=self.batch_in_epoch)
        bar = tqdm(total=self.steps_per_epoch, initial=start_iter, desc=f"epoch {self.epoch + 1}/{epochs}",
                   unit="step", disable=not self.progress, dynamic_ncols=True, leave=True)
        t0, stats = time.perf_counter(), None
        try:
            for _ in range(start_iter, self.steps_per_epoch):
                if self.instance_noise:  # sigma_t = sigma_0 (1 - t / T), T = all steps of the run
                    s.instance_noise = self.instance_noise * max(0.0, 1.0 - self.global_step / self._total_steps)
                stats = s.step([next(batches) for _ in range(d)])
                self.global_step += 1
                self.batch_in_epoch += d
                self._log_step(stats, bar, csv)
                ends_epoch = self.batch_in_epoch // d == self.steps_per_epoch  # its grid is the epoch's
                if self.sample_every and self.global_step % self.sample_every == 0 and not ends_epoch:
                    self.save_samples()
                bar.update(1)
                if self._stop_now():
                    self._check_finite(stats)
                    self.save()
                    if self._stop_requested == STOP_BY_CALLBACK:
                        raise TrainingStopped(f"stopped at step {self.global_step} by a callback; checkpoint saved "
                                              f"to {self.last_good}")
                    signum = self._stop_requested if self._stop_requested in _SIGNAL_NAMES else signal.SIGINT
                    raise TrainingInterrupted(f"interrupted at step {self.global_step} by {_SIGNAL_NAMES[signum]}; "
                                              f"checkpoint saved to {self.last_good}; continue with --resume {self.checkpoint_path}",
                                              signum)
        finally:
            bar.close()
        if stats is not None:  # even when the epoch is shorter than log_every
            self._check_finite(stats)
        self._check_state_finite()  # before the epoch's samples: a diverged state writes nothing
        synchronize(self.xp)
        seconds = time.perf_counter() - t0
        self.epoch += 1
        self.batch_in_epoch = 0
        fake, sample_path = self.save_samples(epoch_end=True)
        self.write_summaries(fake)
        self.save()
        if self.snapshot_every and self.epoch % self.snapshot_every == 0:
            self.save(self.snapshot_path(self.epoch))
        done = self.steps_per_epoch - start_iter
        self.log(f"epoch {self.epoch}/{epochs} done in {seconds:.1f} s ({done / max(seconds, 1e-9):.1f} steps/s); "
                 f"samples: {sample_path}")

    def _log_step(self, stats, bar, csv):
        """At a log step: the finite check, the progress bar and a metrics row; at an eval step: the metrics."""
        s, row = self.step, None
        if self.global_step % self.log_every == 0 or self.global_step == self._last_step:
            host = self._check_finite(self._with_grad_norms(stats))
            row = {"step": self.global_step, "epoch": self.epoch + 1, **host}
            k_x, k_fake = getattr(s, "keys", ("D_x", "D_G_z"))[:2]  # D(.) probabilities or C(.) scores
            bar.set_postfix({"loss_D": f"{host['loss_D']:.3f}", "loss_G": f"{host['loss_G']:.3f}",
                             f"{k_x[0]}(x)": f"{host[k_x]:.2f}", f"{k_x[0]}(G(z))": f"{host[k_fake]:.2f}"},
                            refresh=False)
        if self.eval_hook is not None and self.eval_hook.due(self.global_step):
            row = row or {"step": self.global_step, "epoch": self.epoch + 1}
            with self._sampling() as G:  # the EMA generator when the run keeps one
                row.update(self.eval_hook(G, self.global_step))
            self._keep_best(row)
            if self.eval_hook.warning:  # set once per newly detected collapse
                bar.write(f"warning at step {self.global_step}: {self.eval_hook.warning}")
        if row:
            csv.append(row)
            if self.runlog is not None:  # None on the ranks that write nothing
                self.runlog.append(row)
            if any([callback(dict(row)) is True for callback in self.callbacks]):  # each one sees every row
                self._stop_requested = self._stop_requested or STOP_BY_CALLBACK

    def _with_grad_norms(self, stats):
        """stats plus grad_norm_G / grad_norm_D: the L2 norm of each flat gradient buffer (log steps only)."""
        s = self.step
        stats = dict(stats)
        stats["grad_norm_G"] = self.xp.linalg.norm(s.opt_G.store.grad)
        stats["grad_norm_D"] = self.xp.linalg.norm(s.opt_D.store.grad)
        if self.instance_noise:
            stats["instance_noise"] = s.instance_noise
        return stats

    def _check_finite(self, stats):
        """Statistics as Python floats (one device sync); stop with a clear message on NaN/Inf."""
        if self.world.size > 1:
            stats = self._averaged_over_ranks(stats)
        keys = [k for k in _KEY_ORDER if k in stats] + [k for k in stats if k not in _KEY_ORDER]
        host = {k: float(stats[k]) for k in keys}
        self.last_stats = host
        bad = [k for k, v in host.items() if not math.isfinite(v)]
        if bad:
            kept = self.last_good or "none yet (no epoch had finished)"
            raise TrainingDiverged(f"{', '.join(bad)} became {host[bad[0]]} at step {self.global_step}; "
                                   f"stopped without saving. Last good checkpoint: {kept}. "
                                   "Try a lower --lr or --label-smoothing 0.1")
        return host

    def _averaged_over_ranks(self, stats):
        """A data-parallel run's statistics, each a mean over this rank's slice, averaged over ranks: the means
        over the global batch. The gradient norms are of the already averaged gradients, the same on every rank."""
        keys = [k for k in stats if k not in ("grad_norm_G", "grad_norm_D", "instance_noise")]
        if not keys:
            return stats
        xp = self.xp
        values, = self.world.mean_over_ranks(xp.stack([xp.asarray(stats[k], dtype=self.dtype) for k in keys]))
        return {**stats, **{k: values[i] for i, k in enumerate(keys)}}

    def _stop_now(self):
        """Whether to save and stop after this step: when any rank was asked to (every rank stops together)."""
        return self.world.any(self._stop_requested)

    def _dropout_layers(self):
        return [m for net in (self.step.G, self.step.D) for m in net.modules() if isinstance(m, nn.Dropout)]

    def _reseed_dropout(self):
        """Dropout masks follow (seed, epoch, layer), and checkpoints record how many were drawn,
        so a resumed run draws the same masks as an uninterrupted one."""
        seed = int(self.config.get("seed", 0))
        for i, m in enumerate(self._dropout_layers()):
            DropoutDraws.install(m, self.xp, int(np.random.SeedSequence([seed, self.epoch, i]).generate_state(1)[0]))
        self._shard_dropout()

    def _shard_dropout(self):
        """On a rank of a data-parallel run: each Dropout layer draws the global batch's masks and keeps its rows."""
        if self.world.size > 1:
            shard_dropout(self._dropout_layers(), self.world, self.xp)

    def _install_signal_handlers(self):
        """First Ctrl-C or SIGTERM (what schedulers, `timeout` and container runtimes send): finish the
        step, save, stop. A second one: stop at once. Returns the previous handlers, to restore."""
        def handler(signum, frame):
            name = _SIGNAL_NAMES.get(signum, f"signal {signum}")
            if self._stop_requested:
                kept = self.last_good or "none (no epoch had finished)"
                raise KeyboardInterrupt(f"aborted at once by a second {name} at step {self.global_step}; "
                                        f"last good checkpoint: {kept}")
            self._stop_requested = signum
            self.log(f"\n{name}: saving a checkpoint after this step (press Ctrl-C again to abort at once)")
        previous = {}
        for signum in _SIGNAL_NAMES:
            if signum is None:
                continue
            try:
                previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not in the main thread: leave signals alone
                break
        return previous


class _NoMetrics:
    """metrics.csv on the ranks that write nothing."""

    def append(self, row):
        pass


def _lower_best(a, b):
    """The ``best`` record ({"frechet_distance", "step"}) with the lower distance; None when neither is one."""
    found = [x for x in (a, b) if isinstance(x, dict) and isinstance(x.get("frechet_distance"), (int, float))]
    return min(found, key=lambda x: x["frechet_distance"]) if found else None


def _section(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
