"""Conv2d and ConvTranspose2d: gradient checks, PyTorch parity, im2col/col2im, contracts, fake device.

One table of cases (kernel 1..5, stride 1..2, padding 0..2, non-square inputs and kernels,
output_padding, no bias, the DCGAN shapes) feeds the central-difference checks (float64, relative
error < 1e-7 for x, W and b, train and eval) and the PyTorch parity checks (float64: y, dx, dW, db
with rtol 1e-9). The worst errors land in the session's tables (tests/support/layer_cases.py).
"""
import numpy as np
import pytest

from layer_cases import build_layer, check_contract, make_input, random_like, record_error
from scratchgan import fast, gradcheck, nn
from scratchgan import replace
from scratchgan.fast import cpu as fast_cpu
from scratchgan.nn.conv import col2im, conv_output_size, conv_transpose_output_size, im2col

GRAD_TOL = 1e-7
RTOL, ATOL = 1e-9, 1e-13  # float64 only; ATOL matters only for entries within 1e-4 of 0
# the same titles as test_gradcheck_layers / test_parity_torch: conv rows join those tables
GRAD_TABLE = "gradient check: worst relative error (central differences, float64)"
PARITY_TABLE = "PyTorch parity: worst relative error max|ours - torch| / max|torch| (float64)"

# (id, class name, C_in, C_out, keyword arguments, input shape (N, C_in, H, W))
CASES = [
    ("Conv2d k1 s1 p0", "Conv2d", 2, 3, dict(kernel_size=1), (2, 2, 3, 4)),
    ("Conv2d k2 s2 p0", "Conv2d", 2, 3, dict(kernel_size=2, stride=2), (2, 2, 5, 6)),
    ("Conv2d k3 s1 p1", "Conv2d", 3, 2, dict(kernel_size=3, padding=1), (2, 3, 5, 4)),
    ("Conv2d k3 s2 p2", "Conv2d", 2, 2, dict(kernel_size=3, stride=2, padding=2), (2, 2, 4, 5)),
    ("Conv2d k4 s2 p1", "Conv2d", 2, 3, dict(kernel_size=4, stride=2, padding=1), (2, 2, 6, 8)),
    ("Conv2d k5 s1 p2", "Conv2d", 2, 2, dict(kernel_size=5, padding=2), (1, 2, 5, 6)),
    ("Conv2d k5 s2 p0", "Conv2d", 1, 2, dict(kernel_size=5, stride=2), (2, 1, 7, 9)),
    ("Conv2d k(3,2) s(2,1) p(1,0)", "Conv2d", 2, 3, dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
     (2, 2, 5, 4)),
    ("Conv2d k3 no bias", "Conv2d", 2, 3, dict(kernel_size=3, padding=1, bias=False), (2, 2, 4, 3)),
    ("Conv2d k4 s1 p0 4x4->1x1", "Conv2d", 3, 1, dict(kernel_size=4), (3, 3, 4, 4)),
    ("ConvT k1 s1 p0", "ConvTranspose2d", 2, 3, dict(kernel_size=1), (2, 2, 3, 4)),
    ("ConvT k2 s2 p0", "ConvTranspose2d", 2, 3, dict(kernel_size=2, stride=2), (2, 2, 3, 2)),
    ("ConvT k3 s1 p1", "ConvTranspose2d", 3, 2, dict(kernel_size=3, padding=1), (2, 3, 4, 3)),
    ("ConvT k3 s2 p1 op1", "ConvTranspose2d", 2, 2,
     dict(kernel_size=3, stride=2, padding=1, output_padding=1), (2, 2, 3, 4)),
    ("ConvT k4 s2 p1", "ConvTranspose2d", 2, 3, dict(kernel_size=4, stride=2, padding=1), (2, 2, 3, 4)),
    ("ConvT k4 s1 p0 1x1->4x4", "ConvTranspose2d", 4, 2, dict(kernel_size=4), (3, 4, 1, 1)),
    ("ConvT k5 s2 p2 op1", "ConvTranspose2d", 2, 2,
     dict(kernel_size=5, stride=2, padding=2, output_padding=1), (1, 2, 3, 2)),
    ("ConvT k(3,2) s(2,1) p(1,0) op(1,0)", "ConvTranspose2d", 2, 3,
     dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0)), (2, 2, 3, 4)),
    ("ConvT k2 s2 p0 op1", "ConvTranspose2d", 1, 2, dict(kernel_size=2, stride=2, output_padding=1),
     (2, 1, 2, 3)),
    ("ConvT k3 no bias", "ConvTranspose2d", 2, 3, dict(kernel_size=3, stride=2, bias=False), (2, 2, 2, 3)),
]

# wider layers for parity only (too many entries for central differences): the DCGAN shapes
PARITY_ONLY = [
    ("Conv2d DCGAN D k4 s2 p1", "Conv2d", 3, 8, dict(kernel_size=4, stride=2, padding=1), (2, 3, 16, 16)),
    ("Conv2d DCGAN D k4 s2 p1 wide", "Conv2d", 16, 32, dict(kernel_size=4, stride=2, padding=1), (2, 16, 8, 8)),
    ("Conv2d DCGAN D out k4 s1 p0", "Conv2d", 32, 1, dict(kernel_size=4, bias=False), (3, 32, 4, 4)),
    ("ConvT DCGAN G in k4 s1 p0 1x1->4x4", "ConvTranspose2d", 16, 32, dict(kernel_size=4, bias=False),
     (2, 16, 1, 1)),
    ("ConvT DCGAN G k4 s2 p1", "ConvTranspose2d", 32, 16, dict(kernel_size=4, stride=2, padding=1), (2, 32, 4, 4)),
    ("ConvT DCGAN G out k4 s2 p1", "ConvTranspose2d", 8, 3, dict(kernel_size=4, stride=2, padding=1),
     (2, 8, 8, 8)),
]


def factory_of(cls_name, c_in, c_out, kwargs, seed=7):
    cls = getattr(nn, cls_name)
    return lambda dtype: cls(c_in, c_out, seed=seed, dtype=dtype, **kwargs)


def _params(cases):
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


# ------------------------------------------------------------------------ central differences

@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cls_name, c_in, c_out, kwargs, shape", _params(CASES))
def test_gradients_match_central_differences(cls_name, c_in, c_out, kwargs, shape, mode):
    layer = build_layer(factory_of(cls_name, c_in, c_out, kwargs), "float64", mode)
    x = make_input(shape, "float64", seed=sum(shape))
    errors = gradcheck.check_module(layer, x, seed=3)
    assert set(errors) == {"x", "W"} | ({"b"} if kwargs.get("bias", True) else set())
    for quantity, err in errors.items():
        record_error(GRAD_TABLE, cls_name, quantity, mode, err)
    bad = {q: e for q, e in errors.items() if not e < GRAD_TOL}
    assert not bad, f"{layer!r} on {shape} ({mode}): relative errors above {GRAD_TOL}: {bad}"


def test_gradients_through_a_small_dcgan_chain():
    """ConvT -> BatchNorm2d -> ReLU -> Conv2d: the layouts conv layers hand each other work.

    No bias before the train-mode BatchNorm (as DCGAN): its gradient is exactly 0 there, a vacuous check.
    """
    net = nn.Sequential(nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1, bias=False, seed=1), nn.BatchNorm2d(4),
                        nn.ReLU(), nn.Conv2d(4, 2, 4, stride=2, padding=1, seed=2), nn.LeakyReLU(0.2))
    net = build_layer(lambda dt: net, "float64", "train")
    errors = gradcheck.check_module(net, make_input((3, 3, 2, 3), "float64", seed=5), seed=4)
    for quantity, err in errors.items():
        record_error(GRAD_TABLE, "ConvT-BN-ReLU-Conv chain", quantity, "train", err)
    assert max(errors.values()) < GRAD_TOL, errors


def test_check_has_teeth_for_conv():
    """A conv backward that drops one kernel offset from dW is caught."""
    from scratchgan.nn import conv

    layer = build_layer(factory_of("Conv2d", 2, 2, dict(kernel_size=3, padding=1)), "float64", "train")
    real = conv.conv2d_backward

    def wrong(dy, cache, **flags):
        dx, dW, db = real(dy, cache, **flags)
        dW = dW.copy()
        dW[:, :, 0, 0] = 0.0
        return dx, dW, db

    conv.conv2d_backward = wrong
    try:
        errors = gradcheck.check_module(layer, make_input((2, 2, 4, 4)))
    finally:
        conv.conv2d_backward = real
    assert errors["W"] > 1e-3 and errors["x"] < GRAD_TOL


# ------------------------------------------------------------------------ PyTorch parity

def _compare(ours, theirs, layer, quantity):
    ours = np.asarray(ours)
    theirs = theirs.detach().cpu().numpy()
    assert ours.shape == theirs.shape, f"{layer} {quantity}: shape {ours.shape} vs torch {theirs.shape}"
    err = float(np.max(np.abs(ours - theirs))) / max(float(np.max(np.abs(theirs))), 1e-300)
    record_error(PARITY_TABLE, layer, quantity, "-", err)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=f"{layer} {quantity}")


@pytest.mark.parametrize("cls_name, c_in, c_out, kwargs, shape", _params(CASES + PARITY_ONLY))
def test_parity_with_pytorch(torch, cls_name, c_in, c_out, kwargs, shape):
    ours = build_layer(factory_of(cls_name, c_in, c_out, kwargs), "float64", "train")
    theirs = getattr(torch.nn, cls_name)(c_in, c_out, dtype=torch.float64, **kwargs)
    assert tuple(theirs.weight.shape) == ours.W.shape  # the same layout as PyTorch
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.W.data.copy()))
        if ours.has_bias:
            theirs.bias.copy_(torch.from_numpy(ours.b.data.copy()))
    x = make_input(shape, seed=len(cls_name))
    xt = torch.tensor(x, requires_grad=True)
    y, yt = ours.forward(x), theirs(xt)
    _compare(y, yt, cls_name, "y")
    dy = random_like(y.shape, seed=2)
    dx = ours.backward(dy)
    yt.backward(torch.from_numpy(dy))
    _compare(dx, xt.grad, cls_name, "dx")
    _compare(ours.W.grad, theirs.weight.grad, cls_name, "dW")
    if ours.has_bias:
        _compare(ours.b.grad, theirs.bias.grad, cls_name, "db")


@pytest.mark.parametrize("cls_name, c_in, c_out, k", [("Conv2d", 3, 8, 4), ("Conv2d", 16, 4, (3, 5)),
                                                      ("ConvTranspose2d", 100, 64, 4),
                                                      ("ConvTranspose2d", 4, 16, (2, 3))])
def test_default_init_matches_pytorch_bounds(torch, cls_name, c_in, c_out, k):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b, with fan_in computed from weight.shape[1] as torch."""
    layer = getattr(nn, cls_name)(c_in, c_out, k, seed=0, dtype="float64")
    theirs = getattr(torch.nn, cls_name)(c_in, c_out, k, dtype=torch.float64)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(theirs.weight)
    bound = 1.0 / np.sqrt(fan_in)
    for p in (layer.W.data, layer.b.data):
        assert np.abs(p).max() <= bound
    assert np.abs(layer.W.data).max() > 0.9 * bound  # not a narrower distribution
    # torch's own draws obey the same bound
    assert float(theirs.weight.detach().abs().max()) <= bound and float(theirs.bias.detach().abs().max()) <= bound


# ------------------------------------------------------------------------ im2col / col2im

IM2COL_CASES = [((2, 3, 5, 4), (3, 3), (1, 1), (1, 1)), ((2, 2, 7, 6), (4, 4), (2, 2), (1, 1)),
                ((1, 3, 6, 5), (3, 2), (2, 1), (0, 2)), ((3, 1, 4, 4), (1, 1), (1, 1), (0, 0)),
                ((2, 2, 9, 8), (5, 5), (2, 2), (2, 2)), ((2, 2, 5, 5), (2, 2), (2, 2), (0, 0))]


def _split_over(monkeypatch, threads):
    """Make the fast path's run_in_parts split even these small arrays over ``threads`` threads;
    threads=0: the reference path (fast paths off)."""
    monkeypatch.setattr(fast_cpu, "cpu_threads", lambda: max(1, threads))
    monkeypatch.setattr(fast_cpu, "PARALLEL_MIN_ELEMENTS", 0)
    monkeypatch.setattr(replace, "_enabled", threads > 0)  # restored after the test
    fast.reset()


@pytest.fixture(autouse=True)
def _forget_the_chosen_paths():
    fast.reset()
    yield
    fast.reset()


# (H + 2p - k) % s != 0 in the 2nd, 3rd, 5th and 6th cases: the last input rows belong to no patch
@pytest.mark.parametrize("threads", [0, 1, 3])
@pytest.mark.parametrize("x_shape, k, s, p", IM2COL_CASES)
def test_im2col_matches_its_definition_and_col2im_is_its_adjoint(monkeypatch, threads, x_shape, k, s, p):
    _split_over(monkeypatch, threads)  # the reference, or the fast path on 1 or 3 threads
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    cols = im2col(x, k, s, p)
    N, C, H, W = x_shape
    H_out, W_out = conv_output_size((H, W), k, s, p)
    assert cols.shape == (N * H_out * W_out, k[0] * k[1] * C)
    # the definition, by loops: cols[(n, h, w), (i, j, c)] = x_pad[n, c, s*h + i, s*w + j]
    x_pad = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    ref = np.empty((N, H_out, W_out, k[0], k[1], C))
    for n in range(N):
        for h in range(H_out):
            for w in range(W_out):
                for i in range(k[0]):
                    for j in range(k[1]):
                        ref[n, h, w, i, j, :] = x_pad[n, :, s[0] * h + i, s[1] * w + j]
    np.testing.assert_array_equal(cols, ref.reshape(cols.shape))
    # adjoint: <im2col(x), c> == <x, col2im(c)>
    c = rng.standard_normal(cols.shape)
    back = col2im(c, x_shape, k, s, p)
    assert back.shape == x_shape
    lhs, rhs = float(np.sum(cols * c)), float(np.sum(x * back))
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + abs(rhs) + 1.0), (lhs, rhs)


@pytest.mark.parametrize("cls_name", ["Conv2d", "ConvTranspose2d"])
def test_split_over_threads_equals_one_thread_bit_for_bit(monkeypatch, cls_name):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    results = []
    for threads in (0, 1, 3):
        _split_over(monkeypatch, threads)
        layer = getattr(nn, cls_name)(3, 4, 4, stride=2, padding=1, seed=0)
        y = layer.forward(x)
        dy = np.random.default_rng(6).standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(dy)
        results.append((np.array(y), np.array(dx), layer.W.grad.copy(), layer.b.grad.copy()))
    for reference, one, split in zip(*results):  # im2col/col2im copies: the same bits on every path
        np.testing.assert_array_equal(one, reference)
        np.testing.assert_array_equal(split, reference)


def test_output_size_rules_are_pytorchs():
    assert conv_output_size((64, 64), (4, 4), (2, 2), (1, 1)) == (32, 32)
    assert conv_output_size((7, 9), (5, 3), (2, 2), (0, 1)) == (2, 5)  # floor
    assert conv_transpose_output_size((1, 1), (4, 4), (1, 1), (0, 0), (0, 0)) == (4, 4)
    assert conv_transpose_output_size((4, 3), (4, 4), (2, 2), (1, 1), (1, 0)) == (9, 6)


# ------------------------------------------------------------------------ contracts

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls_name, c_in, c_out, kwargs, shape", _params([CASES[4], CASES[13], CASES[15]]))
def test_dtype_kept_and_dy_x_unchanged(cls_name, c_in, c_out, kwargs, shape, dtype):
    check_contract(build_layer(factory_of(cls_name, c_in, c_out, kwargs), dtype, "train"), shape, dtype)


def test_backward_adds_into_grad_and_skips_dx_when_asked():
    layer = build_layer(factory_of("ConvTranspose2d", 2, 3, dict(kernel_size=4, stride=2, padding=1)),
                        "float64", "train")
    x = make_input((2, 2, 3, 3))
    dy = random_like(layer.forward(x).shape)
    layer.backward(dy)
    once = {n: p.grad.copy() for n, p in layer.named_parameters()}
    layer.forward(x)
    layer.backward(dy)
    for n, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[n], rtol=1e-14, err_msg=n)
    layer.zero_grad()
    layer.forward(x)
    assert layer.backward(dy, need_dx=False) is None
    for n, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, once[n], rtol=1e-14, err_msg=n)


@pytest.mark.parametrize("cls_name", ["Conv2d", "ConvTranspose2d"])
def test_requires_grad_false_skips_parameter_gradients_only(cls_name):
    """D during the G step: dx as usual, W.grad and b.grad untouched."""
    layer = build_layer(factory_of(cls_name, 2, 3, dict(kernel_size=3, stride=2, padding=1)), "float64", "train")
    x = make_input((2, 2, 4, 5))
    dy = random_like(layer.forward(x).shape)
    dx = layer.backward(dy)
    grads = {n: p.grad.copy() for n, p in layer.named_parameters()}
    layer.requires_grad_(False)
    layer.forward(x)
    np.testing.assert_array_equal(layer.backward(dy), dx)
    for n, p in layer.named_parameters():
        np.testing.assert_array_equal(p.grad, grads[n], err_msg=n)


@pytest.mark.parametrize("cls_name", ["Conv2d", "ConvTranspose2d"])
def test_backward_after_zero_grad_writes_the_gradient_not_garbage(cls_name):
    """zero_grad fills the gradients with zeros: the first backward adds to 0, stale values never show."""
    layer = build_layer(factory_of(cls_name, 2, 3, dict(kernel_size=4, stride=2, padding=1)), "float64", "train")
    x = make_input((2, 2, 4, 4))
    dy = random_like(layer.forward(x).shape)
    layer.backward(dy)
    expected = {n: p.grad.copy() for n, p in layer.named_parameters()}
    store = layer.flat_store()
    store.grad[...] = 123.0
    layer.zero_grad()
    layer.forward(x)
    layer.backward(dy)
    for n, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, expected[n], rtol=1e-14, err_msg=n)
        assert p.grad.base is not None  # still a view of the flat store, written in place


def test_seeded_init_is_deterministic_and_named_like_pytorch():
    a, b = nn.Conv2d(3, 4, 3, seed=5), nn.Conv2d(3, 4, 3, seed=5)
    np.testing.assert_array_equal(a.W.data, b.W.data)
    assert not np.array_equal(a.W.data, nn.Conv2d(3, 4, 3, seed=6).W.data)
    assert [n for n, _ in a.named_parameters()] == ["W", "b"]
    assert a.W.data.dtype == np.float32 and a.W.shape == (4, 3, 3, 3)
    t = nn.ConvTranspose2d(4, 3, (2, 5), bias=False)
    assert [n for n, _ in t.named_parameters()] == ["W"] and t.W.shape == (4, 3, 2, 5)


@pytest.mark.parametrize("layer, bad_shape, match", [
    (nn.Conv2d(3, 4, 3), (2, 5, 8, 8),
     r"Conv2d\(3, 4.*expected input of shape \(N, 3, H, W\), got \(2, 5, 8, 8\)"),
    (nn.Conv2d(3, 4, 3), (3, 8, 8), r"Conv2d\(3, 4.*expected input of shape \(N, 3, H, W\), got \(3, 8, 8\)"),
    (nn.Conv2d(1, 4, 5, padding=1), (2, 1, 2, 6), r"Conv2d\(1, 4.*input \(2, 1, 2, 6\) padded to \(4, 8\) "
                                                  r"is smaller than the kernel \(5, 5\)"),
    (nn.ConvTranspose2d(4, 2, 4), (2, 3, 1, 1), r"ConvTranspose2d\(4, 2.*expected input of shape "
                                                r"\(N, 4, H, W\), got \(2, 3, 1, 1\)"),
    (nn.ConvTranspose2d(4, 2, 4), (2, 4, 1), r"ConvTranspose2d\(4, 2.*got \(2, 4, 1\)"),
    (nn.ConvTranspose2d(1, 1, 1, padding=1), (2, 1, 1, 1), r"ConvTranspose2d\(1, 1.*input \(2, 1, 1, 1\) "
                                                           r"gives an empty output \(-1, -1\)"),
])
def test_bad_input_shapes_raise_value_error_naming_the_layer(layer, bad_shape, match):
    with pytest.raises(ValueError, match=match):
        layer.forward(np.zeros(bad_shape, dtype=np.float32))


@pytest.mark.parametrize("make, match", [
    (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2),
     "output_padding must be .*smaller than stride"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, output_padding=1), "output_padding must be .*smaller than stride"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, stride=(2, 1), output_padding=(1, 1)), "output_padding"),
    (lambda: nn.Conv2d(2, 2, 0), "kernel_size and stride must be positive"),
    (lambda: nn.Conv2d(2, 2, 3, stride=0), "kernel_size and stride must be positive"),
    (lambda: nn.Conv2d(2, 2, 3, padding=-1), "padding non-negative"),
    (lambda: nn.Conv2d(0, 2, 3), "channel counts must be positive"),
    (lambda: nn.Conv2d(2, 2, (3, 3, 3)), "kernel_size must be an int or a pair"),
])
def test_bad_constructor_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_dtype_and_backward_without_forward_raise():
    layer = nn.Conv2d(2, 2, 3)
    with pytest.raises(TypeError, match="Conv2d.*float64.*float32"):
        layer.forward(np.zeros((1, 2, 4, 4)))
    with pytest.raises(RuntimeError, match="without a forward"):
        nn.ConvTranspose2d(2, 2, 3).backward(np.zeros((1, 2, 4, 4), dtype=np.float32))


# ------------------------------------------------------------------------ the guarded fake device

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls_name, c_in, c_out, kwargs, shape",
                         _params([CASES[4], CASES[7], CASES[13], CASES[15], CASES[19]]))
def test_runs_on_the_fake_device_and_equals_numpy(cls_name, c_in, c_out, kwargs, shape, dtype):
    """No NumPy call on device data (the fake raises), and the results equal NumPy's bit for bit."""
    from device_checks import check_layer_on_fake_device

    check_layer_on_fake_device(factory_of(cls_name, c_in, c_out, kwargs), shape, "train", dtype)
