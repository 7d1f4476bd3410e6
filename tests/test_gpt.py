"""GPT method and the gpt stage: schedule, windows, best-on-validation; a smoke run of gpt (gpt_scaling and
scaling_fit: tests/test_scaling_stage.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from genlab.models.gpt import lr_factor, windows


def test_lr_schedule_warms_up_then_decays_to_min_ratio():
    f = [lr_factor(s, warmup=10, decay_steps=100, min_ratio=0.1) for s in range(120)]
    assert f[0] == pytest.approx(1 / 11) and f[9] == pytest.approx(10 / 11)
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.1 + 0.5 * 0.9)                      # cosine midpoint
    assert all(a >= b for a, b in zip(f[10:100], f[11:101]))            # monotone decay
    assert f[100] == f[119] == pytest.approx(0.1)


def test_windows_are_shifted_views_and_val_tiles_each_token_once():
    ids = torch.arange(20)
    w = windows(ids, block_size=4)
    assert w.shape == (16, 5) and torch.equal(w[3], torch.arange(3, 8))
    v = windows(ids, block_size=4, stride=4)
    targets = v[:, 1:].flatten()
    assert torch.equal(targets, torch.arange(1, 1 + len(targets)))     # every target exactly once


def test_split_loss_is_the_token_mean_over_every_window():
    from genlab.models.gpt import GPT
    from genlab.nn.transformer import Transformer, TransformerConfig
    from genlab.stages.gpt import split_loss

    torch.manual_seed(0)
    module = GPT(Transformer(TransformerConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=8)),
                 1e-3, 1e-4, 1, 10, 0.0, 0.99)
    ids = torch.randint(7, (23,))
    w = windows(ids, 4, stride=4)
    logits = module.net(w[:, :-1])
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten()).item()
    assert split_loss(module, ids, 4, batch_size=2) == pytest.approx(expected, rel=1e-6)


def test_gpt_stage_smoke(make_cfg, prepared, tmp_path):
    from genlab.io import load_model
    from genlab.stages import gpt

    cfg = make_cfg(prepared, f"paths.models={tmp_path}/models", f"paths.reports={tmp_path}/reports",
                   f"paths.checkpoints={tmp_path}/ckpt", f"paths.logs={tmp_path}/logs")
    gpt.run(cfg)
    m = json.loads((tmp_path / "reports/metrics/gpt.json").read_text())
    assert m["val_bpc"] == pytest.approx(m["val_loss"] / math.log(2))
    assert m["val_loss"] < math.log(m["vocab_size"]) + 0.1 and m["tokens_per_sec"] > 0
    history = (tmp_path / "reports/plots/gpt/curve.csv").read_text().splitlines()
    assert len(history) == 1 + 2                                          # eval at steps 3 and 6
    # the best is kept; with val_tokens the validations pick it on a subset and val_loss is the whole split's
    best = min(float(r.split(",")[-1]) for r in history[1:])
    assert m.get("val_loss_selection", m["val_loss"]) == pytest.approx(best)
    payload = load_model(tmp_path / "models/gpt/model.pt")
    assert len(payload["vocab"]) == m["vocab_size"]
    assert (tmp_path / "reports/figures/gpt/samples.txt").read_text().startswith("--- sample 1")
    assert not (tmp_path / "ckpt" / "gpt").exists() or not any((tmp_path / "ckpt" / "gpt").iterdir())
