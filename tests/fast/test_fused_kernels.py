"""The CuPy fused kernels (scratchgan/fast/kernels.py), tested without a GPU and, where one is visible, on it.

On the CPU each kernel body is compiled by the system's C++ compiler (tests/support/host_kernels.py) and
  1. run directly against the reference function it replaces, on random values and on the edge values
     (+-0, +-inf, NaN, subnormals, the largest floats): bit for bit where the body is made of
     +, -, *, / and sqrt, to a few ulp where it calls exp or log1p;
  2. lent to the fake device (tests/support/fake_device.py) as its ElementwiseKernel, so that every layer,
     the loss and Adam take their fused branch as they would on CuPy: results against NumPy,
     gradient checks in float64, a whole GAN step, and a count that the kernels really ran.
A mutated kernel must fail these checks, so they are not vacuous. On a GPU the same comparisons
run through cupy.ElementwiseKernel itself. Where CuPy and NVRTC are installed (no GPU needed), each
body is compiled as CuPy compiles it, CuPy's own ``-ftz=true`` included, and its PTX checked for
fused multiply-adds and flushed subnormals (issue 14: on an H200 a subnormal result came back 0).
"""
from __future__ import annotations

import os
import re

import host_kernels
import numpy as np
import pytest
from fake_device import FakeElementwiseKernel, xp
from host_kernels import HostElementwiseKernel, cupy_appended_options
from layer_cases import build_layer, make_input, random_like, skip_unless_cupy
from device_checks import assert_same, check_layer_on_fake_device
from tolerances import assert_close

from scratchgan import backend, fast, gradcheck, losses, nn, optim, replace
from scratchgan.cli import train as train_command
from scratchgan.fast import kernels as fast_kernels
from scratchgan.gan import ema as ema_module
from scratchgan.gan import models
from scratchgan.nn import activations, batchnorm

DTYPES = ("float32", "float64")
TRANSCENDENTAL = {"sigmoid_forward", "bce_with_logits"}  # call exp / log1p: not bit for bit
BITWISE = set(fast_kernels.KERNELS) - TRANSCENDENTAL
ULP_RTOL = {"float32": 4e-7, "float64": 1e-15}  # a few ulp

NO_COMPILER = "no C++ compiler (g++ or c++): the kernels cannot be built for the CPU"


def host_kernel(name, spec=None):
    if host_kernels.compiler() is None:
        pytest.skip(NO_COMPILER)
    inputs, outputs, body = spec or fast_kernels.KERNELS[name]
    return HostElementwiseKernel(inputs, outputs, body, f"scratchgan_{name}", preamble=fast_kernels.PREAMBLE,
                                 options=fast_kernels.OPTIONS)


def assert_bitwise_equal(actual, expected, what=""):
    """Same dtype and the same bits, +0 and -0 told apart; any NaN matches any NaN."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan, err_msg=f"{what}: NaNs differ")
    bits = actual.dtype.str.replace("f", "u")
    mismatch = (actual.view(bits) != expected.view(bits)) & ~nan
    assert not mismatch.any(), (f"{what}: {mismatch.sum()} of {mismatch.size} differ, first at "
                                f"{np.argwhere(mismatch)[0]}: {actual[mismatch][0]!r} vs {expected[mismatch][0]!r}")


def assert_kernel_matches(name, actual, expected, dtype, what=""):
    if name in TRANSCENDENTAL:
        assert_close(actual, expected, ULP_RTOL[dtype], err_msg=what)
        assert np.asarray(actual).dtype == np.asarray(expected).dtype, what
    else:
        assert_bitwise_equal(actual, expected, what)


def values(dtype, shape=(64, 48), seed=0, edges=True):
    """Random values of every magnitude, and (``edges``) the special ones in the first row."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp(rng.uniform(-8, 8, shape))
    x = x.astype(dtype)
    if edges:
        info = np.finfo(dtype)
        special = [0.0, -0.0, np.inf, -np.inf, np.nan, info.tiny / 4, -info.tiny / 4, info.max, -info.max,
                   info.eps, 1.0, -1.0, 20.0, -20.0, 90.0, -90.0, 800.0, -800.0]
        x.reshape(-1)[:len(special)] = np.array(special, dtype=dtype)
    return x


# ------------------------------------------------------------------ 1. each kernel against NumPy
def _kernel_cases(dtype):
    """[(label, kernel arguments, reference output(s) of the NumPy path)], every kernel but Adam's."""
    with np.errstate(all="ignore"), fast.disabled():  # the edge values overflow on purpose; the reference code
        return list(_kernel_case_stream(dtype))


def _kernel_case_stream(dtype):
    x, dy = values(dtype, seed=1), values(dtype, seed=2)
    dt = np.dtype(dtype).type
    for slope in (0.2, 0.01, 0.0, 1.0, 1.5, -0.1):
        yield f"leaky_relu_forward[{slope}]", (x, slope), activations.leaky_relu_forward(x, slope)[0]
        yield (f"leaky_relu_backward[{slope}]", (dy, x, slope), activations.leaky_relu_backward(dy, x, slope))
    yield "relu_backward", (dy, x), activations.relu_backward(dy, x)
    y = np.tanh(x)
    yield "tanh_backward", (dy, y), activations.tanh_backward(dy, y)
    yield "sigmoid_forward", (x,), activations.sigmoid_forward(x)[0]
    s = activations.sigmoid_forward(x)[0]
    yield "sigmoid_backward", (dy, s), activations.sigmoid_backward(dy, s)
    z = values(dtype, (64, 1), seed=3, edges=False)
    for t in (dt(1.0), dt(0.0), dt(0.9), np.random.default_rng(4).uniform(0, 1, z.shape).astype(dtype)):
        loss, dz = losses.bce_with_logits(z, t)
        yield "bce_with_logits", (z, t, 1.0 / z.size), (loss, dz)
    x = values(dtype, (64, 48), seed=5, edges=False)
    gamma, beta = values(dtype, (48,), seed=6, edges=False), values(dtype, (48,), seed=7, edges=False)
    mean, var = x.mean(axis=0), x.var(axis=0)
    y, (xhat, _, inv_std) = batchnorm.batchnorm_forward(x, gamma, beta, mean, var, 1e-5)
    yield "batchnorm_normalize", (x, mean, inv_std, gamma, beta), (xhat, y)
    dy = values(dtype, x.shape, seed=8, edges=False)
    _, cache, _, _ = batchnorm.batchnorm_train_forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = batchnorm.batchnorm_backward_train(dy, cache)
    n = x.shape[0]
    yield ("batchnorm_backward_train", (dy, cache[0], dbeta / n, dgamma / n, cache[1] * cache[2]), dx)
    theta, ema = values(dtype, seed=9), values(dtype, seed=10)
    for beta in (0.999, 0.5):
        expected = ema.copy()
        ema_module.ema_update(expected, theta, beta)
        yield f"ema_update[{beta}]", (theta, 1.0 - beta, ema.copy()), expected


def _pairs(name, actual, expected):
    """[(kernel output, NumPy reference)]; for BCE the loss terms' mean (xp's reduction) against the loss."""
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    if name == "bce_with_logits":
        actual = (actual[0].mean(),) + actual[1:]
    return list(zip(actual, expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_kernel_equals_the_numpy_path(dtype):
    checked = set()
    for label, args, expected in _kernel_cases(dtype):
        name = label.split("[")[0]
        for i, (a, e) in enumerate(_pairs(name, host_kernel(name)(*args), expected)):
            assert_kernel_matches(name, a, e, dtype, f"{label} output {i}")
        checked.add(name)
    assert checked == set(fast_kernels.KERNELS) - {"adam_update"}  # Adam: below, through the optimizer


def test_host_kernel_follows_cupys_calling_rules():
    kernel = host_kernel("tanh_backward")
    dy = np.ones((3, 4), np.float32)
    with pytest.raises(TypeError, match="type placeholder T"):
        kernel(dy, np.ones((3, 4), np.float64))
    with pytest.raises(TypeError, match="takes 2 inputs"):
        kernel(dy)
    out = np.empty((3, 4), np.float32)
    assert kernel(dy, np.full(4, 0.5, np.float32), out) is out  # broadcast input, given output
    np.testing.assert_array_equal(out, 0.75)
    with pytest.raises(ValueError, match="broadcast shape"):
        kernel(dy, dy, np.empty((4,), np.float32))


# ------------------------------------------------------------------ 2. the layers through the kernels
@pytest.fixture
def fused(monkeypatch):
    """The fake device with an ElementwiseKernel: every fused branch is taken. Returns {name: kernel}."""
    if host_kernels.compiler() is None:
        pytest.skip(NO_COMPILER)
    made = {}

    def elementwise_kernel(in_params, out_params, operation, name, **kwargs):
        kernel = made[name.removeprefix("scratchgan_")] = FakeElementwiseKernel(in_params, out_params, operation,
                                                                                name, **kwargs)
        return kernel

    monkeypatch.setattr(xp, "ElementwiseKernel", elementwise_kernel, raising=False)
    monkeypatch.setattr(replace, "_enabled", True)
    fast.reset()  # the fake device's arrays now have replacements: choose again
    yield made
    fast.reset()


FUSED_LAYER_CASES = [
    ("LeakyReLU(0.2)", lambda dtype: nn.LeakyReLU(0.2), (4, 6), {"leaky_relu_forward", "leaky_relu_backward"}),
    ("LeakyReLU(1.5)", lambda dtype: nn.LeakyReLU(1.5), (4, 6), {"leaky_relu_forward", "leaky_relu_backward"}),
    ("ReLU", lambda dtype: nn.ReLU(), (4, 6), {"relu_backward"}),
    ("Tanh", lambda dtype: nn.Tanh(), (4, 6), {"tanh_backward"}),
    ("Sigmoid", lambda dtype: nn.Sigmoid(), (4, 6), {"sigmoid_forward", "sigmoid_backward"}),
    ("BatchNorm1d", lambda dtype: nn.BatchNorm1d(6, dtype=dtype), (8, 6), {"batchnorm_normalize"}),
    ("BatchNorm2d", lambda dtype: nn.BatchNorm2d(3, dtype=dtype), (4, 3, 5, 5), {"batchnorm_normalize"}),
]
CASE_PARAMS = [pytest.param(factory, shape, kernels, id=name) for name, factory, shape, kernels in FUSED_LAYER_CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ("train", "eval"))
@pytest.mark.parametrize("factory, shape, kernels", CASE_PARAMS)
def test_layer_through_fused_kernels_equals_numpy(fused, factory, shape, kernels, mode, dtype):
    transcendental = any(k in TRANSCENDENTAL for k in kernels)
    check_layer_on_fake_device(factory, shape, mode, dtype, rtol=ULP_RTOL[dtype] if transcendental else None)
    if mode == "train" and "batchnorm_normalize" in kernels:
        kernels = kernels | {"batchnorm_backward_train"}
    assert {name for name, k in fused.items() if k.calls} == kernels


@pytest.mark.parametrize("mode", ("train", "eval"))
@pytest.mark.parametrize("factory, shape, kernels", CASE_PARAMS)
def test_gradcheck_through_fused_kernels(fused, factory, shape, kernels, mode):
    layer = build_layer(factory, "float64", mode, backend=xp)
    errors = gradcheck.check_module(layer, xp.asarray(make_input(shape)))
    assert max(errors.values()) < 1e-7, errors
    assert all(fused[name].calls for name in kernels)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", [1.0, 0.0, 0.9, "array"])
def test_bce_with_logits_through_the_fused_kernel(fused, target, dtype):
    z = (make_input((16, 1), "float64") * 4.0).astype(dtype)
    t = np.random.default_rng(1).uniform(0, 1, z.shape).astype(dtype) if target == "array" else target
    loss, dz = losses.bce_with_logits(z, t)
    loss_dev, dz_dev = losses.bce_with_logits(xp.asarray(z), xp.asarray(t) if target == "array" else t)
    assert loss_dev.ndim == 0
    assert_same(loss_dev, np.asarray(loss), "loss", ULP_RTOL[dtype])
    assert_same(dz_dev, dz, "dz", ULP_RTOL[dtype])
    assert fused["bce_with_logits"].calls == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_through_the_fused_kernel_equals_numpy_bit_for_bit(fused, weight_decay, dtype):
    def network():
        return nn.Sequential(nn.Linear(5, 8, seed=1, dtype=dtype), nn.LeakyReLU(0.2), nn.Linear(8, 1, seed=2, dtype=dtype))
    host, dev = network().to(), network().to(backend=xp)
    opt = optim.Adam(host.parameters(), lr=1e-2, weight_decay=weight_decay)
    opt_dev = optim.Adam(dev.parameters(), lr=1e-2, weight_decay=weight_decay)
    for step in range(4):
        x = values(dtype, (6, 5), seed=step, edges=False)
        opt.zero_grad(), opt_dev.zero_grad()
        with fast.disabled():  # the host runs optim.adam_update's reference code
            host.backward(host.forward(x) * 0.0 + random_like((6, 1), dtype, step))
        dev.backward(dev.forward(xp.asarray(x)) * 0.0 + xp.asarray(random_like((6, 1), dtype, step)))
        if step == 2:  # a zero gradient: the update must still follow the moments
            opt.store.grad[...] = 0.0
            opt_dev.store.grad[...] = 0.0
        with fast.disabled():
            opt.step()
        opt_dev.step()
        for name in ("data", "grad"):
            assert_same(getattr(opt_dev.store, name), getattr(opt.store, name), f"store.{name}, step {step}")
        assert_same(opt_dev.m, opt.m, f"m, step {step}")
        assert_same(opt_dev.v, opt.v, f"v, step {step}")
    assert fused["adam_update"].calls == 4


def _gan_step(backend_xp):
    # float64: the bias of a Linear followed by BatchNorm has a gradient of pure rounding noise (the
    # normalisation removes it), which Adam scales up to ~lr; in float32 an ulp in the loss's exp moves it
    config = dict(train_command.MLP_DEFAULTS, image_size=784, batch_size=8, g_hidden="16,32", d_hidden="32,16",
                  latent_dim=10, backend="numpy", dtype="float64")
    step = models.build_step(config, backend_xp)
    real = make_input((8, 784), "float64", seed=3).clip(-1, 1)
    return step, real


def test_gan_step_through_fused_kernels_matches_numpy(fused):
    host_step, real = _gan_step(np)
    dev_step, _ = _gan_step(xp)
    for _ in range(3):
        with fast.disabled():
            stats = host_step.step([real])
        stats_dev = dev_step.step([xp.asarray(real)])
    for key, value in stats.items():
        np.testing.assert_allclose(float(stats_dev[key]), float(value), rtol=1e-12, err_msg=key)
    for net in ("G", "D"):
        host, dev = getattr(host_step, net).flat_store().data, getattr(dev_step, net).flat_store().data
        np.testing.assert_allclose(dev.get(), host, rtol=1e-10, atol=1e-12, err_msg=net)  # float64
    used = {name for name, k in fused.items() if k.calls}
    assert used == {"leaky_relu_forward", "leaky_relu_backward", "tanh_backward", "bce_with_logits",
                    "batchnorm_normalize", "batchnorm_backward_train", "adam_update",
                    "sigmoid_forward"}  # the D(x), D(G(z)) statistics


def test_switched_off_by_the_environment(fused, monkeypatch):
    monkeypatch.setattr(replace, "_enabled", None)  # the environment decides
    monkeypatch.setenv("SCRATCHGAN_REFERENCE", "1")
    fast.reset()
    check_layer_on_fake_device(lambda dtype: nn.LeakyReLU(0.2), (4, 6))
    assert not fused  # no kernel was even built
    assert fast.replacement_for("scratchgan.optim.adam_update", xp) is None
    assert fast.replacement_for("scratchgan.optim.adam_update", np) is None  # nor NumPy's fast path
    assert fast.active("numpy") == {}


# ------------------------------------------------------------------ 3. the checks can fail
@pytest.mark.parametrize("name, mutated", [
    ("leaky_relu_backward", "dx = x >= 0 ? dy : dy * slope;"),  # the kink's side at x = 0
    ("tanh_backward", "dx = dy - y * y * dy;"),  # the same maths, rounded otherwise
    ("batchnorm_backward_train", "dx = (dy - xhat * mean_dy_xhat - mean_dy) * scale;"),
])
def test_a_mutated_kernel_is_caught(name, mutated):
    inputs, outputs, _ = fast_kernels.KERNELS[name]
    mutant = host_kernel(name, (inputs, outputs, mutated))
    with pytest.raises(AssertionError):
        for label, args, expected in _kernel_cases("float32"):
            if label.split("[")[0] == name:
                for a, e in _pairs(name, mutant(*args), expected):
                    assert_kernel_matches(name, a, e, "float32", label)


def test_a_mutated_adam_kernel_is_caught(fused, monkeypatch):
    inputs, outputs, body = fast_kernels.KERNELS["adam_update"]
    mutated = body.replace("add_rn(sqrt_rn(v_hat), eps)", "sqrt_rn(v_hat)")  # Adam without eps
    assert mutated != body
    monkeypatch.setitem(fast_kernels.KERNELS, "adam_update", (inputs, outputs, mutated))
    with pytest.raises(AssertionError):
        test_adam_through_the_fused_kernel_equals_numpy_bit_for_bit(fused, 0.0, "float64")


# ------------------------------------------------------------------ 4. on a GPU, through CuPy itself
@pytest.mark.parametrize("dtype", DTYPES)
def test_each_kernel_on_cupy_equals_the_numpy_path(dtype):
    skip_unless_cupy()
    cupy = backend.get_xp("cupy")
    for label, args, expected in _kernel_cases(dtype):
        name = label.split("[")[0]
        kernel = fast_kernels.kernel(cupy, name)
        actual = kernel(*(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args))
        actual = tuple(a.get() for a in actual) if isinstance(actual, tuple) else actual.get()
        rtol = 4 * ULP_RTOL[dtype] if name in TRANSCENDENTAL else None  # CUDA's exp / log1p: within 2 ulp
        for i, (a, e) in enumerate(_pairs(name, actual, expected)):
            if rtol is None:
                assert_bitwise_equal(a, e, f"{label} output {i}")
            else:
                assert_close(a, e, rtol, err_msg=f"{label} output {i}")


@pytest.mark.parametrize("factory, shape, kernels", CASE_PARAMS)
def test_layer_on_cupy_with_and_without_fused_kernels(factory, shape, kernels, monkeypatch):
    skip_unless_cupy()
    cupy = backend.get_xp("cupy")
    results = []
    for switch in (True, False):
        monkeypatch.setattr(replace, "_enabled", switch)
        fast.reset()
        layer = build_layer(factory, "float64", "train", backend="cupy")
        x = cupy.asarray(make_input(shape))
        y = layer.forward(x)
        dx = layer.backward(cupy.asarray(random_like(y.shape)))
        results.append((y.get(), dx.get()))
        if switch:
            errors = gradcheck.check_module(build_layer(factory, "float64", "train", backend="cupy"), x)
            assert max(errors.values()) < 1e-7, errors
    for fused_value, plain_value in zip(*results):
        np.testing.assert_allclose(fused_value, plain_value, rtol=1e-13, atol=1e-13)  # float64


# ------------------------------------------------------------------ 5. how they are compiled (issue 14)
def test_compile_options_keep_ieee_arithmetic():
    """No FMA contraction, no flushed subnormals, IEEE division and square root, asked of NVRTC..."""
    assert {"--fmad=false", "-ftz=false", "--prec-div=true", "--prec-sqrt=true"} <= set(fast_kernels.OPTIONS)


@pytest.mark.parametrize("name", sorted(BITWISE))
def test_bitwise_bodies_use_only_the_ieee_helpers(name):
    """...but CuPy appends -ftz=true after our options, so the bit-for-bit bodies must not rely on them: every
    float operation is a helper of PREAMBLE (a PTX instruction without .ftz), never a bare operator."""
    body = fast_kernels.KERNELS[name][2]
    assert not re.search(r"[-+*/<>!]", body), f"{name}: a bare operator in {body!r}"
    for helper in ("add_rn", "sub_rn", "mul_rn", "div_rn", "sqrt_rn", "is_gt", "is_ne"):
        assert f"{helper}(float a" in fast_kernels.PREAMBLE and f"{helper}(double a" in fast_kernels.PREAMBLE


# ------------------------------------------------------------------ 6. NVRTC, where CuPy is installed (no GPU needed)
SCALAR_PARAMETERS = {"slope", "inv_n", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "bias1", "bias2",
                     "lr", "eps", "weight_decay"}


def _cupy_style_source(name, ctype, ndim):
    """The kernel as cupy.ElementwiseKernel lays it out: CArray arguments bound by reference, scalars by value."""
    inputs, outputs, body = fast_kernels.KERNELS[name]
    params, bindings = [], []
    for const, names in ((True, host_kernels._names(inputs)), (False, host_kernels._names(outputs))):
        for p in names:
            if p in SCALAR_PARAMETERS:
                params.append(f"T {p}")
            else:
                params.append(f"CArray<T, {ndim}, true, true> _raw_{p}")
                bindings.append(f"{'const ' if const else ''}T &{p} = _raw_{p}[_ind.get()];")
    params.append(f"CIndexer<{ndim}, true> _ind")
    return (f"#include <cupy/complex.cuh>\n#include <cupy/carray.cuh>\n{fast_kernels.PREAMBLE}\ntypedef {ctype} T;\n"
            f'extern "C" __global__ void scratchgan_{name}({", ".join(params)}) {{\n'
            f"  CUPY_FOR(i, _ind.size()) {{\n    _ind.set(i);\n    {' '.join(bindings)}\n    {body}\n  }}\n}}\n")



@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("name", sorted(fast_kernels.KERNELS))
def test_kernel_compiles_with_nvrtc_without_fma_or_flushed_subnormals(name, ctype):
    """NVRTC compiles each body with our options followed by CuPy's own (its -ftz=true included), and the
    PTX of the bit-for-bit kernels has no fused multiply-add and no .ftz instruction."""
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy (and its NVRTC) not installed")
    import cupy
    try:
        nvrtc.getVersion()
    except Exception as e:  # CuPy without the NVRTC library (nvidia-cuda-nvrtc-cu12 / the CUDA toolkit)
        pytest.skip(f"CuPy is installed but NVRTC cannot be loaded: {e}")
    include = os.path.join(os.path.dirname(cupy.__file__), "_core", "include")
    cccl = os.path.join(include, "cupy", "_cccl")
    options = [*fast_kernels.OPTIONS, f"-I{include}", "--gpu-architecture=compute_90", "-std=c++17",
               *(f"-I{os.path.join(cccl, d)}" for d in sorted(os.listdir(cccl))), *cupy_appended_options()]
    program = nvrtc.createProgram(_cupy_style_source(name, ctype, 2), f"{name}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError as e:
            pytest.fail(f"{name} ({ctype}) does not compile: {e}\n{nvrtc.getProgramLog(program)}")
        ptx = nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert f"scratchgan_{name}" in ptx
    if name in BITWISE:  # exp and log1p are library code, with their own fma instructions
        assert "fma.rn" not in ptx
        assert not [line for line in ptx.splitlines() if ".ftz" in line], f"{name}: subnormals flushed"
