"""im2col and col2im as single CUDA kernels (scratchgan/fast/conv_kernels.py), checked without a GPU.

Each kernel body is compiled for the CPU (tests/support/host_kernels.py: the same body, loops for threads)
and compared bit for bit with the reference im2col / col2im of scratchgan/nn/conv.py, over kernel
sizes 1-5, strides 1 and 2, padding 0-2, sizes where (H + 2p - k) % s != 0 (input rows no window
reaches), NCHW and channels-last inputs, float32 and float64 with the edge values (+-0, inf, NaN,
subnormals). Then whole Conv2d / ConvTranspose2d layers run on the fake device with these kernels
as its ElementwiseKernel, against NumPy. A kernel with one mistake fails. Where CuPy is installed,
NVRTC compiles each body as CuPy would; where a GPU is visible, CuPy runs them.
"""
from __future__ import annotations

import os

import host_kernels
import numpy as np
import pytest
from fake_device import FakeElementwiseKernel
from fake_device import xp as fake_xp
from host_kernels import HostElementwiseKernel
from layer_cases import skip_unless_cupy
from device_checks import check_layer_on_fake_device

from scratchgan import fast, nn, replace
from scratchgan.fast import conv_kernels
from scratchgan.fast import kernels as fast_kernels
from scratchgan.nn.conv import col2im, conv_output_size, im2col

DTYPES = ("float32", "float64")
# (x shape (N, C, H, W), kernel, stride, padding); the comment gives (H + 2p - k) % s on each axis
CASES = [
    ((2, 3, 5, 4), (1, 1), (1, 1), (0, 0)),  # 0, 0
    ((2, 3, 5, 4), (3, 3), (1, 1), (1, 1)),  # 0, 0
    ((2, 2, 7, 6), (4, 4), (2, 2), (1, 1)),  # 1, 0: the last input row is in no window
    ((2, 2, 8, 8), (4, 4), (2, 2), (1, 1)),  # 0, 0: the DCGAN layers
    ((1, 3, 6, 5), (3, 2), (2, 1), (0, 2)),  # 1, 0
    ((2, 2, 9, 8), (5, 5), (2, 2), (2, 2)),  # 0, 1
    ((2, 2, 5, 5), (2, 2), (2, 2), (0, 0)),  # 1, 1
    ((3, 1, 7, 7), (3, 3), (2, 2), (0, 0)),  # 0, 0
    ((2, 4, 6, 7), (4, 4), (2, 2), (0, 0)),  # 0, 1
    ((2, 2, 4, 4), (4, 4), (1, 1), (0, 0)),  # 0, 0: one window (DCGAN's last D layer)
]
CASE_IDS = [f"x{'x'.join(map(str, s))}-k{k[0]}{k[1]}-s{st[0]}{st[1]}-p{p[0]}{p[1]}" for s, k, st, p in CASES]


def _needs_compiler():
    if host_kernels.compiler() is None:
        pytest.skip("no C++ compiler: the kernels' bodies cannot be built for the CPU")


def _values(shape, dtype, seed):
    """Random values of every magnitude, the special ones first."""
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * np.exp(rng.uniform(-6, 6, shape))).astype(dtype)
    info = np.finfo(dtype)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, info.tiny / 4, -info.tiny / 4, info.max, -info.max]
    a.reshape(-1)[:len(special)] = np.array(special, dtype=dtype)
    return a


def assert_bitwise(actual, expected, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    bits = actual.dtype.str.replace("f", "u")
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan, err_msg=f"{what}: NaNs")
    mismatch = (actual.view(bits) != expected.view(bits)) & ~nan
    assert not mismatch.any(), f"{what}: {mismatch.sum()} of {mismatch.size} entries differ"


@pytest.fixture
def kernels_on_the_fake_device(monkeypatch):
    """The fake device lends these kernels (and the fused ones) as its ElementwiseKernel: {name: kernel}."""
    _needs_compiler()
    made = {}

    def elementwise_kernel(in_params, out_params, operation, name, **kwargs):
        made[name.removeprefix("scratchgan_")] = FakeElementwiseKernel(in_params, out_params, operation, name,
                                                                       **kwargs)
        return made[name.removeprefix("scratchgan_")]

    monkeypatch.setattr(fake_xp, "ElementwiseKernel", elementwise_kernel, raising=False)
    monkeypatch.setattr(replace, "_enabled", True)
    monkeypatch.setattr(conv_kernels, "_built", {})
    fast.reset()
    yield made
    fast.reset()


# ------------------------------------------------------------------ 1. each kernel against the reference
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels-last"])
@pytest.mark.parametrize("x_shape, k, s, p", CASES, ids=CASE_IDS)
def test_im2col_kernel_equals_the_reference_bit_for_bit(kernels_on_the_fake_device, x_shape, k, s, p,
                                                        channels_last, dtype):
    x = _values(x_shape, dtype, seed=sum(x_shape))
    if channels_last:  # as the conv layers hand their outputs on: (N, C, H, W) views of (N, H, W, C) memory
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    with fast.disabled():
        expected = im2col(x, k, s, p)
    cols = conv_kernels.im2col(fake_xp.asarray(x), k, s, p)
    assert_bitwise(cols.get(), expected, f"im2col {x_shape} k{k} s{s} p{p}")
    assert kernels_on_the_fake_device["im2col"].calls == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, k, s, p", CASES, ids=CASE_IDS)
def test_col2im_kernel_equals_the_reference_bit_for_bit(kernels_on_the_fake_device, x_shape, k, s, p, dtype):
    N, C, H, W = x_shape
    H_out, W_out = conv_output_size((H, W), k, s, p)
    cols = _values((N * H_out * W_out, k[0] * k[1] * C), dtype, seed=H_out * W_out)
    with np.errstate(all="ignore"), fast.disabled():  # inf - inf: NaN on purpose
        expected = col2im(cols, x_shape, k, s, p)
    with np.errstate(all="ignore"):
        x = conv_kernels.col2im(fake_xp.asarray(cols), x_shape, k, s, p)
    assert x.shape == x_shape
    assert_bitwise(x.get(), expected, f"col2im {x_shape} k{k} s{s} p{p}")
    # channels last in memory, as the reference's result, and unpadded: _rows() of it is a view, no copy
    assert x.transpose(0, 2, 3, 1).flags.c_contiguous
    assert kernels_on_the_fake_device["col2im"].calls == 1


def test_col2im_adds_in_the_references_order():
    """Rounding makes the order visible: in float32, (2^-24 + 2^-24) + 1 = 1 + 2^-23 but (1 + 2^-24) + 2^-24 = 1.
    A pixel in several windows gets its entries in the reference's order (kernel row i, then column j)."""
    _needs_compiler()
    inputs, outputs, body = conv_kernels.KERNELS["col2im"]
    kernel = HostElementwiseKernel(inputs, outputs, body, "scratchgan_col2im")
    k, s, p, shape = (3, 1), (1, 1), (0, 0), (1, 1, 5, 1)  # a column of 5 pixels, windows of 3 rows
    H_out, W_out = conv_output_size(shape[2:], k, s, p)
    cols = np.zeros((H_out * W_out, 3), np.float32)
    cols[0, 2], cols[1, 1], cols[2, 0] = 1.0, 2.0 ** -24, 2.0 ** -24  # pixel 2 is in windows 0, 1 and 2
    with fast.disabled():
        expected = col2im(cols, shape, k, s, p)
    x = np.empty((1, 5, 1, 1), np.float32)
    kernel(cols, 5, 1, 1, *k, *s, *p, H_out, W_out, x)
    assert_bitwise(x.transpose(0, 3, 1, 2), expected, "col2im order")
    assert x[0, 2, 0, 0] == np.float32(1 + 2.0 ** -23)  # offset i = 0 (window 2) first, as the reference


@pytest.mark.parametrize("name, mistake", [
    ("im2col", (": T(0)", ": T(1)")),  # pads with ones
    ("im2col", ("sW * w + j - pW", "sW * w + j")),  # forgets the left padding
    ("col2im", ("for (int j = 0; j < kW; ++j)", "for (int j = 0; j < kW - 1; ++j)")),  # drops an offset
    ("col2im", ("dy / sH >= H_out", "dy / sH > H_out")),  # adds a window that does not exist
])
def test_a_mistake_in_a_kernel_is_caught(monkeypatch, kernels_on_the_fake_device, name, mistake):
    inputs, outputs, body = conv_kernels.KERNELS[name]
    assert mistake[0] in body
    monkeypatch.setitem(conv_kernels.KERNELS, name, (inputs, outputs, body.replace(*mistake)))
    x_shape, k, s, p = (2, 2, 7, 6), (4, 4), (2, 2), (1, 1)
    x = _values(x_shape, "float64", seed=1)
    N, C, H, W = x_shape
    H_out, W_out = conv_output_size((H, W), k, s, p)
    cols = _values((N * H_out * W_out, 16 * C), "float64", seed=2)
    with pytest.raises(AssertionError):
        for case in (x_shape, k, s, p), ((2, 2, 5, 5), (3, 3), (1, 1), (0, 0)):
            if name == "im2col":
                with fast.disabled():
                    expected = im2col(x, k, s, p)
                got = conv_kernels.im2col(fake_xp.asarray(x), k, s, p).get()
            else:
                with np.errstate(all="ignore"), fast.disabled():
                    expected = col2im(cols, x_shape, k, s, p)
                with np.errstate(all="ignore"):
                    got = conv_kernels.col2im(fake_xp.asarray(cols), x_shape, k, s, p).get()
            assert_bitwise(got, expected, name)


# ------------------------------------------------------------------ 2. whole layers on the fake device
LAYERS = [
    ("Conv2d k4 s2 p1", lambda dt: nn.Conv2d(3, 4, 4, stride=2, padding=1, seed=1, dtype=dt), (2, 3, 8, 8)),
    ("Conv2d k3 s1 p1", lambda dt: nn.Conv2d(2, 3, 3, padding=1, seed=2, dtype=dt), (2, 2, 5, 6)),
    ("Conv2d k3 s2 p0 odd", lambda dt: nn.Conv2d(2, 3, 3, stride=2, seed=3, dtype=dt), (2, 2, 8, 7)),
    ("ConvT k4 s2 p1", lambda dt: nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1, seed=4, dtype=dt),
     (2, 4, 4, 4)),
    ("ConvT k4 s1 p0 1x1", lambda dt: nn.ConvTranspose2d(5, 3, 4, seed=5, dtype=dt), (2, 5, 1, 1)),
    ("ConvT k3 s2 p1 op1", lambda dt: nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1, seed=6,
                                                          dtype=dt), (2, 2, 3, 4)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factory, shape", [pytest.param(f, s, id=n) for n, f, s in LAYERS])
def test_conv_layers_through_the_kernels_equal_numpy(kernels_on_the_fake_device, factory, shape, dtype):
    """Forward, dx, dW, db over two steps, bit for bit the NumPy run (the matmuls are NumPy's on both)."""
    check_layer_on_fake_device(factory, shape, "train", dtype)
    ran = {name for name, k in kernels_on_the_fake_device.items() if k.calls}
    assert {"im2col", "col2im"} <= ran, ran


# ------------------------------------------------------------------ 3. NVRTC and the GPU, where present
RAW_NDIM = {"x": 4, "cols": 2}


def _cupy_style_source(name, ctype):
    """The kernel as cupy.ElementwiseKernel lays it out: raw arrays as strided CArrays, integers by value."""
    inputs, outputs, body = conv_kernels.KERNELS[name]
    params, bindings = [], []
    for const, specs in ((True, host_kernels._params(inputs)), (False, host_kernels._params(outputs))):
        for kind, p in specs:
            if kind == "raw":  # im2col's x: a strided 4-d view (NCHW seen as NHWC); col2im's cols: a matrix
                params.append(f"CArray<T, {RAW_NDIM[p]}, {'true' if RAW_NDIM[p] == 2 else 'false'}, true> {p}")
            elif kind in host_kernels.SCALAR_CTYPES:
                params.append(f"int {p}")
            else:
                params.append(f"CArray<T, 2, true, true> _raw_{p}")
                bindings.append(f"{'const ' if const else ''}T &{p} = _raw_{p}[_ind.get()];")
    params.append("CIndexer<2, true> _ind")
    return (f"#include <cupy/complex.cuh>\n#include <cupy/carray.cuh>\n{fast_kernels.PREAMBLE}\ntypedef {ctype} T;\n"
            f'extern "C" __global__ void scratchgan_{name}({", ".join(params)}) {{\n'
            f"  CUPY_FOR(i, _ind.size()) {{\n    _ind.set(i);\n    {' '.join(bindings)}\n    {body}\n  }}\n}}\n")


@pytest.mark.parametrize("ctype", ["float", "double"])
@pytest.mark.parametrize("name", sorted(conv_kernels.KERNELS))
def test_kernel_compiles_with_nvrtc(name, ctype):
    """NVRTC compiles each body with our options followed by CuPy's own; col2im's sum has no flushed
    subnormals (CuPy appends -ftz=true)."""
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy (and its NVRTC) not installed")
    import cupy
    from host_kernels import cupy_appended_options
    try:
        nvrtc.getVersion()
    except Exception as e:
        pytest.skip(f"CuPy is installed but NVRTC cannot be loaded: {e}")
    include = os.path.join(os.path.dirname(cupy.__file__), "_core", "include")
    cccl = os.path.join(include, "cupy", "_cccl")
    options = [*fast_kernels.OPTIONS, f"-I{include}", "--gpu-architecture=compute_90", "-std=c++17",
               *(f"-I{os.path.join(cccl, d)}" for d in sorted(os.listdir(cccl))), *cupy_appended_options()]
    program = nvrtc.createProgram(_cupy_style_source(name, ctype), f"{name}.cu", [], [])
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
    assert not [line for line in ptx.splitlines() if ".ftz" in line], f"{name}: subnormals flushed"


@pytest.mark.parametrize("x_shape, k, s, p", CASES, ids=CASE_IDS)
def test_kernels_on_cupy_equal_the_reference(x_shape, k, s, p):
    skip_unless_cupy()
    import cupy
    for dtype in DTYPES:
        x = _values(x_shape, dtype, seed=3)
        with fast.disabled():
            expected = im2col(x, k, s, p)
        assert_bitwise(cupy.asnumpy(conv_kernels.im2col(cupy.asarray(x), k, s, p)), expected, "im2col on CuPy")
        cols = _values(expected.shape, dtype, seed=4)
        with np.errstate(all="ignore"), fast.disabled():
            expected = col2im(cols, x_shape, k, s, p)
        got = cupy.asnumpy(conv_kernels.col2im(cupy.asarray(cols), x_shape, k, s, p))
        assert_bitwise(got, expected, "col2im on CuPy")


def test_dcgan_step_through_the_kernels_matches_numpy(kernels_on_the_fake_device):
    """A whole DCGAN step (32x32, width 4) on the fake device with every kernel lent, fused and conv, against
    the NumPy reference: the same weights after two steps (float64; BCE's exp is CUDA's own, so not bitwise)."""
    from layer_cases import make_input

    from scratchgan.cli import train as train_command
    from scratchgan.gan import models

    def build(backend_xp):
        config = dict(train_command.DCGAN_DEFAULTS, resolution=32, channels=3, g_width=4, d_width=4, batch_size=4,
                      latent_dim=8, image_size=3 * 32 * 32, image_shape=[3, 32, 32], dtype="float64")
        return models.build_step(config, backend_xp)

    host, dev = build(np), build(fake_xp)
    real = make_input((4, 3, 32, 32), "float64", seed=3).clip(-1, 1)
    for _ in range(2):
        with fast.disabled():
            host.step([real])
        dev.step([fake_xp.asarray(real)])
    for net in ("G", "D"):
        expected, got = getattr(host, net).flat_store().data, getattr(dev, net).flat_store().data.get()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=net)  # float64
    ran = {name for name, k in kernels_on_the_fake_device.items() if k.calls}
    assert {"im2col", "col2im", "batchnorm_normalize", "adam_update"} <= ran, ran
