"""Stage `inpainting`: complete test digits from their visible half with the trained MNIST flow, and check that
the completion keeps the class — against naive fills that see the same half.

The flow is the `flow_matching` stage's class-conditional U-Net, run *unconditionally* (the null label its
label dropout trained), so the class must come from the visible pixels. Method: replacement along the
flow-matching path (``genlab.models.inpainting``), with the stage's own sampler steps and precision
(``model.flow_matching.mnist.nfe`` / ``.precision``); one completion per test image for each of ``seeds``
(sampling noise; the model is one training seed). Scores, with the `classifier` stage's CNN:

* accuracy of the CNN on the completed digits (the test labels), and FID of the completions against the
  test images (the same CNN's features);
* the same for three fills of the hidden half: zeros (what the visible half alone tells the CNN), the
  nearest training image by its visible half (a non-parametric inpainter), and the mean training image of
  the true class (an oracle that is told the label).

Claim: the flow's completions are classified correctly more often than the nearest-neighbour fill's, a paired
difference over test images (the unit), with one trained model behind it. Writes
``reports/metrics/inpainting.json`` and a figure of digits, masks and completions.
"""
from __future__ import annotations

import numpy as np
import torch

from genlab import runner
from genlab.data.prepared import load_mnist
from genlab.evaluate import stats
from genlab.evaluate.fid import SampleScorer, load_cnn
from genlab.io import load_model
from genlab.models.flow_matching import FlowMatching
from genlab.models.inpainting import inpaint
from genlab.models.matchers import IndependentCFM
from genlab.nn.unet import UNet
from genlab.precision import autocast
from genlab.report.artifacts import figures_dir, image_grid, save_figure, write_metrics
from genlab.report.conclusions import add_conclusions, claim_from_difference
from genlab.saved.flow_matching import mnist_config

N_CLASSES, SIDE = 10, 28


def visible_mask(kind: str) -> torch.Tensor:
    """``[1, 1, 28, 28]``: 1 on the visible pixels (the top or the left half), 0 on those to fill."""
    mask = torch.zeros(1, 1, SIDE, SIDE)
    if kind == "top_half":
        mask[..., : SIDE // 2, :] = 1
    else:
        mask[..., :, : SIDE // 2] = 1
    return mask


def load_flow(cfg) -> FlowMatching:
    m = cfg.model.flow_matching.mnist
    payload = load_model(f"{cfg.paths.models}/flow_matching/mnist.pt", expect_config=mnist_config(cfg))
    module = FlowMatching(UNet.from_config(m.unet, N_CLASSES), IndependentCFM(0.0, m.t_sampling), m.lr,
                          n_classes=N_CLASSES)
    module.net.load_state_dict(payload["state_dict"])
    return module.eval()


def fills(train_x: torch.Tensor, train_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
          mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Naive completions of ``x`` ``[N, 1, 28, 28]`` in [0, 1] (visible where ``mask`` = 1): zeros; the nearest
    training image ``[M, 1, 28, 28]`` by Euclidean distance on the visible pixels; the class-mean image (oracle)."""
    visible = mask.flatten().bool()
    d = torch.cdist(x.flatten(1)[:, visible], train_x.flatten(1)[:, visible])        # [N, M]
    nearest = train_x[d.argmin(1)]
    class_mean = torch.stack([train_x[train_y == c].mean(0) for c in range(N_CLASSES)])[y]
    return {name: mask * x + (1 - mask) * f for name, f in
            (("zeros", torch.zeros_like(x)), ("nearest_neighbour", nearest), ("class_mean_oracle", class_mean))}


@torch.no_grad()
def correct(cnn, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per image, 1.0 if the CNN classifies ``x`` ``[N, 1, 28, 28]`` as ``y``, else 0.0."""
    return torch.cat([cnn(xb).argmax(1) for xb in x.split(500)]).eq(y).double().numpy()


def run(cfg) -> None:
    c, m = cfg.model.inpainting, cfg.model.flow_matching.mnist
    data = load_mnist(cfg)
    module, cnn = load_flow(cfg), load_cnn(cfg)
    n = c.n_images or len(data["test_x"])
    x = data["test_x"][:n].float().div(255).unsqueeze(1)                     # [N, 1, 28, 28] in [0, 1]
    y = data["test_y"][:n]
    train_x, train_y = data["train_x"].float().div(255).unsqueeze(1), data["train_y"]
    mask = visible_mask(c.mask)
    scorer = SampleScorer(cnn, x.squeeze(1), split="test")                   # FID against the test images
    null = torch.full((n,), N_CLASSES)                                       # unconditional: the class is not given

    completions, runs = {}, {}
    for seed in cfg.seeds:
        x0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(seed)))
        with autocast(m.precision, module.device.type):
            out = inpaint(lambda z, t: module.velocity(z, t, null), x * 2 - 1, mask, x0, m.nfe)
        completions[seed] = out.add(1).div(2).clamp(0, 1)
        runs[seed] = scorer(completions[seed].squeeze(1), y) | {"correct": correct(cnn, completions[seed], y)}
    filled = fills(train_x, train_y, x, y, mask)
    baselines = {name: scorer(f.squeeze(1), y) | {"correct": correct(cnn, f, y)} for name, f in filled.items()}

    flow_correct = np.mean([r["correct"] for r in runs.values()], axis=0)    # per image, over sampling seeds
    diff = stats.paired_difference(flow_correct, baselines["nearest_neighbour"]["correct"], unit="test images")
    claim = claim_from_difference(
        "inpainting_keeps_class_better_than_nearest_neighbour", "inpainting",
        f"Completing the hidden {c.mask.replace('_', ' ')} of test digits with the unconditional flow keeps "
        "the class (CNN accuracy) more often than copying the nearest training image's pixels.",
        diff, statistic="accuracy(flow completion, mean over sampling seeds) − accuracy(nearest-neighbour fill), "
        "paired over test images", baseline=f"class-mean oracle {baselines['class_mean_oracle']['accuracy']:.3f}, "
        f"zeros {baselines['zeros']['accuracy']:.3f}", n_seeds=1)
    acc = stats.summarize([r["accuracy"] for r in runs.values()], unit="sampling seeds")
    fid = stats.summarize([r["fid"] for r in runs.values()], unit="sampling seeds")
    metrics = {"mask": c.mask, "n_images": n, "nfe": m.nfe, "training_seeds": 1, "sampling_seeds": list(cfg.seeds),
               "flow": {"accuracy": acc["mean"], "accuracy_ci95": acc["ci"], "fid": fid["mean"], "fid_ci95": fid["ci"]},
               **{name: {"accuracy": b["accuracy"], "fid": b["fid"]} for name, b in baselines.items()}}
    print(f"[genlab] inpainting ({c.mask} visible, {n} test digits, {m.nfe} NFE): CNN accuracy "
          f"{stats.format_difference(acc, 'acc')}, FID {fid['mean']:.1f}; nearest neighbour "
          f"{baselines['nearest_neighbour']['accuracy']:.3f} / {baselines['nearest_neighbour']['fid']:.1f}, "
          f"class-mean oracle {baselines['class_mean_oracle']['accuracy']:.3f}, "
          f"zeros {baselines['zeros']['accuracy']:.3f}")

    show = torch.cat([x[:10], mask * x[:10], completions[cfg.seed][:10], filled["nearest_neighbour"][:10]])
    save_figure(image_grid(show.squeeze(1).numpy(), nrow=4, title="rows: test digit, visible part, flow completion, "
                           "nearest-neighbour fill"), figures_dir(cfg, "inpainting") / "completions.png")
    write_metrics(cfg, "inpainting", add_conclusions(metrics, [claim]))
