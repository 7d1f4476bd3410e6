"""PPO for language models with a KL penalty to a frozen reference (Ziegler et al. 2019;
Stiennon et al. 2020; Ouyang et al. 2022), in the shape of TRL's PPOTrainer — and its two critic-free
variants on the same rollouts, budget and updates, as TRL's RLOOTrainer and GRPOTrainer:

Manual optimisation: each ``training_step`` takes a batch of prompts and
  1. rollout: sample responses ``[B, R]`` from π at temperature T (rloo/grpo: ``group`` per prompt);
  2. scores: reward model at the last token, per-token KL estimate of log π − log π_ref;
  3. advantages ``[B, R]``:
     ppo   r_t = −β·KL_t plus the score at the final token; GAE(γ, λ) with the value head
           (zero-initialised: V ≡ 0 at the start), whitened;
     rloo  R = score − β·Σ_t KL_t per sequence; A = R − mean of the other samples of its prompt
           (Ahmadian et al. 2024), on every token, whitened;
     grpo  A = (score − group mean) / group std (Shao et al. 2024); the KL is not in the reward but in the
           loss, +β·k3(π, π_ref) per token with k3 = π_ref/π − log(π_ref/π) − 1 (Shao et al. eq. 4);
  4. ``epochs`` passes of ``minibatches`` clipped-surrogate (+ clipped-value for ppo) updates;
  5. β update (fixed, or Ziegler's adaptive controller).
Log-probs always use logits / T, the distribution the tokens were sampled from.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import lightning.pytorch as pl
import torch

from genlab.nn.heads import RewardModel, ScalarHead
from genlab.nn.transformer import Transformer
from genlab.rl.advantages import gae, group_advantages, masked_mean, masked_whiten, rloo_advantages, token_rewards
from genlab.rl.kl import KLController, kl_estimate
from genlab.rl.ppo_loss import policy_loss, value_loss
from genlab.rl.rollout import at_response, join, last_index, response_lengths, response_logprobs, response_mask, sample
from genlab.rl.sample_table import Sampler, log_sample_table


class PPO(pl.LightningModule):
    def __init__(self, policy: Transformer, ref: Transformer, reward_model: RewardModel, c, width: int,
                 temperature: float, evaluator: Callable[[Transformer], dict] | None = None, algorithm: str = "ppo",
                 sampler: Sampler | None = None, eval_steps: Sequence[int] | None = None):
        """``c``: the ``model.rlhf.ppo`` section; ``evaluator(policy)`` → metrics, run every ``c.eval_every`` steps
        (at the iterations in ``eval_steps`` if given) and after the last one; ``sampler(policy)`` → rows (prompt,
        response, gold) logged as a wandb table at the same steps."""
        super().__init__()
        self.automatic_optimization = False
        if algorithm not in ("ppo", "rloo", "grpo"):
            raise ValueError(f"unknown algorithm {algorithm!r}")
        if algorithm != "grpo" and c.kl_estimator == "k3":
            # E_π[k3] = KL, but −β·k3 as a *reward* has policy gradient E[k3·∇log π] ≠ ∇KL: a biased penalty
            warnings.warn("model.rlhf.ppo.kl_estimator=k3 puts k3 in the reward: its policy gradient is not the "
                          "KL's gradient (use k1 in the reward; GRPO uses k3 in the loss, where it is right)",
                          stacklevel=2)
        self.algorithm, self.group, self.sampler = algorithm, (1 if algorithm == "ppo" else c.group), sampler
        self.policy, self.value_head = policy, ScalarHead(policy.config.n_embd, zero_init=True)
        self.ref = ref.eval().requires_grad_(False)
        self.reward_model = reward_model.eval().requires_grad_(False)
        self.c, self.width, self.temperature, self.evaluator = c, width, temperature, evaluator
        self.eval_steps = None if eval_steps is None else set(eval_steps)
        self.kl_ctl = KLController(c.kl_coef, c.target_kl if c.adaptive_kl else None, c.horizon)
        self.history: list[dict] = []     # training statistics per iteration
        self.curve: list[dict] = []       # evaluations along training (reward vs KL)

    def policy_outputs(self, seq: torch.Tensor, prompt_len: torch.Tensor):
        """log π(y_k), entropy of π(·|prefix) and V(prefix) at the response positions, each ``[B, R]``."""
        h, _ = self.policy.hidden(seq[:, :-1])                          # state t predicts token t+1
        logp_all = (self.policy.lm_head(h) / self.temperature).log_softmax(-1)
        logp = logp_all.gather(-1, seq[:, 1:, None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return tuple(at_response(x, prompt_len, self.width) for x in (logp, entropy, self.value_head(h)))

    @torch.no_grad()
    def rollout(self, prompts: torch.Tensor, prompt_len: torch.Tensor) -> dict[str, torch.Tensor]:
        """Responses, log-probs, scores and advantages of one batch; rloo/grpo repeat each prompt ``group``
        times (consecutive rows), so every algorithm samples ``len(prompts)·group`` = ``c.rollouts`` responses."""
        prompts, prompt_len = prompts.repeat_interleave(self.group, 0), prompt_len.repeat_interleave(self.group, 0)
        responses = sample(self.policy, prompts, prompt_len, self.width, self.temperature)
        seq, mask = join(prompts, prompt_len, responses), response_mask(responses)
        logp, entropy, values = self.policy_outputs(seq, prompt_len)
        ref_logp = response_logprobs(self.ref, seq, prompt_len, self.width, self.temperature)
        score = self.reward_model(seq, last_index(prompt_len, responses))
        kl = kl_estimate(logp, ref_logp, self.c.kl_estimator) * mask
        beta = self.kl_ctl.beta
        if self.algorithm == "ppo":
            rewards = token_rewards(kl, score, response_lengths(responses), beta)   # −β·KL_t, + score at the end
            advantages, returns = gae(rewards, values, mask, self.c.gamma, self.c.lam)
        else:
            # sequence-level: rloo's reward carries the KL (k1 sum), grpo's KL is in the loss instead
            seq_reward = score - beta * kl.sum(1) if self.algorithm == "rloo" else score
            adv = (rloo_advantages if self.algorithm == "rloo" else group_advantages)(seq_reward, self.group)
            advantages, returns = adv[:, None] * mask, torch.zeros_like(mask)
        if self.c.whiten and self.algorithm != "grpo":                  # grpo's advantages are normalised already
            advantages = masked_whiten(advantages, mask)
        return {"seq": seq, "prompt_len": prompt_len, "mask": mask, "logp": logp, "ref_logp": ref_logp,
                "values": values * mask, "advantages": advantages, "returns": returns, "score": score,
                "kl": kl.sum(1), "entropy": (entropy * mask).sum(1)}

    def training_step(self, batch, batch_idx):
        due = batch_idx % self.c.eval_every == 0 if self.eval_steps is None else batch_idx in self.eval_steps
        if self.evaluator is not None and due:
            self.curve.append({"step": batch_idx, **self.evaluator(self.policy)})
            self.log_samples(batch_idx)
        r = self.rollout(*batch)
        opt = self.optimizers()
        stats = []
        for _ in range(self.c.epochs):
            for mb in torch.randperm(len(r["seq"]), device=r["seq"].device).chunk(self.c.minibatches):
                logp, _, values = self.policy_outputs(r["seq"][mb], r["prompt_len"][mb])
                mask = r["mask"][mb]
                pg_loss, pg = policy_loss(logp, r["logp"][mb], r["advantages"][mb], mask, self.c.clip)
                if self.algorithm == "ppo":
                    vf_loss, vf_clipfrac = value_loss(values, r["values"][mb], r["returns"][mb], mask,
                                                      self.c.value_clip)
                    loss = pg_loss + self.c.vf_coef * vf_loss
                else:                                                   # critic-free: no value loss
                    vf_loss = vf_clipfrac = torch.zeros((), device=logp.device)
                    loss = pg_loss
                if self.algorithm == "grpo":                            # + β·k3(π‖π_ref) per token, in the loss
                    loss = loss + self.kl_ctl.beta * masked_mean(kl_estimate(logp, r["ref_logp"][mb], "k3"), mask)
                opt.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(opt, gradient_clip_val=self.c.grad_clip, gradient_clip_algorithm="norm")
                opt.step()
                stats.append(torch.stack([pg_loss.detach(), vf_loss.detach(), pg["approxkl"], pg["clipfrac"],
                                          pg["ratio"], vf_clipfrac]))
        s = torch.stack(stats).mean(0)
        beta = self.kl_ctl.beta
        self.kl_ctl.update(float(r["kl"].mean()), len(r["seq"]))
        logs = {"objective/kl": r["kl"].mean(), "objective/entropy": r["entropy"].mean(),
                "objective/scores": r["score"].mean(), "objective/rlhf_reward": (r["score"] - beta * r["kl"]).mean(),
                "objective/beta": torch.tensor(beta, device=s.device), "loss/policy": s[0], "loss/value": s[1],
                "policy/approxkl": s[2], "policy/clipfrac": s[3], "val/ratio": s[4], "val/clipfrac": s[5],
                "val/mean_value": masked_mean(r["values"], r["mask"])}
        self.log_dict(logs, prog_bar=False)
        self.history.append({"step": batch_idx, **{k: float(v) for k, v in logs.items()}})
        return {"loss": s[0] + self.c.vf_coef * s[1]}

    def on_train_end(self):
        if self.evaluator is not None:
            self.curve.append({"step": len(self.history), **self.evaluator(self.policy)})
            self.log_samples(len(self.history))

    def log_samples(self, step: int) -> None:
        """A wandb table of the policy's answers to fixed prompts at this step (samples *during* training)."""
        log_sample_table(self, f"samples/{self.algorithm}", step, self.policy, self.sampler)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["ppo"] = {"beta": self.kl_ctl.beta, "curve": self.curve}   # history: runner.ResumeCursor

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint["ppo"]
        self.kl_ctl.beta, self.curve = state["beta"], state["curve"]

    def configure_optimizers(self):
        params = [*self.policy.parameters(), *self.value_head.parameters()]
        return torch.optim.Adam(params, lr=self.c.lr, eps=1e-5)
