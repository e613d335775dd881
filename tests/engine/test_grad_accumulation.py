"""Gradients accumulate with += into the flat store, and zero_grad is one fill.

(This file was test_lazy_grad.py, which tested the lazy-zero protocol of earlier versions: zero_grad
marking gradients unset, the first backward writing into them. That protocol is gone; these are its
tests rewritten for the guarantee that replaced it: after zero_grad every gradient reads 0, backward
adds into the store's own views (on NumPy the fast path lets BLAS add x^T dy in place), stale values
never show, a parameter no backward touched reads 0, and writes by hand stick.) Each test runs on the
fast path and on the reference path.
"""
import numpy as np
import pytest

from scratchgan import fast, nn, optim
from scratchgan import replace


@pytest.fixture(params=["fast", "reference"])
def path(request, monkeypatch):
    monkeypatch.setattr(replace, "_enabled", request.param == "fast")
    fast.reset()
    yield request.param
    fast.reset()


def _model():
    return nn.Sequential(nn.Linear(5, 7, seed=0), nn.LeakyReLU(0.2), nn.Linear(7, 3, seed=1)).to(dtype="float64")


def test_backward_adds_into_the_zeroed_store_in_place(path):
    model = _model()
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    store = model.flat_store()
    store.grad[...] = 123.0  # garbage that zero_grad must clear
    model.zero_grad()
    model.forward(x)
    model.backward(dy)
    once = {n: p.grad.copy() for n, p in model.named_parameters()}
    assert model[0].W.grad.base is store.grad  # still a view: added into in place
    model.forward(x)
    model.backward(dy)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-14, err_msg=n)
    # what backward adds equals the textbook x^T dy
    h = model[1].forward(model[0].forward(x))
    model[2].forward(h)
    model.zero_grad()
    model[2].backward(dy)
    np.testing.assert_allclose(model[2].W.grad, h.T @ dy, rtol=1e-14)


def test_a_parameter_no_backward_touched_reads_zero_and_adam_sees_zero(path):
    model = _model()
    opt = optim.Adam(model.parameters(), lr=0.1)
    opt.store.grad[...] = 5.0
    opt.zero_grad()
    # only the last layer runs backward; the first layer's gradients stay as zero_grad left them
    h = model[1].forward(model[0].forward(np.ones((2, 5))))
    model[2].forward(h)
    model[2].backward(np.ones((2, 3)))
    before = model[0].W.data.copy()
    opt.step()  # a zero gradient with zero moments leaves the weight where it was
    np.testing.assert_array_equal(model[0].W.data, before)
    assert not model[0].W.grad.any() and not model[0].b.grad.any()
    assert h.shape == (2, 7)


def test_store_grad_reads_zero_after_zero_grad_and_writes_stick(path):
    model = _model()
    store = model.flat_store()
    store.grad[...] = 1.0
    model.zero_grad()
    assert not store.grad.any()
    model.zero_grad()
    store.grad[...] = 2.0  # a user writing gradients by hand after zero_grad
    assert (model[0].W.grad == 2.0).all()
    model.forward(np.ones((2, 5)))
    model.backward(np.zeros((2, 3)))  # adds zero: what was written by hand stays
    assert (model[0].W.grad == 2.0).all()


def test_backward_arguments_skip_only_what_nobody_needs(path):
    """need_dx=False: the first layer with parameters skips its dx, the layers in front of it (a Reshape,
    an activation) do nothing; param_grads=False: no p.grad changes, dx as usual."""
    model = nn.Sequential(nn.Reshape(5), nn.LeakyReLU(0.2), nn.Linear(5, 7, seed=0), nn.LeakyReLU(0.2),
                          nn.Linear(7, 3, seed=1)).to(dtype="float64")
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    model.zero_grad()
    model.forward(x)
    dx = model.backward(dy)
    full = model.flat_store().grad.copy()
    calls = []
    for layer in model:
        layer.backward = (lambda f, name: lambda *a, **k: calls.append((name, k["need_dx"])) or f(*a, **k))(
            layer.backward, repr(layer))
    model.zero_grad()
    model.forward(x)
    assert model.backward(dy, need_dx=False) is None
    np.testing.assert_array_equal(model.flat_store().grad, full)  # the same parameter gradients
    assert calls == [("Linear(7, 3)", True), ("LeakyReLU(0.2)", True), ("Linear(5, 7)", False)]
    assert all(layer.cache is None for layer in model)  # every cache consumed or dropped
    calls.clear()
    model.zero_grad()
    model.forward(x)
    np.testing.assert_array_equal(model.backward(dy, param_grads=False), dx)
    assert not model.flat_store().grad.any() and len(calls) == 5
