"""scratchgan.eval.fid_weights: the cache, the conversion to .npz and its checks, the download's checksum, the
offline line. The published file cannot be fetched here: a state dict of the right names and shapes, saved by
torch, stands in for it (the real tensors are read in test_inception_parity.py)."""
import hashlib

import numpy as np
import pytest

from scratchgan.eval import fid_weights
from scratchgan.eval.fid_weights import FIDWeightsError, fid_inception, load_weights
from scratchgan.eval.inception import build_fid_inception, fid_state_names

from layer_cases import import_torch


@pytest.fixture(scope="module")
def shapes():
    return fid_state_names(build_fid_inception())


def _save_pth(torch, path, shapes, seed=0, drop=None, extra=True):
    """pytorch-fid's layout: BasicConv2d tensors, BatchNorm counters and the 1008-class fc, float32."""
    rng = np.random.default_rng(seed)
    state = {k: torch.from_numpy(rng.uniform(0.5, 1.5, s).astype(np.float32)) for k, s in shapes.items() if k != drop}
    if extra:
        state["fc.weight"] = torch.zeros(1008, 2048)
        state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(0)
        state["AuxLogits.fc.weight"] = torch.zeros(10, 768)
    torch.save(state, path)
    return {k: v.numpy() for k, v in state.items()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHGAN_DATA", str(tmp_path / "data"))
    monkeypatch.delenv(fid_weights.ENV, raising=False)
    return tmp_path / "data" / "fid-inception"


def test_cached_pth_is_converted_once_then_the_npz_is_read(cache, shapes, monkeypatch):
    torch = import_torch()
    cache.mkdir(parents=True)
    pth = cache / fid_weights.FILE
    saved = _save_pth(torch, pth, shapes)
    monkeypatch.setattr(fid_weights, "SHA256_PREFIX", hashlib.sha256(pth.read_bytes()).hexdigest()[:8])
    lines = []
    arrays, source = load_weights(download=False, log=lines.append)
    assert source == cache / fid_weights.NPZ and source.is_file() and len(lines) == 1 and "converting" in lines[0]
    assert sorted(arrays) == sorted(shapes)  # the classifier and the counters are not kept
    for k in shapes:
        np.testing.assert_array_equal(arrays[k], saved[k])
    pth.unlink()  # from now on the .npz alone
    again, source = load_weights(download=False, log=lines.append)
    assert source == cache / fid_weights.NPZ and len(lines) == 1
    assert all(np.array_equal(again[k], arrays[k]) and again[k].dtype == np.float32 for k in shapes)
    net = fid_inception(progress=False, download=False)
    np.testing.assert_array_equal(net.convs["Mixed_7c.branch_pool"][1].running_var,
                                  saved["Mixed_7c.branch_pool.bn.running_var"])
    assert not net.training


def test_a_pth_whose_sha256_is_not_the_published_one_is_refused(cache, shapes):
    torch = import_torch()
    cache.mkdir(parents=True)
    _save_pth(torch, cache / fid_weights.FILE, shapes)  # its SHA-256 does not start with 6726825d
    with pytest.raises(FIDWeightsError, match="does not start with the published 6726825d; delete it"):
        load_weights(download=False)


def test_weights_from_the_environment_variable_are_checked(tmp_path, shapes, monkeypatch, cache):
    torch = import_torch()
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    saved = _save_pth(torch, good, shapes)
    _save_pth(torch, bad, shapes, drop="Mixed_6b.branch7x7_2.conv.weight")
    monkeypatch.setenv(fid_weights.ENV, str(good))
    arrays, source = load_weights(download=False)
    assert source == good and np.array_equal(arrays["Conv2d_4a_3x3.conv.weight"], saved["Conv2d_4a_3x3.conv.weight"])
    monkeypatch.setenv(fid_weights.ENV, str(bad))
    with pytest.raises(FIDWeightsError, match=r"bad.pth: not the FID Inception's weights: 1 missing \(first: "
                                              r"Mixed_6b.branch7x7_2.conv.weight\)"):
        load_weights(download=False)
    nonfinite = {k: v for k, v in saved.items() if k in shapes}
    nonfinite["Mixed_5b.branch1x1.bn.running_mean"][3] = np.nan
    np.savez(tmp_path / "nan.npz", **nonfinite)
    monkeypatch.setenv(fid_weights.ENV, str(tmp_path / "nan.npz"))
    with pytest.raises(FIDWeightsError, match="Mixed_5b.branch1x1.bn.running_mean holds non-finite values"):
        load_weights(download=False)
    shape = dict(nonfinite, **{"Mixed_5b.branch1x1.bn.running_mean": np.ones(3, np.float32)})
    np.savez(tmp_path / "shape.npz", **shape)
    monkeypatch.setenv(fid_weights.ENV, str(tmp_path / "shape.npz"))
    with pytest.raises(FIDWeightsError, match=r"running_mean has shape \(3,\), expected \(64,\)"):
        load_weights(download=False)
    np.savez(tmp_path / "extra.npz", **dict(shape, **{"Mixed_5b.branch1x1.bn.running_mean": np.ones(64, np.float32),
                                                      "Mixed_5b.branch9x9.conv.weight": np.ones(1, np.float32)}))
    monkeypatch.setenv(fid_weights.ENV, str(tmp_path / "extra.npz"))
    with pytest.raises(FIDWeightsError, match=r"0 missing \(first: none\), 1 unexpected \(first: Mixed_5b.branch9x9"):
        load_weights(download=False)
    monkeypatch.setenv(fid_weights.ENV, str(tmp_path / "absent.pth"))
    with pytest.raises(FIDWeightsError, match="SCRATCHGAN_FID_WEIGHTS=.*absent.pth: no such file"):
        load_weights(download=False)


def test_offline_is_one_line_that_says_where_to_put_the_file(cache):
    with pytest.raises(FIDWeightsError) as e:
        load_weights(download=False)
    message = str(e.value)
    assert "\n" not in message and fid_weights.URL in message and str(cache) in message
    assert fid_weights.ENV in message


def test_download_checks_the_sha256_prefix_and_writes_atomically(cache, shapes, tmp_path, monkeypatch):
    torch = import_torch()
    served = tmp_path / "server"
    served.mkdir()
    _save_pth(torch, served / fid_weights.FILE, shapes)
    url = (served / fid_weights.FILE).as_uri()  # urllib serves file:// URLs: the download path without a network
    with pytest.raises(FIDWeightsError, match="could not be downloaded .*does not start with the published 6726825d"):
        fid_weights.download_weights(url=url)
    assert not cache.exists() or not any(cache.iterdir())  # nothing half or foreign left in the cache
    digest = hashlib.sha256((served / fid_weights.FILE).read_bytes()).hexdigest()
    monkeypatch.setattr(fid_weights, "SHA256_PREFIX", digest[:8])
    path = fid_weights.download_weights(url=url)
    assert path == cache / fid_weights.FILE and path.read_bytes() == (served / fid_weights.FILE).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [fid_weights.FILE]
