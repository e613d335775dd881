"""Image folders: scan, transform (Resize + CenterCrop), skipped files, the atomic cache, the demo folder."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from scratchgan.data import BatchLoader, DataError, load_image_folder, make_demo_folder, open_image_folder
from scratchgan.data import folder as folder_mod

S = 16  # model size in these tests: small and fast


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    """Every cache of these tests lives under tmp_path (the default cache root is SCRATCHGAN_DATA)."""
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def noise(h, w, seed, c=3):
    shape = (h, w, c) if c > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(path, img, fmt=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def reference(img, size, mode="RGB"):
    """torchvision's Resize(size) + CenterCrop(size) on a PIL image, written out independently."""
    img = img.convert(mode)
    w, h = img.size
    ow, oh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize((ow, oh), Image.Resampling.BICUBIC)
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    x = np.asarray(img.crop((left, top, left + size, top + size)))
    return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)


GOOD = ["a_rgb.png", "b.jpg", "sub/c_gray.png", "sub/deeper/d_rgba.png", "sub/e_pal.png", "z_big.PNG"]
BAD = ["bad.jpg", "empty.png", "sub/trunc.png"]


@pytest.fixture
def image_dir(tmp_path):
    """Mixed sizes, modes and formats in nested folders; hidden files; corrupt files; a .txt."""
    root = tmp_path / "imgs"
    save(root / "a_rgb.png", Image.fromarray(noise(80, 50, 1)))                    # 50 x 80 (w x h), tall
    save(root / "b.jpg", Image.fromarray(noise(60, 60, 2)), "JPEG", quality=90)    # 60 x 60 (< 4 S: full decode)
    save(root / "sub/c_gray.png", Image.fromarray(noise(40, 64, 3, c=1), "L"))      # 64 x 40, wide, grey
    save(root / "sub/deeper/d_rgba.png", Image.fromarray(noise(64, 64, 4, c=4), "RGBA"))
    save(root / "sub/e_pal.png", Image.fromarray(noise(30, 30, 5)).quantize(16))    # P mode, upscaled
    save(root / "z_big.PNG", Image.fromarray(noise(33, 47, 6)))                     # upper-case suffix
    # hidden: never read
    save(root / ".hidden.png", Image.fromarray(noise(20, 20, 7)))
    save(root / ".cache/inside_hidden_dir.png", Image.fromarray(noise(20, 20, 8)))
    # corrupt: skipped and counted
    (root / "bad.jpg").write_bytes(np.random.default_rng(9).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(noise(60, 60, 10)).save(buf, "PNG")
    (root / "sub/trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    # not an image: ignored silently
    (root / "notes.txt").write_text("not an image\n")
    return root


def test_shapes_order_and_skipped_files_logged_once(image_dir, tmp_path):
    lines = []
    result = open_image_folder(image_dir, image_size=S, cache_dir=tmp_path / "cache", log=lines.append)
    images = result.images
    assert isinstance(images, np.memmap) and images.dtype == np.uint8
    assert images.shape == (len(GOOD), 3, S, S)
    assert not images.flags.writeable  # the cache is mapped read-only
    assert list(result.files) == sorted(GOOD)
    assert result.num_skipped == len(BAD) and sorted(rel for rel, _ in result.skipped) == sorted(BAD)
    reasons = dict(result.skipped)
    assert reasons["empty.png"] == "empty file" and "truncated" in reasons["sub/trunc.png"]
    assert not result.from_cache
    skip_lines = [line for line in lines if "unreadable" in line]
    assert len(skip_lines) == 1 and "skipped 3 unreadable images of 9" in skip_lines[0]
    assert all(name in skip_lines[0] for name in BAD) and "\n" not in skip_lines[0]
    assert lines[0].startswith(f"decoding 9 images from {image_dir}")
    assert lines[-1].startswith(f"decoded {len(GOOD)} images from") and " s (" in lines[-1]
    # every row is exactly the tutorial's transform of its file (JPEG: the same decoder, so exact too)
    for i, rel in enumerate(result.files):
        with Image.open(image_dir / rel) as img:
            np.testing.assert_array_equal(images[i], reference(img, S), err_msg=rel)


def test_center_crop_keeps_the_middle_of_wide_and_tall_images(tmp_path):
    # red | green | red, 160 x 32: resized to 80 x 16, the crop keeps source columns 64..96, deep inside
    # the green band 48..112 (the bicubic footprint is 4 source pixels): all green. A squash would not be.
    red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    wide = np.zeros((32, 160, 3), np.uint8)
    wide[:, :48], wide[:, 48:112], wide[:, 112:] = red, green, red
    tall = np.zeros((160, 32, 3), np.uint8)
    tall[:48], tall[48:112], tall[112:] = blue, green, blue
    root = tmp_path / "bands"
    save(root / "tall.png", Image.fromarray(tall))
    save(root / "wide.png", Image.fromarray(wide))
    images = load_image_folder(root, image_size=S, cache_dir=tmp_path / "cache")
    assert images.shape == (2, 3, S, S)
    expected = np.broadcast_to(np.array(green, np.uint8)[:, None, None], (3, S, S))
    np.testing.assert_array_equal(images[0], expected)  # tall.png
    np.testing.assert_array_equal(images[1], expected)  # wide.png
    squashed = np.asarray(Image.fromarray(wide).resize((S, S), Image.Resampling.BICUBIC))
    assert squashed[:, 0, 0].min() > 200  # (a plain resize would keep red at the borders)


@pytest.mark.parametrize("width, left", [(40, 12), (41, 12), (43, 14), (16, 0)])
def test_crop_offsets_are_torchvisions(tmp_path, width, left):
    # no resampling (the short side is already S): pixel value = column index, so the crop is readable.
    # offset = int(round((w - S) / 2)): 41 -> round(12.5) = 12 (half to even, as torchvision), 43 -> 14
    x = np.tile(np.arange(width, dtype=np.uint8), (S, 1))   # (S, width)
    root = tmp_path / f"cols{width}"
    save(root / "x.png", Image.fromarray(x, "L"))
    images = load_image_folder(root, image_size=S, channels=1, cache_dir=tmp_path / "cache")
    assert images.shape == (1, 1, S, S)
    np.testing.assert_array_equal(images[0, 0], np.tile(np.arange(left, left + S, dtype=np.uint8), (S, 1)))
    tall = load_image_folder(_transposed(root, tmp_path / f"rows{width}"), image_size=S, channels=1,
                             cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(tall[0, 0], np.tile(np.arange(left, left + S, dtype=np.uint8), (S, 1)).T)


def _transposed(src, dst):
    with Image.open(src / "x.png") as img:
        save(dst / "x.png", img.transpose(Image.Transpose.TRANSPOSE))
    return dst


def test_grayscale_channels(image_dir, tmp_path):
    result = open_image_folder(image_dir, image_size=S, channels="L", cache_dir=tmp_path / "cache")
    assert result.images.shape == (len(GOOD), 1, S, S) and result.images.dtype == np.uint8
    for i, rel in enumerate(result.files):
        with Image.open(image_dir / rel) as img:
            np.testing.assert_array_equal(result.images[i], reference(img, S, "L"), err_msg=rel)
    assert np.array_equal(load_image_folder(image_dir, S, 1, cache_dir=tmp_path / "cache"), result.images)
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(image_dir, S, channels=2, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="image_size"):
        load_image_folder(image_dir, 0, cache_dir=tmp_path / "cache")


def test_deterministic_whatever_the_threads(image_dir, tmp_path):
    one = open_image_folder(image_dir, S, cache_dir=tmp_path / "c1", workers=1)
    many = open_image_folder(image_dir, S, cache_dir=tmp_path / "c2", workers=4)
    assert one.files == many.files == tuple(sorted(GOOD))
    np.testing.assert_array_equal(one.images, many.images)


def test_default_cache_is_under_scratchgan_data(image_dir, data_home):
    result = open_image_folder(image_dir, S)
    assert result.cache_path.parent == data_home / "folders" and result.cache_path.is_file()
    assert result.cache_path.with_suffix(".json").is_file()


def test_second_call_reads_the_cache_and_decodes_nothing(image_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = np.array(load_image_folder(image_dir, S, cache_dir=cache))

    def no_decoding(*args, **kwargs):
        raise AssertionError("Image.open called: the cache was not used")

    monkeypatch.setattr(Image, "open", no_decoding)
    lines = []
    again = open_image_folder(image_dir, S, cache_dir=cache, log=lines.append)
    assert again.from_cache and again.num_skipped == len(BAD)
    np.testing.assert_array_equal(again.images, first)
    assert len(lines) == 1 and lines[0].startswith("using the cached") and "3 unreadable files left out" in lines[0]


def test_cache_is_rebuilt_when_a_file_is_added_or_changed(image_dir, tmp_path):
    cache = tmp_path / "cache"
    before = open_image_folder(image_dir, S, cache_dir=cache)
    n = len(before.images)
    # added
    save(image_dir / "sub/new.png", Image.fromarray(noise(20, 30, 11)))
    added = open_image_folder(image_dir, S, cache_dir=cache)
    assert not added.from_cache and len(added.images) == n + 1 and "sub/new.png" in added.files
    assert added.cache_path != before.cache_path
    # changed: same name, new content (and a new mtime)
    white = Image.new("RGB", (50, 80), (255, 255, 255))
    save(image_dir / "a_rgb.png", white)
    st = os.stat(image_dir / "a_rgb.png")
    os.utime(image_dir / "a_rgb.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = open_image_folder(image_dir, S, cache_dir=cache)
    assert not changed.from_cache and len(changed.images) == n + 1
    assert (changed.images[changed.files.index("a_rgb.png")] == 255).all()
    # only the newest cache of this folder and size is kept
    assert sorted(p.name for p in cache.glob("*.npy")) == [changed.cache_path.name]
    # a different size is another cache, beside it
    other = open_image_folder(image_dir, 8, cache_dir=cache)
    assert other.images.shape[-1] == 8 and len(list(cache.glob("*.npy"))) == 2


def test_partial_cache_files_are_never_used(image_dir, tmp_path):
    cache = tmp_path / "cache"
    good = open_image_folder(image_dir, S, cache_dir=cache)
    expected = np.array(good.images)
    npy, manifest = good.cache_path, good.cache_path.with_suffix(".json")
    # 1) a leftover temp file of a killed run, full of garbage: ignored (and reported)
    leftover = cache / f".{npy.stem}.abc123.part.npy"
    leftover.write_bytes(b"\x93NUMPY garbage")
    # 2) a final .npy whose manifest never got written (killed between the two renames)
    del good
    manifest.unlink()
    np.save(npy, np.zeros_like(expected))
    lines = []
    result = open_image_folder(image_dir, S, cache_dir=cache, log=lines.append)
    assert not result.from_cache
    np.testing.assert_array_equal(result.images, expected)
    assert any("partial cache file" in line for line in lines)
    # 3) a manifest beside a truncated .npy: rebuilt too
    del result
    npy.write_bytes(npy.read_bytes()[:200])
    rebuilt = open_image_folder(image_dir, S, cache_dir=cache)
    assert not rebuilt.from_cache
    np.testing.assert_array_equal(rebuilt.images, expected)


def test_interrupted_decoding_leaves_nothing_behind(image_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = []
    real = folder_mod.decode_image

    def interrupted(path, *args):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, *args)

    monkeypatch.setattr(folder_mod, "decode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_image_folder(image_dir, S, cache_dir=cache, workers=1)
    assert list(cache.iterdir()) == []  # no temp file, no .npy, no manifest
    monkeypatch.setattr(folder_mod, "decode_image", real)
    assert load_image_folder(image_dir, S, cache_dir=cache).shape == (len(GOOD), 3, S, S)


def test_missing_empty_and_unreadable_folders(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="does not exist") as e:
        load_image_folder(tmp_path / "nowhere", S, cache_dir=cache)
    assert str(tmp_path / "nowhere") in str(e.value)
    (tmp_path / "afile.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is not a folder"):
        load_image_folder(tmp_path / "afile.png", S, cache_dir=cache)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files") as e:
        load_image_folder(empty, S, cache_dir=cache)
    assert str(empty) in str(e.value) and "found nothing" in str(e.value)
    (empty / "readme.txt").write_text("hi")
    save(empty / ".hidden.png", Image.new("RGB", (8, 8)))
    with pytest.raises(DataError, match=r"found only 1 other file \(readme.txt\)"):
        load_image_folder(empty, S, cache_dir=cache)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    (broken / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match="none of its 2 image files could be read") as e:
        load_image_folder(broken, S, cache_dir=cache)
    message = str(e.value)
    assert str(broken) in message and "a.jpg" in message and "\n" not in message
    assert [p for p in cache.iterdir() if p.suffix in (".npy", ".json") or ".part" in p.name] == []


def test_memmap_feeds_the_batch_loader(image_dir, tmp_path):
    images = load_image_folder(image_dir, S, cache_dir=tmp_path / "cache")
    loader = BatchLoader(images, batch_size=4, flatten=False)
    batches = list(loader.epoch(0))
    assert len(batches) == len(GOOD) // 4
    x = batches[0]
    assert x.shape == (4, 3, S, S) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    expected = images[loader.permutation(0)[:4]].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(x, expected)  # the same float32 operations (x / 127.5 - 1): the same bits


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    x = (np.arange(S * S, dtype=np.uint16).reshape(S, S) * 257)  # 0 .. 65535 in steps of 257
    root = tmp_path / "deep"
    save(root / "g16.png", Image.fromarray(x))
    images = load_image_folder(root, S, channels=1, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(images[0, 0], (x // 257).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    x = np.zeros((S, 2 * S, 3), np.uint8)   # 32 wide, 16 tall: left half red, right half blue
    x[:, :S] = (255, 0, 0)
    x[:, S:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": shown 16 wide, 32 tall, red on top
    root = tmp_path / "exif"
    save(root / "r.png", Image.fromarray(x), exif=exif)
    images = load_image_folder(root, S, cache_dir=tmp_path / "cache")  # no resampling: S is the short side
    # shown upright: 16 x 32 with red on top; the centre crop keeps rows 8..24: 8 red rows over 8 blue
    img = images[0].transpose(1, 2, 0)
    assert (img[: S // 2] == (255, 0, 0)).all() and (img[S // 2:] == (0, 0, 255)).all()


def test_large_jpegs_decode_at_reduced_scale_close_to_full(tmp_path):
    rng = np.random.default_rng(12)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 15, 3), dtype=np.uint8))
                        .resize((300, 240), Image.Resampling.BICUBIC))  # smooth content, 300 x 240
    root = tmp_path / "big"
    save(root / "photo.jpg", Image.fromarray(smooth), "JPEG", quality=95)
    images = load_image_folder(root, S, cache_dir=tmp_path / "cache")   # 240 >= 4 * 16: draft path
    with Image.open(root / "photo.jpg") as img:
        full = reference(img, S)
    diff = np.abs(images[0].astype(int) - full)
    assert diff.mean() < 2.0 and diff.max() <= 16


def test_make_demo_folder(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    paths = make_demo_folder(tmp_path / "demo", grey, size=32, n=25, seed=3, per_folder=10)
    assert len(paths) == 25 and all(p.is_file() for p in paths)
    assert sorted({p.parent.name for p in paths}) == ["part-00", "part-01", "part-02"]
    assert [p.name for p in paths[:2]] == ["000000.png", "000001.png"]
    again = make_demo_folder(tmp_path / "demo2", grey, size=32, n=25, seed=3, per_folder=10)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]   # deterministic in the seed
    other = make_demo_folder(tmp_path / "demo3", grey, size=32, n=25, seed=4, per_folder=10)
    assert [p.read_bytes() for p in paths] != [p.read_bytes() for p in other]
    with Image.open(paths[0]) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    images = load_image_folder(tmp_path / "demo", 32, cache_dir=tmp_path / "cache")
    assert images.shape == (25, 3, 32, 32)
    # tinted: the three channels differ (a coloured picture, not a grey one)
    assert np.abs(images[:, 0].astype(int) - images[:, 1]).mean() > 5
    with pytest.raises(DataError, match="not empty"):
        make_demo_folder(tmp_path / "demo", grey, size=32, n=5)
    jpegs = make_demo_folder(tmp_path / "demo_jpeg", grey, size=32, n=50, format="jpeg")
    assert len(jpegs) == 40 and all(p.suffix == ".jpg" for p in jpegs)   # n is capped at len(images)
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]      # no temp folder left


def test_progress_bar_on_request(image_dir, tmp_path, capsys):
    load_image_folder(image_dir, S, cache_dir=tmp_path / "cache", progress=True)
    err = capsys.readouterr().err
    assert "decoding" in err and "/9 " in err  # a tqdm bar on stderr (leave=False: cleared at the end)
    load_image_folder(image_dir, S, cache_dir=tmp_path / "cache2", log=lambda line: None)  # not a tty: no bar
    assert capsys.readouterr().err == ""
