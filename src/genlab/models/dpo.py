"""Direct preference optimisation without a reward model: DPO, IPO or hinge (``rl.preference``)
on pairs, against the frozen SFT reference.

Batch: chosen / rejected sequences ``[B, L]``, prompt lengths ``[B]``, response masks ``[B, R]``,
and the reference's summed response log-probs ``[B]`` for each (precomputed once).
With a ``sampler``, a wandb table of the policy's answers to fixed prompts is logged every ``sample_every``
steps and after the last (``rl.sample_table``, shared with PPO).
h = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r)); β·(log π − log π_ref) is the implicit reward.
With ``length_norm`` each response's log-ratio is divided by its token count (per-token means), as TRL's
IPO does (Azar et al. 2023 define IPO on sequences; the mean keeps 1/(2τ) on one scale for all lengths).
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch

from genlab.nn.transformer import Transformer
from genlab.rl.preference import preference_loss
from genlab.rl.rollout import response_logprobs
from genlab.rl.sample_table import Sampler, log_sample_table


def sequence_logprob(net: Transformer, seq: torch.Tensor, prompt_len: torch.Tensor, mask: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Σ_k log π(y_k | x, y_<k) over the response tokens → ``[B]``."""
    return (response_logprobs(net, seq, prompt_len, mask.shape[1], temperature) * mask).sum(1)


class DirectPreference(pl.LightningModule):
    def __init__(self, policy: Transformer, kind: str, beta: float, lr: float, temperature: float,
                 length_norm: bool = False, sampler: Sampler | None = None, sample_every: int = 100):
        super().__init__()
        self.policy, self.kind, self.beta, self.lr, self.temperature = policy, kind, beta, lr, temperature
        self.length_norm, self.sampler, self.sample_every = length_norm, sampler, sample_every
        self.history: list[dict] = []

    def log_ratio_gap(self, batch) -> torch.Tensor:
        seq_c, seq_r, prompt_len, mask_c, mask_r, ref_c, ref_r = batch
        logp_c = sequence_logprob(self.policy, seq_c, prompt_len, mask_c, self.temperature)
        logp_r = sequence_logprob(self.policy, seq_r, prompt_len, mask_r, self.temperature)
        if self.length_norm:                          # per-token mean log-ratios (TRL's IPO)
            return (logp_c - ref_c) / mask_c.sum(1) - (logp_r - ref_r) / mask_r.sum(1)
        return (logp_c - ref_c) - (logp_r - ref_r)

    def training_step(self, batch, batch_idx):
        if batch_idx % self.sample_every == 0:                 # the policy before this step's update
            log_sample_table(self, f"samples/{self.kind}", batch_idx, self.policy, self.sampler)
        h = self.log_ratio_gap(batch)
        loss = preference_loss(self.kind, h, self.beta)
        stats = {"train/loss": loss, "rewards/accuracy": (h > 0).float().mean(), "rewards/margin": self.beta * h.mean()}
        self.log_dict(stats, prog_bar=True)
        if batch_idx % 25 == 0:
            self.history.append({"step": self.global_step, **{k: float(v.detach()) for k, v in stats.items()}})
        return loss

    def on_train_end(self):
        log_sample_table(self, f"samples/{self.kind}", self.global_step, self.policy, self.sampler)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.policy.parameters(), lr=self.lr, weight_decay=0.0)
