"""A decoder-only transformer trained to *answer* addition problems, and scored on them.

Each sequence is ``prompt + answer + "\\n"`` (``genlab.data.arithmetic.tokenize``). Only the
answer digits and the closing "\\n" are targets — the prompt is given, not predicted — so
the loss is the answer's negative log-likelihood per token. AdamW, linear warmup then
cosine decay to 10% of the peak rate, gradient clipping (set in the Trainer).

``score`` runs a trained net on a batch of problems with one digit count (equal prompt
lengths) and returns per-problem scores: the greedy answer (KV-cached generation) judged
by exact match / per-digit accuracy / token edit distance, and the teacher-forced answer
log-probability, Brier score and token count (``genlab.evaluate.emergence``).
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from genlab.data.arithmetic import EOS, decode
from genlab.evaluate import emergence as em
from genlab.models.gpt import lr_factor
from genlab.nn.transformer import Transformer


def answer_mask(prompt_len: torch.Tensor, answer_len: torch.Tensor, length: int) -> torch.Tensor:
    """``[N, length]`` bool over next-token targets ``ids[:, 1:]``: True where the target is an answer
    digit or the closing EOS (target index j ∈ [prompt_len, prompt_len + answer_len])."""
    j = torch.arange(1, length + 1, device=prompt_len.device)[None, :]
    return (j >= prompt_len[:, None]) & (j <= (prompt_len + answer_len)[:, None])


class ArithmeticLM(pl.LightningModule):
    def __init__(self, net: Transformer, lr: float, weight_decay: float, warmup_steps: int, max_steps: int):
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay
        self.warmup_steps, self.max_steps = warmup_steps, max_steps
        self.history: list[dict] = []

    def answer_nll(self, ids: torch.Tensor, prompt_len: torch.Tensor, answer_len: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats/token) over answer + EOS tokens of ``ids [B, T]``."""
        logits = self.net(ids[:, :-1])                                         # [B, T-1, V]
        mask = answer_mask(prompt_len, answer_len, ids.size(1) - 1)
        return F.cross_entropy(logits[mask], ids[:, 1:][mask])

    def training_step(self, batch, batch_idx):
        loss = self.answer_nll(*batch)
        self.log("train/loss", loss, prog_bar=True)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.history.append({"step": self.global_step, "train_loss": float(loss.detach())})
        return loss

    def configure_optimizers(self):
        decay = [p for p in self.net.parameters() if p.dim() >= 2]            # no decay on biases / LayerNorms
        rest = [p for p in self.net.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=self.lr, betas=(0.9, 0.98))
        sched = torch.optim.lr_scheduler.LambdaLR(   # linear warmup, cosine to 0.1·lr (the GPT stage's schedule)
            opt, lambda step: lr_factor(step, self.warmup_steps, self.max_steps, 0.1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.no_grad()
    def score(self, ids: torch.Tensor, prompt_len: int, answer_len: int) -> dict[str, torch.Tensor]:
        """Problems ``ids [N, prompt_len + answer_len + 1]`` of one digit count → per-problem ``[N]`` scores."""
        self.net.eval()
        out = self.net.generate(ids[:, :prompt_len], answer_len + 1, greedy=True)[:, prompt_len:]
        pred = [decode(row[: (row == EOS).nonzero()[0, 0] if (row == EOS).any() else len(row)]) for row in out]
        target = [decode(row) for row in ids[:, prompt_len: prompt_len + answer_len]]
        logits = self.net(ids[:, :-1])
        lengths = [torch.full((len(ids),), n, device=ids.device) for n in (prompt_len, answer_len)]
        mask = answer_mask(*lengths, ids.size(1) - 1)
        return {"exact_match": em.exact_match(pred, target, ids.device),
                "per_digit_accuracy": em.per_digit_accuracy(pred, target, ids.device),
                "edit_distance": em.token_edit_distance(pred, target).to(ids.device),
                "answer_logprob": em.answer_logprob(logits, ids[:, 1:], mask),
                "brier": em.token_brier(logits, ids[:, 1:], mask)}
