"""nn.Projection and nn.ProjectionDiscriminator: the contracts (dy untouched, dtypes, one backward per
forward, labels checked), what backward skips when asked, and that the gradient check catches a backward
that forgets the projection's term. The central differences themselves are in test_gradcheck_layers.py,
the PyTorch parity in test_parity_torch.py."""
import numpy as np
import pytest

from layer_cases import make_input, random_like
from scratchgan import gradcheck, nn
from scratchgan.nn import projection


def _head(dtype="float64", F=5, K=3):
    return nn.Projection(F, K, seed=0, dtype=dtype).to(dtype=dtype)


def test_forward_is_psi_plus_the_inner_product():
    head = _head()
    phi, labels = make_input((4, 5)), np.array([2, 0, 2, 1])
    out = head.forward(phi, labels)
    head.cache = None
    psi = phi @ head.W.data + head.b.data
    expected = psi + np.einsum("nf,nf->n", head.V.data[labels], phi)[:, None]
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    assert out.shape == (4, 1)


def test_backward_keeps_dy_and_the_dtype_and_needs_a_forward():
    head = _head("float32")
    phi, labels = make_input((3, 5), "float32"), np.array([0, 1, 0])
    out = head.forward(phi, labels)
    assert out.dtype == np.float32
    dy = random_like((3, 1), "float32")
    before = dy.copy()
    dphi = head.backward(dy)
    np.testing.assert_array_equal(dy, before)
    assert dphi.dtype == np.float32 and head.V.grad.dtype == np.float32
    with pytest.raises(RuntimeError, match="without a forward"):
        head.backward(dy)


@pytest.mark.parametrize("phi_shape, labels, error, match", [
    ((3, 4), [0, 1, 2], ValueError, r"features of shape \(N, 5\)"),
    ((3, 5), [0, 1], ValueError, r"shape \(3,\) to match the batch"),
    ((3, 5), [0, 1, 3], ValueError, r"\[0, 3\)"),
    ((3, 5), [0.0, 1.0, 2.0], TypeError, "integer"),
])
def test_bad_inputs_are_clear_errors(phi_shape, labels, error, match):
    with pytest.raises(error, match=match):
        _head().forward(make_input(phi_shape), np.array(labels))


def test_labels_are_required_and_float64_is_not_upcast():
    with pytest.raises(ValueError, match="is conditional"):
        _head().forward(make_input((2, 5)))
    with pytest.raises(TypeError, match="dtype"):
        _head("float32").forward(make_input((2, 5)), np.array([0, 1]))


def test_param_grads_false_and_need_dx_false_skip_what_they_say():
    head = _head()
    phi, labels = make_input((4, 5)), np.array([0, 1, 2, 0])
    dy = random_like((4, 1))
    head.forward(phi, labels)
    head.zero_grad()
    dphi = head.backward(dy, param_grads=False)
    assert dphi.shape == (4, 5) and not np.any(head.V.grad) and not np.any(head.W.grad)
    head.forward(phi, labels)
    assert head.backward(dy, need_dx=False) is None and np.any(head.V.grad)


def test_the_gradient_check_catches_a_backward_without_the_projection_term(monkeypatch):
    real = projection.projection_backward

    def wrong(dout, cache, V_shape, need_dphi=True, need_params=True):
        dphi, dw, db, dV = real(dout, cache, V_shape, need_dphi, need_params)
        phi, y, w, v = cache
        return dphi - dout * v, dw, db, dV  # as if dphi were psi's alone

    monkeypatch.setattr(projection, "projection_backward", wrong)

    class AtLabels(nn.Projection):
        def forward(self, phi, labels=None):
            return super().forward(phi, np.array([1, 0, 1]))
    errors = gradcheck.check_module(AtLabels(4, 2, seed=1, dtype="float64").to(dtype="float64"), make_input((3, 4)))
    assert errors["x"] > 1e-3 and errors["V"] < 1e-7


def test_projection_discriminator_runs_features_then_head():
    features = nn.Sequential(nn.Conv2d(1, 2, 4, 2, 1, seed=0), nn.LeakyReLU(0.2), nn.Flatten())
    D = nn.ProjectionDiscriminator(features, 2 * 2 * 2, 3, seed=1).to(dtype="float64")
    assert D.num_classes == 3
    assert [n for n, _ in D.named_parameters()] == ["0.0.W", "0.0.b", "1.W", "1.b", "1.V"]
    x, labels = make_input((2, 1, 4, 4)), np.array([2, 0])
    out = D.forward(x, labels)
    assert out.shape == (2, 1)
    assert D.backward(random_like((2, 1)), need_dx=False) is None
    assert all(m.cache is None for m in D.modules())
    D.forward(x, labels)
    assert D.backward(random_like((2, 1)), param_grads=False).shape == x.shape
