"""Data-parallel training over MPI (NumPy) or NCCL (CuPy), equal to one process on the global batch.

    mpiexec -n N python examples/mnist_mlp.py ...      (the same flags; --batch-size stays global)

Each of the N ranks holds the same G, D and optimizers, and takes its slice of every global batch:
rank r gets images r*B/N .. (r+1)*B/N - 1 of the batch a single process would see, and the same
rows of the noise z, of the instance noise, of WGAN-GP's alphas and of the Dropout masks (every
rank draws the global batch's numbers from the same generators and keeps its slice). Then:

    gradients   each loss is a mean over the rank's B/N samples, so the mean over ranks of the
                ranks' gradients is the gradient of the mean over the global batch: one in-place
                all-reduce (sum, then / N) of each network's flat gradient buffer before its
                optimizer step; every rank then applies the same Adam step to the same weights.
    BatchNorm   every BatchNorm becomes a SyncBatchNorm (nn/sync_batchnorm.py): in train mode the
                per-feature means E[x], E[(x - mean)^2] (forward) and the two backward means
                E[dy], E[dy xhat] are averaged over ranks: the single-process maths.
    statistics  the logged losses and D(.) are means over the batch: averaged over ranks.

The Trainer takes the World (``World()`` is one process: rank 0 of 1, means that are the identity).
Rank 0 alone writes (checkpoints, grids, plots, metrics.csv, config.json); checkpoints hold the
global state, so a run resumes with any number of ranks. An error on any rank prints one line and
ends the whole job (MPI_Abort); checkpoints are written atomically, so the last good one stays.

Only a run started by an MPI launcher imports mpi4py (``launched()`` reads the launcher's
environment); importing scratchgan never does. The NCCL path (CuPy) uses one GPU per rank, chosen
by the local rank, and runs its all-reduces on the current (compute) stream, which a CUDA graph
capture may record.
"""
from __future__ import annotations

import io
import os
import sys
import time
import traceback

import numpy as np

from ..backend import array_module, random_generator
from ..errors import UserError
from ..gan.step import NoiseSource

INSTALL = 'pip install "scratchgan[mpi]" (mpi4py and the MPICH runtime)'
# what MPI launchers put in each process's environment: MPICH/Intel MPI (PMI), Open MPI, PMIx
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_LOCAL_RANK", "SLURM_LOCALID")


class DistributedError(UserError):
    """Data-parallel training cannot start: what is missing, and what to install or change."""


def launched():
    """True when an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(v in os.environ for v in _SIZE_VARS + _RANK_VARS)


def launcher_rank():
    """This process's rank from the launcher's environment (0 when not launched), without MPI."""
    for var in _RANK_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _local_rank(comm):
    """The rank among the processes on this machine: from the launcher, else from MPI itself."""
    for var in _LOCAL_RANK_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    from mpi4py import MPI
    return comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()


class World:
    """The ranks of a run and the collectives training needs; this one is a single process: rank 0 of
    1, whose means over ranks are the identity. MPIWorld is the data-parallel one."""

    rank, size = 0, 1

    @property
    def writes(self):
        """Whether this rank writes the run's files: rank 0 alone."""
        return self.rank == 0

    def allreduce_mean_(self, buf):
        """buf <- the mean of every rank's buf, in place (one rank: buf itself)."""
        return buf

    def mean_over_ranks(self, *arrays):
        """The averages over ranks of small arrays (one rank: the arrays themselves)."""
        return arrays

    def bcast_(self, buf):
        """buf <- rank 0's buf, in place."""
        return buf

    def any(self, flag):
        """True on every rank when ``flag`` is true on any (a stop request)."""
        return bool(flag)


class MPIWorld(World):
    """The ranks of a data-parallel run started by an MPI launcher.

    ``comm`` is mpi4py's COMM_WORLD. On CuPy, array collectives go through NCCL on the current
    stream; host values (a stop flag) always through MPI.
    """

    def __init__(self, comm, backend="numpy"):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.backend = backend
        self.nccl = None
        # bytes all-reduced and seconds spent: "grad" (allreduce_mean_) and "bn" (mean_over_ranks);
        # timed only when ``timed`` is True (it synchronises around each call: the benchmark)
        self.comm_bytes, self.comm_seconds = {"grad": 0, "bn": 0}, {"grad": 0.0, "bn": 0.0}
        self.timed = False
        if backend == "cupy":
            self._start_nccl()

    # ------------------------------------------------------------------ NCCL (CuPy)
    def _start_nccl(self):
        """One GPU per rank (local rank mod the visible GPUs) and an NCCL communicator over all ranks."""
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as e:
            raise DistributedError(f"--backend cupy across ranks needs CuPy with NCCL ({e}); "
                                   'pip install "scratchgan[cuda12]" and NCCL (pip install nvidia-nccl-cu12)') from None
        if not getattr(nccl, "available", True):
            raise DistributedError("--backend cupy across ranks needs NCCL, which this CuPy cannot load: "
                                   "pip install nvidia-nccl-cu12 (or nvidia-nccl-cu13 for CUDA 13)")
        try:
            gpus = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # cupy's CUDARuntimeError: no driver or no GPU
            raise DistributedError(f"--backend cupy: no CUDA GPU visible to rank {self.rank} ({e})") from None
        if gpus == 0:
            raise DistributedError(f"--backend cupy: no CUDA GPU visible to rank {self.rank}")
        cupy.cuda.Device(_local_rank(self.comm) % gpus).use()  # before anything is allocated
        try:
            uid = nccl.get_unique_id() if self.rank == 0 else None
            uid = self.comm.bcast(uid, root=0)
            self.nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        except (AttributeError, RuntimeError) as e:  # a CuPy without NCCL, or NCCL's own error (NcclError)
            raise DistributedError(f"NCCL could not start on rank {self.rank} ({e}): pip install nvidia-nccl-cu12 "
                                   "(or -cu13), one GPU per rank") from None
        self._nccl_types = {np.dtype("float32"): nccl.NCCL_FLOAT32, np.dtype("float64"): nccl.NCCL_FLOAT64}
        self._nccl_sum = nccl.NCCL_SUM

    def _nccl_allreduce_sum(self, buf):
        import cupy
        stream = cupy.cuda.get_current_stream().ptr  # the compute stream: ordered after the backward
        self.nccl.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._nccl_types[buf.dtype], self._nccl_sum,
                            stream)

    def _nccl_bcast(self, buf):
        import cupy
        self.nccl.bcast(buf.data.ptr, buf.size, self._nccl_types[buf.dtype], 0, cupy.cuda.get_current_stream().ptr)

    # ------------------------------------------------------------------ collectives
    def allreduce_sum_(self, buf):
        """buf <- the sum of every rank's buf, in place (a contiguous array on the run's backend)."""
        if not buf.flags.c_contiguous:
            raise ValueError("all-reduce needs a contiguous buffer")
        if self.nccl is not None:
            self._nccl_allreduce_sum(buf)
        else:
            from mpi4py import MPI
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf

    def allreduce_mean_(self, buf):
        """buf <- the mean of every rank's buf, in place: one call per flat gradient buffer per step."""
        t0 = self._tick(buf)
        self.allreduce_sum_(buf)
        buf *= 1.0 / self.size  # a Python float: float32 stays float32
        self._tock("grad", buf, t0)
        return buf

    def _tick(self, buf):
        if self.timed:
            from ..backend import synchronize
            synchronize(array_module(buf))
            return time.perf_counter()
        return None

    def _tock(self, kind, buf, t0):
        self.comm_bytes[kind] += buf.nbytes
        if t0 is not None:
            from ..backend import synchronize
            synchronize(array_module(buf))
            self.comm_seconds[kind] += time.perf_counter() - t0

    def mean_over_ranks(self, *arrays):
        """The averages over ranks of small arrays (BatchNorm's per-feature means): one all-reduce."""
        xp = array_module(arrays[0])
        flat = xp.concatenate([a.reshape(-1) for a in arrays])
        t0 = self._tick(flat)
        self.allreduce_sum_(flat)
        flat *= 1.0 / self.size
        self._tock("bn", flat, t0)
        out, start = [], 0
        for a in arrays:
            out.append(flat[start:start + a.size].reshape(a.shape))
            start += a.size
        return tuple(out)

    def bcast_(self, buf):
        """buf <- rank 0's buf, in place."""
        if self.nccl is not None:
            self._nccl_bcast(buf)
        else:
            self.comm.Bcast(buf, root=0)
        return buf

    def any(self, flag):
        """True on every rank when ``flag`` is true on any (a stop request), through MPI on the host."""
        from mpi4py import MPI
        return bool(self.comm.allreduce(int(bool(flag)), op=MPI.MAX))


def init(backend="numpy"):
    """The MPIWorld of a run started by an MPI launcher, else None (one process, nothing imported).

    Raises DistributedError with what to install when mpi4py, the MPI runtime or NCCL is missing.
    """
    if not launched():
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"started by an MPI launcher but mpi4py cannot be imported ({e}): {INSTALL}") from None
    except RuntimeError as e:  # mpi4py without a loadable MPI library
        raise DistributedError(f"mpi4py found no MPI runtime ({e}): {INSTALL}") from None
    return MPIWorld(MPI.COMM_WORLD, backend)


# ---------------------------------------------------------------------------------- the run's pieces
def _slice(world, n):
    """Rows of rank ``world.rank`` in a global batch of ``n``: [r n/N, (r+1) n/N)."""
    per = n // world.size
    return slice(world.rank * per, (world.rank + 1) * per)


class ShardedNoise(NoiseSource):
    """The single-process NoiseSource of the global batch, keeping this rank's rows of every draw.

    Every rank draws the whole (B, latent) z (and the whole extra draws) from the same generators, so
    the global batch's numbers are a single process's; ``state()`` records the global shapes, so a
    checkpoint resumes with any number of ranks.
    """

    def __init__(self, xp, global_batch, latent_dim, seed, dtype, world):
        self.world, self.global_batch = world, int(global_batch)
        super().__init__(xp, global_batch, latent_dim, seed, dtype)
        self.batch_size = self.global_batch // world.size  # what GANStep checks the real batch against

    def sample(self):
        self.draws += 1
        z = self.rng.standard_normal((self.global_batch, self.latent_dim), dtype=self.dtype)
        return z[_slice(self.world, self.global_batch)]

    def extra(self, name, shape, kind="normal"):
        """The draw of shape ``shape`` (this rank's rows) from the global draw of N times as many rows."""
        global_shape = (shape[0] * self.world.size,) + tuple(shape[1:])
        return self._global_extra(name, global_shape, kind)[_slice(self.world, global_shape[0])]

    def _global_extra(self, name, shape, kind):
        return NoiseSource.extra(self, name, shape, kind)

    def restore(self, state):
        self.start_epoch(int(state["epoch"]), int(state["draws"]))
        for name, (kind, shape, n) in state.get("extra", {}).items():
            for _ in range(int(n)):
                self._global_extra(name, tuple(shape), kind)  # the global shapes, as recorded


class ShardedGenerator:
    """A Dropout layer's generator that draws the global batch's uniforms and returns this rank's rows."""

    def __init__(self, rng, world):
        self.rng, self.world = rng, world

    def random(self, shape, dtype):
        n = shape[0] * self.world.size
        return self.rng.random((n,) + tuple(shape[1:]), dtype=dtype)[_slice(self.world, n)]


class ShardedLoader:
    """This rank's slice of each global batch of a BatchLoader (the global order is unchanged)."""

    def __init__(self, loader, world):
        if loader.batch_size % world.size:
            raise DistributedError(f"--batch-size {loader.batch_size} (the global batch) does not split into "
                                   f"{world.size} equal slices; use a multiple of {world.size}")
        self.loader, self.world = loader, world
        self.batch_size = loader.batch_size // world.size

    def __len__(self):
        return len(self.loader)

    def epoch(self, epoch, start_batch=0):
        rows = _slice(self.world, self.loader.batch_size)
        for batch in self.loader.epoch(epoch, start_batch):
            if isinstance(batch, tuple):
                yield tuple(part[rows] for part in batch)
            else:
                yield batch[rows]

    def images(self, count):
        return self.loader.images(count)


class AveragedOptimizer:
    """An optimizer whose step() first averages the flat gradient buffer over ranks (one all-reduce)."""

    def __init__(self, opt, world):
        self.opt, self.world = opt, world

    def step(self):
        self.world.allreduce_mean_(self.opt.store.grad)
        self.opt.step()

    def __getattr__(self, name):  # store, zero_grad, state_dict, load_state_dict, lr, ...
        return getattr(self.opt, name)


def parallelize(step, world):
    """Make a GANStep data-parallel in place: sharded noise, averaged gradients, synchronised BatchNorm.

    Every rank's weights start as rank 0's (broadcast), though the seeded builders already agree.
    """
    from ..nn import convert_sync_batchnorm
    if world.size > 1:
        noise = step.noise
        step.noise = ShardedNoise(noise.xp, noise.batch_size, noise.latent_dim, noise.seed, noise.dtype, world)
        if getattr(step, "augment", None) is not None:  # --diffaugment's draws: the global batch's, sliced too
            step.augment.draw = step.noise.extra
    step.opt_G = AveragedOptimizer(step.opt_G, world)
    step.opt_D = AveragedOptimizer(step.opt_D, world)
    for net in (step.G, step.D):
        convert_sync_batchnorm(net, world)  # the same parameters and buffers, the global batch's statistics
        world.bcast_(net.flat_store().data)
        for _, buf in net.named_buffers():
            world.bcast_(buf)
    return step


def shard_dropout(modules, world, xp):
    """Give each Dropout layer (after a reseed or a restore) a generator that draws the global batch's
    masks from the layer's own seeded stream and keeps this rank's rows."""
    from .. import nn
    from ..gan.step import DropoutDraws
    for m in modules:
        if not isinstance(m, nn.Dropout):
            continue
        if not isinstance(m.rng, DropoutDraws):  # the count stays outermost: it records this rank's rows
            m.rng = DropoutDraws(m.rng if m.rng is not None else random_generator(xp, m.seed))
        if not isinstance(m.rng.rng, ShardedGenerator):
            m.rng.rng = ShardedGenerator(m.rng.rng, world)


_FORWARD_S = 1.0  # how long a failing rank waits for its line to be forwarded before MPI_Abort
_HOLD_S = 3.0  # how long ranks other than 0 hold their line, so that rank 0 says a shared error first


def run(main, *args, **kwargs):
    """Run a command's ``main`` (returning an exit code) on every rank of an MPI job.

    Outside MPI: ``main`` itself. Under MPI: an error on any rank ends the whole job (MPI_Abort) with
    that rank's one line; the other ranks' lines are held back a moment, so that an error every rank
    hits (a bad flag value) is said once, by rank 0.
    """
    if not launched():
        return main(*args, **kwargs)
    rank = launcher_rank()
    held = io.StringIO() if rank else None
    real_stderr = sys.stderr
    if held is not None:
        sys.stderr = held
    try:
        code = main(*args, **kwargs)
    except BaseException:  # a bug: its traceback, then the whole job ends
        sys.stderr = real_stderr
        if held is not None:
            real_stderr.write(held.getvalue())
        traceback.print_exc()
        _abort(1)
        raise
    sys.stderr = real_stderr
    if code and held is not None and not _mpi_running():
        return code  # MPI did not start (mpi4py missing): every rank failed alike, and rank 0 says why
    if code and held is not None:
        time.sleep(_HOLD_S)  # rank 0 aborts the job first when it failed the same way
        real_stderr.write(held.getvalue().replace(": error: ", f": error: (rank {rank}) ", 1))
    elif held is not None:
        real_stderr.write(held.getvalue())
    if code:
        _abort(code)
    return code


def _mpi_running():
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized()


def _abort(code):
    """MPI_Abort(code) when MPI is running in this process, else nothing (the launcher's error stands)."""
    if _mpi_running():
        mpi = sys.modules["mpi4py.MPI"]
        real_stderr = sys.stderr
        real_stderr.flush()
        sys.stdout.flush()
        # MPI_Abort kills the launcher's proxies at once; a line still in the pipe to them is lost (seen on
        # a loaded machine). Give them a moment to forward it; other ranks hold their lines for longer.
        time.sleep(_FORWARD_S)
        mpi.COMM_WORLD.Abort(int(code))
