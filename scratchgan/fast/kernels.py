"""CuPy fast paths: fused elementwise CUDA kernels, each named after the reference function it replaces.

On a GPU every NumPy-style pass (``x * slope``, then ``maximum``, ...) is a kernel launch plus a
trip of the whole array through memory; at MNIST sizes the launches dominate. Each kernel here does
the passes of its reference in one launch, one element per thread (``cupy.ElementwiseKernel``:
inputs are read-only, outputs are written; ``T`` is the arrays' dtype and scalar arguments are cast
to it, as NumPy casts a Python float against a float32 array).

**Same bits as the reference.** A "bitwise" kernel performs its reference's operations in the same
order, each rounded once as NumPy rounds it: CUDA must neither contract ``a * b + c`` into one FMA
(one rounding instead of two) nor flush float32 subnormals to zero (NumPy keeps them). NVRTC's
``--fmad=false -ftz=false --prec-div=true --prec-sqrt=true`` say so (OPTIONS), but CuPy appends
``-ftz=true`` after the caller's options to every compile (cupy/cuda/compiler.py), and the last
``-ftz`` wins: on an H200, ``leaky_relu_forward`` returned 0 for x = 2.9e-39 (issue 14). So the
bitwise bodies spell their float operations with the helpers of PREAMBLE: ``add_rn``, ``sub_rn``,
``mul_rn``, ``div_rn``, ``sqrt_rn``, ``is_gt``, ``is_ne`` are single PTX instructions (``mul.rn.f32``, ...)
without ``.ftz``, which no compiler flag changes and which are never fused (an explicit rounding
mode forbids it). The "close" kernels (sigmoid, BCE: CUDA's exp and log1p are not NumPy's) use
plain operators. tests/fast/test_fused_kernels.py compiles these bodies with NVRTC as CuPy would (CuPy's
``-ftz=true`` included) and checks the PTX, and with g++ for the CPU to run them against NumPy.
"""
from __future__ import annotations

from ..backend import array_module
from ..replace import replaces

# The options for NVRTC; see the module docstring for why the bodies do not rely on them alone.
OPTIONS = ("--fmad=false", "-ftz=false", "--prec-div=true", "--prec-sqrt=true")

# IEEE operations, each rounded to nearest, never fused, subnormals kept: inline PTX for float,
# CUDA's _rn intrinsics for double (-ftz only ever concerns float32).
PREAMBLE = r"""
__device__ __forceinline__ float add_rn(float a, float b) { float r; asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float sub_rn(float a, float b) { float r; asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float mul_rn(float a, float b) { float r; asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float div_rn(float a, float b) { float r; asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
__device__ __forceinline__ float sqrt_rn(float a) { float r; asm("sqrt.rn.f32 %0, %1;" : "=f"(r) : "f"(a)); return r; }
__device__ __forceinline__ bool is_gt(float a, float b) {
    unsigned r; asm("{ .reg .pred p; setp.gt.f32 p, %1, %2; selp.u32 %0, 1, 0, p; }" : "=r"(r) : "f"(a), "f"(b));
    return r != 0; }
__device__ __forceinline__ bool is_ne(float a, float b) {
    unsigned r; asm("{ .reg .pred p; setp.neu.f32 p, %1, %2; selp.u32 %0, 1, 0, p; }" : "=r"(r) : "f"(a), "f"(b));
    return r != 0; }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }
__device__ __forceinline__ bool is_gt(double a, double b) { return a > b; }
__device__ __forceinline__ bool is_ne(double a, double b) { return a != b; }
"""

# name: (inputs, outputs, body). Each body is its reference's lines, operation for operation.
KERNELS = {
    # y = where(x > 0, x, x * slope)
    "leaky_relu_forward": ("T x, T slope", "T y",
                           "y = is_gt(x, T(0)) ? x : mul_rn(x, slope);"),
    # dx = where(x > 0, dy, dy * slope)
    "leaky_relu_backward": ("T dy, T x, T slope", "T dx",
                            "dx = is_gt(x, T(0)) ? dy : mul_rn(dy, slope);"),
    # dx = dy * (x > 0)
    "relu_backward": ("T dy, T x", "T dx",
                      "dx = mul_rn(dy, is_gt(x, T(0)) ? T(1) : T(0));"),
    # dx = dy * (1 - y * y)
    "tanh_backward": ("T dy, T y", "T dx",
                      "dx = mul_rn(dy, sub_rn(T(1), mul_rn(y, y)));"),
    # e = exp(-|x|); y = where(x >= 0, 1 / (1 + e), e / (1 + e))   (CUDA's exp: close, not bitwise)
    "sigmoid_forward": ("T x", "T y",
                        "T e = exp(-fabs(x));  y = x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);"),
    # dx = dy * y * (1 - y)
    "sigmoid_backward": ("T dy, T y", "T dx",
                         "dx = mul_rn(mul_rn(dy, y), sub_rn(T(1), y));"),
    # the loss terms max(z, 0) - z t + log1p(e) (their mean is left to xp) and dz = (sigmoid(z) - t) / n
    "bce_with_logits": ("T z, T t, T inv_n", "T loss, T dz",
                        "T e = exp(-fabs(z));"
                        "  loss = (z > 0 ? z : T(0)) - z * t + log1p(e);"
                        "  dz = ((z >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e)) - t) * inv_n;"),
    # xhat = (x - mean) * inv_std; y = xhat * gamma + beta
    "batchnorm_normalize": ("T x, T mean, T inv_std, T gamma, T beta", "T xhat, T y",
                            "xhat = mul_rn(sub_rn(x, mean), inv_std);  y = add_rn(mul_rn(xhat, gamma), beta);"),
    # dx = (dy - dbeta / n - xhat * (dgamma / n)) * (gamma * inv_std), the three per-feature factors given
    "batchnorm_backward_train": ("T dy, T xhat, T mean_dy, T mean_dy_xhat, T scale", "T dx",
                                 "dx = mul_rn(sub_rn(sub_rn(dy, mean_dy), mul_rn(xhat, mean_dy_xhat)), scale);"),
    # optim.adam_update's lines: theta, m and v are read and written in place
    "adam_update": ("T g, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T bias1, T bias2, T lr, "
                    "T eps, T weight_decay", "T theta, T m, T v",
                    "T gd = is_ne(weight_decay, T(0)) ? add_rn(g, mul_rn(weight_decay, theta)) : g;"
                    "  m = add_rn(mul_rn(beta1, m), mul_rn(one_minus_beta1, gd));"
                    "  v = add_rn(mul_rn(beta2, v), mul_rn(mul_rn(one_minus_beta2, gd), gd));"
                    "  T m_hat = div_rn(m, bias1);"
                    "  T v_hat = div_rn(v, bias2);"
                    "  theta = sub_rn(theta, div_rn(mul_rn(lr, m_hat), add_rn(sqrt_rn(v_hat), eps)));"),
    # ema.ema_update's line: ema += (1 - beta) * (theta - ema), ema read and written in place
    "ema_update": ("T theta, T one_minus_beta", "T ema",
                   "ema = add_rn(ema, mul_rn(one_minus_beta, sub_rn(theta, ema)));"),
}
_built = {}  # (kernel factory, name) -> kernel: each is built once and compiled on its first call


def kernel(xp, name):
    """KERNELS[name] as an ElementwiseKernel of array module ``xp`` (built once per module)."""
    make = xp.ElementwiseKernel
    built = _built.get((make, name))
    if built is None:
        inputs, outputs, body = KERNELS[name]
        built = _built[(make, name)] = make(inputs, outputs, body, f"scratchgan_{name}", preamble=PREAMBLE,
                                            options=OPTIONS)
    return built


def usable(xp):
    return getattr(xp, "ElementwiseKernel", None) is not None


# ------------------------------------------------------------------------------------ the replacements
# Each takes and returns what its reference (named in @replaces) takes and returns.

@replaces("scratchgan.nn.activations.leaky_relu_forward", "bitwise")
def leaky_relu_forward(x, slope):
    return kernel(array_module(x), "leaky_relu_forward")(x, slope), x


@replaces("scratchgan.nn.activations.leaky_relu_backward", "bitwise")
def leaky_relu_backward(dy, x, slope):
    return kernel(array_module(dy), "leaky_relu_backward")(dy, x, slope)


@replaces("scratchgan.nn.activations.relu_backward", "bitwise")
def relu_backward(dy, x):
    return kernel(array_module(dy), "relu_backward")(dy, x)


@replaces("scratchgan.nn.activations.tanh_backward", "bitwise")
def tanh_backward(dy, y):
    return kernel(array_module(dy), "tanh_backward")(dy, y)


@replaces("scratchgan.nn.activations.sigmoid_forward", "close")
def sigmoid_forward(x):
    y = kernel(array_module(x), "sigmoid_forward")(x)
    return y, y


@replaces("scratchgan.nn.activations.sigmoid_backward", "bitwise")
def sigmoid_backward(dy, y):
    return kernel(array_module(dy), "sigmoid_backward")(dy, y)


@replaces("scratchgan.losses.bce_with_logits", "close")
def bce_with_logits(z, t):
    from ..losses import _check
    xp, t = _check("bce_with_logits", z, t)
    loss_terms, dz = kernel(xp, "bce_with_logits")(z, t, 1.0 / z.size)
    return xp.asarray(loss_terms.mean()), dz


@replaces("scratchgan.nn.batchnorm.batchnorm_forward", "bitwise")
def batchnorm_forward(x, gamma, beta, mean, var, eps):
    xp = array_module(x)
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat, y = kernel(xp, "batchnorm_normalize")(x, mean, inv_std, gamma, beta)
    return y, (xhat, gamma, inv_std)


@replaces("scratchgan.nn.batchnorm.batchnorm_train_forward", "bitwise")
def batchnorm_train_forward(x, gamma, beta, eps, axes=(0,)):
    mean = x.mean(axis=axes, keepdims=True)  # the statistics as the reference computes them (xp's sums)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y, cache = batchnorm_forward(x, gamma, beta, mean, var, eps)
    return y, cache, mean, var


@replaces("scratchgan.nn.batchnorm.batchnorm_backward_train", "bitwise")
def batchnorm_backward_train(dy, cache, axes=(0,)):
    xhat, gamma, inv_std = cache
    n = 1
    for a in axes:
        n *= dy.shape[a]
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)
    dx = kernel(array_module(dy), "batchnorm_backward_train")(dy, xhat, dbeta / n, dgamma / n, gamma * inv_std)
    return dx, dgamma, dbeta


@replaces("scratchgan.optim.adam_update", "bitwise")
def adam_update(theta, g, m, v, t, lr, beta1, beta2, eps, weight_decay=0.0):
    """The whole update in one launch instead of ~16 passes over the flat buffers."""
    kernel(array_module(theta), "adam_update")(g, beta1, 1.0 - beta1, beta2, 1.0 - beta2, 1.0 - beta1 ** t,
                                               1.0 - beta2 ** t, lr, eps, weight_decay, theta, m, v)


@replaces("scratchgan.gan.ema.ema_update", "bitwise")
def ema_update(ema, theta, beta):
    """The generator's weight average in one launch instead of three passes."""
    kernel(array_module(ema), "ema_update")(theta, 1.0 - beta, ema)


for _function in (leaky_relu_forward, leaky_relu_backward, relu_backward, tanh_backward, sigmoid_forward,
                  sigmoid_backward, bce_with_logits, batchnorm_forward, batchnorm_train_forward,
                  batchnorm_backward_train, adam_update, ema_update):
    _function.usable = usable
