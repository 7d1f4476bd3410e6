"""Inpainting by replacement along the flow-matching path: the mathematics on flows whose field is known in
closed form, and the `inpainting` stage's plumbing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genlab.models.inpainting import inpaint


def point_mixture_field(points: torch.Tensor, weights: torch.Tensor):
    """The exact I-CFM field (σ = 0) of a mixture of point masses ``[K, D]``: x_t = t·x1 + (1−t)·x0 gives
    u(x, t) = Σ_k π_k(x, t)·(x_k − x)/(1 − t), π_k ∝ w_k·N(x; t·x_k, (1−t)²I)."""
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = (1 - t)[:, None]
        log_pi = weights.log()[None] - ((x[:, None] - t[:, None, None] * points[None]) ** 2).sum(-1) / (2 * s**2)
        pi = log_pi.softmax(1)                                                      # [B, K]
        return (pi[:, :, None] * (points[None] - x[:, None])).sum(1) / s
    return velocity


def test_visible_pixels_are_kept_and_the_extreme_masks_reduce_to_known_cases():
    from genlab.evaluate import ode

    torch.manual_seed(0)
    field = point_mixture_field(torch.randn(3, 6), torch.tensor([0.2, 0.3, 0.5]))
    x_obs, x0 = torch.randn(8, 6), torch.randn(8, 6)
    half = torch.tensor([1, 1, 1, 0, 0, 0.0])
    out = inpaint(field, x_obs, half, x0, 20)
    assert torch.equal(out[:, :3], x_obs[:, :3]) and not torch.allclose(out[:, 3:], x_obs[:, 3:])
    assert torch.equal(inpaint(field, x_obs, torch.ones(6), x0, 20), x_obs)            # nothing to fill
    sampled = ode.sample(field, x0, "euler", 20)[-1]                                   # nothing visible: sampling
    torch.testing.assert_close(inpaint(field, x_obs, torch.zeros(6), x0, 20), sampled)
    with pytest.raises(ValueError, match="nfe"):
        inpaint(field, x_obs, half, x0, 0)


def test_completion_follows_the_visible_half_when_it_identifies_the_component():
    """Two images: shown the top half of either, the completion's bottom half is that image's when the visible
    halves differ more than the hidden ones (the posterior commits on the visible evidence), from any noise.
    Replacement is not an exact posterior sampler: when the hidden halves differ as much, the noise in the hidden
    half decides the component for a share of the draws (RePaint's resampling is the fix), yet more often right."""
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    torch.manual_seed(1)
    for visible_gap, min_share in ((3.0, 1.0), (1.0, 0.6)):
        a = torch.tensor([visible_gap, -visible_gap, 1.0, -1.0])
        field = point_mixture_field(torch.stack([a, -a]), torch.tensor([0.5, 0.5]))
        for target in (a, -a):
            out = inpaint(field, target.expand(512, 4), mask, torch.randn(512, 4), 100)
            right = ((out[:, 2:] - target[2:]).abs().max(1).values < 0.05).double().mean()
            wrong = ((out[:, 2:] + target[2:]).abs().max(1).values < 0.05).double().mean()
            assert right + wrong == 1.0 and right >= min_share          # always one of the two images, mostly right
            if visible_gap == 1.0:
                assert right < 1.0                                         # … but not always: not exact


def test_single_point_field_is_integrated_exactly_by_euler():
    """For one point x*, u = (x* − x)/(1 − t) is linear along each Euler step's segment, so the fill is x*'s exactly."""
    x_star = torch.tensor([0.5, -0.25, 1.0])
    out = inpaint(point_mixture_field(x_star[None], torch.ones(1)), torch.zeros(4, 3), torch.tensor([1.0, 0, 0]),
                  torch.randn(4, 3), 3)
    torch.testing.assert_close(out[:, 1:], x_star[1:].expand(4, 2))


def test_inpainting_stage_smoke(make_cfg, prepared, tmp_path):
    from genlab.io import read_json, save_model
    from genlab.nn.classifiers import build
    from genlab.nn.unet import UNet
    from genlab.saved.classifier import model_config
    from genlab.saved.flow_matching import mnist_config
    from genlab.stages import inpainting

    cfg = make_cfg(tmp_path, f"paths.data={prepared / 'data'}", "seeds=[0,1,2]")
    save_model(tmp_path / "models" / "classifier" / "cnn.pt", build("cnn", cfg.model.classifier.cnn).state_dict(),
               model_config(cfg, "cnn"))                                      # untrained: plumbing only
    save_model(tmp_path / "models" / "flow_matching" / "mnist.pt",
               UNet.from_config(cfg.model.flow_matching.mnist.unet, 10).state_dict(), mnist_config(cfg))
    inpainting.run(cfg)
    m = read_json(tmp_path / "reports" / "metrics" / "inpainting.json")
    assert m["n_images"] == cfg.model.inpainting.n_images and m["mask"] == "top_half"
    assert 0 <= m["flow"]["accuracy"] <= 1 and math.isfinite(m["flow"]["fid"]) and m["flow"]["accuracy_ci95"]
    assert {"zeros", "nearest_neighbour", "class_mean_oracle"} <= set(m)
    (row,) = m["conclusions"]
    assert row["id"] == "inpainting_keeps_class_better_than_nearest_neighbour" and row["few_seeds"]
    assert (tmp_path / "reports" / "figures" / "inpainting" / "completions.png").exists()


def test_nearest_neighbour_fill_copies_the_closest_training_image_on_the_hidden_half():
    from genlab.stages.inpainting import fills, visible_mask

    train = torch.rand(5, 1, 28, 28)
    y = torch.arange(5) % 2
    x = train[[3]].clone()
    x[..., 14:, :] = 0                                         # the hidden half differs; the visible one matches #3
    out = fills(train, y, x, y[[3]], visible_mask("top_half"))
    torch.testing.assert_close(out["nearest_neighbour"], train[[3]])
    torch.testing.assert_close(out["class_mean_oracle"][..., 14:, :], train[y == y[3]].mean(0, keepdim=True)[..., 14:, :])
    assert torch.equal(out["zeros"][..., 14:, :], torch.zeros(1, 1, 14, 28))
