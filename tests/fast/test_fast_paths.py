"""Every fast path against the reference function it replaces (scratchgan.fast.TABLE), on the CPU.

For each entry of the table and each backend it names:
- "numpy": the replacement (fast/cpu.py, fast/blas.py) on NumPy arrays, split over 3 threads even
  for these small arrays, against the reference with every fast path off;
- "cupy": the CUDA kernel's body compiled for the CPU (tests/support/host_kernels.py), run through the fake
  device (tests/support/fake_device.py) as cupy.ElementwiseKernel would run it, against the same reference.
"bitwise" entries must give the reference's bits (edge values included: +-0, +-inf, NaN,
subnormals, the largest floats); "close" ones agree to a few ulp of the result's scale on finite
values. On a GPU, tests/fast/test_fused_kernels.py runs the kernels through CuPy itself.
"""
from __future__ import annotations

import numpy as np
import pytest

import host_kernels
from fake_device import FakeElementwiseKernel, DeviceArray, xp as fake_xp
from scratchgan import fast
from scratchgan import replace
from scratchgan.fast import cpu

DTYPES = ("float32", "float64")
CLOSE_RTOL = {"float32": 2e-6, "float64": 1e-14}  # of the result's largest magnitude: a few ulp


def values(shape, dtype, seed, edges=False, scale=True):
    """Random values (of every magnitude with ``scale``), and with ``edges`` the special ones first."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * (np.exp(rng.uniform(-8, 8, shape)) if scale else 1.0)
    x = x.astype(dtype)
    if edges:
        info = np.finfo(dtype)
        special = [0.0, -0.0, np.inf, -np.inf, np.nan, info.tiny / 4, -info.tiny / 4, info.max, -info.max,
                   info.eps, 1.0, -1.0]
        x.reshape(-1)[:len(special)] = np.array(special, dtype=dtype)
    return x


def _bn_cache(dtype, shape, axes, seed):
    from scratchgan.nn import batchnorm
    x = values(shape, dtype, seed, scale=False)
    stat = tuple(1 if i in axes else n for i, n in enumerate(shape))
    gamma, beta = values(stat, dtype, seed + 1, scale=False), values(stat, dtype, seed + 2, scale=False)
    with fast.disabled():
        _, cache, _, _ = batchnorm.batchnorm_train_forward(x, gamma, beta, 1e-5, axes)
    return x, gamma, beta, cache


def _cases(name, dtype, edges):
    """[(label, args)] for the reference function ``name``; ``edges``: include the special values."""
    v = lambda shape, seed, **kw: values(shape, dtype, seed, edges=edges, **kw)  # noqa: E731
    short = name.rsplit(".", 1)[1]
    if short == "linear_forward":
        x, W, b = v((8, 5), 1, scale=False), values((5, 3), dtype, 2), values((3,), dtype, 3)
        return [("", (x, W, b)), ("no bias", (x, W, None))]
    if short == "linear_backward":  # (dy, cache, dW, db, need_dx, need_dW): dW and db added into in place
        x, W, dy = values((9, 5), dtype, 1), values((5, 3), dtype, 2), values((9, 3), dtype, 3)
        grads = lambda: (values((5, 3), dtype, 4), values((3,), dtype, 5))  # noqa: E731
        return [("into zeros", (dy, (x, W), np.zeros((5, 3), dtype), np.zeros(3, dtype))),
                ("into a gradient", (dy, (x, W), *grads())),
                ("no bias", (dy, (x, W), grads()[0], None)),
                ("no dx", (dy, (x, W), *grads(), False)),
                ("dx only", (dy, (x, W), *grads(), True, False)),
                ("new arrays", (dy, (x, W)))]
    if short in ("leaky_relu_forward", "leaky_relu_backward"):
        x, dy = v((16, 12), 1), v((16, 12), 2)
        args = (lambda s: (x, s)) if short.endswith("forward") else (lambda s: (dy, x, s))
        return [(f"slope {s}", args(s)) for s in (0.2, 0.01, 0.0, 1.0, 1.5, -0.1)]
    if short == "relu_backward":
        return [("", (v((16, 12), 2), v((16, 12), 1)))]
    if short in ("tanh_backward", "sigmoid_backward"):
        y = np.tanh(v((16, 12), 1)) if short.startswith("tanh") else 1 / (1 + np.exp(-v((16, 12), 1)))
        return [("", (v((16, 12), 2), y.astype(dtype)))]
    if short == "sigmoid_forward":
        return [("", (v((16, 12), 1),))]
    if short == "bce_with_logits":
        z = values((32, 1), dtype, 1, scale=False) * dtype_type(dtype)(4)
        return [(f"target {t}", (z, t)) for t in (1.0, 0.0, 0.9)] + \
               [("target array", (z, np.random.default_rng(5).uniform(0, 1, z.shape).astype(dtype)))]
    if short.startswith("batchnorm"):
        out = []
        for shape, axes in (((16, 12), (0,)), ((4, 3, 5, 5), (0, 2, 3))):
            x, gamma, beta, cache = _bn_cache(dtype, shape, axes, 1)
            stat = gamma.shape
            label = f"{len(shape)}-d"
            if short == "batchnorm_forward":
                mean = values(stat, dtype, 4, scale=False)
                var = np.abs(values(stat, dtype, 5, scale=False))
                out.append((label, (x, gamma, beta, mean, var, 1e-5)))
            elif short == "batchnorm_train_forward":
                out.append((label, (x, gamma, beta, 1e-5, axes)))
            else:
                out.append((label, (values(shape, dtype, 6, scale=False), cache, axes)))
        return out
    if short == "channels_last":
        a = v((3, 4, 5, 6), 1)
        return [("padded", (a, (1, 2))), ("unpadded", (a, (0, 0)))]
    if short == "im2col":
        return [(f"k{k} s{s} p{p}", (v((3, 2, 7, 6), 1), k, s, p))
                for k, s, p in (((3, 3), (1, 1), (1, 1)), ((4, 4), (2, 2), (1, 1)), ((3, 2), (2, 1), (0, 2)))] + \
            [(f"k1 {layout}", (x, (1, 1), (1, 1), (0, 0)))  # the rows of x itself: no copy, as the reference
             for layout, x in (("NCHW", v((3, 2, 7, 6), 1)),
                               ("channels-last", v((3, 7, 6, 2), 1).transpose(0, 3, 1, 2)))]
    if short == "col2im":
        from scratchgan.nn.conv import conv_output_size
        out = []
        for k, s, p in (((3, 3), (1, 1), (1, 1)), ((4, 4), (2, 2), (1, 1)), ((3, 2), (2, 1), (0, 2))):
            H_out, W_out = conv_output_size((7, 6), k, s, p)
            cols = values((3 * H_out * W_out, k[0] * k[1] * 2), dtype, 2, scale=False)
            out.append((f"k{k} s{s} p{p}", (cols, (3, 2, 7, 6), k, s, p)))
        return out
    n = 4099  # the optimizers: flat buffers, an odd length so the parts differ in size
    theta, g = values((n,), dtype, 1, scale=False), values((n,), dtype, 2)
    if short == "adam_update":
        m, v_ = values((n,), dtype, 3, scale=False) * dtype_type(dtype)(0.1), np.abs(values((n,), dtype, 4))
        return [(f"wd {wd} t {t}", (theta, g, m, v_, t, 1e-3, 0.5, 0.999, 1e-8, wd))
                for wd in (0.0, 0.01) for t in (1, 7)]
    if short == "ema_update":  # (ema, theta, beta): ema written in place
        return [(f"beta {b}", (values((n,), dtype, 3), theta, b)) for b in (0.999, 0.9, 0.5)]
    raise KeyError(f"no test case for {name}: add one to tests/fast/test_fast_paths.py")


def dtype_type(dtype):
    return np.dtype(dtype).type


def _copy(value, to=None):
    """A deep copy of nested args (arrays copied, moved onto the fake device with ``to``)."""
    if isinstance(value, np.ndarray):
        return to.asarray(value) if to is not None else value.copy()
    if isinstance(value, tuple):
        return tuple(_copy(v, to) for v in value)
    return value


def _arrays(value):
    """Every array in a nested result (tuples, caches), on the host."""
    if isinstance(value, DeviceArray):
        return [value.get()]
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, tuple):
        return [a for v in value for a in _arrays(v)]
    return []


def _compare(actual, expected, exact, dtype, what):
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what}, output {i}: {a.dtype}{a.shape} vs {e.dtype}{e.shape}"
        if exact == "bitwise":
            nan = np.isnan(e)
            np.testing.assert_array_equal(np.isnan(a), nan, err_msg=f"{what}, output {i}: NaNs")
            bits = a.dtype.str.replace("f", "u")
            mismatch = (a.view(bits) != e.view(bits)) & ~nan  # +0 and -0 told apart
            assert not mismatch.any(), f"{what}, output {i}: {mismatch.sum()} of {mismatch.size} differ, " \
                                       f"first {a[mismatch][0]!r} vs {e[mismatch][0]!r}"
        else:
            scale = float(np.abs(e).max()) if e.size else 0.0
            err = float(np.abs(a.astype(np.float64) - e).max()) if e.size else 0.0
            assert err <= CLOSE_RTOL[dtype] * scale, f"{what}, output {i}: {err:.3g} vs scale {scale:.3g}"


def _run(function, args, to=None):
    """Call ``function`` on a copy of ``args``; return the arrays it returned and those it wrote into."""
    args = _copy(args, to)
    result = function(*args)
    return _arrays(result) + _arrays(args)


PAIRS = [pytest.param(name, backend, id=f"{name.removeprefix('scratchgan.')}[{backend}]")
         for name, entries in fast.TABLE.items() for backend in entries]


@pytest.fixture
def split_over_three_threads(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_threads", lambda: 3)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_ELEMENTS", 0)


@pytest.fixture
def kernels_on_the_fake_device(monkeypatch):
    if host_kernels.compiler() is None:
        pytest.skip("no C++ compiler: the CUDA kernels' bodies cannot be built for the CPU")
    monkeypatch.setattr(fake_xp, "ElementwiseKernel", FakeElementwiseKernel, raising=False)
    fast.reset()
    yield
    fast.reset()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, backend", PAIRS)
def test_replacement_equals_its_reference(name, backend, dtype, request):
    replacement, exact = fast.TABLE[name][backend]
    function = replace._resolve(replacement)
    reference = replace._resolve(name).reference
    assert function.replaces == name
    edges = exact == "bitwise"
    if backend == "numpy":
        request.getfixturevalue("split_over_three_threads")
        assert fast.replacement_for(name, np) is function or not function.usable(np)
        to = None
    else:
        request.getfixturevalue("kernels_on_the_fake_device")
        assert fast.replacement_for(name, fake_xp) is function
        to = fake_xp
    with np.errstate(all="ignore"):
        cases = _cases(name, dtype, edges)
    for label, args in cases:
        with np.errstate(all="ignore"), fast.disabled():  # edge values overflow on purpose
            expected = _run(reference, args)
        with np.errstate(all="ignore"):
            actual = _run(function, args, to)
        _compare(actual, expected, exact, dtype, f"{replacement} {label}")


def test_add_matmul_into_zeros_is_bit_for_bit_and_really_uses_blas():
    """From a zero gradient the GEMM's accumulation gives the reference's bits (the common first backward)."""
    from scratchgan.fast import blas
    if not blas.add_matmul.usable(np):
        pytest.skip("this NumPy has no bundled OpenBLAS CBLAS: the reference runs")
    for dtype in DTYPES:
        x, dy = values((64, 300), dtype, 1, scale=False), values((64, 200), dtype, 2, scale=False)
        out = np.zeros((300, 200), dtype)
        blas.add_matmul(out, x.T, dy)
        expected = np.zeros((300, 200), dtype)
        expected += x.T @ dy
        _compare([out], [expected], "bitwise", dtype, f"add_matmul {dtype}")


def test_add_matmul_takes_every_layout_it_may_be_given():
    """out += a @ b, to a few ulp, whether GEMM reads the operands (C- or F-ordered) or the fallback runs."""
    from scratchgan.fast import blas
    for dtype in DTYPES:
        x, dy = values((9, 5), dtype, 1), values((9, 3), dtype, 2)
        for label, (out, a, b) in [("into zeros", (np.zeros((5, 3), dtype), x.T, dy)),
                                   ("into a gradient", (values((5, 3), dtype, 3), x.T, dy)),
                                   ("C-ordered a", (values((5, 3), dtype, 3), np.ascontiguousarray(x.T), dy)),
                                   ("transposed b", (values((5, 5), dtype, 3), x.T, values((5, 9), dtype, 4).T)),
                                   ("strided a", (values((5, 3), dtype, 3), values((5, 18), dtype, 5)[:, ::2], dy))]:
            expected = out.copy()
            expected += a @ b
            blas.add_matmul(out, a, b)
            _compare([out], [expected], "close", dtype, f"add_matmul {label} {dtype}")


def test_the_switch_turns_every_replacement_off(monkeypatch):
    assert fast.active("numpy")  # on by default
    with fast.disabled():
        assert fast.active("numpy") == {}
        assert fast.replacement_for("scratchgan.optim.adam_update", np) is None
    monkeypatch.setenv("SCRATCHGAN_REFERENCE", "1")
    fast.reset()
    assert fast.active("numpy") == {} and not fast.enabled()
    monkeypatch.setenv("SCRATCHGAN_REFERENCE", "0")
    assert fast.enabled()


def test_dispatch_runs_the_replacement_and_reference_runs_the_textbook(monkeypatch):
    from scratchgan.nn import activations
    calls = []
    monkeypatch.setattr(cpu, "tanh_backward", lambda dy, y: calls.append("fast") or dy)
    fast.reset()
    try:
        activations.tanh_backward(np.ones(3), np.zeros(3))
        assert calls == ["fast"]
        with fast.disabled():
            np.testing.assert_array_equal(activations.tanh_backward(np.ones(3), np.full(3, 0.5)), 0.75)
        assert calls == ["fast"]
    finally:
        fast.reset()


def test_the_table_is_printable_and_names_real_functions():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "scratchgan.fast"], capture_output=True, text=True, check=True)
    for name, entries in fast.TABLE.items():
        assert name in out.stdout
        for replacement, exact in entries.values():
            assert replace._resolve(replacement).replaces == name
    assert "numpy" in out.stdout and "active" in out.stdout


def test_a_replaceable_function_without_a_table_entry_is_refused():
    def not_in_the_table(x):
        return x
    with pytest.raises(KeyError, match="no entry"):
        fast.replaceable(not_in_the_table)
