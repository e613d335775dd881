"""The whole MLP GAN training step as one CUDA graph: fixed buffers, our own GEMM, no host traffic.

Why. On a GPU the MLP GAN step is about 200 small device operations, and each costs about 25 us of
Python and CuPy dispatch whatever the batch: 5 ms a step at batch 64 and at batch 4096 alike (issue
16). A CUDA graph records the step's kernel launches once and replays them with one call, so the
step costs the GPU's work plus one launch.

What is fixed. A graph replays the same kernels on the same addresses with the same scalar arguments,
so everything the step touches is allocated once, before the capture, and every operation writes into
one of those buffers (``out=``, in place, a kernel's outputs):
  - activations, gradients and the layers' temporaries (one set per layer, reused by every pass);
  - the optimizers' state (the networks' own flat stores and Adam's m, v), and Adam's step counter t
    as a device scalar, so that the bias corrections 1 - beta^t move on at each replay;
  - the batch slots (one per D step), filled by a device gather ``take(dataset, order[pos + i])`` from
    the dataset the loader already holds on the device, ``pos`` a device counter; or, from the trainer,
    by a device-to-device copy just before the launch;
  - the noise slot, filled by ``rng.standard_normal(out=z)``: a ``default_rng`` generator keeps its state
    on the device and moves on at each replay;
  - the statistics (losses, D(x), D(G(z)), ...) as 0-d device buffers, read only when the trainer logs.
Matmuls go through fast/gemm.py's kernel: CuPy refuses cuBLAS during a capture.

What is covered: the MLP GAN (Linear, LeakyReLU, BatchNorm1d, Tanh) with the objectives bce (on
logits), wgan (with clipping), wgan-gp (the gradient penalty's double backward, gradient_penalty.py, in
fixed buffers), lsgan and hinge, R1, any number of D steps, Adam and RMSprop, and the conditional
step (one-hot or learned label codes, labels gathered with the images). What is refused
(``unsupported``, a one-line reason each; the eager ``GANStep`` runs them): DCGAN (convolutions), the
gradient penalty of a conditional critic, instance noise, DiffAugment, the generator EMA, Dropout, a
Sigmoid D (``--loss-on probs``), spectral norm, another dtype than float32, weight decay.

The graph holds one launch per operation of the reference maths (the fused kernels of kernels.py are
not used inside it yet): 323 launches for the default bce step at batch 64, 41 of them GEMMs, counted
on the fake device. Replayed by one call, their number costs no Python; fusing them is the next step.

The arithmetic is the eager step's (scratchgan/gan.py with the reference layers), operation for
operation: on the tests' fake device (NumPy arithmetic) a replayed step gives the same bits as GANStep
(tests/test_cuda_graph.py), and the fake device's capture mode refuses what CuPy refuses.

STATUS: the CuPy path (``_CupyGraph``: a non-blocking stream, ``begin_capture`` / ``end_capture``,
``graph.launch()``, memory from a pool nothing else uses) has NEVER RUN: no GPU was available to write
it. It follows CuPy 14's documented API; expect to debug it on the first GPU.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from . import gemm as gemm_kernel


# ------------------------------------------------------------------------------------------ what is refused
def unsupported(step):
    """Why GANStep ``step`` cannot be graphed (one line), or None when it can."""
    from .. import nn, objectives, optim
    G, D, obj = step.G, step.D, step.objective
    if getattr(step, "conditional", False) and (step.penalty is not None or step.r1 is not None):
        return "the gradient penalty of a conditional critic has no CUDA graph yet"
    if step.instance_noise or step.augment is not None or step.ema is not None:
        return "--instance-noise, --diffaugment and --ema have no CUDA graph yet"
    if not isinstance(obj, (objectives.BCEObjective, objectives.WGANObjective, objectives.LSGANObjective,
                            objectives.HingeObjective)) or (isinstance(obj, objectives.BCEObjective)
                                                            and not obj.on_logits):
        return f"the objective {getattr(obj, 'name', type(obj).__name__)} (on D's probabilities) has no CUDA graph yet"
    for net, name in ((G, "G"), (D, "D")):
        if isinstance(net, nn.Conditional):
            net = net.net  # the label's code joined to the input, then an MLP
        if not isinstance(net, nn.Sequential):
            return f"{name} is not an nn.Sequential"
        for layer in net:  # (spectral norm wraps the Linears in nn.SpectralNorm: refused here too)
            if type(layer) not in _plans():
                return f"{name}'s layer {layer!r} has no fixed-buffer form yet (the CUDA graph covers the MLP GAN)"
        if net.dtype != np.float32:
            return f"the CUDA graph's GEMM is float32; {name} is {net.dtype}"
    for opt in (step.opt_G, step.opt_D):
        if not isinstance(opt, (optim.Adam, optim.RMSprop)):
            return f"the optimizer {type(opt).__name__} has no CUDA graph yet (Adam and RMSprop have)"
        if opt.weight_decay or (isinstance(opt, optim.RMSprop) and (opt.centered or opt.momentum)):
            return "weight decay, a centred RMSprop and RMSprop's momentum have no CUDA graph yet"
    return None


# ------------------------------------------------------------------------------------- the layers, fixed
# Each plan holds one layer's buffers for batch N and runs the layer's reference maths into them, the
# same operations in the same order as the reference function (named in each docstring).

class _LinearPlan:
    """nn.linear: y = x W + b;  dW += x^T dy,  db += sum_n dy,  dx = dy W^T (fast/gemm.py for the products)."""

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


class _LeakyReLUPlan:
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


class _TanhPlan:
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


class _BatchNorm1dPlan:
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


def _plans():
    from .. import nn
    return {nn.Linear: _LinearPlan, nn.LeakyReLU: _LeakyReLUPlan, nn.Tanh: _TanhPlan,
            nn.BatchNorm1d: _BatchNorm1dPlan}


class _ConditionalPlan:
    """nn.Conditional with fixed buffers: h = [x, code(labels)], out = net(h); backward splits dh.

    code: one_hot(labels) = (labels[:, None] == arange(K)), or a learned Embedding W[labels], whose
    backward is embedding_backward's scatter-add of dcode into a zeroed (K, E) buffer, added to W.grad."""

    def __init__(self, cond, N, xp):
        dtype = cond.dtype
        self.cond, self.net = cond, _NetworkPlan(cond.net, N, xp)
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
        from ..backend import scatter_add
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


def _network_plan(net, N, xp):
    from .. import nn
    return _ConditionalPlan(net, N, xp) if isinstance(net, nn.Conditional) else _NetworkPlan(net, N, xp)


def _input_width(net):
    """The features a network takes (without a conditional one's label code)."""
    from .. import nn
    if isinstance(net, nn.Conditional):
        return next(iter(net.net)).in_features - net.code_dim
    return next(iter(net)).in_features


class _NetworkPlan:
    """nn.Sequential with fixed buffers: forward in order, backward in reverse, as Sequential.backward."""

    def __init__(self, net, N, xp):
        self.net, self.plans, shape = net, [], None
        dtype = net.dtype
        for layer in net:
            make = _plans()[type(layer)]
            if make is _LinearPlan:
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
class _ObjectivePlan:
    """One call of an objective's d_real / d_fake / g on D's output (N, 1): the loss (0-d) and dL/dout.

    objectives.py, operation for operation: BCE on logits (losses.bce_with_logits), WGAN (-+mean, a
    constant gradient), LSGAN (1/2 mean (out - target)^2), hinge (mean relu(1 -+ out))."""

    def __init__(self, objective, which, shape, xp, dtype):
        from .. import objectives
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
        from .. import objectives
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


class _StatisticPlan:
    """objective.probability(out): the mean of sigmoid(out) (BCE on logits) or the mean raw score (the rest)."""

    def __init__(self, objective, shape, xp, dtype):
        from .. import objectives
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
class _PenaltyPlan:
    """GradientPenalty.__call__ (WGAN-GP, ``kind`` "gp") or R1Penalty.__call__ ("r1") with fixed buffers, on
    a critic of Linear and LeakyReLU layers (gradient_penalty.py, docs/derivations/wgan_gp.md):

        forward, keeping each pre-activation's sign;  first backward from 1: g = dD/dx, gz_l per Linear;
        P and dP/dg (penalty_of_gradients / r1_of_gradients);  tangent pass: dW_l += u_{l-1}^T gz_l.
    ``__call__(x)`` adds dP/dW into the Linears' W.grad and writes P and the mean ||g_n|| into ``stats``."""

    def __init__(self, penalty, kind, N, xp, dtype):
        from .. import nn
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
class _AdamPlan:
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


class _RMSpropPlan:
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


def _optimizer_plan(opt, xp):
    from .. import optim
    return (_AdamPlan if isinstance(opt, optim.Adam) else _RMSpropPlan)(opt, xp)


# ------------------------------------------------------------------------------------ running a graph
class _CupyGraph:
    """A CUDA graph on CuPy. NEVER RUN (no GPU was available); written to CuPy 14's documented API.

    The step runs on its own non-blocking stream; every temporary CuPy makes inside it (a reduction's
    scratch space) comes from a memory pool that nothing else uses, so the addresses the graph recorded
    stay the graph's. The warm-up (the first step, run eagerly) compiles the kernels and fills the pool
    with the blocks the capture will ask for again: during a capture the pool must not call cudaMalloc.
    """

    def __init__(self, cupy):
        self.cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()
        self.graph = None

    def _on_stream(self, body):
        cuda = self.cupy.cuda
        outside = cuda.get_current_stream()
        self.stream.wait_event(outside.record())  # the copies into the batch slots happen first
        with cuda.using_allocator(self.pool.malloc), self.stream:
            result = body()
        outside.wait_event(self.stream.record())  # the trainer's next reads wait for the step
        return result

    def run_eagerly(self, body):
        self._on_stream(body)

    def capture(self, body):
        def record():
            self.stream.begin_capture()
            try:
                body()
            finally:
                self.graph = self.stream.end_capture()
        self._on_stream(record)

    def launch(self):
        self._on_stream(lambda: self.graph.launch(stream=self.stream))


class _RecordedGraph:
    """The tests' fake device: ``xp.stream_capture()`` records the launches (refusing what CuPy refuses),
    ``launch()`` replays them."""

    def __init__(self, xp):
        self.xp, self.graph = xp, None

    def run_eagerly(self, body):
        body()

    def capture(self, body):
        with self.xp.stream_capture() as graph:
            body()
        self.graph = graph

    def launch(self):
        self.graph.launch()


def graph_runner(xp):
    """How graphs are made on array module ``xp``: CuPy's streams, or the fake device's recorder."""
    if getattr(xp, "__name__", "") == "cupy":
        return _CupyGraph(xp)
    if getattr(xp, "stream_capture", None) is not None:
        return _RecordedGraph(xp)
    raise ValueError("a CUDA graph needs CuPy (--backend cupy)")


# ---------------------------------------------------------------------------------------- the step
class GraphedStep:
    """GANStep ``step``'s training step, replayed from a CUDA graph; the networks, optimizers, noise
    source and statistics' keys are ``step``'s own (checkpoints, grids and evaluation use them as before).

    ``GraphedStep(step, d_steps, dataset=None)``. With ``dataset`` (the images on the device, as the
    batches are shaped), the batches are gathered inside the graph: ``start_epoch(order)`` gives the
    epoch's order of images and ``step()`` runs one iteration. Without it, ``step(real_batches)`` takes
    the trainer's batches (one per D step) and copies them into the slots before the launch.
    The first step runs eagerly (the warm-up), the next captures the graph and launches it, the rest
    launch it; a new noise generator (a new epoch, a resume) or a moved optimizer clock captures anew.
    Statistics are 0-d device buffers, overwritten by the next step: read them before it.
    """

    def __init__(self, step, d_steps=1, dataset=None):
        reason = unsupported(step)
        if reason is not None:
            raise ValueError(f"--cuda-graph: {reason}; run without --cuda-graph")
        self.eager, self.d_steps = step, int(d_steps)
        self.G, self.D, self.opt_G, self.opt_D = step.G, step.D, step.opt_G, step.opt_D
        self.objective, self.noise, self.keys = step.objective, step.noise, step.keys
        self.latent_dim, self.clip = step.latent_dim, step.clip
        xp, dt, N = step.noise.xp, step.G.dtype, step.noise.batch_size
        self.xp, self.runner = xp, graph_runner(xp)
        d_in = _input_width(step.D)
        self.real = [xp.empty((N, d_in), dt) for _ in range(self.d_steps)]  # the batch slots
        self.conditional = step.conditional
        self.labels = [xp.empty((N,), np.int64) for _ in range(self.d_steps)] if self.conditional else [None] * self.d_steps
        self.z = xp.empty((N, step.latent_dim), dt)  # the noise slot
        self.dataset, self.dataset_labels = dataset, None
        if self.conditional and dataset is not None:
            if not isinstance(dataset, (tuple, list)):
                raise ValueError("a conditional GraphedStep gathers (images, labels): pass dataset=(images, labels)")
            self.dataset, self.dataset_labels = dataset
        if dataset is not None:
            self.order = xp.zeros((len(self.dataset),), np.int64)
            self.pos = xp.zeros((), np.int64)
            self.arange = xp.arange(N, dtype=np.int64)
            self.idx_pos, self.idx = xp.empty((N,), np.int64), xp.empty((N,), np.int64)
        self.G_plan, self.D_plan = _network_plan(step.G, N, xp), _network_plan(step.D, N, xp)
        out = (N, 1)
        self.losses = {w: _ObjectivePlan(step.objective, w, out, xp, dt) for w in ("real", "fake", "g")}
        self.statistic = _StatisticPlan(step.objective, out, xp, dt)
        self.opt_plans = {"G": _optimizer_plan(step.opt_G, xp), "D": _optimizer_plan(step.opt_D, xp)}
        k_x, k_fake, k_after = self.keys
        self.penalties = {}  # "gp": (plan, alpha slot, the real - fake buffer, xhat), "r1": (plan,)
        if step.penalty is not None:
            self.penalties["gp"] = (_PenaltyPlan(step.penalty, "gp", N, xp, dt), xp.empty((N, 1), dt),
                                    xp.empty((N, d_in), dt), xp.empty((N, d_in), dt))
        if step.r1 is not None:
            self.penalties["r1"] = (_PenaltyPlan(step.r1, "r1", N, xp, dt),)
        names = ["loss_D", k_x, k_fake] + (["gp", "grad_norm_xhat"] if "gp" in self.penalties else []) + (
            ["r1", "grad_norm_x"] if "r1" in self.penalties else []) + (
            ["wasserstein"] if getattr(step.objective, "wasserstein", False) else [])
        self.stats = {name: xp.zeros((), dt) for name in names + ["loss_G", k_after]}  # GANStep.step's keys
        self.mean_real, self.mean_fake = xp.zeros((), dt), xp.zeros((), dt)
        self.steps_run, self.captures, self._captured_for = 0, 0, None

    # ----------------------------------------------------------------------- the host side
    def start_epoch(self, order):
        """The epoch's order of images (host integers): copied into the device buffer, position 0."""
        if self.dataset is None:
            raise ValueError("this GraphedStep takes the trainer's batches; it has no dataset to gather from")
        order = np.asarray(order, dtype=np.int64)
        if order.shape != (len(self.dataset),):
            raise ValueError(f"the order must list each of the {len(self.dataset)} images once")
        self.order[...] = self.xp.asarray(order)
        self.pos[...] = 0

    def step(self, real_batches=None):
        """One iteration (d_steps D steps, one G step): the warm-up, a capture and launch, or a launch."""
        if self.dataset is None:
            if real_batches is None or len(real_batches) != self.d_steps:
                raise ValueError(f"step() takes the {self.d_steps} real batch(es) of one iteration")
            for slot, label_slot, real in zip(self.real, self.labels, real_batches):
                images, labels = self.eager._real_batch(real)  # device to device, before the launch
                slot[...] = images
                if label_slot is not None:
                    label_slot[...] = labels
        # the graph froze the noise generators and expects the optimizers' clocks where it left them
        self.alpha_stream = self.noise.stream("gp_alpha", self.penalties["gp"][1].shape, "uniform") \
            if "gp" in self.penalties else [None]  # GANStep's stream of alpha ~ U[0, 1), one per sample
        key = (self.noise.rng, self.alpha_stream[0], self.opt_G.t, self.opt_D.t)
        if self.steps_run == 0:
            self._sync_from_host()
            self.runner.run_eagerly(self._body)  # compiles the kernels; the pool learns the sizes
        else:
            if self.runner.graph is None or not self._expects(key):  # a new epoch's generator, a resume
                self._sync_from_host()
                self.runner.capture(self._body)
                self.captures += 1
            self.runner.launch()
        self.steps_run += 1
        for opt in (self.opt_G, self.opt_D):  # the host's count, for checkpoints: the device moved on too
            opt.t += self.d_steps if opt is self.opt_D else 1
        self.noise.draws += self.d_steps
        if "gp" in self.penalties:
            self.alpha_stream[3] += self.d_steps
        self._captured_for = key[:2] + (self.opt_G.t, self.opt_D.t)
        return dict(self.stats)

    def _expects(self, key):
        rng, alpha_rng, t_G, t_D = self._captured_for
        return key[0] is rng and key[1] is alpha_rng and key[2:] == (t_G, t_D)

    def __getattr__(self, name):  # what the trainer asks of a step beyond the above (ema, penalty, ...)
        if name == "eager":
            raise AttributeError(name)
        return getattr(self.eager, name)

    def _sync_from_host(self):
        for plan in self.opt_plans.values():
            plan.sync_from_host()

    def sampling(self):
        return self.eager.sampling()

    # ----------------------------------------------------------------------- what the graph records
    def _body(self):
        """The fixed-buffer step: GANStep.step's operations, every one into a buffer allocated above."""
        for real, labels in zip(self.real, self.labels):
            if self.dataset is not None:
                self._gather(real, labels)
            self._d_step(real, labels)
        self._g_step(labels)

    def _gather(self, slot, label_slot):
        """slot <- dataset[order[pos : pos + N]] (and the labels); pos += N. All on the device."""
        xp, N = self.xp, slot.shape[0]
        xp.add(self.arange, self.pos, out=self.idx_pos)
        xp.take(self.order, self.idx_pos, out=self.idx)
        xp.take(self.dataset, self.idx, axis=0, out=slot)
        if label_slot is not None:
            xp.take(self.dataset_labels, self.idx, out=label_slot)
        xp.add(self.pos, N, out=self.pos)

    def _d_step(self, real, labels):
        """GANStep.d_step: D on x and on G(z) (a constant here), then D's update and the clipping."""
        xp, s = self.xp, self.stats
        k_x, k_fake, _ = self.keys
        self.noise.rng.standard_normal(dtype=self.z.dtype, out=self.z)  # z ~ N(0, I), drawn on the device
        fake = self.G_plan.forward(self.z, labels)  # G's buffers keep what the G step's backward needs
        self.opt_D.store.grad.fill(0)  # opt_D.zero_grad()
        loss_real, dout = self.losses["real"](self.D_plan.forward(real, labels))
        self.statistic(self.D_plan.plans[-1].y, s[k_x])
        if "wasserstein" in s:
            xp.mean(self.D_plan.plans[-1].y, out=self.mean_real)
        self.D_plan.backward(dout, need_dx=False)
        loss_fake, dout = self.losses["fake"](self.D_plan.forward(fake, labels))
        self.statistic(self.D_plan.plans[-1].y, s[k_fake])
        if "wasserstein" in s:
            xp.mean(self.D_plan.plans[-1].y, out=self.mean_fake)
            xp.subtract(self.mean_real, self.mean_fake, out=s["wasserstein"])
        self.D_plan.backward(dout, need_dx=False)
        if "gp" in self.penalties:  # WGAN-GP at xhat = alpha x + (1 - alpha) G(z)
            plan, alpha, diff, xhat = self.penalties["gp"]
            self.alpha_stream[0].random(dtype=alpha.dtype, out=alpha)
            xp.subtract(real, fake, out=diff)
            xp.multiply(alpha, diff, out=diff)
            xp.add(fake, diff, out=xhat)
            plan(xhat, s["gp"], s["grad_norm_xhat"])
        if "r1" in self.penalties:  # R1 on the real batch
            self.penalties["r1"][0](real, s["r1"], s["grad_norm_x"])
        self.opt_plans["D"].step()
        if self.clip is not None:
            data = self.opt_D.store.data
            xp.clip(data, -self.clip, self.clip, out=data)
        xp.add(loss_real, loss_fake, out=s["loss_D"])
        for key in ("gp", "r1"):  # the penalties are part of D's loss
            if key in self.penalties:
                xp.add(s["loss_D"], s[key], out=s["loss_D"])

    def _g_step(self, labels):
        """GANStep.g_step: L_G through the updated D, backward through D (no weight gradients) into G."""
        s = self.stats
        self.opt_G.store.grad.fill(0)
        out = self.D_plan.forward(self.G_plan.plans[-1].y, labels)
        loss_G, dout = self.losses["g"](out)
        dfake = self.D_plan.backward(dout, param_grads=False)
        self.G_plan.backward(dfake, need_dx=False)
        self.opt_plans["G"].step()
        s["loss_G"][...] = loss_G
        self.statistic(out, s[self.keys[2]])
