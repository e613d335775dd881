"""SyncBatchNorm1d/2d (scratchgan/nn/sync_batchnorm.py) and the one-process World (scratchgan/run/distributed.py).

SyncBatchNorm is BatchNorm over a batch split across ranks. Its gradients are checked by central
differences in float64, train and eval: with the one-process World (it is BatchNorm), and with two ranks
as two threads, each with half the batch, whose means over ranks meet at a barrier; the two ranks
together equal one BatchNorm over the whole batch. ``convert_sync_batchnorm`` keeps parameters and buffers.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
from fake_device import xp as fake_xp  # tests/support/fake_device.py: CuPy's rules on the CPU
from layer_cases import build_layer, make_input

from scratchgan import gradcheck, nn
from scratchgan.gan import models
from scratchgan.gradcheck import numerical_gradient, relative_error
from scratchgan.run.distributed import World

TOL = 1e-7  # the gradient checks' relative error (float64)
RTOL = 1e-9  # two ranks against one process: the sums are only reordered


# ------------------------------------------------------------------------------ two ranks as two threads
class ThreadRanks:
    """``size`` threads as ranks: rank r's ``mean_over_ranks`` waits for all, returns the average."""

    def __init__(self, size):
        self.size, self.barrier, self.slots = size, threading.Barrier(size), [None] * size

    def world(self, rank):
        ranks = self

        class Rank:
            def __init__(self):
                self.rank, self.size = rank, ranks.size

            def mean_over_ranks(self, *means):
                ranks.slots[rank] = [m.copy() for m in means]
                ranks.barrier.wait()
                out = tuple(sum(slot[i] for slot in ranks.slots) / ranks.size for i in range(len(means)))
                ranks.barrier.wait()  # everyone has read before the next call overwrites
                return out
        return Rank()


def run_ranks(size, work, ranks=None):
    """work(rank, world) in ``size`` threads; their results in rank order (exceptions re-raised)."""
    ranks = ranks or ThreadRanks(size)
    results, errors = [None] * size, []

    def target(r):
        try:
            results[r] = work(r, ranks.world(r))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)
            ranks.barrier.abort()
    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def host(a):
    """A fake-device array's NumPy copy; NumPy arrays as they are."""
    return a.get() if hasattr(a, "get") else a


SYNC_CASES = [(nn.BatchNorm1d, nn.SyncBatchNorm1d, (8, 5)), (nn.BatchNorm2d, nn.SyncBatchNorm2d, (4, 3, 3, 2))]
IDS = ["1d", "2d"]


# ------------------------------------------------------------------------------ one process
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("plain, sync, shape", SYNC_CASES, ids=IDS)
def test_gradients_with_the_one_process_world(plain, sync, shape, mode):
    layer = build_layer(lambda dt: sync(shape[1], World(), dtype=dt), "float64", mode, seed=2)
    errors = gradcheck.check_module(layer, make_input(shape, "float64", seed=5), seed=3)
    assert set(errors) == {"x", "gamma", "beta"}
    bad = {q: e for q, e in errors.items() if not e < TOL}
    assert not bad, f"{sync.__name__} {mode}: relative errors above {TOL}: {bad}"


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("plain, sync, shape", SYNC_CASES, ids=IDS)
def test_with_one_process_it_is_batchnorm(plain, sync, shape, mode):
    """Outputs, gradients and running statistics as BatchNorm's (rounding apart: BatchNorm's fast path)."""
    a = build_layer(lambda dt: plain(shape[1], dtype=dt), "float64", mode, seed=4)
    b = build_layer(lambda dt: sync(shape[1], World(), dtype=dt), "float64", mode, seed=4)
    x = make_input(shape, "float64", seed=6)
    dy = np.random.default_rng(1).standard_normal(shape)
    for layer in (a, b):
        layer.zero_grad()
    np.testing.assert_allclose(b.forward(x), a.forward(x), rtol=1e-12, atol=1e-14)  # float64
    np.testing.assert_allclose(b.backward(dy), a.backward(dy), rtol=1e-12, atol=1e-14)  # float64
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(getattr(b, name).grad, getattr(a, name).grad, rtol=1e-12)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-12)


def test_the_one_process_world():
    """Rank 0 of 1, which writes; its means, all-reduce and broadcast give their inputs back; any() is bool."""
    world = World()
    assert (world.rank, world.size, world.writes) == (0, 1, True)
    a, b = np.arange(3.0), np.ones((2, 2))
    out = world.mean_over_ranks(a, b)
    assert len(out) == 2 and out[0] is a and out[1] is b
    assert world.allreduce_mean_(a) is a and world.bcast_(b) is b
    np.testing.assert_array_equal(a, np.arange(3.0))
    assert world.any(0) is False and world.any(15) is True


# ------------------------------------------------------------------------------ two ranks
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("plain, sync, shape", SYNC_CASES, ids=IDS)
def test_gradients_with_two_ranks_equal_central_differences_and_one_batchnorm(plain, sync, shape, mode):
    """L = sum(y * g) over the global batch, y computed by two ranks with half the batch each. Each rank's
    backward of its rows of g: dx (stacked) and dgamma, dbeta (summed over ranks) against central
    differences of L, and against one BatchNorm on the whole batch."""
    size, half = 2, shape[0] // 2
    full = build_layer(lambda dt: plain(shape[1], dtype=dt), "float64", mode, seed=7)
    x = make_input(shape, "float64", seed=8)
    g = np.random.default_rng((3, 0xD1)).standard_normal(shape)
    gamma, beta = full.gamma.data.copy(), full.beta.data.copy()
    ranks = ThreadRanks(size)
    layers = []
    for r in range(size):
        layer = build_layer(lambda dt: sync(shape[1], ranks.world(r), dtype=dt), "float64", mode, seed=7)
        layers.append(layer)

    def forward(rank, world):
        layer = layers[rank]
        layer.gamma.data[...], layer.beta.data[...] = gamma, beta
        y = layer.forward(x[rank * half:(rank + 1) * half])
        return y

    def loss():
        ys = run_ranks(size, forward, ranks)
        for layer in layers:
            layer.cache = None  # forwards without a backward
        return (np.concatenate(ys) * g).sum()

    def backward(rank, world):
        layer = layers[rank]
        layer.zero_grad()
        layer.gamma.data[...], layer.beta.data[...] = gamma, beta
        layer.forward(x[rank * half:(rank + 1) * half])
        return layer.backward(g[rank * half:(rank + 1) * half]), layer.gamma.grad.copy(), layer.beta.grad.copy()

    parts = run_ranks(size, backward, ranks)
    dx = np.concatenate([p[0] for p in parts])
    dgamma, dbeta = sum(p[1] for p in parts), sum(p[2] for p in parts)
    errors = {"x": relative_error(dx, numerical_gradient(loss, x)),
              "gamma": relative_error(dgamma, numerical_gradient(loss, gamma)),
              "beta": relative_error(dbeta, numerical_gradient(loss, beta))}
    bad = {q: e for q, e in errors.items() if not e < TOL}
    assert not bad, f"{sync.__name__} on two ranks, {mode}: relative errors above {TOL}: {bad}"
    full.zero_grad()
    full.forward(x)
    np.testing.assert_allclose(dx, full.backward(g), rtol=RTOL, atol=1e-12)  # float64
    np.testing.assert_allclose(dgamma, full.gamma.grad, rtol=RTOL)
    np.testing.assert_allclose(dbeta, full.beta.grad, rtol=RTOL)


@pytest.mark.parametrize("device", [np, fake_xp], ids=["numpy", "fake-device"])
@pytest.mark.parametrize("layer_class, sync_class, shape", [(nn.BatchNorm1d, nn.SyncBatchNorm1d, (8, 5)),
                                                            (nn.BatchNorm2d, nn.SyncBatchNorm2d, (4, 3, 5, 5))])
def test_synchronised_batchnorm_equals_the_whole_batch(layer_class, sync_class, shape, device):
    """Two ranks with half the batch each: y, dx (in local-loss units, x2), the averaged parameter
    gradients and the running statistics equal one layer on the whole batch. On the fake device too:
    the synchronised path makes no NumPy call on device arrays (tests/support/fake_device.py)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 2.0 + 0.5
    dy = rng.standard_normal(shape)  # dL/dy of a loss that is a mean over the whole batch
    full = layer_class(shape[1], dtype="float64")
    full.gamma.data[...] = rng.uniform(0.5, 1.5, shape[1])
    full.beta.data[...] = rng.standard_normal(shape[1])
    y = full.forward(x)
    dx = full.backward(dy)
    size, half = 2, shape[0] // 2

    def work(rank, world):
        layer = sync_class(shape[1], world, dtype="float64")
        layer.gamma.data[...] = full.gamma.data
        layer.beta.data[...] = full.beta.data
        layer.to(backend=device)
        rows = slice(rank * half, (rank + 1) * half)
        y_r = layer.forward(device.asarray(x[rows]))
        # each rank's loss is the mean over its half: its dL_r/dy is size x the whole-batch gradient
        dx_r = layer.backward(device.asarray(size * dy[rows]))
        return [host(a) for a in (y_r, dx_r, layer.gamma.grad, layer.beta.grad, layer.running_mean,
                                  layer.running_var)]

    parts = run_ranks(size, work)
    np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), y, rtol=RTOL, atol=1e-12)  # float64
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]) / size, dx, rtol=RTOL, atol=1e-12)  # float64
    np.testing.assert_allclose(sum(p[2] for p in parts) / size, full.gamma.grad, rtol=RTOL)
    np.testing.assert_allclose(sum(p[3] for p in parts) / size, full.beta.grad, rtol=RTOL)
    for p in parts:
        np.testing.assert_allclose(p[4], full.running_mean, rtol=RTOL, atol=1e-15)  # float64
        np.testing.assert_allclose(p[5], full.running_var, rtol=RTOL)


def test_synchronised_batchnorm_needs_two_values_in_the_global_batch_only():
    """One image per rank is enough for train-mode statistics when the global batch has two."""
    def work(rank, world):
        layer = nn.SyncBatchNorm1d(3, world, dtype="float64")
        return layer.forward(np.array([[float(rank), 2.0 * rank, -rank]]))
    y0, y1 = run_ranks(2, work)
    np.testing.assert_allclose(np.concatenate([y0, y1]),
                               nn.BatchNorm1d(3, dtype="float64").forward(np.array([[0.0, 0, 0], [1, 2, -1]])),
                               rtol=RTOL)
    with pytest.raises(ValueError, match="more than one value per feature"):
        nn.SyncBatchNorm1d(3, World(), dtype="float64").forward(np.ones((1, 3)))


# ------------------------------------------------------------------------------ convert_sync_batchnorm
@pytest.mark.parametrize("build", [
    lambda: models.mlp_generator(latent_dim=4, hidden=(6, 8), out_dim=5, seed=0, dtype="float64"),
    lambda: models.mlp_generator(latent_dim=4, hidden=(6, 8), out_dim=5, seed=0, dtype="float64", num_classes=3),
    lambda: models.dcgan_generator(latent_dim=4, image_size=28, channels=1, width=2, seed=0, dtype="float64"),
], ids=["mlp", "conditional-mlp", "dcgan"])
def test_convert_sync_batchnorm_keeps_parameters_and_buffers(build):
    model = build()
    before = [m for m in model.modules() if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d)]
    assert before
    params, buffers, state = model.parameters(), [b for _, b in model.named_buffers()], model.state_dict()
    store = model.flat_store()
    assert nn.convert_sync_batchnorm(model, World()) is model
    after = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert [type(m) for m in after] == [{nn.BatchNorm1d: nn.SyncBatchNorm1d, nn.BatchNorm2d: nn.SyncBatchNorm2d}
                                        [type(m)] for m in before]
    assert all(a.world.size == 1 and a.training == b.training for a, b in zip(after, before))
    assert all(p is q for p, q in zip(model.parameters(), params))  # the same Parameters: the flat store's views
    assert all(p is q for p, q in zip((b for _, b in model.named_buffers()), buffers))
    assert model.flat_store() is store
    new_state = model.state_dict()
    assert sorted(new_state) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(new_state[key], state[key])
    assert nn.convert_sync_batchnorm(model, World()) is model  # again: nothing left to convert
    assert [type(m) for m in model.modules() if isinstance(m, nn.BatchNorm1d)] == \
           [type(m) for m in after if isinstance(m, nn.BatchNorm1d)]


def test_convert_sync_batchnorm_of_a_batchnorm_is_its_sync_layer():
    layer = nn.BatchNorm2d(3, dtype="float64").eval()
    sync = nn.convert_sync_batchnorm(layer, World())
    assert type(sync) is nn.SyncBatchNorm2d and sync.gamma is layer.gamma and not sync.training
    assert sync.running_var is layer.running_var
    assert repr(sync) == "SyncBatchNorm2d(3, eps=1e-05, momentum=0.1, ranks=1)"
