"""Neural posterior estimation (NPE): a conditional coupling flow q(θ | x) fitted to simulations.

Papamakarios & Murray 2016 (§2, Prop. 1): with pairs (θ_n, x_n) drawn from the joint p(θ) p(x | θ), maximising
    L(φ) = (1/N) Σ_n log q_φ(θ_n | x_n)
is, as N → ∞, minimising E_{p(x)} KL(p(θ | x) ‖ q_φ(θ | x)); a flexible enough q recovers the posterior for every x
at once (amortised), so inference for a new observation is one pass of the flow. Greenberg et al. 2019 use the same
loss in the first round (with proposal = prior there is no correction).

The flow is ``CouplingFlow`` with the observation as its context. θ and x are standardised by the training
simulations' mean and standard deviation (as the sbi toolbox does by default): the flow models θ̃ = (θ − m_θ)/s_θ
given x̃ = (x − m_x)/s_x, and by the change of variables
    log q(θ | x) = log q̃(θ̃ | x̃) − Σ_d log s_θ,d.
"""
from __future__ import annotations

import torch

from genlab.models.coupling_flow import CouplingFlow


class NPE(CouplingFlow):
    """q(θ | x) for θ ``[B, theta_dim]`` and x ``[B, x_dim]``; batches are (θ, x)."""

    def __init__(self, theta_dim: int, x_dim: int, n_layers: int, width: int, depth: int, lr: float,
                 theta_stats: tuple[torch.Tensor, torch.Tensor], x_stats: tuple[torch.Tensor, torch.Tensor]):
        super().__init__(theta_dim, n_layers, width, depth, lr, context_dim=x_dim)
        for name, (mean, std) in (("theta", theta_stats), ("x", x_stats)):
            self.register_buffer(f"{name}_mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer(f"{name}_std", torch.as_tensor(std, dtype=torch.float32))

    def _x(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def posterior_log_prob(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log q(θ | x) ``[B]`` for θ ``[B, theta_dim]`` and x ``[B, x_dim]`` (module doc)."""
        theta_std = (theta - self.theta_mean) / self.theta_std
        return self.log_prob(theta_std, self._x(x)) - self.theta_std.log().sum()

    @torch.no_grad()
    def sample_posterior(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` draws of q(θ | x) per observation, in one batched inverse pass: x ``[x_dim]`` → ``[n, theta_dim]``,
        x ``[N, x_dim]`` → ``[N, n, theta_dim]``."""
        rows = x.to(self.dtype).reshape(-1, x.shape[-1])
        context = self._x(rows).repeat_interleave(n, dim=0)
        theta = self.sample(len(context), context) * self.theta_std + self.theta_mean
        return theta.view(n, -1) if x.dim() == 1 else theta.view(len(rows), n, -1)

    def training_step(self, batch, batch_idx):
        loss = -self.posterior_log_prob(*batch).mean()
        self.log("train/nll", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.val_nll.update(-self.posterior_log_prob(*batch))
        self.log("val/nll", self.val_nll, on_epoch=True)
