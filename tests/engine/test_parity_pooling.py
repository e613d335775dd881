"""PyTorch parity for the pools and Concat: forward and backward, float64 and float32, on the CPU.

Against torch.nn.functional.max_pool2d, avg_pool2d (count_include_pad True and False),
adaptive_avg_pool2d(x, 1) and torch.cat: odd sizes, padding, stride != kernel, non-square windows, and
Inception's own pools at a 35x35 map. float64: rtol 1e-9 (the float64 rows of the session's parity
table); float32: max pool's y exactly (a max rounds nothing), everything else within a few float32
ulps of the result's size (tests/support/tolerances.py: sums taken in another order).
"""
import numpy as np
import pytest

from layer_cases import make_input, random_like, record_error
from scratchgan import nn
from tolerances import FLOAT32_EPS, assert_close

RTOL, ATOL = 1e-9, 1e-13  # float64; ATOL matters only for entries within 1e-4 of 0
RTOL32 = 16 * FLOAT32_EPS  # float32: a 3x3 mean or a 4-branch sum rounds a few ulps
TABLE = "PyTorch parity: worst relative error max|ours - torch| / max|torch| (float64)"

# (id, kernel_size, stride, padding, input shape): odd sizes, overlapping windows, padding, rectangles
WINDOWS = [
    ("k3 s2 p0 (Inception)", 3, 2, 0, (2, 3, 9, 11)),
    ("k3 s1 p1 (Inception)", 3, 1, 1, (2, 3, 7, 5)),
    ("k2 s2 p0 odd", 2, 2, 0, (2, 2, 7, 9)),
    ("k3 s3 p1", 3, None, 1, (1, 2, 8, 10)),
    ("k4 s3 p2", 4, 3, 2, (2, 2, 9, 8)),
    ("k(3,2) s(2,1) p(1,0)", (3, 2), (2, 1), (1, 0), (2, 3, 6, 5)),
    ("k(1,5) s(1,2) p(0,2)", (1, 5), (1, 2), (0, 2), (2, 2, 3, 9)),
    ("k3 s2 p0 35x35", 3, 2, 0, (2, 4, 35, 35)),
    ("k3 s1 p1 35x35", 3, 1, 1, (2, 4, 35, 35)),
]


def _np(a):
    return a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)


def compare(ours, theirs, layer, quantity, dtype, exact=False):
    ours, theirs = _np(ours), _np(theirs)
    assert ours.shape == theirs.shape, f"{layer} {quantity}: shape {ours.shape} vs torch {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{layer} {quantity}: dtype {ours.dtype} vs torch {theirs.dtype}"
    if exact:
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{layer} {quantity} {dtype}")
    elif dtype == "float64":
        scale = max(float(np.max(np.abs(theirs), initial=0.0)), 1e-300)
        record_error(TABLE, layer, quantity, "-", float(np.max(np.abs(ours - theirs), initial=0.0)) / scale)
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=f"{layer} {quantity}")
    else:
        assert_close(ours, theirs, RTOL32, err_msg=f"{layer} {quantity} float32")


def run_pair(torch, ours, theirs, shape, name, dtype, exact_y=False):
    """Forward and backward through ours and torch's function; compare y and dx."""
    x = make_input(shape, dtype, seed=sum(shape))
    xt = torch.tensor(x, requires_grad=True)
    y = ours.forward(x)
    yt = theirs(xt)
    compare(y, yt, name, "y", dtype, exact=exact_y)
    dy = random_like(y.shape, dtype, seed=len(shape))
    dx = ours.backward(dy)
    yt.backward(torch.tensor(dy))
    compare(dx, xt.grad, name, "dx", dtype)
    return xt


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("k, s, p, shape", [pytest.param(*w[1:], id=w[0]) for w in WINDOWS])
def test_maxpool2d(torch, k, s, p, shape, dtype):
    F = torch.nn.functional
    run_pair(torch, nn.MaxPool2d(k, s, p), lambda xt: F.max_pool2d(xt, k, s, p), shape,
             f"MaxPool2d {k} {s} {p}", dtype, exact_y=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("count_include_pad", [True, False], ids=["count pad", "no pad count"])
@pytest.mark.parametrize("k, s, p, shape", [pytest.param(*w[1:], id=w[0]) for w in WINDOWS])
def test_avgpool2d(torch, k, s, p, shape, count_include_pad, dtype):
    F = torch.nn.functional
    run_pair(torch, nn.AvgPool2d(k, s, p, count_include_pad=count_include_pad),
             lambda xt: F.avg_pool2d(xt, k, s, p, count_include_pad=count_include_pad), shape,
             f"AvgPool2d {k} {s} {p} cip={count_include_pad}", dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 4, 8, 8), (2, 2, 1, 1), (2, 6, 35, 35)], ids=str)
def test_global_avgpool2d_against_adaptive_avg_pool2d_1(torch, shape, dtype):
    F = torch.nn.functional
    run_pair(torch, nn.GlobalAvgPool2d(), lambda xt: F.adaptive_avg_pool2d(xt, 1).flatten(1), shape,
             "GlobalAvgPool2d", dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (3, 2, 8, 8)], ids=str)
def test_concat_against_torch_cat(torch, shape, dtype):
    """An Inception block in miniature: a 1x1 conv, a 3x3 conv, max pool and avg pool, joined by torch.cat."""
    F = torch.nn.functional
    c_in = shape[1]
    conv1 = nn.Conv2d(c_in, 4, 1, seed=1, dtype=dtype)
    conv3 = nn.Conv2d(c_in, 3, 3, padding=1, bias=False, seed=2, dtype=dtype)
    ours = nn.Concat(conv1, nn.Sequential(conv3, nn.ReLU()), nn.MaxPool2d(3, 1, 1),
                     nn.AvgPool2d(3, 1, 1, count_include_pad=False)).to(dtype=dtype)
    W1, b1, W3 = (torch.tensor(a.copy(), requires_grad=True) for a in (conv1.W.data, conv1.b.data, conv3.W.data))

    def theirs(xt):
        return torch.cat([F.conv2d(xt, W1, b1), F.relu(F.conv2d(xt, W3, padding=1)), F.max_pool2d(xt, 3, 1, 1),
                          F.avg_pool2d(xt, 3, 1, 1, count_include_pad=False)], dim=1)

    run_pair(torch, ours, theirs, shape, "Concat", dtype)
    for quantity, p, t in [("dW (branch 0)", conv1.W, W1), ("db (branch 0)", conv1.b, b1),
                           ("dW (branch 1)", conv3.W, W3)]:
        compare(p.grad, t.grad, "Concat", quantity, dtype)
