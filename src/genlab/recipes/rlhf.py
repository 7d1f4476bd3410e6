"""The RLHF setting shared by its five stages (sft, reward_model, ppo, dpo, overoptimization):
the task's problems, the transformer they share, weights on disk, evaluation on fixed prompts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from genlab.data import prepared
from genlab.data.arithmetic import STOI, VOCAB
from genlab.data.rlhf_task import prompts, response_width, units_carry
from genlab.errors import GenlabError
from genlab.evaluate.policy import evaluate, summary
from genlab.io import load_model, save_model
from genlab.nn.heads import RewardModel
from genlab.nn.transformer import Transformer, TransformerConfig
from genlab.rl.sample_table import Sampler, sample_rows


def setup(cfg) -> None:
    torch.set_num_threads(cfg.model.rlhf.task.threads)


def models_dir(cfg) -> Path:
    return Path(cfg.paths.models) / "rlhf"


def sections(cfg, *names: str) -> dict:
    """The config sections a saved artefact depends on (checked again when it is loaded)."""
    r = cfg.model.rlhf
    return {"seed": artifact_seed(cfg), "data": OmegaConf.to_container(cfg.data.arithmetic),
            **{n: OmegaConf.to_container(r[n]) for n in ("task", "net", *names)}}


def width(cfg) -> int:
    return response_width(max(cfg.model.rlhf.task.digits))


def problems(cfg, split: str, n: int | None = None, offset: int = 0) -> dict[str, torch.Tensor]:
    """Arithmetic problems of ``split`` with the task's digit counts: a, b, digits, prompts, prompt_len."""
    arrays, meta = prepared.load(cfg, "arithmetic")
    keep = np.isin(arrays[f"{split}_digits"], cfg.model.rlhf.task.digits)
    if not keep.any():
        raise GenlabError(f"no {split} problems with model.rlhf.task.digits={list(cfg.model.rlhf.task.digits)} "
                          f"in the arithmetic data", "add them to data.arithmetic.digits (then `genlab prepare`)")
    if not meta.get("reverse", True):
        raise GenlabError("the RLHF task needs reversed answers", "set data.arithmetic.reverse=true")
    out = {k: torch.from_numpy(arrays[f"{split}_{k}"][keep][offset: None if n is None else offset + n])
           for k in ("a", "b", "digits")}
    out["prompts"], out["prompt_len"] = prompts(out["a"], out["b"], out["digits"])
    return out


def eval_problems(cfg) -> dict[str, torch.Tensor]:
    """The fixed test prompts every policy is compared on."""
    return problems(cfg, "test", cfg.model.rlhf.task.eval_prompts)


def new_net(cfg, extra_layers: int = 0) -> Transformer:
    n, d = cfg.model.rlhf.net, max(cfg.model.rlhf.task.digits)
    return Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=2 * d + 2 + response_width(d),
                                         n_layer=n.n_layer + extra_layers, n_head=n.n_head, n_embd=n.n_embd,
                                         dropout=0.0))


def new_reward_model(cfg, sft_state: dict | None = None) -> RewardModel:
    """The SFT transformer plus ``reward_model.extra_layers`` fresh blocks on top (where the answer the SFT
    layers compute can be compared with the response), and the head pooled by ``reward_model.pool`` over the
    response (which starts after the prompt's "="); SFT weights if given."""
    r = cfg.model.rlhf.reward_model
    rm = RewardModel(new_net(cfg, r.extra_layers), r.pool, STOI["="])
    if sft_state is not None:
        missing, unexpected = rm.backbone.load_state_dict(sft_state, strict=False)
        fresh = {f"blocks.{i}." for i in range(cfg.model.rlhf.net.n_layer, len(rm.backbone.blocks))}
        if unexpected or any(not k.startswith(tuple(fresh)) for k in missing):
            raise GenlabError("the SFT weights do not fit the reward model", "re-run `genlab sft` with this config")
    return rm


def save_net(cfg, name: str, module: torch.nn.Module, *needs: str, **extra) -> Path:
    return save_model(models_dir(cfg) / f"{name}.pt", module.state_dict(), sections(cfg, *needs), **extra)


def load_policy(cfg, name: str, *needs: str) -> Transformer:
    """A saved policy (``sft``, ``ppo``, ``dpo/<loss>``), frozen copy in eval mode."""
    net = new_net(cfg)
    net.load_state_dict(load_model(models_dir(cfg) / f"{name}.pt", sections(cfg, *needs))["state_dict"])
    return net.eval().requires_grad_(False)


def load_reward_model(cfg, name: str = "reward_model", needs: tuple = ("sft", "reward_model")) -> RewardModel:
    rm = new_reward_model(cfg)
    rm.load_state_dict(load_model(models_dir(cfg) / f"{name}.pt", sections(cfg, *needs))["state_dict"])
    return rm.eval().requires_grad_(False)


def evaluate_policy(cfg, policy, ref, reward_model, probs: dict, temperature: float | None = None
                    ) -> dict[str, torch.Tensor]:
    """Per-prompt gold, proxy and KL to ``ref`` of one response per prompt sampled under ``cfg.seed``
    (``temperature``: the policy's own, 0 = greedy; default the task's)."""
    t = cfg.model.rlhf.task
    return evaluate(policy, ref, reward_model, probs, width(cfg), t.temperature, True, t.format_weight, cfg.seed,
                    temperature)


def sampler(cfg, probs: dict, n: int = 8) -> Sampler:
    """The wandb sample table's rows during training (PPO, DPO): the first ``n`` of ``probs`` answered at the
    task's temperature under ``cfg.seed``, with their gold reward."""
    t = cfg.model.rlhf.task
    return sample_rows(probs, width(cfg), t.temperature, t.format_weight, cfg.seed, n)


def policy_row(cfg, result: dict, probs: dict, baseline: dict | None = None) -> dict:
    """``summary`` of one evaluation plus the task's two prompt groups: gold on the prompts with a units
    carry (where the demonstrators' habit makes SFT's mode wrong) and on the rest."""
    carry = units_carry(probs["a"], probs["b"])
    return {**summary(result, baseline), "gold_carry": float(result["gold"][carry].mean()),
            "gold_no_carry": float(result["gold"][~carry].mean()), "carry_share": float(carry.float().mean())}


def temperature_curve(cfg, sft, reward_model, probs: dict) -> list[dict]:
    """The SFT policy at each of ``task.temperatures`` (0 = greedy): gold, proxy and KL(π_T‖π_SFT) per point,
    sampled under ``cfg.seed``. The preference-free baseline: what sharpening SFT alone buys at each KL."""
    return [{"temperature": float(tau), **policy_row(cfg, evaluate_policy(cfg, sft, sft, reward_model, probs, tau),
                                                      probs)}
            for tau in cfg.model.rlhf.task.temperatures]


def with_seed(cfg, seed: int):
    """A copy of ``cfg`` with ``seed`` (one replicate of a ``genlab.parallel.run_many`` job). The SFT model,
    reward model and pairs it reads stay those of the stage's ``seed`` (``artifact_seed``)."""
    out = cfg.copy()
    OmegaConf.set_struct(out, False)
    out.artifact_seed = artifact_seed(cfg)
    out.seed = int(seed)
    return out


def with_reward_model(cfg, **changes):
    """A copy of ``cfg`` with ``model.rlhf.reward_model`` keys changed (a reward model of another size). Its
    run hash follows the change; the SFT model and pairs it reads are the unchanged ones."""
    out = cfg.copy()
    OmegaConf.set_struct(out, False)
    out.model.rlhf.reward_model = OmegaConf.merge(out.model.rlhf.reward_model, changes)
    return out


def artifact_seed(cfg) -> int:
    """The seed the saved RLHF artefacts (sft, reward model, pairs) were made under."""
    return int(cfg.get("artifact_seed", cfg.seed))
