"""The PyTorch DCGAN tutorial's training iteration over twins of scratchgan's layers, and the relative check the
parity tests use. Import it only where torch is installed (after ``pytest.importorskip("torch")``)."""
import numpy as np
import torch

from scratchgan import nn

LR, BETAS = 2e-4, (0.5, 0.999)  # the tutorial's Adam


RTOL = 1e-9


def torch_twin(ours):
    """An equivalent torch.nn.Sequential with our layer's current values copied in."""
    layers = []
    for layer in ours:
        if isinstance(layer, nn.Linear):
            t = torch.nn.Linear(layer.in_features, layer.out_features).double()
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(layer.W.data.T.copy()))  # ours (D_in, D_out) = torch's .T
                t.bias.copy_(torch.from_numpy(layer.b.data.copy()))
        elif isinstance(layer, nn.BatchNorm1d):
            t = torch.nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum).double()
            with torch.no_grad():
                t.weight.copy_(torch.from_numpy(layer.gamma.data.copy()))
                t.bias.copy_(torch.from_numpy(layer.beta.data.copy()))
                t.running_mean.copy_(torch.from_numpy(layer.running_mean.copy()))
                t.running_var.copy_(torch.from_numpy(layer.running_var.copy()))
        elif isinstance(layer, nn.LeakyReLU):
            assert layer.negative_slope == 0.2
            t = torch.nn.LeakyReLU(layer.negative_slope)
        elif isinstance(layer, nn.Tanh):
            t = torch.nn.Tanh()
        elif isinstance(layer, nn.Sigmoid):
            t = torch.nn.Sigmoid()
        else:
            raise AssertionError(f"no torch twin for {layer!r}")
        layers.append(t)
    return torch.nn.Sequential(*layers).double().train()


class TorchGAN:
    """The PyTorch DCGAN tutorial's training iteration, step for step."""

    def __init__(self, ours, loss_on, real_target):
        self.G, self.D = torch_twin(ours.G), torch_twin(ours.D)
        self.optG = torch.optim.Adam(self.G.parameters(), lr=LR, betas=BETAS)
        self.optD = torch.optim.Adam(self.D.parameters(), lr=LR, betas=BETAS)
        self.criterion = torch.nn.BCEWithLogitsLoss() if loss_on == "logits" else torch.nn.BCELoss()
        self.prob = torch.sigmoid if loss_on == "logits" else (lambda out: out)
        self.real_target = real_target

    def iteration(self, reals, zs):
        """len(reals) D steps (each its own real batch and fresh z), then one G step on the last fake."""
        for real, z in zip(reals, zs):
            real, z = torch.from_numpy(real), torch.from_numpy(z)
            # (1) update D: maximise log D(x) + log(1 - D(G(z)))
            self.D.zero_grad()
            out_real = self.D(real).view(-1)
            loss_real = self.criterion(out_real, torch.full_like(out_real, self.real_target))
            loss_real.backward()
            fake = self.G(z)
            out_fake = self.D(fake.detach()).view(-1)
            loss_fake = self.criterion(out_fake, torch.zeros_like(out_fake))
            loss_fake.backward()
            self.optD.step()
            stats = {"loss_D": (loss_real + loss_fake).item(), "D_x": self.prob(out_real).mean().item(),
                     "D_G_z": self.prob(out_fake).mean().item()}
        # (2) update G: maximise log D(G(z)) through the updated D
        self.G.zero_grad()
        out = self.D(fake).view(-1)
        loss_G = self.criterion(out, torch.ones_like(out))
        loss_G.backward()
        self.optG.step()
        stats.update(loss_G=loss_G.item(), D_G_z_after=self.prob(out).mean().item())
        return stats


# ------------------------------------------------------------------------------------------ checks
def assert_close(ours, theirs, what):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    # relative 1e-9, elementwise, measured against the array's own scale (entries that are ~0 in
    # an array of O(1) values are compared at 1e-9 of that scale)
    scale = max(float(np.abs(theirs).max()), 1e-300)
    err = float(np.abs(ours - theirs).max()) / scale
    assert err <= RTOL, f"{what}: max relative error {err:.3e} > {RTOL:g}"
