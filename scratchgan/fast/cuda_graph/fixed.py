"""The reference maths of the MLP GAN step written into fixed buffers: what a CUDA graph replays (graph.py).

Each plan holds the buffers of one layer (Linear, LeakyReLU, Tanh, BatchNorm1d in train mode, a
Conditional's label code), one objective call, the gradient penalty or one optimizer, for batch N,
allocated once; its methods run the reference function's operations, in the same order, each into one
of those buffers (``out=``, in place), so that they allocate nothing and give the reference's bits:

    scratchgan/nn/*.py         -> LinearPlan, LeakyReLUPlan, TanhPlan, BatchNorm1dPlan, ConditionalPlan
    scratchgan/gan/objectives.py   -> ObjectivePlan (d_real, d_fake, g), StatisticPlan (probability)
    gradient_penalty.py        -> PenaltyPlan (WGAN-GP, R1: the double backward)
    optim.adam_update, rmsprop -> AdamPlan (t on the device), RMSpropPlan
Matmuls go through fast/cuda_graph/gemm.py's kernel (CuPy refuses cuBLAS inside a capture). The textbook layers
stay as they are; these are their fixed-buffer twins, checked bit for bit against them
(tests/fast/test_cuda_graph.py).
"""
from __future__ import annotations

import numpy as np

from ...backend import array_module
from . import gemm as gemm_kernel

# ------------------------------------------------------------------------------------- the layers, fixed
# Each plan holds one layer's buffers for batch N and runs the layer's reference maths into them, the
# same operations in the same order as the reference function (named in each docstring).

class LinearPlan:
    """nn.linear: y = x W + b;  dW += x^T dy,  db += sum_n dy,  dx = dy W^T (fast/cuda_graph/gemm.py for the products)."""

    def __init__(self, layer, N, xp):
        self.layer, dt = layer, layer.W.data.dtype
        self.y = xp.empty((N, layer.out_features), dt)
        self.dx = xp.empty((N, layer.in_features), dt)
        self.db = xp.empty((layer.out_features,), dt)

    def forward(self, x):
        self.x = x  # the input buffer (the previous layer's, or a batch slot): what backward needs
        gemm_kernel.gemm(x, self.layer.W.data, self.y)  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
        if self.layer.has_bias:
            array_module(x).add(self.y, self.layer.b.data, out=self.y)
        return self.y

    def backward(self, dy, param_grads, need_dx):
        xp, layer = array_module(dy), self.layer
        if param_grads and layer.requires_grad:
            gemm_kernel.gemm(self.x.T, dy, layer.W.grad, beta=1.0)  # dW += (D_in, N) @ (N, D_out)
            if layer.has_bias:
                xp.sum(dy, axis=0, out=self.db)  # (N, D_out) -> (D_out,)
                xp.add(layer.b.grad, self.db, out=layer.b.grad)
        if not need_dx:
            return None
        return gemm_kernel.gemm(dy, layer.W.data.T, self.dx)  # (N, D_out) @ (D_out, D_in) -> (N, D_in)


class LeakyReLUPlan:
    """nn.activations.leaky_relu_forward / _backward: where(x > 0, x, slope x), where(x > 0, dy, slope dy)."""

    def __init__(self, layer, shape, xp, dtype):
        self.slope = layer.negative_slope
        self.y, self.dx = xp.empty(shape, dtype), xp.empty(shape, dtype)
        self.positive = xp.empty(shape, bool)

    def forward(self, x):
        xp = array_module(x)
        xp.greater(x, 0, out=self.positive)
        xp.multiply(x, self.slope, out=self.y)
        xp.copyto(self.y, x, where=self.positive)
        return self.y

    def backward(self, dy, param_grads, need_dx):
        if not need_dx:
            return None
        xp = array_module(dy)
        xp.multiply(dy, self.slope, out=self.dx)
        xp.copyto(self.dx, dy, where=self.positive)  # x has not changed since the forward: same mask
        return self.dx


class TanhPlan:
    """nn.activations.tanh_forward / tanh_backward: y = tanh(x), dx = dy (1 - y y)."""

    def __init__(self, layer, shape, xp, dtype):
        self.y, self.t, self.dx = (xp.empty(shape, dtype) for _ in range(3))

    def forward(self, x):
        return array_module(x).tanh(x, out=self.y)

    def backward(self, dy, param_grads, need_dx):
        if not need_dx:
            return None
        xp = array_module(dy)
        xp.multiply(self.y, self.y, out=self.t)
        xp.subtract(1.0, self.t, out=self.t)
        return xp.multiply(dy, self.t, out=self.dx)


class BatchNorm1dPlan:
    """nn.batchnorm in train mode: batchnorm_train_forward, the running estimates, batchnorm_backward_train."""

    def __init__(self, layer, shape, xp, dtype):
        self.layer, (N, D) = layer, shape
        self.n = N
        self.mean, self.var, self.inv_std, self.dbeta, self.dgamma, self.mean_dy, self.mean_dy_xhat, self.scale = (
            xp.empty((1, D), dtype) for _ in range(8))
        self.diff, self.xhat, self.y, self.t, self.dx = (xp.empty(shape, dtype) for _ in range(5))
        self.running = xp.empty((D,), dtype)

    def forward(self, x):
        xp, layer = array_module(x), self.layer
        if not layer.training:
            raise ValueError("the CUDA graph trains: BatchNorm must be in train mode")
        # mean = E[x], var = E[(x - mean)^2] over the batch (biased, as PyTorch)
        xp.mean(x, axis=0, keepdims=True, out=self.mean)
        xp.subtract(x, self.mean, out=self.diff)
        xp.square(self.diff, out=self.t)
        xp.mean(self.t, axis=0, keepdims=True, out=self.var)
        # inv_std = 1 / sqrt(var + eps); xhat = (x - mean) inv_std; y = xhat gamma + beta
        xp.add(self.var, layer.eps, out=self.inv_std)
        xp.sqrt(self.inv_std, out=self.inv_std)
        xp.divide(1.0, self.inv_std, out=self.inv_std)
        xp.multiply(self.diff, self.inv_std, out=self.xhat)
        xp.multiply(self.xhat, layer.gamma.data, out=self.y)
        xp.add(self.y, layer.beta.data, out=self.y)
        # running estimates: r <- (1 - m) r + m stat (the variance unbiased: times n / (n - 1))
        m = layer.momentum
        for running, stat, weight in ((layer.running_mean, self.mean, m), (layer.running_var, self.var,
                                                                            m * self.n / (self.n - 1))):
            xp.multiply(running, 1.0 - m, out=running)
            xp.multiply(stat.reshape(-1), weight, out=self.running)
            xp.add(running, self.running, out=running)
        return self.y

    def backward(self, dy, param_grads, need_dx):
        xp, layer, n = array_module(dy), self.layer, self.n
        xp.sum(dy, axis=0, keepdims=True, out=self.dbeta)  # sum_n dy
        xp.multiply(dy, self.xhat, out=self.t)
        xp.sum(self.t, axis=0, keepdims=True, out=self.dgamma)  # sum_n dy xhat
        xp.divide(self.dbeta, n, out=self.mean_dy)
        xp.divide(self.dgamma, n, out=self.mean_dy_xhat)
        # dx = (dy - mean(dy) - xhat mean(dy xhat)) (gamma inv_std)
        xp.subtract(dy, self.mean_dy, out=self.dx)
        xp.multiply(self.xhat, self.mean_dy_xhat, out=self.t)
        xp.subtract(self.dx, self.t, out=self.dx)
        xp.multiply(layer.gamma.data, self.inv_std, out=self.scale)
        xp.multiply(self.dx, self.scale, out=self.dx)
        if param_grads and layer.requires_grad:
            xp.add(layer.gamma.grad, self.dgamma.reshape(-1), out=layer.gamma.grad)
            xp.add(layer.beta.grad, self.dbeta.reshape(-1), out=layer.beta.grad)
        return self.dx if need_dx else None


def layer_plans():
    """{layer class: its fixed-buffer plan}: the layers a graphed network may have."""
    from ... import nn
    return {nn.Linear: LinearPlan, nn.LeakyReLU: LeakyReLUPlan, nn.Tanh: TanhPlan,
            nn.BatchNorm1d: BatchNorm1dPlan}


class ConditionalPlan:
    """nn.Conditional with fixed buffers: h = [x, code(labels)], out = net(h); backward splits dh.

    code: one_hot(labels) = (labels[:, None] == arange(K)), or a learned Embedding W[labels], whose
    backward is embedding_backward's scatter-add of dcode into a zeroed (K, E) buffer, added to W.grad."""

    def __init__(self, cond, N, xp):
        dtype = cond.dtype
        self.cond, self.net = cond, NetworkPlan(cond.net, N, xp)
        self.d_x = next(iter(cond.net)).in_features - cond.code_dim
        self.code, self.h = xp.empty((N, cond.code_dim), dtype), xp.empty((N, self.d_x + cond.code_dim), dtype)
        if cond.embedding is None:
            self.arange, self.hot = xp.arange(cond.num_classes), xp.empty((N, cond.num_classes), bool)
        else:
            self.dW = xp.empty(cond.embedding.W.data.shape, dtype)

    def forward(self, x, labels):
        xp, cond = array_module(x), self.cond
        self.labels = labels
        if cond.embedding is None:
            xp.equal(labels[:, None], self.arange, out=self.hot)  # (N, 1) == (K,) -> (N, K)
            xp.copyto(self.code, self.hot)
        else:
            xp.take(cond.embedding.W.data, labels, axis=0, out=self.code)  # W[labels]: (N, E)
        xp.concatenate([x, self.code], axis=1, out=self.h)
        return self.net.forward(self.h)

    def backward(self, dy, param_grads=True, need_dx=True):
        from ...backend import scatter_add
        emb = self.cond.embedding
        wants_dcode = emb is not None and param_grads and emb.requires_grad
        if not (need_dx or wants_dcode):
            self.net.backward(dy, param_grads, need_dx=False)
            return None
        dh = self.net.backward(dy, param_grads)
        dx, dcode = dh[:, :self.d_x], dh[:, self.d_x:]
        if emb is not None and param_grads and emb.requires_grad:
            self.dW.fill(0)
            scatter_add(self.dW, self.labels, dcode)  # every repeat of a label adds
            array_module(dh).add(emb.W.grad, self.dW, out=emb.W.grad)
        return dx if need_dx else None

    @property
    def plans(self):
        return self.net.plans


def network_plan(net, N, xp):
    from ... import nn
    return ConditionalPlan(net, N, xp) if isinstance(net, nn.Conditional) else NetworkPlan(net, N, xp)


def input_width(net):
    """The features a network takes (without a conditional one's label code)."""
    from ... import nn
    if isinstance(net, nn.Conditional):
        return next(iter(net.net)).in_features - net.code_dim
    return next(iter(net)).in_features


class NetworkPlan:
    """nn.Sequential with fixed buffers: forward in order, backward in reverse, as Sequential.backward."""

    def __init__(self, net, N, xp):
        self.net, self.plans, shape = net, [], None
        dtype = net.dtype
        for layer in net:
            make = layer_plans()[type(layer)]
            if make is LinearPlan:
                plan = make(layer, N, xp)
                shape = (N, layer.out_features)
            else:
                plan = make(layer, shape, xp, dtype)
            self.plans.append(plan)

    def forward(self, x, labels=None):
        for plan in self.plans:
            x = plan.forward(x)
        return x

    def backward(self, dy, param_grads=True, need_dx=True):
        first = 0
        if not need_dx:  # as Sequential: skip what nobody uses in front of the first layer that learns
            layers = list(self.net)
            first = next((i for i, layer in enumerate(layers) if param_grads and layer.learns()), len(layers))
        for i in reversed(range(first, len(self.plans))):
            dy = self.plans[i].backward(dy, param_grads, need_dx or i > first)
        return dy if need_dx else None


# --------------------------------------------------------------------------------- objectives, fixed
class ObjectivePlan:
    """One call of an objective's d_real / d_fake / g on D's output (N, 1): the loss (0-d) and dL/dout.

    objectives.py, operation for operation: BCE on logits (losses.bce_with_logits), WGAN (-+mean, a
    constant gradient), LSGAN (1/2 mean (out - target)^2), hinge (mean relu(1 -+ out))."""

    def __init__(self, objective, which, shape, xp, dtype):
        from ...gan import objectives
        self.obj, self.which, N = objective, which, int(np.prod(shape))
        self.loss, self.mean = xp.empty((), dtype), xp.empty((), dtype)
        self.dout, self.a, self.b, self.e = (xp.empty(shape, dtype) for _ in range(4))
        self.mask = xp.empty(shape, bool)
        self.inv_n = 1.0 / N
        if isinstance(objective, objectives.BCEObjective):
            target = {"real": objective.real_target, "fake": 0.0, "g": 1.0}[which]
            self.target = xp.asarray(target, dtype=dtype)  # losses._check makes it a 0-d array of z's dtype
        elif isinstance(objective, objectives.LSGANObjective):
            self.target = {"real": objective.real_target, "fake": 0.0, "g": 1.0}[which]
        elif isinstance(objective, objectives.HingeObjective) and which != "g":
            self.sign = -1.0 if which == "real" else 1.0
        else:  # WGAN, and hinge's G loss: L = -+ mean(out), dL/dout = -+ 1/N (objectives._constant_grad)
            self.sign = 1.0 if which == "fake" else -1.0
            self.dout[...] = self.sign / N  # a constant: written once, before any capture

    def __call__(self, out):
        from ...gan import objectives
        xp, obj = array_module(out), self.obj
        if isinstance(obj, objectives.BCEObjective):
            self._bce(xp, out)
        elif isinstance(obj, objectives.LSGANObjective):
            xp.subtract(out, self.target, out=self.a)  # diff = out - target
            xp.multiply(self.a, self.a, out=self.b)
            xp.mean(self.b, out=self.mean)
            xp.multiply(self.mean, 0.5, out=self.loss)
            xp.multiply(self.a, self.inv_n, out=self.dout)
        elif isinstance(obj, objectives.HingeObjective) and self.which != "g":
            if self.sign < 0:
                xp.subtract(1.0, out, out=self.a)  # margin = 1 - out
            else:
                xp.add(out, 1.0, out=self.a)  # margin = 1 + out
            xp.greater(self.a, 0, out=self.mask)
            self.b.fill(0)
            xp.copyto(self.b, self.a, where=self.mask)  # where(active, margin, 0)
            xp.mean(self.b, out=self.loss)
            xp.copyto(self.dout, self.mask)
            xp.multiply(self.dout, self.sign * self.inv_n, out=self.dout)
        else:
            xp.mean(out, out=self.mean)
            if self.sign < 0:
                xp.negative(self.mean, out=self.loss)
            else:
                self.loss[...] = self.mean
        return self.loss, self.dout

    def _bce(self, xp, z):
        """losses.bce_with_logits: mean(max(z, 0) - z t + log1p(e)), dz = (sigmoid(z) - t) / n, e = exp(-|z|)."""
        xp.abs(z, out=self.e)
        xp.negative(self.e, out=self.e)
        xp.exp(self.e, out=self.e)
        xp.maximum(z, 0.0, out=self.a)
        xp.multiply(z, self.target, out=self.b)
        xp.subtract(self.a, self.b, out=self.a)
        xp.log1p(self.e, out=self.b)
        xp.add(self.a, self.b, out=self.a)
        xp.mean(self.a, out=self.loss)
        _sigmoid(xp, z, self.e, self.a, self.b, self.mask)  # into self.b
        xp.subtract(self.b, self.target, out=self.b)
        xp.multiply(self.b, self.inv_n, out=self.dout)


def _sigmoid(xp, z, e, t, y, mask):
    """nn.activations.sigmoid_forward's where(z >= 0, 1 / (1 + e), e / (1 + e)) into y, given e = exp(-|z|)."""
    xp.add(e, 1.0, out=t)
    xp.divide(e, t, out=y)
    xp.divide(1.0, t, out=t)
    xp.greater_equal(z, 0, out=mask)
    xp.copyto(y, t, where=mask)


class StatisticPlan:
    """objective.probability(out): the mean of sigmoid(out) (BCE on logits) or the mean raw score (the rest)."""

    def __init__(self, objective, shape, xp, dtype):
        from ...gan import objectives
        self.sigmoid = isinstance(objective, objectives.BCEObjective)
        self.e, self.t, self.y = (xp.empty(shape, dtype) for _ in range(3))
        self.mask = xp.empty(shape, bool)

    def __call__(self, out, into):
        xp = array_module(out)
        if not self.sigmoid:
            return xp.mean(out, out=into)
        xp.abs(out, out=self.e)
        xp.negative(self.e, out=self.e)
        xp.exp(self.e, out=self.e)
        _sigmoid(xp, out, self.e, self.t, self.y, self.mask)
        return xp.mean(self.y, out=into)


# --------------------------------------------------------------------------- the penalties, fixed
class PenaltyPlan:
    """GradientPenalty.__call__ (WGAN-GP, ``kind`` "gp") or R1Penalty.__call__ ("r1") with fixed buffers, on
    a critic of Linear and LeakyReLU layers (gradient_penalty.py, docs/derivations/wgan_gp.md):

        forward, keeping each pre-activation's sign;  first backward from 1: g = dD/dx, gz_l per Linear;
        P and dP/dg (penalty_of_gradients / r1_of_gradients);  tangent pass: dW_l += u_{l-1}^T gz_l.
    ``__call__(x)`` adds dP/dW into the Linears' W.grad and writes P and the mean ||g_n|| into ``stats``."""

    def __init__(self, penalty, kind, N, xp, dtype):
        from ... import nn
        self.kind, self.lam, self.eps, self.N = kind, penalty.lam, penalty.eps, N
        self.ops = []
        width = None
        for layer in penalty.layers:
            if isinstance(layer, nn.Linear):
                width = layer.out_features
                self.ops.append(("linear", layer, xp.empty((N, layer.out_features), dtype),  # forward output
                                 xp.empty((N, layer.in_features), dtype),  # g through it
                                 xp.empty((N, layer.out_features), dtype)))  # u through it
            elif isinstance(layer, nn.LeakyReLU):
                self.ops.append(("mask", layer.negative_slope, xp.empty((N, width), bool),
                                 *(xp.empty((N, width), dtype) for _ in range(3))))  # output, g, u
            else:
                raise ValueError(f"the CUDA graph's penalty covers Linear and LeakyReLU critics, not {layer!r}")
        d_in = self.ops[0][1].in_features
        self.ones = xp.ones((N, 1), dtype)  # the first backward's upstream gradient
        self.squares, self.dg = xp.empty((N, d_in), dtype), xp.empty((N, d_in), dtype)
        self.r, self.q, self.q2, self.scale = (xp.empty((N,), dtype) for _ in range(4))
        self.mean = xp.empty((), dtype)

    def __call__(self, x, P, norm):
        xp, N = array_module(x), self.N
        h = x  # 1. forward
        for op in self.ops:
            if op[0] == "linear":
                layer, y = op[1], op[2]
                gemm_kernel.gemm(h, layer.W.data, y)  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
                if layer.has_bias:
                    xp.add(y, layer.b.data, out=y)
                h = y
            else:
                slope, positive, out = op[1], op[2], op[3]
                xp.greater(h, 0, out=positive)
                xp.multiply(h, slope, out=out)
                xp.copyto(out, h, where=positive)
                h = out
        g, gz = self.ones, {}  # 2. first backward with upstream 1
        for op in reversed(self.ops):
            if op[0] == "linear":
                gz[id(op[1])] = g
                g = gemm_kernel.gemm(g, op[1].W.data.T, op[3])  # (N, D_out) @ (D_out, D_in) -> (N, D_in)
            else:
                xp.multiply(g, op[1], out=op[4])  # where(pre > 0, g, g slope)
                xp.copyto(op[4], g, where=op[2])
                g = op[4]
        xp.multiply(g, g, out=self.squares)  # 3. the penalty of g and dP/dg
        if self.kind == "gp":  # P = lam mean (r - 1)^2, r = sqrt(||g||^2 + eps); dg = g (2 lam / N)(r - 1) / r
            xp.sum(self.squares, axis=1, out=self.r)
            xp.add(self.r, self.eps, out=self.r)
            xp.sqrt(self.r, out=self.r)
            xp.subtract(self.r, 1.0, out=self.q)
            xp.square(self.q, out=self.q2)
            xp.mean(self.q2, out=self.mean)
            xp.multiply(self.mean, self.lam, out=P)
            xp.multiply(self.q, 2.0 * self.lam / N, out=self.scale)
            xp.divide(self.scale, self.r, out=self.scale)
            xp.multiply(g, self.scale.reshape(N, 1), out=self.dg)
        else:  # R1: P = (gamma / 2) mean ||g||^2, dg = g gamma / N, the norms sqrt(||g||^2)
            xp.sum(self.squares, axis=1, out=self.q)
            xp.mean(self.q, out=self.mean)
            xp.multiply(self.mean, 0.5 * self.lam, out=P)
            xp.multiply(g, self.lam / N, out=self.dg)
            xp.sqrt(self.q, out=self.r)
        xp.mean(self.r, out=norm)
        u = self.dg  # 4. tangent pass: dP/dW_l = u_{l-1}^T gz_l
        last = max(i for i, op in enumerate(self.ops) if op[0] == "linear")
        for i, op in enumerate(self.ops[:last + 1]):
            if op[0] == "linear":
                layer = op[1]
                if layer.requires_grad:
                    gemm_kernel.gemm(u.T, gz[id(layer)], layer.W.grad, beta=1.0)  # (D_in, N) @ (N, D_out)
                if i < last:
                    u = gemm_kernel.gemm(u, layer.W.data, op[4])  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
            else:
                xp.multiply(u, op[1], out=op[5])
                xp.copyto(op[5], u, where=op[2])
                u = op[5]


# --------------------------------------------------------------------------------- optimizers, fixed
class AdamPlan:
    """optim.adam_update over the flat store, with the step number t on the device (float64, as Python's)."""

    def __init__(self, opt, xp):
        self.opt, dt = opt, opt.store.data.dtype
        self.t1, self.t2 = xp.empty_like(opt.store.data), xp.empty_like(opt.store.data)
        self.t = xp.zeros((), np.float64)  # the step number: on the device so that a replay moves it on
        self.power = xp.empty((), np.float64)
        self.bias1, self.bias2 = xp.empty((), dt), xp.empty((), dt)

    def sync_from_host(self):
        """t from the optimizer (a fresh run, a resumed one): a host-to-device copy, never inside the graph."""
        self.t[...] = float(self.opt.t)

    def step(self):
        o, xp = self.opt, array_module(self.t1)
        theta, g, m, v, t1, t2 = o.store.data, o.store.grad, o.m, o.v, self.t1, self.t2
        xp.add(self.t, 1.0, out=self.t)
        for bias, beta in ((self.bias1, o.beta1), (self.bias2, o.beta2)):  # 1 - beta^t, rounded to float32
            xp.power(beta, self.t, out=self.power)
            xp.subtract(1.0, self.power, out=self.power)
            xp.copyto(bias, self.power)
        xp.multiply(m, o.beta1, out=t1)  # m <- beta1 m + (1 - beta1) g
        xp.multiply(g, 1.0 - o.beta1, out=t2)
        xp.add(t1, t2, out=m)
        xp.multiply(v, o.beta2, out=t1)  # v <- beta2 v + (1 - beta2) g g
        xp.multiply(g, 1.0 - o.beta2, out=t2)
        xp.multiply(t2, g, out=t2)
        xp.add(t1, t2, out=v)
        xp.divide(m, self.bias1, out=t1)  # m_hat
        xp.divide(v, self.bias2, out=t2)  # v_hat
        xp.multiply(t1, o.lr, out=t1)  # theta -= lr m_hat / (sqrt(v_hat) + eps)
        xp.sqrt(t2, out=t2)
        xp.add(t2, o.eps, out=t2)
        xp.divide(t1, t2, out=t1)
        xp.subtract(theta, t1, out=theta)


class RMSpropPlan:
    """optim.rmsprop_update (not centred, no momentum) over the flat store."""

    def __init__(self, opt, xp):
        self.opt = opt
        self.t1, self.t2 = xp.empty_like(opt.store.data), xp.empty_like(opt.store.data)

    def sync_from_host(self):
        pass

    def step(self):
        o, xp = self.opt, array_module(self.t1)
        theta, g, sq, t1, t2 = o.store.data, o.store.grad, o.square_avg, self.t1, self.t2
        xp.multiply(sq, o.alpha, out=t1)  # square_avg <- alpha square_avg + (1 - alpha) g g
        xp.multiply(g, 1.0 - o.alpha, out=t2)
        xp.multiply(t2, g, out=t2)
        xp.add(t1, t2, out=sq)
        xp.sqrt(sq, out=t1)  # theta -= lr g / (sqrt(square_avg) + eps)
        xp.add(t1, o.eps, out=t1)
        xp.multiply(g, o.lr, out=t2)
        xp.divide(t2, t1, out=t2)
        xp.subtract(theta, t2, out=theta)


def optimizer_plan(opt, xp):
    from ... import optim
    return (AdamPlan if isinstance(opt, optim.Adam) else RMSpropPlan)(opt, xp)
