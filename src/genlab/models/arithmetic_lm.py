"""A decoder-only transformer trained to *answer* addition problems, and scored on them.

Each sequence is ``prompt + answer + "\\n"`` (``genlab.data.arithmetic.tokenize``). Only the
answer digits and the closing "\\n" are targets — the prompt is given, not predicted — so
the loss is the answer's negative log-likelihood per token. AdamW, linear warmup then
cosine decay to 10% of the peak rate, gradient clipping (set in the Trainer).

``score`` runs a trained net on a batch of problems with one digit count (equal prompt
lengths) and returns per-problem scores: the greedy answer (KV-cached generation) judged
by exact match / per-digit accuracy / token edit distance, and the teacher-forced answer
log-probability, Brier score and token accuracy (``genlab.evaluate.emergence``).

``teacher_forced`` scores a batch of any digit counts in one forward pass: the answer
log-probability, the number of answer tokens whose argmax is right, and whether all of them
are. The last equals greedy exact match exactly: greedy decoding feeds back its own tokens,
which are the true ones as long as every earlier argmax was right. It is the cheap validation
signal of early stopping (``validation_step``): mean answer loss per token ``val/loss`` and
exact match per digit count ``val/exact_match_<d>``, recorded in ``val_history``.
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
        self.val_history: list[dict] = []

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

    @torch.no_grad()
    def teacher_forced(self, ids: torch.Tensor, prompt_len: torch.Tensor, answer_len: torch.Tensor
                       ) -> dict[str, torch.Tensor]:
        """Problems ``ids [N, T]`` of any digit counts → per-problem ``[N]``: answer log-prob (answer + EOS),
        answer tokens with a right argmax, answer tokens, and exact match (= greedy exact match)."""
        logits = self.net(ids[:, :-1])
        mask = answer_mask(prompt_len, answer_len, ids.size(1) - 1)
        right = (logits.argmax(-1) == ids[:, 1:]) & mask
        tokens = mask.sum(-1)
        return {"answer_logprob": em.answer_logprob(logits, ids[:, 1:], mask), "right_tokens": right.sum(-1),
                "tokens": tokens, "exact_match": (right.sum(-1) == tokens).float()}

    def validation_step(self, batch, batch_idx):
        ids, prompt_len, answer_len = batch
        s = self.teacher_forced(ids, prompt_len, answer_len)
        loss = -s["answer_logprob"].sum() / s["tokens"].sum()
        self.log("val/loss", loss, batch_size=len(ids))
        row = {"step": self.global_step, "val_loss": float(loss),
               "val_token_accuracy": float(s["right_tokens"].sum() / s["tokens"].sum())}
        for n in answer_len.unique().tolist():     # answer digits = operand digits + 1
            row[f"val_exact_match_{n - 1}"] = float(s["exact_match"][answer_len == n].mean())
        self.val_history.append(row)

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
        right = (logits.argmax(-1) == ids[:, 1:]) & mask
        return {"exact_match": em.exact_match(pred, target, ids.device),
                "per_digit_accuracy": em.per_digit_accuracy(pred, target, ids.device),
                "edit_distance": em.token_edit_distance(pred, target).to(ids.device),
                "answer_logprob": em.answer_logprob(logits, ids[:, 1:], mask),
                "brier": em.token_brier(logits, ids[:, 1:], mask),
                "token_accuracy": right.sum(-1) / mask.sum(-1)}


class SolvedOrStalled(pl.Callback):
    """Early stopping on validation, and the best-on-validation weights.

    After each validation check (``ArithmeticLM.validation_step``): stop when validation exact match
    is ≥ ``solved_at`` at every digit count (the task is solved; the loss would only keep shrinking
    as the logits grow), or when the validation loss has not fallen below ``(1 − min_rel_delta)`` × its
    best for ``patience`` checks in a row (stalled). ``patience`` must cover a loss plateau: a small
    transformer can sit on the digit-marginal plateau for hundreds of steps before it escapes.
    The weights at the lowest validation loss are kept in ``best_state`` (restored by the caller);
    the counters and weights are part of the checkpoint, so a resumed run stops where it would have.
    """

    def __init__(self, solved_at: float, patience: int, min_rel_delta: float):
        self.solved_at, self.patience, self.min_rel_delta = solved_at, patience, min_rel_delta
        self.best_loss, self.best_step, self.bad_checks = float("inf"), 0, 0
        self.best_state: dict | None = None
        self.reason = "step cap"

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking or not module.val_history:
            return
        row = module.val_history[-1]
        if row["val_loss"] < self.best_loss:
            improved = row["val_loss"] < (1 - self.min_rel_delta) * self.best_loss
            self.best_loss, self.best_step = row["val_loss"], row["step"]
            self.best_state = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
            self.bad_checks = 0 if improved else self.bad_checks + 1
        else:
            self.bad_checks += 1
        solved = all(v >= self.solved_at for k, v in row.items() if k.startswith("val_exact_match_"))
        if solved or self.bad_checks >= self.patience:
            self.reason = "solved" if solved else "stalled"
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_step": self.best_step, "bad_checks": self.bad_checks,
                "best_state": self.best_state, "reason": self.reason}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)
