"""Schema of ``model.rlhf``: the task, SFT, reward model, PPO, DPO and over-optimization sections.

Values live in ``experiments/model/rlhf/default.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from omegaconf import MISSING

from genlab.config.checks import Section, nonnegative, positive, fraction, one_of
from genlab.errors import ConfigError


@dataclass
class RlhfTaskConfig(Section):
    """The task, the gold reward (the "human") and the demonstrations with a systematic carry habit."""
    path: ClassVar[str] = "model.rlhf.task"
    digits: list[int] = MISSING       # operand digit counts (from data.arithmetic)
    format_weight: float = MISSING    # gold = (1 − w)·digit accuracy + w·[exact format]
    carry_error: float = MISSING      # share of units-carry prompts whose demonstrator writes a + b − 10
    digit_noise: float = MISSING      # fraction of SFT demonstrations with one wrong digit
    format_noise: float = MISSING     # fraction with the last digit dropped or a stray digit appended
    temperature: float = MISSING      # sampling temperature of rollouts, pairs and evaluation
    eval_prompts: int = MISSING       # test prompts every policy is evaluated on (same prompts for all)
    temperatures: list[float] = MISSING   # the SFT temperature curve, the KL-matched baseline (0 = greedy)
    threads: int = MISSING            # torch threads: these models are so small that more threads only add sync

    def check(self):
        positive(self, "temperature", "eval_prompts", "threads")
        fraction(self, "format_weight", "digit_noise", "format_noise", "carry_error")
        if not self.temperatures or min(self.temperatures) < 0 or 1.0 not in list(self.temperatures):
            raise ConfigError(f"{self.path}.temperatures must be ≥ 0 and contain 1.0 (got {self.temperatures})",
                              "e.g. model.rlhf.task.temperatures=[1.0,0.7,0.5,0.3,0.0]")
        if not self.digits or min(self.digits) < 1:
            raise ConfigError(f"{self.path}.digits must be a non-empty list of ints ≥ 1 (got {self.digits})",
                              "e.g. model.rlhf.task.digits=[3]")


@dataclass
class RlhfNetConfig(Section):
    """The transformer shared by policy, reference, reward model and value head."""
    path: ClassVar[str] = "model.rlhf.net"
    n_layer: int = MISSING
    n_head: int = MISSING
    n_embd: int = MISSING

    def check(self):
        positive(self, "n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise ConfigError(f"{self.path}.n_embd={self.n_embd} must be a multiple of n_head={self.n_head}",
                              "e.g. n_embd=64 n_head=4")


@dataclass
class SftConfig(Section):
    """Base model (pretrained on correct answers) then SFT on noisy demonstrations."""
    path: ClassVar[str] = "model.rlhf.sft"
    base_steps: int = MISSING
    base_lr: float = MISSING
    steps: int = MISSING
    lr: float = MISSING
    demos: int = MISSING              # demonstrations (train prompts disjoint from the base model's)
    batch_size: int = MISSING
    weight_decay: float = MISSING

    def check(self):
        positive(self, "base_steps", "base_lr", "steps", "lr", "demos", "batch_size")
        nonnegative(self, "weight_decay")


@dataclass
class RewardModelConfig(Section):
    path: ClassVar[str] = "model.rlhf.reward_model"
    source: str = MISSING             # generated: SFT samples labelled by the gold reward; jsonl: `jsonl`
    jsonl: Optional[str] = MISSING    # lines {"prompt": "123+456=", "chosen": "9750\n", "rejected": "9650\n"}
    pairs: int = MISSING              # training pairs (generated)
    val_pairs: int = MISSING          # held-out pairs
    label_temperature: float = MISSING   # BT labels: P(y1 ≻ y2) = σ((gold1 − gold2) / τ)
    margin: float = MISSING           # m = margin·(labeller margin of the pairs file), never gold
    center: float = MISSING           # reward-centering coefficient η·(r_c + r_r)²
    extra_layers: int = MISSING       # fresh blocks on top of the SFT transformer (compare, then aggregate)
    freeze_sft: bool = MISSING        # train only the fresh blocks, final LN and head
    pool: str = MISSING               # Σ over the response of (next-token logit + head); last: head at the last token
    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    norm_samples: int = MISSING       # SFT samples that set the reward's mean 0 / std 1

    def check(self):
        one_of(self, "source", ("generated", "jsonl"))
        one_of(self, "pool", ("last", "tokens"))
        positive(self, "pairs", "val_pairs", "label_temperature", "steps", "batch_size", "lr", "norm_samples")
        if self.margin < 0 or self.center < 0 or self.extra_layers < 0:
            raise ConfigError(f"{self.path}: margin, center and extra_layers must be ≥ 0",
                              "e.g. margin=0 center=0.01 extra_layers=2")
        if self.source == "jsonl" and not self.jsonl:
            raise ConfigError(f"{self.path}.source=jsonl needs {self.path}.jsonl",
                              f"set {self.path}.jsonl=/path/to/pairs.jsonl")


@dataclass
class PpoConfig(Section):
    path: ClassVar[str] = "model.rlhf.ppo"
    algorithms: list[str] = MISSING   # ppo (critic + GAE) | rloo (Ahmadian 2024) | grpo (Shao 2024), same budget
    group: int = MISSING              # rloo/grpo: samples per prompt (rollouts/group prompts per iteration)
    steps: int = MISSING              # rollout → advantages → PPO-epochs iterations
    rollouts: int = MISSING           # responses per iteration (every algorithm)
    epochs: int = MISSING             # PPO epochs over each rollout batch
    minibatches: int = MISSING
    lr: float = MISSING
    clip: float = MISSING             # ε of the clipped surrogate
    value_clip: float = MISSING
    vf_coef: float = MISSING
    gamma: float = MISSING
    lam: float = MISSING
    kl_coef: float = MISSING          # β (initial β when adaptive)
    kl_estimator: str = MISSING       # k1 | k3 (per-token penalty)
    adaptive_kl: bool = MISSING       # Ziegler et al.'s controller towards target_kl
    target_kl: float = MISSING
    horizon: int = MISSING
    whiten: bool = MISSING
    grad_clip: float = MISSING
    eval_every: int = MISSING         # iterations between evaluations (the reward-vs-KL curve)

    def check(self):
        positive(self, "steps", "rollouts", "epochs", "minibatches", "lr", "clip", "value_clip", "target_kl",
                 "horizon", "grad_clip", "eval_every")
        one_of(self, "kl_estimator", ("k1", "k3"))
        one_of(self, "algorithms", ("ppo", "rloo", "grpo"))
        if self.group < 2 or self.rollouts % self.group:
            raise ConfigError(f"{self.path}.group={self.group} must be ≥ 2 and divide rollouts={self.rollouts}",
                              "e.g. rollouts=256 group=4")
        if self.kl_coef < 0 or self.vf_coef < 0 or not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ConfigError(f"{self.path}: need kl_coef ≥ 0, vf_coef ≥ 0, 0 < gamma ≤ 1, 0 ≤ lam ≤ 1",
                              "e.g. kl_coef=0.05 gamma=1 lam=0.95")
        if self.rollouts % self.minibatches:
            raise ConfigError(f"{self.path}.rollouts={self.rollouts} must be a multiple of minibatches="
                              f"{self.minibatches}", "e.g. rollouts=256 minibatches=4")


@dataclass
class DpoConfig(Section):
    path: ClassVar[str] = "model.rlhf.dpo"
    losses: list[str] = MISSING
    beta: float = MISSING             # β of DPO / hinge, τ of IPO
    ipo_length_norm: bool = MISSING   # IPO on per-token mean log-ratios (TRL's IPO), not sums
    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    sample_every: int = MISSING       # steps between wandb tables of the policy's answers to fixed prompts

    def check(self):
        one_of(self, "losses", ("dpo", "ipo", "hinge"))
        positive(self, "beta", "steps", "batch_size", "lr", "sample_every")


@dataclass
class OveroptimizationConfig(Section):
    """Gold vs proxy reward against √KL: best-of-n and PPO, for reward models of several data sizes and of
    several parameter sizes at fixed data."""
    path: ClassVar[str] = "model.rlhf.overoptimization"
    rm_pairs: list[int] = MISSING     # RM training-set sizes
    rm_layers: list[int] = MISSING    # RM parameter sizes: fresh blocks on the frozen SFT layers (+ the main RM's)
    rm_layers_pairs: int = MISSING    # … all trained on this many pairs
    rm_steps: int = MISSING
    n_max: int = MISSING              # best-of-n for n = 1, 2, 4, … ≤ n_max (unbiased estimator)
    prompts: int = MISSING            # prompts for best-of-n and the PPO curve
    ppo_steps: int = MISSING          # PPO against the smallest-data reward model, over `seeds`
    ppo_eval_steps: list[int] = MISSING   # iterations at which the curve is evaluated (and at the end)
    kl_coef: float = MISSING          # weak penalty, so the policy travels far enough to over-optimize
    n_boot: int = MISSING             # bootstrap resamples (prompts) for the Gao fits' intervals

    def check(self):
        positive(self, "rm_steps", "n_max", "prompts", "ppo_steps", "n_boot")
        steps = list(self.ppo_eval_steps)
        if not steps or steps != sorted(set(steps)) or steps[0] < 0 or steps[-1] >= self.ppo_steps:
            raise ConfigError(f"{self.path}.ppo_eval_steps={steps} must be increasing iterations in "
                              f"[0, ppo_steps={self.ppo_steps})", "e.g. ppo_eval_steps=[0,1,2,3,5,8,12,18,27]")
        if not self.rm_pairs or min(self.rm_pairs) < 2 or self.kl_coef < 0:
            raise ConfigError(f"{self.path}: rm_pairs must be ≥ 2 each and kl_coef ≥ 0 (got {self.rm_pairs})",
                              "e.g. rm_pairs=[100,400,4000]")
        if not self.rm_layers or min(self.rm_layers) < 0 or self.rm_layers_pairs < 2:
            raise ConfigError(f"{self.path}: rm_layers must be a non-empty list of layer counts ≥ 0 and "
                              f"rm_layers_pairs ≥ 2 (got {list(self.rm_layers)}, {self.rm_layers_pairs})",
                              "e.g. rm_layers=[1,4] rm_layers_pairs=1000")


@dataclass
class RlhfConfig:
    """SFT → reward model → PPO / DPO → over-optimization (stages sft, reward_model, ppo, dpo, overoptimization)."""
    path: ClassVar[str] = "model.rlhf"
    task: RlhfTaskConfig = field(default_factory=RlhfTaskConfig)
    net: RlhfNetConfig = field(default_factory=RlhfNetConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    ppo: PpoConfig = field(default_factory=PpoConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    overoptimization: OveroptimizationConfig = field(default_factory=OveroptimizationConfig)
