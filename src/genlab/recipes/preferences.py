"""The preference pairs file (``models/rlhf/preferences``) that `reward_model` writes and `dpo` and
`overoptimization` read back, and the split of pairs into train and held-out subsets."""
from __future__ import annotations

import torch

from genlab.errors import GenlabError
from genlab.io import load_arrays, save_arrays
from genlab.recipes import rlhf

# ``margin``: the labeller's own strength of preference (≥ 0), the only graded signal training may use;
# ``gold_*`` are kept for evaluation alone and never reach a loss.
FIELDS = ("prompts", "prompt_len", "chosen", "rejected", "margin", "gold_chosen", "gold_rejected", "split")


def save_pairs(cfg, pairs: dict) -> None:
    save_arrays(rlhf.models_dir(cfg) / "preferences", {k: pairs[k].numpy() for k in FIELDS},
                rlhf.sections(cfg, "sft", "reward_model"))


def load_pairs(cfg) -> dict[str, torch.Tensor]:
    arrays, meta = load_arrays(rlhf.models_dir(cfg) / "preferences")
    expected = rlhf.sections(cfg, "sft", "reward_model")
    if {k: meta.get(k) for k in expected} != expected:
        raise GenlabError("models/rlhf/preferences was made with a different config",
                          "re-run `genlab reward_model` (or `dvc repro`)")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def subset(pairs: dict, mask: torch.Tensor) -> dict:
    return {k: v[mask] for k, v in pairs.items()}
