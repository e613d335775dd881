"""Image grids, real-vs-fake panels, loss plots, progress GIFs and the metrics CSV."""
import csv

import numpy as np
import pytest
from PIL import Image

from scratchgan.run.viz import (
    MetricsCSV,
    make_grid,
    plot_losses,
    read_metrics_csv,
    save_image_grid,
    save_progress_gif,
    save_real_vs_fake,
)


def _no_tmp(directory):
    return not any(p.name.endswith(".tmp") for p in directory.iterdir())


# ----------------------------------------------------------------------------- make_grid

def test_grid_layout_and_values():
    # 3 images of 2x2: -1 (black), 0 (mid grey), 1 (white); nrow defaults to ceil(sqrt(3)) = 2.
    x = np.stack([np.full((2, 2), v) for v in (-1.0, 0.0, 1.0)]).astype(np.float32)
    g = make_grid(x, padding=1, pad_value=-1.0)
    assert g.dtype == np.uint8 and g.shape == (1 + 2 * 3, 1 + 2 * 3)   # 2 rows x 2 cols of (2+1)
    assert (g[1:3, 1:3] == 0).all()          # image 0 at row 0, col 0
    assert (g[1:3, 4:6] == 128).all()        # image 1 at row 0, col 1; 127.5 rounds to 128
    assert (g[4:6, 1:3] == 255).all()        # image 2 at row 1, col 0
    assert (g[4:6, 4:6] == 0).all()          # empty slot filled with pad_value -1 -> 0
    assert (g[0, :] == 0).all() and (g[:, 3] == 0).all()   # padding rows/columns


def test_grid_clips_and_handles_nan():
    x = np.array([[[-5.0, 5.0], [np.nan, 0.5]]])
    g = make_grid(x, padding=0)
    np.testing.assert_array_equal(g, [[0, 255], [0, 191]])   # (0.5+1)/2*255 = 191.25


def test_grid_default_padding_is_white():
    g = make_grid(-np.ones((4, 3, 3)))
    assert g.shape == (2 + 2 * 5, 2 + 2 * 5)
    assert (g[:2] == 255).all() and (g[2:5, 2:5] == 0).all()


@pytest.mark.parametrize("shape", [(10, 28, 28), (10, 1, 28, 28), (10, 784)])
def test_grid_gray_inputs_agree(shape):
    rng = np.random.default_rng(0)
    base = rng.uniform(-1, 1, (10, 28, 28))
    g = make_grid(base.reshape(shape), nrow=5)
    assert g.shape == (2 + 2 * 30, 2 + 5 * 30)
    np.testing.assert_array_equal(g, make_grid(base, nrow=5))


def test_grid_rgb():
    x = np.zeros((2, 3, 4, 5), dtype=np.float32)
    x[0, 0] = 1.0       # red
    x[1, 2] = 1.0       # blue
    g = make_grid(x, nrow=2, padding=0, value_range=(0.0, 1.0))
    assert g.shape == (4, 10, 3)
    assert tuple(g[0, 0]) == (255, 0, 0) and tuple(g[0, 5]) == (0, 0, 255)


def test_grid_image_shape_for_flat_vectors():
    x = np.linspace(-1, 1, 2 * 3 * 4).reshape(2, 12)
    g = make_grid(x, image_shape=(3, 4), padding=0, nrow=2)
    assert g.shape == (3, 8)
    rgb = make_grid(np.zeros((2, 3 * 2 * 2)), image_shape=(3, 2, 2), padding=0)
    assert rgb.shape == (2, 4, 3)


@pytest.mark.parametrize("bad, kw, msg", [
    (np.zeros((4, 10)), {}, "perfect square"),
    (np.zeros((4, 12)), {"image_shape": (5, 5)}, "does not fit"),
    (np.zeros((4, 2, 5, 5)), {}, "got shape"),
    (np.zeros((5, 5)).ravel(), {}, "got shape"),
    (np.zeros((0, 5, 5)), {}, "empty"),
    (np.zeros((4, 5, 5)), {"image_shape": (5, 5)}, "only for flat"),
    (np.zeros((4, 5, 5)), {"nrow": 0}, "nrow"),
])
def test_grid_bad_inputs(bad, kw, msg):
    with pytest.raises(ValueError, match=msg):
        make_grid(bad, **kw)


# ----------------------------------------------------------------------------- PNG files

def test_save_image_grid_scaled(tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, (16, 784)).astype(np.float32)
    path = save_image_grid(x, tmp_path / "a" / "b" / "grid.png", scale=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert im.size == (3 * (2 + 4 * 30), 3 * (2 + 4 * 30))
        up = np.asarray(im)
    g = make_grid(x)
    np.testing.assert_array_equal(up[::3, ::3], g)   # NEAREST: every 3x3 block is one pixel
    assert _no_tmp(path.parent)


def test_real_vs_fake(tmp_path):
    rng = np.random.default_rng(2)
    real, fake = -np.ones((16, 784)), np.ones((9, 1, 28, 28))
    path = save_real_vs_fake(real, fake, tmp_path / "rvf.png")
    with Image.open(path) as im:
        a = np.asarray(im)
        assert im.mode == "L"
    side = 2 + 4 * 30                   # both grids 4 per row (from the larger N = 16)
    assert a.shape[1] > 2 * side and a.shape[0] > side
    label_h = a.shape[0] - side
    assert (a[:label_h] < 128).any()    # some dark label text above the grids
    left, right = a[label_h:, :side], a[label_h:, -side:]
    assert left.shape == right.shape
    assert (left[2:30, 2:30] == 0).all() and (right[2:30, 2:30] == 255).all()
    rgb = save_real_vs_fake(rng.uniform(-1, 1, (4, 3, 8, 8)), rng.uniform(-1, 1, (4, 1, 8, 8)),
                            tmp_path / "rgb.png", scale=2)
    with Image.open(rgb) as im:
        assert im.mode == "RGB"
    with pytest.raises(ValueError, match="differ in size"):
        save_real_vs_fake(np.zeros((4, 784)), np.zeros((4, 8, 8)), tmp_path / "x.png")


# ----------------------------------------------------------------------------- loss plots

def _rows(n=300):
    rng = np.random.default_rng(3)
    return [{"step": i, "loss_D": 1.3 + 0.1 * rng.standard_normal(), "loss_G": 0.8 + 0.1 * rng.standard_normal(),
             "D_x": 0.6, "D_G_z": 0.4, "fid": (50.0 - i / 10 if i % 100 == 0 else None)} for i in range(n)]


def test_plot_losses_png(tmp_path):
    path = plot_losses(_rows(), tmp_path / "plots" / "losses.png", extra_panels=[("fid",), ("nope",)])
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG"
    with Image.open(path) as im:
        h3 = im.size[1]
    # fewer panels -> shorter figure: 3 panels (losses, D, fid) above, 1 here
    short = plot_losses([{"step": 0, "loss_D": 1.0, "loss_G": 2.0}], tmp_path / "one.png")
    with Image.open(short) as im:
        assert im.size[1] < h3
    assert _no_tmp(tmp_path / "plots")


def test_plot_losses_from_csv_strings_and_empty(tmp_path):
    rows = [{"step": "1", "loss_D": "0.5", "loss_G": ""}, {"step": "2", "loss_D": "nan", "loss_G": "0.7"}]
    assert plot_losses(rows, tmp_path / "s.png").stat().st_size > 0
    assert plot_losses([], tmp_path / "empty.png").stat().st_size > 0


def test_plot_losses_leaks_no_pyplot_figures(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(plt.get_fignums())
    for _ in range(3):
        plot_losses(_rows(50), tmp_path / "l.png")
    assert len(plt.get_fignums()) == n


# ----------------------------------------------------------------------------- GIF

def _frames(n, size=(10, 12)):
    return [np.full(size, (7 * i) % 256, dtype=np.uint8) for i in range(n)]


def test_gif_frames_loop_and_hold(tmp_path):
    path = save_progress_gif(_frames(5), tmp_path / "g" / "p.gif", duration_ms=100)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 5 and im.info["loop"] == 0
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert durations[:-1] == [100] * 4 and durations[-1] == 500
    assert _no_tmp(path.parent)


def test_gif_subsamples_keeping_first_and_last(tmp_path):
    frames = _frames(37)
    path = save_progress_gif(frames, tmp_path / "p.gif", max_frames=10)
    with Image.open(path) as im:
        assert im.n_frames == 10
        first = np.asarray(im.convert("L"))
        im.seek(9)
        last = np.asarray(im.convert("L"))
    np.testing.assert_array_equal(first, frames[0])
    np.testing.assert_array_equal(last, frames[-1])


def test_gif_from_png_paths_and_rgb(tmp_path):
    rng = np.random.default_rng(4)
    paths = [save_image_grid(rng.uniform(-1, 1, (4, 3, 6, 6)), tmp_path / f"f{i}.png") for i in range(3)]
    path = save_progress_gif(paths, tmp_path / "p.gif")
    with Image.open(path) as im:
        assert im.n_frames == 3
    with pytest.raises(ValueError, match="differ in size"):
        save_progress_gif(_frames(2) + _frames(1, (5, 5)), tmp_path / "x.gif")
    with pytest.raises(ValueError, match="uint8"):
        save_progress_gif([np.zeros((4, 4))], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="at least one"):
        save_progress_gif([], tmp_path / "x.gif")


# ----------------------------------------------------------------------------- metrics CSV

def test_metrics_csv_append_and_precision(tmp_path):
    path = tmp_path / "run" / "metrics.csv"
    with MetricsCSV(path) as m:
        m.append({"step": 1, "loss_D": 0.1 + 0.2, "loss_G": np.float32(0.1), "D_x": np.array(0.25)})
        m.append({"loss_G": 2.0, "step": 2})            # order of the first row kept; missing -> blank
        # flushed per row: another reader sees both rows before close
        assert len(read_metrics_csv(path)) == 2
    text = path.read_text().splitlines()
    assert text[0] == "step,loss_D,loss_G,D_x"
    assert text[1] == "1,0.30000000000000004,0.1,0.25"
    assert text[2] == "2,,2.0,"
    rows = read_metrics_csv(path)
    assert rows[0] == {"step": 1, "loss_D": 0.1 + 0.2, "loss_G": 0.1, "D_x": 0.25}
    assert rows[1]["loss_D"] is None and isinstance(rows[1]["step"], int)


def test_metrics_csv_resume_and_truncate(tmp_path):
    path = tmp_path / "metrics.csv"
    m = MetricsCSV(path)
    for s in range(1, 11):
        m.append({"step": s, "loss": s / 10})
    m.close()
    m = MetricsCSV(path)                     # resume: no second header
    assert m.fieldnames == ["step", "loss"]
    assert m.truncate_after(6) == 4           # resumed from the checkpoint at step 6
    m.append({"step": 7, "loss": 0.77})
    m.close()
    rows = read_metrics_csv(path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7] and rows[-1]["loss"] == 0.77
    assert path.read_text().count("step") == 1
    assert _no_tmp(tmp_path)


def test_metrics_csv_new_column_and_cut_last_line(tmp_path):
    path = tmp_path / "metrics.csv"
    with MetricsCSV(path) as m:
        m.append({"step": 1, "loss": 1.0})
        m.append({"step": 2, "loss": 0.5, "fid": 42.0})   # an eval metric appears later
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert lines == [["step", "loss", "fid"], ["1", "1.0", ""], ["2", "0.5", "42.0"]]
    with open(path, "a") as f:
        f.write("3,0.2")                      # a crash mid-row left no newline
    with MetricsCSV(path) as m:
        m.append({"step": 3, "loss": 0.25})
    rows = read_metrics_csv(path)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["loss"] == 0.25
