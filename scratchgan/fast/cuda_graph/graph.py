"""The whole MLP GAN training step as one CUDA graph: fixed buffers, our own GEMM, no host traffic.

Why. On a GPU the MLP GAN step is about 200 small device operations, and each costs about 25 us of
Python and CuPy dispatch whatever the batch: 5 ms a step at batch 64 and at batch 4096 alike (issue
16). A CUDA graph records the step's kernel launches once and replays them with one call, so the
step costs the GPU's work plus one launch.

What is fixed. A graph replays the same kernels on the same addresses with the same scalar arguments,
so everything the step touches is allocated once, before the capture, and every operation writes into
one of those buffers (``out=``, in place, a kernel's outputs):
  - activations, gradients and the layers' temporaries (one set per layer, reused by every pass);
  - the optimizers' state (the networks' own flat stores and Adam's m, v), and Adam's step counter t
    as a device scalar, so that the bias corrections 1 - beta^t move on at each replay;
  - the batch slots (one per D step), filled by a device gather ``take(dataset, order[pos + i])`` from
    the dataset the loader already holds on the device (``gather_from(loader)``), ``order`` the epoch's
    permutation (uploaded once per epoch) and ``pos`` a device counter that the graph itself moves on;
  - the noise slot, filled by ``rng.standard_normal(out=z)``: a ``default_rng`` generator keeps its state
    on the device and moves on at each replay;
  - the statistics (losses, D(x), D(G(z)), ...) as 0-d device buffers, read only when the trainer logs.
The layers, objectives, penalties and optimizers in that form are fast/cuda_graph/fixed.py's plans; matmuls go
through fast/cuda_graph/gemm.py's kernel: CuPy refuses cuBLAS during a capture.

What is covered: the MLP GAN (Linear, LeakyReLU, BatchNorm1d, Tanh) with the objectives bce (on
logits), wgan (with clipping), wgan-gp (the gradient penalty's double backward, gradient_penalty.py, in
fixed buffers), lsgan and hinge, R1, any number of D steps, Adam and RMSprop, and the conditional
step (one-hot or learned label codes, labels gathered with the images). What is refused
(``unsupported``, a one-line reason each; the eager ``GANStep`` runs them): DCGAN (convolutions), the
gradient penalty of a conditional critic, instance noise, DiffAugment, the generator EMA, Dropout, a
Sigmoid D (``--loss-on probs``), spectral norm, another dtype than float32, weight decay.

The graph holds one launch per operation of the reference maths (the fused kernels of kernels.py are
not used inside it yet): 327 launches for the default bce step at batch 64, 41 of them GEMMs and 4 the
batch's gather, counted on the fake device (tests/fast/test_cuda_graph.py). Replayed by one call, their
number costs no Python; fusing them is the next step.

The arithmetic is the eager step's (scratchgan/gan/step.py with the reference layers), operation for
operation: on the tests' fake device (NumPy arithmetic) a replayed step gives the same bits as GANStep
(tests/fast/test_cuda_graph.py), and the fake device's capture mode refuses what CuPy refuses.

What a read of CuPy 14.2's source changed here (each checked on the fake device, tests/fast/test_cuda_graph.py):
  - WGAN-GP's alpha is drawn with its shape: ``Generator.random(out=)`` without ``size`` draws ONE number and
    broadcasts it (cupy/random/_generator_api.pyx), where NumPy fills ``out``;
  - CuPy's CUB accelerator is off during the warm-up and the capture (``one_kernel_reductions``): with it, each
    full ``mean(out=)`` / ``sum(axis=1, out=)`` would be 3-4 graph nodes and 2 pool allocations, not one kernel;
  - a capture that fails is ended and dropped, and the first error is the one raised (``capture_graph``);
  - ``take`` wraps an out-of-range index on CuPy (NumPy raises), so the gather's position is checked on the
    host before each step (``GraphedStep._check_batches_left``);
  - a launch runs on the caller's stream: no events, no stream switch; the warm-up and the capture order
    themselves with two events made once, without timing.

STATUS: the CuPy path (``_CupyGraph``: a non-blocking stream, ``begin_capture`` / ``end_capture``,
``graph.launch()``, memory from a pool nothing else uses) has NEVER RUN: no GPU was available to write
it. It follows CuPy 14's documented API; expect to debug it on the first GPU.
"""
from __future__ import annotations

import contextlib
import itertools

import numpy as np

from .fixed import ObjectivePlan, PenaltyPlan, StatisticPlan, input_width, layer_plans, network_plan, optimizer_plan


# ------------------------------------------------------------------------------------------ what is refused
def unsupported(step):
    """Why GANStep ``step`` cannot be graphed (one line), or None when it can."""
    from ... import nn, optim
    from ...gan import objectives
    G, D, obj = step.G, step.D, step.objective
    if getattr(step, "conditional", False) and (step.penalty is not None or step.r1 is not None):
        return "the gradient penalty of a conditional critic has no CUDA graph yet"
    if step.instance_noise or step.augment is not None or step.ema is not None:
        return "--instance-noise, --diffaugment and --ema have no CUDA graph yet"
    if not isinstance(obj, (objectives.BCEObjective, objectives.WGANObjective, objectives.LSGANObjective,
                            objectives.HingeObjective)) or (isinstance(obj, objectives.BCEObjective)
                                                            and not obj.on_logits):
        return f"the objective {getattr(obj, 'name', type(obj).__name__)} (on D's probabilities) has no CUDA graph yet"
    for net, name in ((G, "G"), (D, "D")):
        if isinstance(net, nn.Conditional):
            net = net.net  # the label's code joined to the input, then an MLP
        if not isinstance(net, nn.Sequential):
            return f"{name} is not an nn.Sequential"
        for layer in net:  # (spectral norm wraps the Linears in nn.SpectralNorm: refused here too)
            if type(layer) not in layer_plans():
                return f"{name}'s layer {layer!r} has no fixed-buffer form yet (the CUDA graph covers the MLP GAN)"
        if net.dtype != np.float32:
            return f"the CUDA graph's GEMM is float32; {name} is {net.dtype}"
    for opt in (step.opt_G, step.opt_D):
        if not isinstance(opt, (optim.Adam, optim.RMSprop)):
            return f"the optimizer {type(opt).__name__} has no CUDA graph yet (Adam and RMSprop have)"
        if opt.weight_decay or (isinstance(opt, optim.RMSprop) and (opt.centered or opt.momentum)):
            return "weight decay, a centred RMSprop and RMSprop's momentum have no CUDA graph yet"
    return None


# ------------------------------------------------------------------------------------ running a graph
@contextlib.contextmanager
def one_kernel_reductions(xp):
    """CuPy's CUB accelerator off inside the block, as it was after it (on an error too).

    By default (CUPY_ACCELERATORS unset) CuPy runs a full reduction such as ``mean(out=)`` through CUB's device
    reduce, which allocates its result and a workspace from the pool, runs 1-2 kernels and copies into ``out``
    (cupy/cuda/cub.pyx): 3-4 graph nodes and 2 pool allocations per reduction. Without it each reduction is one
    of CuPy's own reduction kernels, writing ``out``. ``xp._core`` holds the switches (CuPy's, or the fake
    device's, which refuses a CUB reduction while capturing)."""
    core = xp._core
    reduction, routine = list(core.get_reduction_accelerators()), list(core.get_routine_accelerators())
    core.set_reduction_accelerators([])
    core.set_routine_accelerators([])
    try:
        yield
    finally:
        core.set_reduction_accelerators(reduction)
        core.set_routine_accelerators(routine)


def capture_graph(begin, end, body):
    """``begin()`` a capture, run ``body()``, ``end()`` it: the graph. When ``body`` raises, the capture is
    ended all the same (the stream must not stay capturing), what it recorded is dropped, and ``body``'s error
    is raised: ending a capture that a failed call invalidated raises cudaErrorStreamCaptureInvalidated, which
    says nothing of the cause."""
    begin()
    try:
        body()
    except BaseException:
        try:
            end()
        except Exception:  # the capture invalidated by the error being raised: that error says why
            pass
        raise
    return end()


class _CupyGraph:
    """A CUDA graph on CuPy. NEVER RUN (no GPU was available); written to CuPy 14's documented API.

    The warm-up and the capture run on their own non-blocking stream (a capture cannot use the legacy default
    stream); every temporary CuPy makes inside them comes from a memory pool that nothing else uses, so the
    addresses the graph recorded stay the graph's. The warm-up (the first step, run eagerly) compiles the
    kernels and fills the pool with the blocks the capture will ask for again. Both run with CUB off
    (``one_kernel_reductions``). A launch runs on the caller's stream, after what the trainer queued there.
    """

    def __init__(self, cupy):
        self.cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()
        # made once, without timing: they only order the two streams around a warm-up or a capture
        self.before, self.after = (cupy.cuda.Event(disable_timing=True) for _ in range(2))
        self.graph = None

    def _on_stream(self, body):
        cuda = self.cupy.cuda
        outside = cuda.get_current_stream()
        outside.record(self.before)
        self.stream.wait_event(self.before)  # the epoch's order, uploaded on the caller's stream, lands first
        with cuda.using_allocator(self.pool.malloc), self.stream, one_kernel_reductions(self.cupy):
            result = body()
        self.stream.record(self.after)
        outside.wait_event(self.after)  # the trainer's next reads wait for the step
        return result

    def run_eagerly(self, body):
        self._on_stream(body)

    def capture(self, body):
        self.graph = None  # a capture that fails leaves no graph to launch
        self.graph = self._on_stream(lambda: capture_graph(self.stream.begin_capture, self.stream.end_capture, body))

    def launch(self):
        # on the caller's stream: ordered after the host's copies queued there (the epoch's order, Adam's clock)
        # and before the trainer's reads of the statistics, with no event and no stream switch per step
        self.graph.launch(stream=self.cupy.cuda.get_current_stream())


class _RecordedGraph:
    """The tests' fake device: ``xp.begin_capture()`` / ``xp.end_capture()`` record the launches (refusing what
    CuPy refuses), ``launch()`` replays them; CUB off as on CuPy."""

    def __init__(self, xp):
        self.xp, self.graph = xp, None

    def run_eagerly(self, body):
        with one_kernel_reductions(self.xp):
            body()

    def capture(self, body):
        self.graph = None
        with one_kernel_reductions(self.xp):
            self.graph = capture_graph(self.xp.begin_capture, self.xp.end_capture, body)

    def launch(self):
        self.graph.launch()


def graph_runner(xp):
    """How graphs are made on array module ``xp``: CuPy's streams, or the fake device's recorder."""
    if getattr(xp, "__name__", "") == "cupy":
        return _CupyGraph(xp)
    if getattr(xp, "stream_capture", None) is not None:
        return _RecordedGraph(xp)
    raise ValueError("a CUDA graph needs CuPy (--backend cupy)")


# ---------------------------------------------------------------------------------------- the step
_NO_DATASET = "this GraphedStep has no dataset to gather from: pass dataset= or call gather_from(loader)"


class GraphedStep:
    """GANStep ``step``'s training step, replayed from a CUDA graph; the networks, optimizers, noise
    source and statistics' keys are ``step``'s own (checkpoints, grids and evaluation use them as before).

    ``GraphedStep(step, d_steps, dataset=None)``. The batches are gathered inside the graph from the
    images on the device: ``dataset`` (shaped as the batches; ``(images, labels)`` for a conditional
    step), or a BatchLoader's own device copy bound by ``gather_from(loader)``.
    ``start_epoch(order, start_batch)`` gives the epoch's order of images and where it resumes, and
    ``step()`` runs one iteration (d_steps batches in that order, then the next).
    To the Trainer it is a step like GANStep: ``gathering(loader)`` is the loader to train on, whose
    ``epoch()`` starts the graph's epoch and hands out placeholders, which ``step(real_batches)`` takes.
    The first step runs eagerly (the warm-up), the next captures the graph and launches it, the rest
    launch it; a new noise generator (a new epoch, a resume) or a moved optimizer clock captures anew.
    Statistics are 0-d device buffers, overwritten by the next step: read them before it.
    """

    def __init__(self, step, d_steps=1, dataset=None):
        reason = unsupported(step)
        if reason is not None:
            raise ValueError(f"--cuda-graph: {reason}; run without --cuda-graph")
        self.eager, self.d_steps = step, int(d_steps)
        self.G, self.D, self.opt_G, self.opt_D = step.G, step.D, step.opt_G, step.opt_D
        self.objective, self.noise, self.keys = step.objective, step.noise, step.keys
        self.latent_dim, self.clip = step.latent_dim, step.clip
        xp, dt, N = step.noise.xp, step.G.dtype, step.noise.batch_size
        self.xp, self.runner = xp, graph_runner(xp)
        d_in = input_width(step.D)
        self.real = [xp.empty((N, d_in), dt) for _ in range(self.d_steps)]  # the batch slots
        self.conditional = step.conditional
        self.labels = [xp.empty((N,), np.int64) for _ in range(self.d_steps)] if self.conditional else [None] * self.d_steps
        self.z = xp.empty((N, step.latent_dim), dt)  # the noise slot
        self.G_plan, self.D_plan = network_plan(step.G, N, xp), network_plan(step.D, N, xp)
        out = (N, 1)
        self.losses = {w: ObjectivePlan(step.objective, w, out, xp, dt) for w in ("real", "fake", "g")}
        self.statistic = StatisticPlan(step.objective, out, xp, dt)
        self.opt_plans = {"G": optimizer_plan(step.opt_G, xp), "D": optimizer_plan(step.opt_D, xp)}
        k_x, k_fake, k_after = self.keys
        self.penalties = {}  # "gp": (plan, alpha slot, the real - fake buffer, xhat), "r1": (plan,)
        if step.penalty is not None:
            self.penalties["gp"] = (PenaltyPlan(step.penalty, "gp", N, xp, dt), xp.empty((N, 1), dt),
                                    xp.empty((N, d_in), dt), xp.empty((N, d_in), dt))
        if step.r1 is not None:
            self.penalties["r1"] = (PenaltyPlan(step.r1, "r1", N, xp, dt),)
        names = ["loss_D", k_x, k_fake] + (["gp", "grad_norm_xhat"] if "gp" in self.penalties else []) + (
            ["r1", "grad_norm_x"] if "r1" in self.penalties else []) + (
            ["wasserstein"] if getattr(step.objective, "wasserstein", False) else [])
        self.stats = {name: xp.zeros((), dt) for name in names + ["loss_G", k_after]}  # GANStep.step's keys
        self.mean_real, self.mean_fake = xp.zeros((), dt), xp.zeros((), dt)
        self.steps_run, self.captures, self._captured_for = 0, 0, None
        self.dataset = self.dataset_labels = self.raw = None  # what the batches are gathered from
        if dataset is not None:
            if self.conditional and not isinstance(dataset, (tuple, list)):
                raise ValueError("a conditional GraphedStep gathers (images, labels): pass dataset=(images, labels)")
            self._bind(*(dataset if self.conditional else (dataset, None)))

    # ----------------------------------------------------------------------- the host side
    def _bind(self, images, labels):
        """The device arrays the batches are gathered from, and the gather's index buffers. uint8 images
        (a BatchLoader's resident="uint8") are scaled to [-1, 1] after each gather, as the loader does."""
        xp, N, d_in = self.xp, self.z.shape[0], self.real[0].shape[1]
        if self.steps_run:
            raise ValueError("bind the dataset before the first step: the graph records its address")
        if images.ndim != 2 or images.shape[1] != d_in:
            raise ValueError(f"the graph gathers batches of shape (N, {d_in}); the dataset has {tuple(images.shape)} "
                             "(a flattened BatchLoader: flatten=True)")
        raw = images.dtype == np.uint8
        if not raw and images.dtype != self.real[0].dtype:
            raise ValueError(f"the graph's batches are {self.real[0].dtype}; the dataset is {images.dtype}")
        if self.conditional and labels is None:
            raise ValueError("a conditional GAN trains on (images, labels) batches: give the BatchLoader labels=")
        self.dataset, self.dataset_labels = images, (labels if self.conditional else None)
        self.raw = [xp.empty((N, d_in), np.uint8) for _ in range(self.d_steps)] if raw else None
        self.order = xp.zeros((len(images),), np.int64)  # the epoch's permutation: start_epoch fills it
        self.pos = xp.zeros((), np.int64)  # the next batch's first place in it: the graph moves it on
        self.arange = xp.arange(N, dtype=np.int64)
        self.idx_pos, self.idx = xp.empty((N,), np.int64), xp.empty((N,), np.int64)
        self.next_pos = 0  # pos's host mirror: the graph moves pos on, the host counts along (no read back)

    def gather_from(self, loader):
        """Gather the batches from BatchLoader ``loader``'s device copy of the dataset, in its order
        (``loader.permutation(epoch)``), as ``loader.epoch`` would hand them to the eager step."""
        N = self.z.shape[0]
        if loader.batch_size != N:
            raise ValueError(f"the loader's batches have {loader.batch_size} images, but the step was built for "
                             f"batches of {N}")
        if not loader.drop_last and loader.num_samples % N and len(loader) % self.d_steps == 0:
            # the trainer would hand the eager step the short last batch, which it refuses as GANStep does
            raise ValueError(f"real batch of {loader.num_samples % N} images (the loader's last, drop_last=False), "
                             f"but the step was built for batches of {N}")
        self._bind(loader.x, loader.y)

    def start_epoch(self, order, start_batch=0):
        """The epoch's order of images (host integers) copied to the device, and the gather's position set
        to batch ``start_batch`` (a resumed run's ``batch_in_epoch``).

        Once per epoch, not once per run: the order is a new permutation each epoch (BatchLoader.permutation),
        and one upload per epoch is what the eager loader does too; within the epoch the graph reads it from
        the device buffer, and ``pos`` moves on in the graph, so no step sends the device anything."""
        if self.dataset is None:
            raise ValueError(_NO_DATASET)
        order = np.asarray(order, dtype=np.int64)
        n, N = len(self.dataset), self.z.shape[0]
        if order.shape != (n,):
            raise ValueError(f"the order must list each of the {n} images once")
        if isinstance(start_batch, bool) or not isinstance(start_batch, (int, np.integer)) \
                or not 0 <= start_batch * N <= n:
            raise ValueError(f"start_batch must be an integer in [0, {n // N}], got {start_batch!r}")
        self.order[...] = self.xp.asarray(order)
        self.pos[...] = self.next_pos = int(start_batch) * N

    def gathering(self, loader):
        """The loader a Trainer runs this step on: ``loader``'s dataset, bound here (``gather_from``), and an
        ``epoch()`` that hands out GATHERED placeholders for the batches the graph gathers itself."""
        self.gather_from(loader)
        return GatheringLoader(loader, self)

    def step(self, real_batches=None):
        """One iteration (d_steps D steps, one G step): the warm-up, a capture and launch, or a launch.

        ``real_batches``: None, or GatheringLoader's placeholders (GANStep.step's argument, which the graph
        gathers itself on the device)."""
        if real_batches is not None and any(batch is not GATHERED for batch in real_batches):
            raise ValueError("the graph gathers its batches on the device and takes none: train it on "
                             "step.gathering(loader)")
        if self.dataset is None:
            raise ValueError(_NO_DATASET)
        self._check_batches_left()
        # the graph froze the noise generators and expects the optimizers' clocks where it left them
        self.alpha_stream = self.noise.stream("gp_alpha", self.penalties["gp"][1].shape, "uniform") \
            if "gp" in self.penalties else [None]  # GANStep's stream of alpha ~ U[0, 1), one per sample
        key = (self.noise.rng, self.alpha_stream[0], self.opt_G.t, self.opt_D.t)
        if self.steps_run == 0:
            self._sync_from_host()
            self.runner.run_eagerly(self._body)  # compiles the kernels; the pool learns the sizes
        else:
            if self.runner.graph is None or not self._expects(key):  # a new epoch's generator, a resume
                self._sync_from_host()
                self.runner.capture(self._body)
                self.captures += 1
            self.runner.launch()
        self.steps_run += 1
        for opt in (self.opt_G, self.opt_D):  # the host's count, for checkpoints: the device moved on too
            opt.t += self.d_steps if opt is self.opt_D else 1
        self.noise.draws += self.d_steps
        self.next_pos += self.d_steps * self.z.shape[0]
        if "gp" in self.penalties:
            self.alpha_stream[3] += self.d_steps
        self._captured_for = key[:2] + (self.opt_G.t, self.opt_D.t)
        return dict(self.stats)

    def _check_batches_left(self):
        """Refuse a step past the epoch's last full batches. On CuPy ``take`` wraps an out-of-range index (NumPy
        raises), so the gather would silently start the epoch's order over: checked on the host mirror of pos."""
        N, n = self.z.shape[0], len(self.dataset)
        if self.next_pos + self.d_steps * N > n:
            raise ValueError(f"the epoch has {n // N} batches of {N}; {self.next_pos // N} were gathered and this "
                             f"step needs {self.d_steps} more: start the next epoch with start_epoch(order)")

    def _expects(self, key):
        rng, alpha_rng, t_G, t_D = self._captured_for
        return key[0] is rng and key[1] is alpha_rng and key[2:] == (t_G, t_D)

    def __getattr__(self, name):  # what the trainer asks of a step beyond the above (ema, penalty, ...)
        if name == "eager":
            raise AttributeError(name)
        return getattr(self.eager, name)

    def _sync_from_host(self):
        for plan in self.opt_plans.values():
            plan.sync_from_host()

    def sampling(self):
        return self.eager.sampling()

    # ----------------------------------------------------------------------- what the graph records
    def _body(self):
        """The fixed-buffer step: GANStep.step's operations, every one into a buffer allocated above."""
        for k, (real, labels) in enumerate(zip(self.real, self.labels)):
            self._gather(real, labels, None if self.raw is None else self.raw[k])
            self._d_step(real, labels)
        self._g_step(labels)

    def _gather(self, slot, label_slot, raw):
        """slot <- dataset[order[pos : pos + N]] (and the labels); pos += N. All on the device: the same
        batch as BatchLoader.epoch's ``x[order[b N : (b + 1) N]]``, with b = pos / N."""
        xp, N = self.xp, slot.shape[0]
        xp.add(self.arange, self.pos, out=self.idx_pos)
        xp.take(self.order, self.idx_pos, out=self.idx)
        xp.take(self.dataset, self.idx, axis=0, out=slot if raw is None else raw)
        if raw is not None:  # uint8 resident: BatchLoader._scale's x / 127.5 - 1, in float32, into the slot
            xp.copyto(slot, raw)
            xp.divide(slot, 127.5, out=slot)
            xp.subtract(slot, 1.0, out=slot)
        if label_slot is not None:
            xp.take(self.dataset_labels, self.idx, out=label_slot)
        xp.add(self.pos, N, out=self.pos)

    def _d_step(self, real, labels):
        """GANStep.d_step: D on x and on G(z) (a constant here), then D's update and the clipping."""
        xp, s = self.xp, self.stats
        k_x, k_fake, _ = self.keys
        self.noise.rng.standard_normal(dtype=self.z.dtype, out=self.z)  # z ~ N(0, I), drawn on the device
        fake = self.G_plan.forward(self.z, labels)  # G's buffers keep what the G step's backward needs
        self.opt_D.store.grad.fill(0)  # opt_D.zero_grad()
        loss_real, dout = self.losses["real"](self.D_plan.forward(real, labels))
        self.statistic(self.D_plan.plans[-1].y, s[k_x])
        if "wasserstein" in s:
            xp.mean(self.D_plan.plans[-1].y, out=self.mean_real)
        self.D_plan.backward(dout, need_dx=False)
        loss_fake, dout = self.losses["fake"](self.D_plan.forward(fake, labels))
        self.statistic(self.D_plan.plans[-1].y, s[k_fake])
        if "wasserstein" in s:
            xp.mean(self.D_plan.plans[-1].y, out=self.mean_fake)
            xp.subtract(self.mean_real, self.mean_fake, out=s["wasserstein"])
        self.D_plan.backward(dout, need_dx=False)
        if "gp" in self.penalties:  # WGAN-GP at xhat = alpha x + (1 - alpha) G(z)
            plan, alpha, diff, xhat = self.penalties["gp"]
            # with its shape: without size, CuPy's random(out=) draws one number for the whole batch
            self.alpha_stream[0].random(alpha.shape, dtype=alpha.dtype, out=alpha)
            xp.subtract(real, fake, out=diff)
            xp.multiply(alpha, diff, out=diff)
            xp.add(fake, diff, out=xhat)
            plan(xhat, s["gp"], s["grad_norm_xhat"])
        if "r1" in self.penalties:  # R1 on the real batch
            self.penalties["r1"][0](real, s["r1"], s["grad_norm_x"])
        self.opt_plans["D"].step()
        if self.clip is not None:
            data = self.opt_D.store.data
            xp.clip(data, -self.clip, self.clip, out=data)
        xp.add(loss_real, loss_fake, out=s["loss_D"])
        for key in ("gp", "r1"):  # the penalties are part of D's loss
            if key in self.penalties:
                xp.add(s["loss_D"], s[key], out=s["loss_D"])

    def _g_step(self, labels):
        """GANStep.g_step: L_G through the updated D, backward through D (no weight gradients) into G."""
        s = self.stats
        self.opt_G.store.grad.fill(0)
        out = self.D_plan.forward(self.G_plan.plans[-1].y, labels)
        loss_G, dout = self.losses["g"](out)
        dfake = self.D_plan.backward(dout, param_grads=False)
        self.G_plan.backward(dfake, need_dx=False)
        self.opt_plans["G"].step()
        s["loss_G"][...] = loss_G
        self.statistic(out, s[self.keys[2]])


GATHERED = "gathered on the device by the graph"  # what GatheringLoader.epoch hands out in place of a batch


class GatheringLoader:
    """A BatchLoader as a GraphedStep's trainer sees it: the same length and images; ``epoch(e, start_batch)``
    gives the graph the epoch's order (``loader.permutation(e)``, as ``loader.epoch`` uses it) and yields a
    GATHERED placeholder for each batch left, so no batch passes through the host."""

    def __init__(self, loader, step):
        self.loader, self.step = loader, step
        self.batch_size = loader.batch_size

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch, start_batch=0):
        self.step.start_epoch(self.loader.permutation(epoch), start_batch)
        return itertools.repeat(GATHERED, len(self.loader) - start_batch)

    def images(self, count):
        return self.loader.images(count)
