"""Pictures of a training run: image grids, real-vs-generated panels, loss plots, a progress GIF,
and the metrics CSV they are drawn from.

Every function takes host NumPy arrays (convert device arrays with ``scratchgan.backend.to_numpy``).
Images are in [-1, 1] (a tanh generator's range) unless ``value_range`` says otherwise. Files are
written atomically, so a viewer or a crash never sees half a PNG.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..checkpoint import atomic_write
from ..data.transforms import to_uint8 as _to_uint8

__all__ = ["make_grid", "save_image_grid", "save_real_vs_fake", "plot_losses", "save_progress_gif",
           "read_metrics_csv", "MetricsCSV"]


# ---------------------------------------------------------------------------------------------
# image grids

def _as_host(a, what):
    """np.asarray, with a pointed message for device arrays instead of CuPy's generic TypeError."""
    if type(a).__module__.split(".")[0] == "cupy":
        raise TypeError(f"{what} is a CuPy array; convert it with scratchgan.backend.to_numpy first")
    return np.asarray(a)


def _to_nchw(images, image_shape=None):
    """Bring (N,H,W), (N,1|3,H,W) or (N,D) images to (N, C, H, W) with C in {1, 3}."""
    x = _as_host(images, "images")
    if x.ndim == 2:
        N, D = x.shape
        if image_shape is None:
            side = math.isqrt(D)
            if side * side != D:
                raise ValueError(f"images of shape {x.shape}: D={D} is not a perfect square; "
                                 "pass image_shape=(H, W) or (C, H, W)")
            image_shape = (side, side)
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) not in (2, 3) or math.prod(image_shape) != D:
            raise ValueError(f"image_shape {image_shape} does not fit vectors of length {D}; "
                             "expected (H, W) or (C, H, W) with product D")
        x = x.reshape((N,) + image_shape)
    elif image_shape is not None:
        raise ValueError(f"image_shape is only for flat (N, D) images; got images of shape {x.shape}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W), (N, 1, H, W), (N, 3, H, W) or (N, D); "
                         f"got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("images is empty (N = 0)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"images must be numeric, got dtype {x.dtype}")
    return x


def make_grid(images, nrow=None, padding=2, pad_value=1.0, image_shape=None, value_range=(-1.0, 1.0)):
    """Tile N images into one uint8 picture, ``nrow`` images per row (default ceil(sqrt(N))).

    Returns (H, W) for grayscale, (H, W, 3) for RGB; ``pad_value`` is in ``value_range`` units
    (1.0 = white for [-1, 1] images). Padding surrounds every tile, as torchvision's make_grid.
    """
    x = _to_nchw(images, image_shape)
    N, C, H, W = x.shape
    nrow = math.ceil(math.sqrt(N)) if nrow is None else int(nrow)
    padding = int(padding)
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    ncol_rows = math.ceil(N / nrow)
    tiles = _to_uint8(x, value_range)                                  # (N, C, H, W) uint8
    fill = _to_uint8(np.array([pad_value]), value_range)[0]
    grid = np.full((C, padding + ncol_rows * (H + padding), padding + nrow * (W + padding)),
                   fill, dtype=np.uint8)
    for i in range(N):
        r, c = divmod(i, nrow)
        top, left = padding + r * (H + padding), padding + c * (W + padding)
        grid[:, top:top + H, left:left + W] = tiles[i]
    return grid[0] if C == 1 else np.ascontiguousarray(grid.transpose(1, 2, 0))


def _upscale(img, scale):
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale}")
    if scale == 1:
        return img
    # NEAREST keeps pixels crisp: a 28 px digit becomes a block picture, not a blur.
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def _save_png(img, path):
    with atomic_write(path, durable=False) as f:
        img.save(f, format="PNG")
    return Path(path)


def save_image_grid(images, path, nrow=None, scale=1, padding=2, pad_value=1.0, image_shape=None,
                    value_range=(-1.0, 1.0)):
    """Write ``make_grid(images, ...)`` as a PNG, upscaled ``scale`` times; returns the path."""
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value,
                     image_shape=image_shape, value_range=value_range)
    return _save_png(_upscale(Image.fromarray(grid), scale), path)


def save_real_vs_fake(real, fake, path, nrow=None, scale=1, padding=2, image_shape=None,
                      value_range=(-1.0, 1.0), labels=("real", "generated")):
    """One PNG: the grid of ``real`` on the left, of ``fake`` on the right, each labelled above.

    Both grids use the same ``nrow`` and canvas size, so matching tiles line up side by side.
    """
    real_x, fake_x = _to_nchw(real, image_shape), _to_nchw(fake, image_shape)
    if real_x.shape[2:] != fake_x.shape[2:]:
        raise ValueError(f"real and fake images differ in size: {real_x.shape[2:]} vs {fake_x.shape[2:]}")
    nrow = math.ceil(math.sqrt(max(len(real_x), len(fake_x)))) if nrow is None else nrow
    kw = dict(nrow=nrow, padding=padding, pad_value=value_range[1], value_range=value_range)
    grids = [make_grid(x, **kw) for x in (real_x, fake_x)]
    rgb = any(g.ndim == 3 for g in grids)
    mode = "RGB" if rgb else "L"
    white = (255, 255, 255) if rgb else 255
    imgs = [_upscale(Image.fromarray(g).convert(mode), scale) for g in grids]
    gw, gh = max(i.width for i in imgs), max(i.height for i in imgs)

    label_h, gap = 16, max(8, 4 * int(scale))
    canvas = Image.new(mode, (2 * gw + gap, label_h + gh), white)
    draw = ImageDraw.Draw(canvas)
    for k, (img, label) in enumerate(zip(imgs, labels)):
        left = k * (gw + gap)
        canvas.paste(img, (left, label_h))
        draw.text((left + 2, 2), str(label), fill=(0, 0, 0) if rgb else 0)
    return _save_png(canvas, path)


# ---------------------------------------------------------------------------------------------
# loss plots

def _series(rows, key):
    """(steps, values) for ``key`` over rows where it holds a finite number."""
    steps, values = [], []
    for i, row in enumerate(rows):
        try:
            v = float(row[key])
        except (KeyError, TypeError, ValueError):  # absent, None, "" : the metric was not logged here
            continue
        if not math.isfinite(v):
            continue
        s = row.get("step", i)
        try:
            s = float(s)
        except (TypeError, ValueError):
            s = float(i)
        steps.append(s)
        values.append(v)
    return np.asarray(steps), np.asarray(values)


_PRETTY = {"D_x": "D(x)", "D_G_z": "D(G(z))"}


def _moving_average(v, window):
    """Trailing mean over ``window`` points, shorter at the start so the curve keeps its length."""
    c = np.cumsum(np.insert(v, 0, 0.0))
    n = np.arange(1, len(v) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def plot_losses(rows, path, keys=("loss_D", "loss_G"), extra_panels=None, smooth=None):
    """Plot ``keys`` vs step (light raw line + moving average), then D(x)/D(G(z)) and ``extra_panels``.

    ``rows`` are dicts like metrics.csv rows; panels whose keys are all absent are skipped.
    ``smooth`` is the moving-average window (default: about 1/50 of the points). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(rows)
    panels = [tuple(keys), ("D_x", "D_G_z")]
    for p in extra_panels or ():
        panels.append((p,) if isinstance(p, str) else tuple(p))
    data = []
    for panel in panels:
        series = [(k,) + _series(rows, k) for k in panel]
        series = [s for s in series if len(s[1])]
        if series:
            data.append((panel, series))

    # Figure + Agg canvas directly: no pyplot registry, so nothing leaks in a long training run.
    fig = Figure(figsize=(9, 2.8 * max(1, len(data))), layout="constrained")
    FigureCanvasAgg(fig)
    if not data:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    axes = [fig.add_subplot(len(data), 1, i + 1) for i in range(len(data))]
    for i, (ax, (panel, series)) in enumerate(zip(axes, data)):
        if i:
            ax.sharex(axes[0])
        for j, (key, steps, values) in enumerate(series):
            color = f"C{j}"
            window = smooth or max(1, len(values) // 50)
            if window > 1 and len(values) > 1:
                ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(steps, _moving_average(values, window), color=color, linewidth=1.5,
                        label=f"{_PRETTY.get(key, key)} (avg {window})")
            else:
                ax.plot(steps, values, color=color, linewidth=1.5, marker="." if len(values) < 50 else None,
                        label=_PRETTY.get(key, key))
        if panel == ("D_x", "D_G_z"):
            ax.axhline(0.5, color="gray", linewidth=0.8, linestyle=":")  # where D is fully confused
        ax.legend(loc="best", fontsize="small")
        ax.grid(True, alpha=0.3)
    if axes:
        axes[-1].set_xlabel("step")

    with atomic_write(path, durable=False) as f:
        fig.savefig(f, format="png", dpi=100)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# progress GIF

def _frame_image(frame):
    if isinstance(frame, (str, os.PathLike)):
        with Image.open(frame) as im:
            im.load()
            return im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    a = _as_host(frame, "frame")
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"GIF frames must be uint8 (H, W) or (H, W, 3) grids (make_grid's output) "
                         f"or image paths; got dtype {a.dtype}, shape {a.shape}")
    return Image.fromarray(a)


def save_progress_gif(frames, path, duration_ms=200, max_frames=200, hold_last_ms=None):
    """Animate ``frames`` (uint8 grids or image paths) into a looping GIF; returns the path.

    More than ``max_frames`` frames are subsampled evenly, first and last kept; the last frame is
    shown for ``hold_last_ms`` (default 5 x ``duration_ms``). Pillow merges identical consecutive frames.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("save_progress_gif needs at least one frame")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if len(frames) > max_frames:
        # Spacing (n-1)/(max_frames-1) >= 1, so rounding never repeats an index.
        idx = np.rint(np.linspace(0, len(frames) - 1, max_frames)).astype(int) if max_frames > 1 else [-1]
        frames = [frames[i] for i in idx]
    images = [_frame_image(f) for f in frames]
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise ValueError(f"GIF frames differ in size: {sorted(sizes)}")
    if any(im.mode == "RGB" for im in images):
        images = [im.convert("RGB") for im in images]
    hold = 5 * duration_ms if hold_last_ms is None else hold_last_ms
    durations = [int(duration_ms)] * (len(images) - 1) + [int(max(hold, duration_ms))]
    with atomic_write(path, durable=False) as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                       duration=durations, loop=0)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# metrics CSV

def _parse_cell(s):
    if s == "":
        return None
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def read_metrics_csv(path):
    """Rows of a metrics CSV as dicts; numbers parsed to int/float, blank cells to None."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _format_cell(v):
    """Shortest text that reads back to the same number (repr of a float, str of a NumPy float32)."""
    if v is None:
        return ""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, np.floating):  # before float: np.float64 subclasses float but reprs as "np.float64(..)"
        # NumPy's str is the shortest round-trip text for the value's own precision: float32 0.1
        # prints as 0.1, where float(v) would give 0.10000000149011612.
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


class MetricsCSV:
    """Append-only metrics log: one row per ``append(dict)``, flushed at once, resumable.

    The first row fixes the column order; a key first seen later becomes a new last column (the file
    is rewritten once with that header). Reopening an existing file continues it without a new header.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.fieldnames = []
        self._file = None
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                raw = f.read()
            if not raw.endswith(b"\n"):
                # The last row was cut off by a crash mid-write: drop it rather than glue the next row to it.
                cut = raw.rfind(b"\n") + 1
                with open(self.path, "r+b") as f:
                    f.truncate(cut)
                raw = raw[:cut]
            header = next(csv.reader(io.StringIO(raw.decode("utf-8"))), [])
            self.fieldnames = list(header)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _open(self):
        if self._file is None:
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        return self._file

    def append(self, row):
        """Write one row (missing keys become blank cells) and flush it to the OS."""
        new = [k for k in row if k not in self.fieldnames]
        if new and self.fieldnames:
            self._rewrite(self.fieldnames + new, self._read_raw_rows())
        elif new:
            self.fieldnames = list(new)
            f = self._open()
            csv.writer(f, lineterminator="\n").writerow(self.fieldnames)
        f = self._open()
        csv.writer(f, lineterminator="\n").writerow([_format_cell(row.get(k)) for k in self.fieldnames])
        f.flush()

    def _read_raw_rows(self):
        if self._file is not None:
            self._file.flush()
        if not self.path.exists():
            return []
        with open(self.path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, fieldnames, raw_rows):
        """Replace the file atomically with ``raw_rows`` (string cells) under ``fieldnames``."""
        self.close()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n", restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(raw_rows)
        with atomic_write(self.path) as f:
            f.write(buf.getvalue().encode("utf-8"))
        self.fieldnames = list(fieldnames)

    def truncate_after(self, step):
        """Drop rows with step > ``step`` (resuming from an earlier checkpoint); returns rows dropped."""
        if not self.fieldnames:
            return 0
        rows = self._read_raw_rows()
        kept = []
        for r in rows:
            try:
                later = float(r.get("step") or "nan") > step
            except ValueError:
                later = False
            if not later:
                kept.append(r)
        if len(kept) != len(rows):
            self._rewrite(self.fieldnames, kept)
        return len(rows) - len(kept)

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
