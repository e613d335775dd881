"""The FID Inception-v3 (TensorFlow's 2015-12-05 graph as pytorch-fid ports it), forward only, from the engine's layers.

Input (N, 3, 299, 299) float32 in pytorch-fid's range (its ``normalize_input``: 2 x - 1 of images in [0, 1]);
output (N, 2048), the "pool3" features every FID paper uses. No resizing here: the caller brings 299 x 299.

Every convolution is pytorch-fid's BasicConv2d: Conv2d without bias, BatchNorm2d(eps=0.001) with its running
statistics (eval mode), ReLU. The blocks are torchvision's Inception3 blocks with the FID graph's quirks, as
pytorch-fid's ``FIDInceptionA/C/E_1/E_2``: their branch pools are AvgPool2d(3, 1, 1, count_include_pad=False)
(TF's average pool ignores the padding), and the last block (E_2, Mixed_7c) max-pools instead.

    stem      3 x 299 x 299 -> 32 x 149 -> 32 x 147 -> 64 x 147 -> maxpool 64 x 73 -> 80 x 73 -> 192 x 71
              -> maxpool 192 x 35 x 35
    Mixed_5b, 5c, 5d   InceptionA  -> 256, 288, 288 x 35 x 35
    Mixed_6a           InceptionB  -> 768 x 17 x 17
    Mixed_6b .. 6e     InceptionC  -> 768 x 17 x 17
    Mixed_7a           InceptionD  -> 1280 x 8 x 8
    Mixed_7b, 7c       InceptionE  -> 2048 x 8 x 8  (7b: average pool, 7c: max pool)
    pool3              GlobalAvgPool2d -> 2048

``load_fid_state(net, arrays)`` takes pytorch-fid's state_dict names (``Mixed_5b.branch1x1.conv.weight``, ...).
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..backend import array_module
from ..params import Parameter

FEATURES = 2048
INPUT_SIZE = 299
BN_EPS = 0.001  # TF's batch-norm epsilon, kept by pytorch-fid


def _basic(convs, name, c_in, c_out, kernel_size, stride=1, padding=0):
    """BasicConv2d: Conv2d(no bias) -> BatchNorm2d(eps=0.001) -> ReLU, kept in ``convs`` under pytorch-fid's name."""
    layer = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False, seed=0),
                          nn.BatchNorm2d(c_out, eps=BN_EPS), nn.ReLU())
    convs[name] = layer
    return layer


def _avg_pool():
    """The branch pool of A, C and E_1: 3 x 3, stride 1, padding 1, the padding left out of the mean (as TF)."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def inception_a(convs, name, c_in, pool_features):
    """C_in x 35 x 35 -> (64 + 64 + 96 + pool_features) x 35 x 35."""
    def b(n, *a, **k):
        return _basic(convs, f"{name}.{n}", *a, **k)
    return nn.Concat(
        b("branch1x1", c_in, 64, 1),                                                  # 64
        nn.Sequential(b("branch5x5_1", c_in, 48, 1), b("branch5x5_2", 48, 64, 5, padding=2)),  # 64
        nn.Sequential(b("branch3x3dbl_1", c_in, 64, 1), b("branch3x3dbl_2", 64, 96, 3, padding=1),
                      b("branch3x3dbl_3", 96, 96, 3, padding=1)),                    # 96
        nn.Sequential(_avg_pool(), b("branch_pool", c_in, pool_features, 1)))       # pool_features


def inception_b(convs, name, c_in):
    """288 x 35 x 35 -> (384 + 96 + 288) = 768 x 17 x 17 (stride 2)."""
    def b(n, *a, **k):
        return _basic(convs, f"{name}.{n}", *a, **k)
    return nn.Concat(
        b("branch3x3", c_in, 384, 3, stride=2),                                       # 384
        nn.Sequential(b("branch3x3dbl_1", c_in, 64, 1), b("branch3x3dbl_2", 64, 96, 3, padding=1),
                      b("branch3x3dbl_3", 96, 96, 3, stride=2)),                     # 96
        nn.MaxPool2d(3, stride=2))                                                    # c_in


def inception_c(convs, name, c_in, c7):
    """768 x 17 x 17 -> (192 * 4) = 768 x 17 x 17; the 7 x 7 convolutions factored into 1 x 7 and 7 x 1."""
    def b(n, *a, **k):
        return _basic(convs, f"{name}.{n}", *a, **k)
    return nn.Concat(
        b("branch1x1", c_in, 192, 1),                                                 # 192
        nn.Sequential(b("branch7x7_1", c_in, c7, 1), b("branch7x7_2", c7, c7, (1, 7), padding=(0, 3)),
                      b("branch7x7_3", c7, 192, (7, 1), padding=(3, 0))),             # 192
        nn.Sequential(b("branch7x7dbl_1", c_in, c7, 1), b("branch7x7dbl_2", c7, c7, (7, 1), padding=(3, 0)),
                      b("branch7x7dbl_3", c7, c7, (1, 7), padding=(0, 3)),
                      b("branch7x7dbl_4", c7, c7, (7, 1), padding=(3, 0)),
                      b("branch7x7dbl_5", c7, 192, (1, 7), padding=(0, 3))),         # 192
        nn.Sequential(_avg_pool(), b("branch_pool", c_in, 192, 1)))                  # 192


def inception_d(convs, name, c_in):
    """768 x 17 x 17 -> (320 + 192 + 768) = 1280 x 8 x 8 (stride 2)."""
    def b(n, *a, **k):
        return _basic(convs, f"{name}.{n}", *a, **k)
    return nn.Concat(
        nn.Sequential(b("branch3x3_1", c_in, 192, 1), b("branch3x3_2", 192, 320, 3, stride=2)),  # 320
        nn.Sequential(b("branch7x7x3_1", c_in, 192, 1), b("branch7x7x3_2", 192, 192, (1, 7), padding=(0, 3)),
                      b("branch7x7x3_3", 192, 192, (7, 1), padding=(3, 0)),
                      b("branch7x7x3_4", 192, 192, 3, stride=2)),                    # 192
        nn.MaxPool2d(3, stride=2))                                                    # c_in


def inception_e(convs, name, c_in, pool):
    """C_in x 8 x 8 -> (320 + 768 + 768 + 192) = 2048 x 8 x 8; ``pool``: "avg" (E_1, Mixed_7b) or "max" (E_2, 7c)."""
    def b(n, *a, **k):
        return _basic(convs, f"{name}.{n}", *a, **k)
    branch_pool = _avg_pool() if pool == "avg" else nn.MaxPool2d(3, stride=1, padding=1)
    return nn.Concat(
        b("branch1x1", c_in, 320, 1),                                                 # 320
        nn.Sequential(b("branch3x3_1", c_in, 384, 1),
                      nn.Concat(b("branch3x3_2a", 384, 384, (1, 3), padding=(0, 1)),
                                b("branch3x3_2b", 384, 384, (3, 1), padding=(1, 0)))),  # 768
        nn.Sequential(b("branch3x3dbl_1", c_in, 448, 1), b("branch3x3dbl_2", 448, 384, 3, padding=1),
                      nn.Concat(b("branch3x3dbl_3a", 384, 384, (1, 3), padding=(0, 1)),
                                b("branch3x3dbl_3b", 384, 384, (3, 1), padding=(1, 0)))),  # 768
        nn.Sequential(branch_pool, b("branch_pool", c_in, 192, 1)))                  # 192


class FIDInception(nn.Sequential):
    """The stages in order (stem layers, then the Mixed blocks, then pool3); ``convs`` maps pytorch-fid's
    BasicConv2d names to their (Conv2d, BatchNorm2d, ReLU) layers. Forward only: each stage's caches are
    dropped as soon as it has run, so memory holds one stage's intermediate arrays, not the whole network's.

    On NumPy the batch runs in slices (the images are independent: BatchNorm uses its running statistics):
    the stem ``stem_chunk`` images at a time, the Mixed blocks ``chunk`` at a time. At 147 x 147 one image's
    im2col matrix is 25 MB; a batch's arrays are hundreds of MB, above glibc's 32 MiB heap threshold
    (fast/process.py), so each would come fresh from the kernel, zero-filled page by page: that kernel time
    was a third of the CPU time at batch 32, and almost none of it in slices. The numbers are the same.
    """

    stem_stages = 7  # the layers up to the second max pool (192 x 35 x 35)

    def __init__(self, stages, convs, stem_chunk=1, chunk=8):
        super().__init__(*stages)
        self.convs, self.stem_chunk, self.chunk = convs, stem_chunk, chunk

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FID Inception: expected input of shape (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), "
                             f"got {tuple(x.shape)}")
        self.check_dtype(x, self.dtype)
        xp = array_module(x)
        stem, blocks = self.layers[:self.stem_stages], self.layers[self.stem_stages:]
        if xp is not np:  # a GPU wants the whole batch at once
            return _run(blocks, _run(stem, x))
        parts = [_run(stem, x[i:i + self.stem_chunk]) for i in range(0, len(x), self.stem_chunk)]
        N, C, H, W = len(x), *parts[0].shape[1:]
        h = np.empty((N, H, W, C), dtype=parts[0].dtype).transpose(0, 3, 1, 2)  # channels-last, as the parts
        np.concatenate(parts, out=h)
        return np.concatenate([_run(blocks, h[i:i + self.chunk]) for i in range(0, len(h), self.chunk)])

    def backward(self, dy, param_grads=True, need_dx=True):
        raise RuntimeError("the FID Inception network is forward only")


def _run(stages, x):
    """x through ``stages``, each stage's forward caches dropped after it (inference: no backward follows)."""
    for stage in stages:
        x = stage.forward(x)
        for m in stage.modules():
            m.cache = None
    return x


def build_fid_inception(dtype="float32"):
    """The FID Inception-v3 with placeholder weights, in eval mode: load them with ``load_fid_state``."""
    convs = {}
    stages = [
        _basic(convs, "Conv2d_1a_3x3", 3, 32, 3, stride=2),   # 3 x 299 x 299 -> 32 x 149 x 149
        _basic(convs, "Conv2d_2a_3x3", 32, 32, 3),            # -> 32 x 147 x 147
        _basic(convs, "Conv2d_2b_3x3", 32, 64, 3, padding=1),  # -> 64 x 147 x 147
        nn.MaxPool2d(3, stride=2),                            # -> 64 x 73 x 73
        _basic(convs, "Conv2d_3b_1x1", 64, 80, 1),            # -> 80 x 73 x 73
        _basic(convs, "Conv2d_4a_3x3", 80, 192, 3),           # -> 192 x 71 x 71
        nn.MaxPool2d(3, stride=2),                            # -> 192 x 35 x 35
        inception_a(convs, "Mixed_5b", 192, pool_features=32),  # -> 256 x 35 x 35
        inception_a(convs, "Mixed_5c", 256, pool_features=64),  # -> 288 x 35 x 35
        inception_a(convs, "Mixed_5d", 288, pool_features=64),  # -> 288 x 35 x 35
        inception_b(convs, "Mixed_6a", 288),                  # -> 768 x 17 x 17
        inception_c(convs, "Mixed_6b", 768, c7=128),          # -> 768 x 17 x 17
        inception_c(convs, "Mixed_6c", 768, c7=160),
        inception_c(convs, "Mixed_6d", 768, c7=160),
        inception_c(convs, "Mixed_6e", 768, c7=192),
        inception_d(convs, "Mixed_7a", 768),                  # -> 1280 x 8 x 8
        inception_e(convs, "Mixed_7b", 1280, pool="avg"),     # -> 2048 x 8 x 8   (FIDInceptionE_1)
        inception_e(convs, "Mixed_7c", 2048, pool="max"),     # -> 2048 x 8 x 8   (FIDInceptionE_2)
        nn.GlobalAvgPool2d(),                                 # -> 2048: pool3
    ]
    net = FIDInception(stages, convs)
    return net.to(dtype=dtype).eval()


# pytorch-fid's BasicConv2d tensors -> (layer index in our (Conv2d, BatchNorm2d, ReLU), attribute)
_TENSORS = {"conv.weight": (0, "W"), "bn.weight": (1, "gamma"), "bn.bias": (1, "beta"),
            "bn.running_mean": (1, "running_mean"), "bn.running_var": (1, "running_var")}
# what pytorch-fid's file may hold besides, unused by pool3: the classifier (1008 classes), an auxiliary head,
# BatchNorm's step counters
_IGNORED = ("fc.", "AuxLogits.")


def _array(layer, attr):
    """A layer's parameter's or buffer's array (written in place, never rebound)."""
    value = getattr(layer, attr)
    return value.data if isinstance(value, Parameter) else value


def fid_state_names(net):
    """Every name ``load_fid_state`` needs, with its shape: {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), ...}."""
    shapes = {}
    for name, layer in net.convs.items():
        for suffix, (i, attr) in _TENSORS.items():
            shapes[f"{name}.{suffix}"] = tuple(_array(layer[i], attr).shape)
    return shapes


def check_fid_state(net, arrays):
    """ValueError (one line) unless ``arrays`` has every tensor of ``net`` with its shape, float, finite;
    extra names other than the classifier, an auxiliary head and BatchNorm's counters are an error too."""
    wanted = fid_state_names(net)
    extra = sorted(k for k in arrays if k not in wanted and not k.startswith(_IGNORED)
                   and not k.endswith("num_batches_tracked"))
    missing = sorted(k for k in wanted if k not in arrays)
    if missing or extra:
        raise ValueError(f"not the FID Inception's weights: {len(missing)} missing (first: "
                         f"{', '.join(missing[:3]) or 'none'}), {len(extra)} unexpected "
                         f"(first: {', '.join(extra[:3]) or 'none'})")
    for k, shape in wanted.items():
        a = np.asarray(arrays[k])
        if tuple(a.shape) != shape:
            raise ValueError(f"not the FID Inception's weights: {k} has shape {tuple(a.shape)}, expected {shape}")
        if a.dtype.kind != "f":
            raise ValueError(f"not the FID Inception's weights: {k} is {a.dtype}, expected floats")
        if not np.isfinite(a).all():
            raise ValueError(f"not the FID Inception's weights: {k} holds non-finite values")


def load_fid_state(net, arrays):
    """Write pytorch-fid's state_dict tensors (``{name: array}``) into ``net`` (checked first: names, shapes,
    finite), cast to the network's dtype and backend. Returns ``net``."""
    check_fid_state(net, arrays)
    for name, layer in net.convs.items():
        for suffix, (i, attr) in _TENSORS.items():
            target = _array(layer[i], attr)
            target[...] = net.xp.asarray(np.asarray(arrays[f"{name}.{suffix}"]), dtype=target.dtype)
    return net
