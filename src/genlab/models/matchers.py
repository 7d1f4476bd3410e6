"""Conditional flow-matching objectives: how to draw (t, x_t, u_t) from a noise batch x0 and a data batch x1.

Flow matching regresses v_θ(x_t, t) on a conditional target u_t(x_t | z) whose marginal is the
field carrying N(0, I) (t = 0) to the data (t = 1) (Lipman et al. 2023, Thm 2; Tong et al. 2024, Thm 3.1).

* ``IndependentCFM`` — I-CFM (Tong et al. 2024, eq. 14): z = (x0, x1) drawn independently,
  x_t = t·x1 + (1−t)·x0 + σ·ε,  u_t = x1 − x0.
* ``OTCFM`` — the same path after re-pairing the batch by exact minibatch optimal transport
  (squared Euclidean cost; Tong et al. 2024, §3.2): straighter paths, lower-variance targets.
  It ignores class labels, so class-conditional models use ``IndependentCFM`` (torchcfm #117).
* ``GaussianPathCFM`` — Lipman et al. 2023's OT Gaussian path with σ_min (eqs. 20–23):
  x_t = (1 − (1−σ_min)·t)·x0 + t·x1,  u_t = x1 − (1−σ_min)·x0.

Time sampling: t ~ U[0, 1], or ``t_sampling="logit_normal"``: t = sigmoid(n), n ~ N(0, 1) (Esser et al. 2024,
"Scaling Rectified Flow Transformers", §3.1 eq. 19), which puts more training signal on intermediate t,
where the target is hardest to predict; the marginal path and its field are unchanged, only the weighting over t.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

COUPLINGS = ("independent", "ot", "gaussian")


class IndependentCFM:
    def __init__(self, sigma: float = 0.0, t_sampling: str = "uniform"):
        self.sigma, self.t_sampling = sigma, t_sampling

    def pair(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """The noise paired with each data point: ``[B, …]`` (independent coupling: x0 itself)."""
        return x0

    def path(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        t = t.view(-1, *[1] * (x1.dim() - 1))
        return t * x1 + (1 - t) * x0 + self.sigma * eps

    def target(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return x1 - x0

    def sample(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t ``[B]`` in (0, 1), x_t, u_t ``[B, …]``) for noise x0 and data x1 ``[B, …]``."""
        x0 = self.pair(x0, x1)
        t = torch.rand(len(x1), dtype=x1.dtype, device=x1.device) if self.t_sampling == "uniform" \
            else torch.randn(len(x1), dtype=x1.dtype, device=x1.device).sigmoid()
        return t, self.path(x0, x1, t, torch.randn_like(x1)), self.target(x0, x1)


class OTCFM(IndependentCFM):
    """``block``: solve the assignment within consecutive blocks of that many pairs (the batch is random,
    so each block is a random minibatch); the Hungarian algorithm costs O(n³), so a 512 batch in blocks
    of 128 costs 1/16 of one 512 solve. None: one exact plan over the whole batch."""

    def __init__(self, sigma: float = 0.0, block: int | None = None):
        super().__init__(sigma)
        self.block = block

    def pair(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Permute x0 to the exact minimiser of Σ‖x0_π(i) − x1_i‖² within each block (Hungarian algorithm)."""
        perm, block = torch.empty(len(x0), dtype=torch.long, device=x0.device), self.block or len(x0)
        for start in range(0, len(x0), block):
            end = min(start + block, len(x0))
            cost = torch.cdist(x1[start:end].flatten(1), x0[start:end].flatten(1)).pow(2)
            # scipy solves on the CPU (as torchcfm): the cost leaves the graph and the device, the plan comes back;
            # scipy works in float64 anyway, and numpy has no bfloat16
            plan = linear_sum_assignment(cost.detach().cpu().double().numpy())[1]
            perm[start:end] = torch.as_tensor(plan, device=x0.device) + start
        return x0[perm]


class GaussianPathCFM(IndependentCFM):
    def __init__(self, sigma_min: float = 1e-4):
        super().__init__(0.0)
        self.sigma_min = sigma_min

    def path(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        t = t.view(-1, *[1] * (x1.dim() - 1))
        return (1 - (1 - self.sigma_min) * t) * x0 + t * x1

    def target(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return x1 - (1 - self.sigma_min) * x0


def build(coupling: str, sigma: float, sigma_min: float, ot_block: int | None = None) -> IndependentCFM:
    """The matcher for ``coupling`` ∈ COUPLINGS."""
    return {"independent": lambda: IndependentCFM(sigma), "ot": lambda: OTCFM(sigma, ot_block),
            "gaussian": lambda: GaussianPathCFM(sigma_min)}[coupling]()
