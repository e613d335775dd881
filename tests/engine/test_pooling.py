"""MaxPool2d, AvgPool2d, GlobalAvgPool2d and Concat: the rules beyond the shared layer cases.

The shared cases (tests/support/layer_cases.py) already run these layers through the contracts, the
fake device and the float64 gradient checks (tests/engine/test_gradcheck_layers.py). Here: windows
against their definition by brute force, ties and NaN, the divisor, layouts, Concat as a container,
the checks' teeth, and the errors.
"""
import re

import numpy as np
import pytest

from device_checks import check_layer_on_fake_device
from layer_cases import build_layer, concat_block, make_input, random_like
from scratchgan import gradcheck, nn
from scratchgan.nn import pooling


def _brute_pool(x, k, s, p, reduce, pad_value):
    """The definition, one window at a time (tests only): y[n, c, h, w] = reduce(window)."""
    (kH, kW), (sH, sW), (pH, pW) = k, s, p
    N, C, H, W = x.shape
    x_pad = np.full((N, C, H + 2 * pH, W + 2 * pW), pad_value)
    x_pad[:, :, pH:pH + H, pW:pW + W] = x
    H_out, W_out = (H + 2 * pH - kH) // sH + 1, (W + 2 * pW - kW) // sW + 1
    y = np.empty((N, C, H_out, W_out))
    for h in range(H_out):
        for w in range(W_out):
            y[:, :, h, w] = reduce(x_pad[:, :, h * sH:h * sH + kH, w * sW:w * sW + kW])
    return y


def _in_bounds_mean(x, k, s, p):
    ones = np.ones_like(x)
    total = _brute_pool(x, k, s, p, lambda win: win.sum(axis=(2, 3)), 0.0)
    count = _brute_pool(ones, k, s, p, lambda win: win.sum(axis=(2, 3)), 0.0)
    return total / count


WINDOWS = [(3, 2, 0), (3, 1, 1), (2, 2, 0), ((3, 2), (2, 1), (1, 0)), (4, 3, 2), (1, 1, 0)]


@pytest.mark.parametrize("k, s, p", WINDOWS, ids=str)
def test_forwards_equal_their_definition_window_by_window(k, s, p):
    x = make_input((2, 3, 9, 8))
    k2, s2, p2 = (pooling._pair(v, "v") for v in (k, s, p))
    np.testing.assert_array_equal(nn.MaxPool2d(k, s, p).forward(x),
                                  _brute_pool(x, k2, s2, p2, lambda win: win.max(axis=(2, 3)), -np.inf))
    np.testing.assert_allclose(nn.AvgPool2d(k, s, p).forward(x),
                               _brute_pool(x, k2, s2, p2, lambda win: win.mean(axis=(2, 3)), 0.0), rtol=1e-13)
    np.testing.assert_allclose(nn.AvgPool2d(k, s, p, count_include_pad=False).forward(x),
                               _in_bounds_mean(x, k2, s2, p2), rtol=1e-13)


def test_stride_defaults_to_the_kernel_and_floor_mode_drops_the_rest():
    assert nn.MaxPool2d(3).stride == (3, 3) and nn.AvgPool2d((2, 3)).stride == (2, 3)
    assert nn.MaxPool2d(3, 2).forward(np.zeros((1, 1, 8, 8))).shape == (1, 1, 3, 3)  # (8 - 3) // 2 + 1
    assert nn.AvgPool2d(2).forward(np.zeros((1, 1, 5, 7))).shape == (1, 1, 2, 3)


def test_maxpool_ties_go_to_the_first_cell_of_the_window_and_nan_wins():
    x = np.zeros((1, 1, 2, 3))
    x[0, 0] = [[1.0, 5.0, 5.0], [5.0, 2.0, 5.0]]  # four equal maxima in the 2x3 window
    pool = nn.MaxPool2d((2, 3))
    assert pool.forward(x)[0, 0, 0, 0] == 5.0
    dx = pool.backward(np.full((1, 1, 1, 1), 7.0))
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 7.0, 0.0], [0.0, 0.0, 0.0]])  # row by row: (0, 1) first
    x[0, 0, 1, 1] = np.nan
    assert np.isnan(pool.forward(x)[0, 0, 0, 0])
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 1, 1)))[0, 0], [[0, 0, 0], [0, 1, 0]])


def test_overlapping_windows_add_their_gradients():
    x = np.zeros((1, 1, 1, 5))
    x[0, 0, 0, 2] = 1.0  # the max of both windows [0, 3) and [2, 5) of MaxPool2d((1, 3), (1, 2))
    pool = nn.MaxPool2d((1, 3), (1, 2))
    pool.forward(x)
    np.testing.assert_array_equal(pool.backward(np.array([[[[2.0, 3.0]]]]))[0, 0, 0], [0, 0, 5, 0, 0])


def test_avgpool_divisor_with_and_without_the_padding():
    x = np.ones((1, 1, 3, 3))
    np.testing.assert_array_equal(nn.AvgPool2d(3, 1, 1, count_include_pad=False).forward(x), x)
    corner, edge, centre = 4 / 9, 6 / 9, 1.0
    np.testing.assert_allclose(nn.AvgPool2d(3, 1, 1).forward(x)[0, 0],
                               [[corner, edge, corner], [edge, centre, edge], [corner, edge, corner]])
    count = pooling.avgpool2d_count((3, 3), (3, 3), (1, 1), (1, 1), False, np, np.float64)
    np.testing.assert_array_equal(count, [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


def test_gradient_check_has_teeth_for_the_pools(monkeypatch):
    """A max pool routing ties' or winners' gradients to the wrong cell, or a wrong divisor, is caught."""
    x = make_input((2, 2, 5, 5))
    def last_cell(dy, cache):  # every gradient to the window's last cell instead of its winner
        x_pad, y, _, kernel_size, stride, _ = cache
        dx_pad = np.zeros_like(x_pad)
        window = list(pooling._offsets(kernel_size, stride, y.shape[2:]))[-1][2]  # offset (kH - 1, kW - 1)
        dx_pad[window] += dy
        return dx_pad[:, :, 1:-1, 1:-1]

    monkeypatch.setattr(pooling, "maxpool2d_backward", last_cell)
    assert gradcheck.check_module(nn.MaxPool2d(3, 1, 1), x)["x"] > 1e-2
    monkeypatch.undo()

    real_avg = pooling.avgpool2d_backward

    def full_count(dy, cache):  # count_include_pad=False's forward with the full k*k divisor backward
        count, *rest = cache
        return real_avg(dy, (count * 0 + 9.0, *rest))

    monkeypatch.setattr(pooling, "avgpool2d_backward", full_count)
    assert gradcheck.check_module(nn.AvgPool2d(3, 1, 1, count_include_pad=False), x)["x"] > 1e-2


@pytest.mark.parametrize("make", [lambda: nn.MaxPool2d(3, 2), lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                                  lambda: nn.MaxPool2d(3, 1, 1)], ids=["max 3/2", "avg 3/1/1", "max 3/1/1"])
def test_channels_last_input_gives_channels_last_output_of_the_same_numbers(make):
    """A convolution's output is channels-last in memory: the pools keep that layout (the next
    convolution then reads its rows without a copy) and give the same numbers."""
    x = make_input((2, 4, 9, 7))
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    y, y_last = make().forward(x), make().forward(x_last)
    assert y_last.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(y, y_last)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make, shape", [
    (lambda dt: nn.MaxPool2d(3, 1, 1), (2, 3, 6, 5)),
    (lambda dt: nn.MaxPool2d((3, 2), (2, 1), (1, 0)), (2, 2, 7, 5)),
    (lambda dt: nn.AvgPool2d(3, 2, 1), (2, 2, 7, 6)),
    (lambda dt: nn.Concat(nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1, count_include_pad=False)), (2, 2, 4, 4)),
], ids=["max pad", "max (3,2)", "avg s2 pad", "concat of pools"])
def test_on_the_fake_device_equal_numpy(make, shape, dtype):
    check_layer_on_fake_device(make, shape, "train", dtype)


# ---------------------------------------------------------------------------------- Concat

def test_concat_is_a_container_of_its_branches():
    net = build_layer(concat_block, "float64")
    names = [name for name, _ in net.named_parameters()]
    assert names == ["0.W", "0.b", "1.0.W", "1.1.gamma", "1.1.beta"]
    assert [name for name, _ in net.named_buffers()] == ["1.1.running_mean", "1.1.running_var"]
    store = net.flat_store()
    assert store.data.size == net.num_parameters() == sum(p.size for p in net.parameters())
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    assert len(net) == 3 and net[2].count_include_pad is False
    assert set(net.state_dict()) == set(names) | {"1.1.running_mean", "1.1.running_var"}


def test_concat_equals_the_branches_joined_and_dx_is_the_sum_of_theirs():
    x = make_input((3, 3, 5, 4))
    net, twins = build_layer(concat_block, "float64"), build_layer(concat_block, "float64")
    y = net.forward(x)
    parts = [b.forward(x) for b in twins]
    np.testing.assert_array_equal(y, np.concatenate(parts, axis=1))
    dy = random_like(y.shape)
    dx = net.backward(dy)
    dx_sum = sum(b.backward(dy[:, o:o + part.shape[1]].copy())
                 for b, part, o in zip(twins, parts, np.cumsum([0] + [p.shape[1] for p in parts])))
    np.testing.assert_allclose(dx, dx_sum, rtol=1e-13, atol=1e-15)  # float64: sums in another order
    for (name, p), q in zip(net.named_parameters(), twins.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_concat_passes_param_grads_and_need_dx_to_every_branch():
    x = make_input((3, 3, 4, 4))
    net = build_layer(concat_block, "float64")
    dy = random_like(net.forward(x).shape)
    assert net.backward(dy, need_dx=False) is None
    grads = [p.grad.copy() for p in net.parameters()]
    assert all(np.any(g != 0) for g in grads)  # the parameter gradients still came
    net.forward(x)
    dx = net.backward(dy, param_grads=False)
    assert dx.shape == x.shape
    for p, g in zip(net.parameters(), grads):
        np.testing.assert_array_equal(p.grad, g)  # nothing added
    net.forward(x)
    before = dy.copy()
    net.backward(dy)
    np.testing.assert_array_equal(dy, before)


def test_concat_of_views_of_dy_never_writes_into_dy():
    """A branch whose dx is dy itself (Flatten then Reshape gives a view of its dy slice) must not be added into."""
    net = nn.Concat(nn.Sequential(nn.Flatten(), nn.Reshape(2, 3, 3)), nn.Sequential(nn.Flatten(), nn.Reshape(2, 3, 3)))
    x = make_input((2, 2, 3, 3))
    np.testing.assert_array_equal(net.forward(x), np.concatenate([x, x], axis=1))
    dy = random_like((2, 4, 3, 3))
    before = dy.copy()
    np.testing.assert_array_equal(net.backward(dy), dy[:, :2] + dy[:, 2:])
    np.testing.assert_array_equal(dy, before)


def test_concat_inside_a_sequential_checks_out_by_central_differences():
    net = build_layer(lambda dt: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, seed=1, dtype=dt), concat_block(dt),
                                               nn.MaxPool2d(2), nn.GlobalAvgPool2d(), nn.Linear(8, 2, seed=2,
                                                                                                dtype=dt)),
                      "float64")
    errors = gradcheck.check_module(net, make_input((4, 2, 5, 6)))
    assert max(errors.values()) < 1e-7, errors


# ---------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("make, match", [
    (lambda: nn.MaxPool2d(0), "kernel_size and stride must be positive"),
    (lambda: nn.AvgPool2d(3, stride=0), "kernel_size and stride must be positive"),
    (lambda: nn.MaxPool2d(3, padding=-1), "padding non-negative"),
    (lambda: nn.MaxPool2d(3, padding=2), "at most half the kernel size"),
    (lambda: nn.AvgPool2d((3, 2, 1)), "kernel_size must be an int or a pair"),
    (lambda: nn.Concat(), "at least one branch"),
])
def test_bad_constructor_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise_naming_the_layer_and_the_shape():
    with pytest.raises(ValueError, match=re.escape("MaxPool2d(kernel_size=(3, 3), stride=(2, 2), padding=(0, 0)): "
                                                   "input (1, 1, 2, 5) padded to (2, 5) is smaller than the kernel")):
        nn.MaxPool2d(3, 2).forward(np.zeros((1, 1, 2, 5)))
    with pytest.raises(ValueError, match=re.escape("expected input of shape (N, C, H, W), got (4, 5)")):
        nn.AvgPool2d(2).forward(np.zeros((4, 5)))
    with pytest.raises(ValueError, match=re.escape("GlobalAvgPool2d(): expected input of shape (N, C, H, W)")):
        nn.GlobalAvgPool2d().forward(np.zeros((4, 5, 3)))
    with pytest.raises(TypeError, match="Concat takes Modules, got int"):
        nn.Concat(nn.ReLU(), 3)
    with pytest.raises(ValueError, match=re.escape("branch 1 gives (2, 3, 2, 2), but branch 0 gives (2, 3, 4, 4)")):
        nn.Concat(nn.ReLU(), nn.MaxPool2d(2)).forward(np.zeros((2, 3, 4, 4)))
    with pytest.raises(RuntimeError, match="without a forward"):
        nn.MaxPool2d(2).backward(np.zeros((1, 1, 1, 1)))
