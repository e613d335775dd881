"""zero_grad marks gradients unset instead of filling them; nobody may be able to tell the difference."""
import numpy as np

from scratchgan import nn, optim


def _model():
    return nn.Sequential(nn.Linear(5, 7, seed=0), nn.LeakyReLU(0.2), nn.Linear(7, 3, seed=1)).to(dtype="float64")


def test_backward_writes_into_unset_buffers_and_accumulates_after():
    model = _model()
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    store = model.flat_store()
    store.grad[...] = 123.0  # garbage that zero_grad must hide
    model.zero_grad()
    model.forward(x)
    model.backward(dy)
    once = {n: p.grad.copy() for n, p in model.named_parameters()}
    assert model[0].W.grad.base is store._grad  # still a view: written in place
    model.forward(x)
    model.backward(dy)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-14, err_msg=n)
    # the direct write equals the textbook x^T dy
    h = model[1].forward(model[0].forward(x))
    model[2].forward(h)
    model.zero_grad()
    model[2].backward(dy)
    np.testing.assert_allclose(model[2].W.grad, h.T @ dy, rtol=1e-14)


def test_a_parameter_no_backward_touched_reads_zero_and_adam_sees_zero():
    model = _model()
    opt = optim.Adam(model.parameters(), lr=0.1)
    opt.store.grad[...] = 5.0
    opt.zero_grad()
    # only the last layer runs backward; the first layer's gradients stay unset
    h = model[1].forward(model[0].forward(np.ones((2, 5))))
    model[2].forward(h)
    model[2].backward(np.ones((2, 3)))
    before = model[0].W.data.copy()
    opt.step()  # a zero gradient with zero moments leaves the weight where it was
    np.testing.assert_array_equal(model[0].W.data, before)
    assert not model[0].W.grad.any() and not model[0].b.grad.any()
    assert h.shape == (2, 7)


def test_store_grad_reads_zero_after_zero_grad_and_writes_stick():
    model = _model()
    store = model.flat_store()
    store.grad[...] = 1.0
    model.zero_grad()
    assert not store.grad.any()
    model.zero_grad()
    store.grad[...] = 2.0  # a user writing gradients by hand after zero_grad
    assert (model[0].W.grad == 2.0).all()
