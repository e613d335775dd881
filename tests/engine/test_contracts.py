"""The layer contracts of DESIGN.md: dy untouched, dtypes kept, clear errors, Sequential, state."""
import re

import numpy as np
import pytest

from layer_cases import LAYER_CASES, MODES, build_layer, check_contract, layer_params, make_input, random_like
from scratchgan import losses, nn

PARAM_CASES = [c for c in LAYER_CASES if c[0].startswith(("Linear", "BatchNorm"))]


# ------------------------------------------------------------------------ forward / backward

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("factory, shape", layer_params())
def test_backward_leaves_dy_unchanged_and_dtypes_are_kept(factory, shape, mode, dtype):
    check_contract(build_layer(factory, dtype, mode), shape, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss_fn, make", [
    (losses.bce_with_logits, lambda x: 3.0 * x), (losses.bce, lambda x: 1.0 / (1.0 + np.exp(-x))),
    (losses.mse, lambda x: x)], ids=["bce_with_logits", "bce", "mse"])
@pytest.mark.parametrize("target", ["scalar", "array"])
def test_losses_keep_the_dtype_and_return_a_0d_loss(loss_fn, make, dtype, target):
    x = make(make_input((6, 2))).astype(dtype)
    t = 0.9 if target == "scalar" else np.random.default_rng(0).uniform(size=x.shape).astype(dtype)
    x_copy = x.copy()
    loss, dx = loss_fn(x, t)
    assert loss.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    assert isinstance(loss, np.ndarray) and loss.shape == ()  # a 0-d array, not a Python float
    assert dx.shape == x.shape
    np.testing.assert_array_equal(x, x_copy)


def test_loss_targets_of_another_dtype_or_shape_raise():
    x = make_input((4, 1), "float32")
    with pytest.raises(TypeError, match="bce_with_logits: targets dtype float64"):
        losses.bce_with_logits(x, np.ones((4, 1)))
    with pytest.raises(ValueError, match=re.escape("mse: targets of shape (3, 1) do not fit input of shape (4, 1)")):
        losses.mse(x, np.ones((3, 1), np.float32))
    with pytest.raises(ValueError, match="do not fit"):  # would broadcast the input up to (4, 4)
        losses.bce(x, np.full((4, 4), 0.5, np.float32))


@pytest.mark.parametrize("factory, shape", layer_params(PARAM_CASES))
def test_input_of_another_dtype_raises_type_error_naming_the_layer(factory, shape):
    layer = build_layer(factory, "float32")
    with pytest.raises(TypeError, match=re.escape(repr(layer)) + ".*float64.*float32"):
        layer.forward(make_input(shape, "float64"))
    layer64 = build_layer(factory, "float64")
    with pytest.raises(TypeError, match=re.escape(repr(layer64))):
        layer64.forward(make_input(shape, "float32"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("factory, shape", layer_params())
def test_backward_without_forward_and_twice_raise(factory, shape, mode):
    layer = build_layer(factory, "float64", mode)
    with pytest.raises(RuntimeError, match="without a forward"):
        layer.backward(random_like(shape))
    y = layer.forward(make_input(shape))
    dy = random_like(y.shape)
    layer.backward(dy)
    with pytest.raises(RuntimeError, match="without a forward"):
        layer.backward(dy)


@pytest.mark.parametrize("layer, bad_shape, expected", [
    (nn.Linear(5, 3, seed=0), (4, 6), "(N, 5)"),
    (nn.Linear(5, 3, seed=0), (4, 5, 1), "(N, 5)"),
    (nn.Linear(5, 3, seed=0), (5,), "(N, 5)"),
    (nn.BatchNorm1d(6), (8, 5), "(N, 6)"),
    (nn.BatchNorm1d(6), (8, 6, 1), "(N, 6)"),
    (nn.BatchNorm2d(3), (4, 2, 5, 5), "(N, 3, H, W)"),
    (nn.BatchNorm2d(3), (4, 3, 5), "(N, 3, H, W)"),
    (nn.Flatten(), (7,), "(N, ...)"),
    (nn.Reshape(3, 4), (5, 11), "(N, 3, 4)"),
], ids=lambda v: repr(v) if isinstance(v, nn.Module) else None)
def test_wrong_shape_gives_value_error_naming_the_layer_and_both_shapes(layer, bad_shape, expected):
    with pytest.raises(ValueError) as info:
        layer.forward(np.zeros(bad_shape, np.float32))
    msg = str(info.value)
    assert repr(layer) in msg and expected in msg and str(bad_shape) in msg, msg


def test_batchnorm_train_mode_with_one_value_per_feature_raises():
    with pytest.raises(ValueError, match="more than one value"):
        nn.BatchNorm1d(3).forward(np.zeros((1, 3), np.float32))
    nn.BatchNorm1d(3).eval().forward(np.zeros((1, 3), np.float32))  # eval mode is fine


# ----------------------------------------------------------------------------------- Sequential

def _net(seed=0, dtype="float64"):
    return [nn.Linear(4, 6, seed=seed + 1, dtype=dtype), nn.LeakyReLU(0.2), nn.BatchNorm1d(6, dtype=dtype),
            nn.Dropout(0.25, seed=seed + 7), nn.Linear(6, 3, seed=seed + 2, dtype=dtype), nn.Tanh()]


def test_sequential_equals_manual_chaining():
    model, manual = nn.Sequential(*_net()), _net()
    x = make_input((5, 4))
    h = x
    for layer in manual:
        h = layer.forward(h)
    np.testing.assert_array_equal(model.forward(x), h)
    dy = random_like(h.shape)
    d = dy
    for layer in reversed(manual):
        d = layer.backward(d)
    np.testing.assert_array_equal(model.backward(dy), d)
    for seq_layer, layer in zip(model, manual):
        for (name, p), (_, q) in zip(seq_layer.named_parameters(), layer.named_parameters()):
            np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
            assert np.abs(p.grad).sum() > 0


def test_sequential_is_iterable_indexable_and_sliceable():
    layers = _net()
    model = nn.Sequential(*layers)
    assert len(model) == len(layers) == 6
    assert list(model) == layers
    assert model[0] is layers[0] and model[-1] is layers[-1]
    head = model[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[1] is layers[1]
    assert [p for p in head.parameters()] == layers[0].parameters()
    with pytest.raises(IndexError):
        model[6]
    with pytest.raises(TypeError, match="Sequential takes Modules"):
        nn.Sequential(nn.Tanh(), np.tanh)


def test_parameter_and_buffer_names_follow_registration_order():
    model = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.2), nn.BatchNorm1d(4),
                          nn.Sequential(nn.Linear(4, 2), nn.Tanh()), nn.Linear(2, 1, bias=False))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.W", "0.b", "2.gamma", "2.beta", "3.0.W", "3.0.b", "4.W"]
    assert model.parameters() == [p for _, p in model.named_parameters()]
    assert model.parameters()[0] is model[0].W and model.parameters()[2] is model[2].gamma
    assert [n for n, _ in model.named_buffers()] == ["2.running_mean", "2.running_var"]
    assert model.num_parameters() == 3 * 4 + 4 + 4 + 4 + 4 * 2 + 2 + 2


def test_gradients_accumulate_across_backward_calls_and_zero_grad_clears_them():
    model = nn.Sequential(*_net()[:3]).to(dtype="float64")
    x1, x2 = make_input((5, 4), seed=1), make_input((5, 4), seed=2)
    dy1, dy2 = random_like((5, 6), seed=1), random_like((5, 6), seed=2)
    single = []
    for x, dy in ((x1, dy1), (x2, dy2)):
        model.zero_grad()
        model.forward(x)
        model.backward(dy)
        single.append([p.grad.copy() for p in model.parameters()])
    model.zero_grad()
    for x, dy in ((x1, dy1), (x2, dy2)):
        model.forward(x)
        model.backward(dy)
    for p, g1, g2 in zip(model.parameters(), *single):
        np.testing.assert_allclose(p.grad, g1 + g2, rtol=1e-13, atol=1e-15)  # float64; atol: entries near 0
        assert not np.allclose(p.grad, g2)
    model.zero_grad()
    assert all(not p.grad.any() for p in model.parameters())
    assert not model.flat_store().grad.any()


def test_zero_grad_without_a_flat_store():
    layer = nn.Linear(3, 2, seed=0)  # never packed: zero_grad fills each gradient
    layer.forward(make_input((4, 3), "float32"))
    layer.backward(random_like((4, 2), "float32"))
    assert layer.W.grad.any()
    layer.zero_grad()
    assert not layer.W.grad.any() and not layer.b.grad.any()


def test_train_and_eval_propagate_to_every_submodule():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2), nn.Dropout(0.5)), nn.Tanh())
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert len(list(model.modules())) == 6 and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.train(False)
    assert not model[1][1].training


def test_to_float64_casts_parameters_and_buffers_and_packs_one_store():
    model = nn.Sequential(*_net(dtype="float32"))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    assert model.to(dtype="float64") is model
    assert model.dtype == np.float64
    store = model.flat_store()
    assert store.data.dtype == store.grad.dtype == np.float64
    for name, p in model.named_parameters():
        assert p.data.dtype == p.grad.dtype == np.float64, name
        assert p.data.base is store.data and p.grad.base is store.grad, name
        np.testing.assert_array_equal(p.data, before[name].astype(np.float64))
    for name, b in model.named_buffers():
        assert b.dtype == np.float64, name
    assert store.size == model.num_parameters()
    model.to(dtype=np.float32)  # a NumPy dtype works too
    assert all(p.data.dtype == np.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="float"):
        model.to(dtype="int32")
    with pytest.raises(ValueError):
        model.to(dtype="no-such-dtype")


def test_state_dict_round_trip_and_mismatch_errors():
    a = nn.Sequential(*_net()).to(dtype="float64")
    for seed in range(3):  # move the running statistics away from their init
        a.forward(make_input((5, 4), seed=seed))
        a.backward(random_like((5, 3), seed=seed))
    state = a.state_dict()
    assert set(state) == {"0.W", "0.b", "2.gamma", "2.beta", "2.running_mean", "2.running_var",
                          "4.W", "4.b"}
    state["2.gamma"] = state["2.gamma"] * 1.5
    assert not np.shares_memory(state["0.W"], a[0].W.data)  # copies, not views

    b = nn.Sequential(*_net(seed=100)).to(dtype="float64")
    views = [p.data for p in b.parameters()]
    b.load_state_dict(state)
    for p, view in zip(b.parameters(), views):
        assert p.data is view  # written into, never rebound
    for name, value in b.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    a[2].gamma.data[...] *= 1.5
    x = make_input((5, 4), seed=9)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a.forward(x), b.forward(x))

    wrong = nn.Sequential(nn.Linear(4, 5), nn.LeakyReLU(0.2), nn.BatchNorm1d(5),
                          nn.Dropout(0.2), nn.Linear(5, 3), nn.Tanh())
    with pytest.raises(ValueError, match=r"0\.W has shape \(4, 6\), the model has \(4, 5\)"):
        wrong.load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({k: v for k, v in state.items() if k != "0.b"})
    with pytest.raises(ValueError, match="unexpected"):
        b.load_state_dict(dict(state, extra=np.zeros(1)))


def test_seeded_determinism():
    def w(seed):
        return nn.Linear(5, 4, seed=seed).W.data
    np.testing.assert_array_equal(w(7), w(7))
    assert not np.array_equal(w(7), w(8))
    bound = 1.0 / np.sqrt(5)
    assert np.all(np.abs(w(7)) <= bound) and np.abs(w(7)).max() > 0.5 * bound  # torch's U(-1/sqrt(D_in), ..)

    x = make_input((6, 10))

    def masks(seed, n=2):
        d = nn.Dropout(0.5, seed=seed)
        return [d.forward(x) != 0 for _ in range(n)]

    m1, m2 = masks(3), masks(3)
    for a, b in zip(m1, m2):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(m1[0], m1[1])  # a new mask each forward
    assert not np.array_equal(masks(3)[0], masks(4)[0])
    d = nn.Dropout(0.5, seed=3)
    first = d.forward(x)
    d.reseed(3)
    np.testing.assert_array_equal(d.forward(x), first)
    y = nn.Dropout(0.5, seed=3).forward(x)  # inverted dropout: kept units scaled by 1 / (1 - p)
    np.testing.assert_allclose(y[y != 0], 2.0 * x[y != 0])


def test_dropout_eval_is_identity_and_p_is_validated():
    x = make_input((4, 3))
    d = nn.Dropout(0.5).eval()
    np.testing.assert_array_equal(d.forward(x), x)
    dy = random_like(x.shape)
    np.testing.assert_array_equal(d.backward(dy), dy)
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            nn.Dropout(p)


def test_state_dict_values_are_host_arrays():
    state = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).state_dict()
    assert all(type(v) is np.ndarray for v in state.values())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_on_saturated_probabilities_is_finite_and_silent(dtype):
    """A float32 sigmoid rounds to exactly 0 or 1; bce clamps the logs at -100 without warnings."""
    import warnings
    p = np.array([[0.0], [1.0], [0.5]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning (log of 0) would fail here
        loss, dp = losses.bce(p, 0.9)
    np.testing.assert_allclose(float(loss), (0.9 * 100 + 0.1 * 100 + np.log(2.0)) / 3, rtol=1e-6)
    assert np.all(np.isfinite(dp)) and dp.dtype == np.dtype(dtype)
