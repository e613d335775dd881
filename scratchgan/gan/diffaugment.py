"""DiffAugment (Zhao et al. 2020): random, differentiable augmentations of every batch D sees, real and fake,
in the D step and in the G step (where G's gradient flows back through them). Images x: (N, C, H, W); the
MLP's flat (N, 784) batches are viewed as (N, 1, 28, 28) and flattened back.

    color        brightness  y = x + (r - 1/2)                             r ~ U[0, 1) per image
                 saturation  y = (x - mean_C x) 2r + mean_C x              (identity for 1 channel)
                 contrast    y = (x - mean_CHW x)(r + 1/2) + mean_CHW x
    translation  y[n, :, i, j] = x[n, :, i + tx_n, j + ty_n], 0 outside; tx, ty in [-H/8, H/8] (rounded)
    cutout       y = x * mask, mask 0 on a square of side H/2 (rounded) at a random centre, 1 elsewhere
Backward, each op in reverse (docs/derivations/diffaugment.md):
    brightness dx = dy;  saturation dx = 2r dy + (1 - 2r) mean_C dy;  contrast dx = c dy + (1 - c) mean_CHW dy
    translation dx = the translation of dy by (-tx, -ty);  cutout dx = dy * mask
The random draws come from named streams of the step's NoiseSource (seeded by run seed, epoch and name,
counted in checkpoints), so a run is deterministic and resumes exactly.
"""
from __future__ import annotations

import math

from ..backend import array_module
from ..errors import SettingError

OPS = ("color", "translation", "cutout")
TRANSLATION_RATIO, CUTOUT_RATIO = 0.125, 0.5  # Zhao et al.'s defaults


def parse_policy(text):
    """"translation,cutout,color" -> ("translation", "cutout", "color"), applied in that order; ValueError else."""
    ops = tuple(p.strip() for p in str(text).split(",") if p.strip())
    bad = [p for p in ops if p not in OPS]
    if bad or not ops or len(set(ops)) != len(ops):
        why = f"unknown {bad[0]!r}" if bad else ("each at most once" if ops else "empty")
        raise SettingError("diffaugment", f"{text!r}: {why}; give a comma-separated list of {', '.join(OPS)}")
    return ops


# ----------------------------------------------------------------------------------- color
def brightness_forward(x, r):
    """y = x + (r - 1/2); r: (N, 1, 1, 1)."""
    return x + (r - 0.5)


def brightness_backward(dy, r):
    return dy  # a shift: dy/dx = 1


def saturation_forward(x, r):
    """y = (x - m) 2r + m with m the mean over the channels: (N, 1, H, W)."""
    m = x.mean(axis=1, keepdims=True)
    return (x - m) * (2.0 * r) + m


def saturation_backward(dy, r):
    """y_c = s x_c + (1 - s) m, dm/dx_c = 1/C:  dx = s dy + (1 - s) mean_C dy, s = 2r."""
    s = 2.0 * r
    return dy * s + dy.mean(axis=1, keepdims=True) * (1.0 - s)


def contrast_forward(x, r):
    """y = (x - m)(r + 1/2) + m with m the mean of each image over C, H, W: (N, 1, 1, 1)."""
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) * (r + 0.5) + m


def contrast_backward(dy, r):
    """As saturation with the mean over C, H, W and the factor c = r + 1/2."""
    c = r + 0.5
    return dy * c + dy.mean(axis=(1, 2, 3), keepdims=True) * (1.0 - c)


# ----------------------------------------------------------------------------------- translation
def translate(x, tx, ty):
    """y[n, :, i, j] = x[n, :, i + tx_n, j + ty_n], 0 where that is outside the image. tx, ty: (N,) integers.

    A zero-padded shift, so its own backward is a translation too: dx = translate(dy, -tx, -ty).
    """
    xp = array_module(x)
    N, C, H, W = x.shape
    rows = xp.arange(H)[None, :] + tx[:, None]  # (N, H): the source row of each output row
    cols = xp.arange(W)[None, :] + ty[:, None]  # (N, W)
    inside = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]  # (N, H, W)
    n = xp.arange(N)[:, None, None]
    gathered = x.transpose(0, 2, 3, 1)[n, rows.clip(0, H - 1)[:, :, None], cols.clip(0, W - 1)[:, None, :]]
    return gathered.transpose(0, 3, 1, 2) * inside[:, None].astype(x.dtype)  # (N, H, W, C) -> (N, C, H, W)


def translation_backward(dy, tx, ty):
    """y_i = x_{i+t} (0 outside) is a partial permutation; its transpose moves dy back: dx_k = dy_{k-t}."""
    return translate(dy, -tx, -ty)


# ----------------------------------------------------------------------------------- cutout
def cutout_mask(shape, cx, cy, size, dtype, xp):
    """(N, 1, H, W): 0 on rows [cx - sH//2, cx - sH//2 + sH) x columns likewise (clipped), 1 elsewhere."""
    N, _, H, W = shape
    sH, sW = size
    r0, c0 = cx - sH // 2, cy - sW // 2  # (N,): top-left corner of each square
    rows, cols = xp.arange(H)[None, :], xp.arange(W)[None, :]
    in_rows = (rows >= r0[:, None]) & (rows < r0[:, None] + sH)  # (N, H)
    in_cols = (cols >= c0[:, None]) & (cols < c0[:, None] + sW)  # (N, W)
    return (~(in_rows[:, :, None] & in_cols[:, None, :]))[:, None].astype(dtype)


def cutout_forward(x, mask):
    return x * mask  # (N, C, H, W) * (N, 1, H, W)


def cutout_backward(dy, mask):
    return dy * mask


# ----------------------------------------------------------------------------------- the pipeline
class DiffAugment:
    """``DiffAugment("translation,cutout,color", draw)``; ``y, cache = aug.forward(x)``, ``dx = aug.backward(dy,
    cache)``. ``draw(name, shape, "uniform")`` returns U[0, 1) draws on the device (NoiseSource.extra)."""

    def __init__(self, policy, draw):
        self.ops, self.draw = parse_policy(policy), draw

    def _uniform(self, name, N, k=1):
        return self.draw(name, (N, k), "uniform")

    def _integers(self, name, N, low, count):
        """(N,) and (N,) integers in [low[k], low[k] + count[k]) for k = 0, 1: Zhao's randint, from U[0, 1) draws."""
        u = self._uniform(name, N, 2)
        xp = array_module(u)
        out = []
        for k in (0, 1):
            i = xp.minimum(xp.floor(u[:, k] * count[k]), count[k] - 1)  # u * count can round up to count in float32
            out.append(i.astype(xp.int64) + low[k])
        return out

    def _images(self, x):
        """(N, C, H, W) view of x: the MLP's flat (N, D) batches as (N, 1, sqrt D, sqrt D)."""
        if x.ndim == 4:
            return x
        side = math.isqrt(x.shape[1]) if x.ndim == 2 else 0
        if x.ndim != 2 or side * side != x.shape[1]:
            raise SettingError("diffaugment", f"works on images (N, C, H, W) or square grey images flattened to "
                             f"(N, H*W), got a batch of shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], 1, side, side)

    def forward(self, x):
        """Augment a batch with fresh random draws; returns (y shaped as x, cache for backward)."""
        h = self._images(x)
        N, _, H, W = h.shape
        xp = array_module(h)
        steps = []
        for op in self.ops:
            if op == "color":
                for name, fwd in (("brightness", brightness_forward), ("saturation", saturation_forward),
                                  ("contrast", contrast_forward)):
                    r = self._uniform(name, N).reshape(N, 1, 1, 1).astype(h.dtype, copy=False)
                    h = fwd(h, r)
                    steps.append((name, r))
            elif op == "translation":
                sx, sy = int(H * TRANSLATION_RATIO + 0.5), int(W * TRANSLATION_RATIO + 0.5)
                tx, ty = self._integers("translation", N, (-sx, -sy), (2 * sx + 1, 2 * sy + 1))
                h = translate(h, tx, ty)
                steps.append(("translation", (tx, ty)))
            else:
                size = (int(H * CUTOUT_RATIO + 0.5), int(W * CUTOUT_RATIO + 0.5))
                # Zhao's range of centres: [0, H + (1 - size % 2)), the square clipped at the border
                cx, cy = self._integers("cutout", N, (0, 0), (H + 1 - size[0] % 2, W + 1 - size[1] % 2))
                mask = cutout_mask(h.shape, cx, cy, size, h.dtype, xp)
                h = cutout_forward(h, mask)
                steps.append(("cutout", mask))
        return h.reshape(x.shape), (steps, x.shape)

    def backward(self, dy, cache):
        """dL/dx from dL/dy through the ops of that forward, in reverse."""
        steps, shape = cache
        d = self._images(dy)
        for name, p in reversed(steps):
            if name == "translation":
                d = translation_backward(d, *p)
            elif name == "cutout":
                d = cutout_backward(d, p)
            else:
                d = {"brightness": brightness_backward, "saturation": saturation_backward,
                     "contrast": contrast_backward}[name](d, p)
        return d.reshape(shape)
