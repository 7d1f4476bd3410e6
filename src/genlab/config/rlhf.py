"""Schema of ``model.rlhf``: the task, SFT, reward model, PPO, DPO and over-optimization sections."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from genlab.config.checks import positive, fraction, one_of
from genlab.errors import ConfigError


@dataclass
class RlhfTaskConfig:
    """The task, the gold reward (the "human") and the noisy demonstrations."""
    path: ClassVar[str] = "model.rlhf.task"
    digits: list[int] = field(default_factory=lambda: [3])   # operand digit counts (from data.arithmetic)
    format_weight: float = 0.2        # gold = (1 − w)·digit accuracy + w·[exact format]
    digit_noise: float = 0.4          # fraction of SFT demonstrations with one wrong digit
    format_noise: float = 0.15        # fraction with the last digit dropped or a stray digit appended
    temperature: float = 1.0          # sampling temperature of rollouts, pairs and evaluation
    eval_prompts: int = 1000          # test prompts every policy is evaluated on (same prompts for all)
    threads: int = 1                  # torch threads: these models are so small that more threads only add sync

    def __post_init__(self):
        positive(self, "temperature", "eval_prompts", "threads")
        fraction(self, "format_weight", "digit_noise", "format_noise")
        if not self.digits or min(self.digits) < 1:
            raise ConfigError(f"{self.path}.digits must be a non-empty list of ints ≥ 1 (got {self.digits})",
                              "e.g. model.rlhf.task.digits=[3]")


@dataclass
class RlhfNetConfig:
    """The transformer shared by policy, reference, reward model and value head."""
    path: ClassVar[str] = "model.rlhf.net"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64

    def __post_init__(self):
        positive(self, "n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise ConfigError(f"{self.path}.n_embd={self.n_embd} must be a multiple of n_head={self.n_head}",
                              "e.g. n_embd=64 n_head=4")


@dataclass
class SftConfig:
    """Base model (pretrained on correct answers) then SFT on noisy demonstrations."""
    path: ClassVar[str] = "model.rlhf.sft"
    base_steps: int = 1200
    base_lr: float = 3e-3
    steps: int = 400
    lr: float = 1e-3
    demos: int = 8000                 # demonstrations (train prompts disjoint from the base model's)
    batch_size: int = 128
    weight_decay: float = 0.01

    def __post_init__(self):
        positive(self, "base_steps", "base_lr", "steps", "lr", "demos", "batch_size")


@dataclass
class RewardModelConfig:
    path: ClassVar[str] = "model.rlhf.reward_model"
    source: str = "generated"         # generated: SFT samples labelled by the gold reward; jsonl: `jsonl`
    jsonl: Optional[str] = None       # lines {"prompt": "123+456=", "chosen": "9750\n", "rejected": "9650\n"}
    pairs: int = 16000                # training pairs (generated)
    val_pairs: int = 1000             # held-out pairs
    label_temperature: float = 0.1    # BT labels: P(y1 ≻ y2) = σ((gold1 − gold2) / τ)
    margin: float = 0.0               # loss margin m = margin·|gold_c − gold_r| (0: plain BT)
    center: float = 0.01              # reward-centering coefficient η·(r_c + r_r)²
    extra_layers: int = 2             # fresh blocks on top of the SFT transformer (compare, then aggregate)
    freeze_sft: bool = True           # train only the fresh blocks, final LN and head
    pool: str = "tokens"              # Σ over the response of (next-token logit + head); last: head at the last token
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    norm_samples: int = 2000          # SFT samples that set the reward's mean 0 / std 1

    def __post_init__(self):
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
class PpoConfig:
    path: ClassVar[str] = "model.rlhf.ppo"
    steps: int = 60                   # rollout → GAE → PPO-epochs iterations
    rollouts: int = 256               # prompts per iteration
    epochs: int = 4                   # PPO epochs over each rollout batch
    minibatches: int = 4
    lr: float = 1e-4
    clip: float = 0.2                 # ε of the clipped surrogate
    value_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.1              # β (initial β when adaptive)
    kl_estimator: str = "k1"          # k1 | k3 (per-token penalty)
    adaptive_kl: bool = False         # Ziegler et al.'s controller towards target_kl
    target_kl: float = 1.0
    horizon: int = 10000
    whiten: bool = True
    grad_clip: float = 1.0
    eval_every: int = 10              # iterations between evaluations (the reward-vs-KL curve)

    def __post_init__(self):
        positive(self, "steps", "rollouts", "epochs", "minibatches", "lr", "clip", "value_clip", "target_kl",
                 "horizon", "grad_clip", "eval_every")
        one_of(self, "kl_estimator", ("k1", "k3"))
        if self.kl_coef < 0 or self.vf_coef < 0 or not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ConfigError(f"{self.path}: need kl_coef ≥ 0, vf_coef ≥ 0, 0 < gamma ≤ 1, 0 ≤ lam ≤ 1",
                              "e.g. kl_coef=0.05 gamma=1 lam=0.95")
        if self.rollouts % self.minibatches:
            raise ConfigError(f"{self.path}.rollouts={self.rollouts} must be a multiple of minibatches="
                              f"{self.minibatches}", "e.g. rollouts=256 minibatches=4")


@dataclass
class DpoConfig:
    path: ClassVar[str] = "model.rlhf.dpo"
    losses: list[str] = field(default_factory=lambda: ["dpo", "ipo", "hinge"])
    beta: float = 0.1                 # β of DPO / hinge, τ of IPO
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4

    def __post_init__(self):
        one_of(self, "losses", ("dpo", "ipo", "hinge"))
        positive(self, "beta", "steps", "batch_size", "lr")


@dataclass
class OveroptimizationConfig:
    """Gold vs proxy reward against √KL: best-of-n and PPO, for reward models of several data sizes."""
    path: ClassVar[str] = "model.rlhf.overoptimization"
    rm_pairs: list[int] = field(default_factory=lambda: [100, 400, 4000])   # RM training-set sizes
    rm_steps: int = 300
    n_max: int = 64                   # best-of-n for n = 1, 2, 4, … ≤ n_max (unbiased estimator)
    prompts: int = 500                # prompts for best-of-n
    ppo_steps: int = 40               # PPO against each reward model (checkpoints every eval_every)
    kl_coef: float = 0.01             # weak penalty, so the policy travels far enough to over-optimize

    def __post_init__(self):
        positive(self, "rm_steps", "n_max", "prompts", "ppo_steps")
        if not self.rm_pairs or min(self.rm_pairs) < 2 or self.kl_coef < 0:
            raise ConfigError(f"{self.path}: rm_pairs must be ≥ 2 each and kl_coef ≥ 0 (got {self.rm_pairs})",
                              "e.g. rm_pairs=[100,400,4000]")


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
