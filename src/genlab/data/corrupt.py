"""Corrupted MNIST for the memorization experiments of Zhang et al. 2017 ("Understanding deep
learning requires rethinking generalization", §2): partially random labels and shuffled pixels.

Labels: exactly ``round(f·N)`` positions, chosen uniformly without replacement, get a label
drawn uniformly from all classes (so about 1/K of them keep their true label by chance, as in
the paper); at f = 1 labels are independent of images and test accuracy can only be chance.
Pixels: "shuffled" applies one fixed permutation to every image (train and test alike: the
task stays learnable for a network without spatial priors); "random" draws a fresh
permutation per image (no spatial structure is left at all).
"""
from __future__ import annotations

import torch


def randomize_labels(y: torch.Tensor, fraction: float, generator: torch.Generator,
                     n_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels ``[N]`` → (new labels ``[N]``, bool mask ``[N]`` of the redrawn positions, sum = round(f·N))."""
    n = len(y)
    chosen = torch.randperm(n, generator=generator)[: round(fraction * n)]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    out = y.clone()
    out[chosen] = torch.randint(n_classes, (len(chosen),), generator=generator, dtype=y.dtype)
    return out, mask


def shuffle_pixels(x: torch.Tensor, generator: torch.Generator, per_image: bool) -> torch.Tensor:
    """Permute the pixels of images ``[N, H, W]``: one permutation for all (``per_image=False``)
    or an independent one per image. Returns ``[N, H, W]`` with the same pixel multiset per image."""
    n = len(x)
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    if per_image:
        perm = torch.rand(n, d, generator=generator).argsort(dim=1)
    else:
        perm = torch.randperm(d, generator=generator).expand(n, d)
    return flat.gather(1, perm).reshape(x.shape)
