"""DDPM/DDIM mathematics (Ho et al. 2020; Song et al. 2021), guidance convention, NFE accounting, stage smoke run."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlab.models.diffusion import Diffusion, cosine_betas, linear_betas
from genlab.nn.unet import UNet


class Counting(nn.Module):
    """Wraps a network; counts calls and the batch sizes it saw."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.null_class, self.calls, self.batches = net, net.null_class, 0, []

    def forward(self, x, t, y):
        self.calls += 1
        self.batches.append(len(x))
        return self.net(x, t, y)


class PointMassOracle(nn.Module):
    """The exact predictor when the data is the single image ``c``: ε = (x_t − √ᾱ_t c)/√(1 − ᾱ_t), or
    v = √ᾱ_t ε − √(1 − ᾱ_t) c (Salimans & Ho 2022)."""

    def __init__(self, alpha_bar: torch.Tensor, c: torch.Tensor, T: int, prediction: str = "eps"):
        super().__init__()
        self.alpha_bar, self.c, self.T, self.null_class, self.prediction = alpha_bar, c, T, 10, prediction

    def forward(self, x, t, y):
        ab = self.alpha_bar[(t * self.T).round().long() - 1].view(-1, 1, 1, 1)
        eps = (x - ab.sqrt() * self.c) / (1 - ab).sqrt()
        return eps if self.prediction == "eps" else ab.sqrt() * eps - (1 - ab).sqrt() * self.c


class ToyEps(nn.Module):
    """A cheap conditional ε-network: 3×3 conv of x, plus per-class and per-time offsets."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.null_class = n_classes
        self.conv, self.cls, self.time = nn.Conv2d(1, 1, 3, padding=1), nn.Embedding(n_classes + 1, 1), nn.Linear(1, 1)

    def forward(self, x, t, y):
        return self.conv(x) + (self.cls(y) + self.time(t[:, None].float())).view(-1, 1, 1, 1)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return Diffusion(UNet(channels=4, channel_mults=(1, 2)), T=20, schedule="linear").eval()


def test_schedules_known_values():
    b = linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    ab = torch.cumprod(1 - cosine_betas(1000), 0)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2   # noqa: E731  Nichol & Dhariwal eq. 17
    assert ab[499].item() == pytest.approx(f(500) / f(0), rel=1e-6)
    for schedule in ("linear", "cosine"):                       # the forward process ends at (nearly) pure noise
        assert Diffusion(nn.Identity(), T=100, schedule=schedule).alpha_bar[-1] < 1e-3


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_closed_form_q_matches_iterating_the_forward_process(schedule):
    """x_t = √α_t x_{t−1} + √β_t ε_t iterated from x_0 gives N(√ᾱ_t x_0, (1 − ᾱ_t) I) (Ho et al. eq. 4)."""
    d = Diffusion(nn.Identity(), T=40, schedule=schedule)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1, 1, 1), 0.7, dtype=torch.float64)
    x, mean, var = x0.clone(), 1.0, 0.0
    for t in range(1, 41):
        beta = d.betas[t - 1].double()
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
        mean, var = mean * (1 - beta).sqrt(), (1 - beta) * var + beta             # exact moment recursion
        ab = d.alpha_bar[t - 1].double()
        assert mean * 0.7 == pytest.approx((ab.sqrt() * 0.7).item(), rel=1e-5)
        assert var == pytest.approx((1 - ab).item(), rel=1e-4)
    closed = d.q_sample(x0[:, :, :, :].float(), torch.full((len(x0),), 40), torch.randn(x0.shape, generator=g).float())
    for sample in (x.float(), closed):                                           # Monte-Carlo moments agree too
        assert sample.mean().item() == pytest.approx((d.alpha_bar[-1].sqrt() * 0.7).item(), abs=5e-3)
        assert sample.var().item() == pytest.approx((1 - d.alpha_bar[-1]).item(), abs=5e-3)


def test_posterior_matches_gaussian_bayes_rule():
    """Ho et al. eq. 6–7 against the product of q(x_t|x_{t−1}) and q(x_{t−1}|x_0), computed from scratch."""
    d = Diffusion(nn.Identity(), T=30, schedule="cosine")
    x0, xt = torch.randn(29, 1, 2, 2), torch.randn(29, 1, 2, 2)
    t = torch.arange(2, 31)                                                      # t = 1 is a point mass
    mean, var = d.posterior(x0, xt, t)
    betas = cosine_betas(30)
    ab = torch.cumprod(1 - betas, 0)
    for i, step in enumerate(t.tolist()):
        a, b, ab_prev = 1 - betas[step - 1], betas[step - 1], ab[step - 2]
        precision = 1 / (1 - ab_prev) + a / b                                    # prior on x_{t−1} × likelihood of x_t
        v = 1 / precision
        m = v * (ab_prev.sqrt() * x0[i].double() / (1 - ab_prev) + a.sqrt() * xt[i].double() / b)
        assert var[i].item() == pytest.approx(v.item(), rel=1e-4)
        torch.testing.assert_close(mean[i].double(), m, rtol=1e-4, atol=1e-5)


def test_guidance_convention(tiny):
    x, y = torch.randn(3, 1, 28, 28), torch.tensor([1, 2, 3])
    time = torch.full((3,), 7 / 20)
    with torch.no_grad():
        cond, uncond = tiny.ema(x, time, y), tiny.ema(x, time, torch.full((3,), tiny.ema.null_class))
        torch.testing.assert_close(tiny.guided(x, 7, y, 0.0), cond)                    # w = 0: purely conditional
        torch.testing.assert_close(tiny.guided(x, 7, y, 2.0), 3 * cond - 2 * uncond, rtol=1e-4, atol=1e-4)   # s = 3
        assert (cond - uncond).abs().max() > 1e-4


@pytest.mark.parametrize("w", [0.0, 1.5])
def test_samplers_call_the_network_the_stated_number_of_times(w):
    tiny = Diffusion(ToyEps(), T=20)
    tiny.ema = Counting(tiny.ema)
    y = torch.arange(2)
    assert tiny.sample_ddim(y, 7, w).shape == (2, 1, 28, 28)
    assert tiny.ema.calls == 7 and set(tiny.ema.batches) == {4 if w else 2}    # guided: one batched call of 2B
    tiny.ema.calls = 0
    tiny.sample_ddpm(y, w)
    assert tiny.ema.calls == tiny.T == 20
    assert tiny.ddim_steps(7)[0] == 20 and tiny.ddim_steps(7)[-1] == 1 and len(set(tiny.ddim_steps(7))) == 7


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_samplers_recover_a_point_mass_with_the_exact_predictor(schedule, prediction):
    """With data = one image c, the true ε(x_t) and v(x_t) are known; DDIM (any step count, η = 0 or 1) and DDPM
    must return c."""
    d = Diffusion(nn.Identity(), T=100, schedule=schedule, prediction=prediction)
    c = torch.linspace(-0.9, 0.9, 784).view(1, 1, 28, 28)
    d.ema = PointMassOracle(d.alpha_bar, c, d.T, prediction)
    y = torch.zeros(3, dtype=torch.long)
    for x in (d.sample_ddim(y, 5), d.sample_ddim(y, 100), d.sample_ddim(y, 5, eta=1.0), d.sample_ddpm(y)):
        torch.testing.assert_close(x, c.expand(3, -1, -1, -1), atol=1e-4, rtol=0)


def test_loss_drops_labels_with_the_stated_probability():
    d, seen = Diffusion(ToyEps(), T=20), []
    d.net.register_forward_pre_hook(lambda module, args: seen.append(args[2]))
    torch.manual_seed(1)
    d.loss(torch.zeros(4000, 1, 28, 28), torch.zeros(4000, dtype=torch.long))
    assert (seen[0] == d.net.null_class).float().mean().item() == pytest.approx(0.2, abs=0.025)   # 4σ


def test_min_snr_weights_follow_their_formula_and_gamma_zero_is_l_simple():
    """Hang et al. 2023 eq. 8 (ε-prediction): w_t = min(SNR_t, γ)/SNR_t, SNR_t = ᾱ_t/(1 − ᾱ_t)."""
    plain, weighted = Diffusion(ToyEps(), T=50), Diffusion(ToyEps(), T=50, snr_gamma=5.0)
    snr = weighted.alpha_bar / (1 - weighted.alpha_bar)
    assert torch.allclose(weighted.loss_weight, torch.minimum(snr, torch.tensor(5.0)) / snr, rtol=1e-4)
    assert weighted.loss_weight[0] < 0.05 and weighted.loss_weight[-1] == 1.0     # clean steps down-weighted
    assert torch.equal(plain.loss_weight, torch.ones(50))
    weighted.net.load_state_dict(plain.net.state_dict())
    x0, y = torch.rand(64, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (64,))
    torch.manual_seed(3)
    l_plain = plain.loss(x0, y)
    torch.manual_seed(3)
    assert weighted.loss(x0, y) < l_plain                                          # same t, noise, labels


def test_v_prediction_target_and_min_snr_weights():
    """v-loss: target v = √ᾱ_t ε − √(1 − ᾱ_t) x0, so the exact v-oracle has zero loss; Min-SNR-γ on the v-loss is
    min(SNR_t, γ)/(SNR_t + 1) (Hang et al. 2023), i.e. the same x0-error weight min(SNR_t, γ) as for ε."""
    d = Diffusion(nn.Identity(), T=50, schedule="cosine", snr_gamma=5.0, prediction="v", p_uncond=0.0)
    snr = d.alpha_bar / (1 - d.alpha_bar)
    assert torch.allclose(d.loss_weight, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1), rtol=1e-4)
    eps_weight = Diffusion(nn.Identity(), T=50, schedule="cosine", snr_gamma=5.0).loss_weight
    torch.testing.assert_close(d.loss_weight * (snr + 1), eps_weight * snr)         # x0-space weights agree
    c = torch.linspace(-0.9, 0.9, 784).view(1, 1, 28, 28)
    d.net = PointMassOracle(d.alpha_bar, c, d.T, "v")
    assert d.loss(c.expand(16, -1, -1, -1), torch.zeros(16, dtype=torch.long)).item() < 1e-10
    d.net.prediction = "eps"                                                         # the wrong target costs
    assert d.loss(c.expand(16, -1, -1, -1), torch.zeros(16, dtype=torch.long)).item() > 1e-2


def test_training_reduces_the_loss():
    """Adam steps on a fixed batch must lower L_simple (plumbing of loss and gradients)."""
    torch.manual_seed(0)
    d = Diffusion(ToyEps(), T=20)
    x0, y = torch.rand(32, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(d.net.parameters(), lr=3e-2)
    losses = []
    for _ in range(40):
        torch.manual_seed(123)                     # same t and noise each step: a deterministic objective
        loss = d.loss(x0, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_stage_smoke_run(make_cfg, prepared, tmp_path):
    from genlab.io import load_arrays, read_json, save_model
    from genlab.nn.classifiers import build
    from genlab.stages import diffusion
    from genlab.stages.classifier import model_config

    cfg = make_cfg(tmp_path, f"paths.data={prepared / 'data'}")
    save_model(tmp_path / "models" / "classifier" / "cnn.pt", build("cnn", cfg.model.classifier.cnn).state_dict(),
               model_config(cfg, "cnn"))                                      # an untrained CNN: plumbing only
    diffusion.run(cfg)
    arrays, meta = load_arrays(tmp_path / "models" / "diffusion" / "samples")
    eta, w = meta["eta"], meta["best_w"]
    keys = [r["key"] for r in meta["runs"]]
    # η and w chosen on validation (the selection runs), then fresh test runs under another seed
    assert all(r["seed"] == cfg.seed for r in meta["selection"] + meta["eta_selection"])
    assert all(r["seed"] == cfg.seed + 10_000 for r in meta["runs"])
    assert {r["eta"] for r in meta["eta_selection"]} == {0.0, 1.0} and eta in (0.0, 1.0)
    assert [r["guidance_w"] for r in meta["selection"]] == [0.0, 1.0]
    assert "ddim2_eta0_w0" in keys and f"ddim2_eta{eta:g}_w{w:g}" in keys and "ddpm8_w0" in keys
    assert all(r["nfe"] == r["steps"] * (2 if r["guidance_w"] else 1) for r in meta["runs"])   # guided step = 2
    for k in keys:
        x = arrays[f"{k}_x"]
        assert x.shape == (20, 28, 28) and x.dtype.name == "float32" and 0 <= x.min() and x.max() <= 1
        assert arrays[f"{k}_y"].tolist() == [i % 10 for i in range(20)]
    metrics = read_json(tmp_path / "reports" / "metrics" / "diffusion.json")
    assert metrics["eta"] == eta and len(metrics["eta_curve_val"]) == 2 and len(metrics["guidance_curve_val"]) == 2
    assert (tmp_path / "reports" / "figures" / "diffusion" / "samples_ddim2_eta0_w0.png").exists()
