"""RLHF plumbing: preference JSONL input, a reward model learning a planted gold reward, and a smoke run
of the stages sft → reward_model → ppo → dpo → overoptimization (plus the JSONL reward-model path)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from genlab.data.arithmetic import EOS, PAD, STOI, VOCAB, encode
from genlab.data.preferences import bradley_terry_labels, read_jsonl
from genlab.errors import GenlabError
from genlab.nn.heads import RewardModel
from genlab.nn.transformer import Transformer, TransformerConfig
from genlab.rl.preference import bradley_terry_loss
from genlab.rl.rollout import join, last_index


@pytest.mark.parametrize("line, needle", [
    ('{"prompt": "12+34=", "chosen": "64\\n"', "not valid JSON"),
    ('{"prompt": "12+34=", "chosen": "640\\n"}', "needs keys prompt, chosen, rejected"),
    ('{"prompt": "12+34=", "chosen": "64a\\n", "rejected": "650\\n"}', "outside the vocabulary"),
    ('{"prompt": "12+34=", "chosen": "", "rejected": "650\\n"}', "must be a non-empty string"),
    ('{"prompt": "12+34=", "chosen": "6400000000\\n", "rejected": "650\\n"}', "more than"),
])
def test_malformed_jsonl_is_refused_naming_the_line(tmp_path, line, needle):
    path = tmp_path / "pairs.jsonl"
    good = '{"prompt": "12+34=", "chosen": "640\\n", "rejected": "650\\n"}'
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(GenlabError, match=needle) as err:
        read_jsonl(path, width=5)
    assert f"{path}:3" in str(err.value)


def test_jsonl_is_tokenised_with_eos_and_padding(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "12+34=", "chosen": "640\\n", "rejected": "65"}\n'
                    '{"prompt": "1+2=", "chosen": "30\\n", "rejected": "40\\n"}\n')
    pairs = read_jsonl(path, width=5)
    assert pairs["prompt_len"].tolist() == [6, 4]
    assert pairs["chosen"][0].tolist() == encode("640\n") + [PAD]
    assert pairs["rejected"][0].tolist() == encode("65") + [EOS, PAD, PAD]


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread (more only add synchronisation); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("pool", ["last", "tokens"])
def test_reward_model_learns_a_planted_gold_reward_from_bradley_terry_pairs(one_thread, pool):
    """Gold = number of 7s in a 4-digit response; BT-labelled pairs (τ = 0.2); held-out pairs ranked by gold."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def pairs(n):
        prompts = torch.tensor([encode("12+34=")] * n)
        prompt_len = torch.full((n,), 6)
        y = [torch.cat([torch.randint(0, 10, (n, 4), generator=g), torch.full((n, 1), EOS)], 1) for _ in range(2)]
        for part in y:                                                   # enrich in 7s so every count occurs
            part[:, :4][torch.rand(n, 4, generator=g) < 0.3] = 7
        gold = [(part == 7).sum(1).float() for part in y]
        first = bradley_terry_labels(gold[0], gold[1], 0.2, g)
        chosen, rejected = torch.where(first[:, None], y[0], y[1]), torch.where(first[:, None], y[1], y[0])
        gc, gr = torch.where(first, gold[0], gold[1]), torch.where(first, gold[1], gold[0])
        return [join(prompts, prompt_len, chosen), join(prompts, prompt_len, rejected),
                last_index(prompt_len, chosen), last_index(prompt_len, rejected), gc - gr]

    rm = RewardModel(Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=12, n_layer=1, n_head=2,
                                                   n_embd=32)), pool, STOI["="])
    opt = torch.optim.Adam(rm.parameters(), lr=3e-3)
    train = pairs(4000)
    for step in range(300):
        i = torch.randint(0, 4000, (64,), generator=g)
        loss = bradley_terry_loss(rm(train[0][i], train[2][i]), rm(train[1][i], train[3][i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    seq_c, seq_r, last_c, last_r, gold_diff = pairs(1000)
    with torch.no_grad():
        diff = rm(seq_c, last_c) - rm(seq_r, last_r)
    strict = gold_diff != 0
    accuracy = float(((diff > 0) == (gold_diff > 0))[strict].float().mean())
    assert accuracy > 0.9, accuracy


def test_token_pooled_reward_sums_logit_and_head_scores_of_the_response_tokens_only():
    """r = Σ over response tokens y_t of logits(h_{t−1})[y_t] + head(h_t): prompt and pads excluded."""
    rm = RewardModel(Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=12, n_layer=1, n_head=2,
                                                   n_embd=8)), "tokens", STOI["="])
    assert not rm.head.linear.weight.any()                                   # starts as the LM's logit score
    torch.nn.init.normal_(rm.head.linear.weight)
    seq = torch.tensor([encode("12+34=64\n") + [PAD] * 3, encode("1+2=3\n") + [PAD] * 6])
    last = torch.tensor([8, 5])
    with torch.no_grad():
        h = rm.backbone.hidden(seq)[0]
        logits, head = rm.backbone.lm_head(h), rm.head(h)
        expected = torch.stack([sum(logits[i, t - 1, seq[i, t]] + head[i, t] for t in range(first, int(end) + 1))
                                for i, (first, end) in enumerate(zip((6, 4), last))])
        torch.testing.assert_close(rm(seq, last), expected)
        torch.testing.assert_close(rm(seq.masked_fill(seq == PAD, 0), last), expected)   # causal: tail unseen
    with pytest.raises(ValueError, match="pool"):
        RewardModel(rm.backbone, "mean", STOI["="])


def test_rlhf_stages_smoke(make_cfg, prepared, tmp_path, one_thread):
    from genlab.stages import dpo, overoptimization, ppo, reward_model, sft

    cfg = make_cfg(prepared, f"paths.models={tmp_path / 'models'}", f"paths.reports={tmp_path / 'reports'}",
                   f"paths.checkpoints={tmp_path / 'ckpt'}", f"paths.logs={tmp_path / 'logs'}")
    for stage in (sft, reward_model, ppo, dpo, overoptimization):
        stage.run(cfg)
    reports = tmp_path / "reports"
    summary = json.loads((reports / "metrics" / "rlhf.json").read_text())
    assert {"reward_model", "base", "sft", "sft_temperature_curve", "ppo", "rloo", "grpo", "dpo", "ipo",
            "best_of_n"} <= summary.keys()
    assert {"gold_reward", "gold_reward_ci95", "kl", "vs_temperature_at_kl", "vs_best_of_n_at_kl"} <= summary["ppo"].keys()
    assert 0.0 <= summary["sft"]["gold_reward"] <= 1.0 and 0.0 <= summary["reward_model"]["pair_accuracy"] <= 1.0
    assert [r["n"] for r in summary["best_of_n"]] == [1, 2, 4, 8] and abs(summary["best_of_n"][0]["kl_exact"]["mean"]) < 1e-9
    assert all(r["kl_exact"]["mean"] <= r["kl_bound"] + 1e-9 for r in summary["best_of_n"])
    over = json.loads((reports / "metrics" / "overoptimization.json").read_text())
    assert {"alpha", "beta", "alpha_ci95"} <= over["sizes"]["10 pairs"]["ppo"]["fit"].keys()
    ids = {c["id"] for c in over["conclusions"]} | {c["id"] for c in json.loads(
        (reports / "metrics" / "ppo.json").read_text())["conclusions"]}
    assert {"ppo_beats_kl_matched_sft_temperature", "rloo_vs_ppo_gold", "ppo_rm10_gold_falls_while_proxy_rises",
            "best_of_n_rmmain_gold_falls_while_proxy_rises"} <= ids
    ppo_log = (reports / "plots" / "ppo" / "train.csv").read_text().splitlines()[0]
    for name in ("objective/kl", "objective/entropy", "objective/scores", "objective/rlhf_reward",
                 "policy/approxkl", "policy/clipfrac", "loss/policy", "loss/value", "val/ratio"):
        assert name in ppo_log
    size = over["rm_size"]                                  # smoke: 1 and 2 fresh layers on 30 pairs
    assert size["models"] == ["30 pairs, 1 layer", "30 pairs"] and size["extra_layers"] == [1, 2]
    assert size["trained_parameters"][0] < size["trained_parameters"][1] < size["parameters"][1]
    assert size["larger_minus_smaller_gold_at_n_max"]["n"] == len(cfg.seeds)
    assert over["sizes"]["30 pairs, 1 layer"]["best_of_n"]["falls_while_proxy_rises"]["n"] == len(cfg.seeds)
    assert {"best_of_n_rm30_l2_vs_l1_gold_at_n8", "best_of_n_rm30_l1_gold_falls_while_proxy_rises"} <= ids
    assert (reports / "figures" / "rlhf" / "gold_vs_proxy.png").exists()
    assert (reports / "figures" / "rlhf" / "gold_vs_proxy_rm_size.png").exists()
    samples = (reports / "figures" / "rlhf" / "samples.txt").read_text()
    assert all(name in samples for name in ("sft", "ppo", "rloo", "grpo", "dpo", "ipo", "hinge"))
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").rglob("*.ckpt"))
    sft_w, rm_w = (torch.load(tmp_path / "models" / "rlhf" / f"{name}.pt", weights_only=True)["state_dict"]
                   for name in ("sft", "reward_model"))
    assert cfg.model.rlhf.reward_model.freeze_sft          # frozen SFT layers, trained fresh blocks
    assert all(torch.equal(rm_w[f"backbone.{k}"], v) for k, v in sft_w.items() if k.startswith(("wte.", "blocks.")))

    # the JSONL path: real (prompt, chosen, rejected) pairs train the reward model
    lines = [json.dumps({"prompt": f"{a:02d}+{b:02d}=", "chosen": f"{a + b:03d}"[::-1] + "\n",
                         "rejected": f"{(a + b + 1) % 200:03d}"[::-1] + "\n"}) for a, b in zip(range(40), range(5, 45))]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    jsonl_models = tmp_path / "jsonl_models"
    shutil.copytree(tmp_path / "models", jsonl_models)
    cfg = make_cfg(prepared, f"paths.models={jsonl_models}", f"paths.reports={tmp_path / 'jsonl_reports'}",
                   f"paths.checkpoints={tmp_path / 'ckpt'}", f"paths.logs={tmp_path / 'logs'}",
                   "model.rlhf.reward_model.source=jsonl", f"model.rlhf.reward_model.jsonl={tmp_path / 'pairs.jsonl'}")
    reward_model.run(cfg)
    metrics = json.loads((tmp_path / "jsonl_reports" / "metrics" / "reward_model.json").read_text())
    assert metrics["source"] == "jsonl" and metrics["n_val_pairs"] == 8 and "pair_accuracy" not in metrics


def test_sft_gives_the_same_weights_in_two_fresh_processes(prepared, tmp_path):
    """torch starts every process from a random seed; the CLI seeds before a stage builds its networks
    (the base transformer here is built before its training run seeds), so two processes agree bit for bit."""
    from conftest import run_cli

    weights = []
    for i in range(2):
        paths = [f"paths.data={prepared / 'data'}", *(f"paths.{k}={tmp_path / str(i) / k}"
                                                    for k in ("models", "checkpoints", "reports", "logs"))]
        (tmp_path / str(i)).mkdir()       # the working directory: Hydra writes its run log under ./logs/hydra
        done = run_cli("sft", "experiment=smoke", "logger=disabled", *paths, cwd=tmp_path / str(i))
        assert done.returncode == 0, done.stderr[-2000:]
        weights.append(torch.load(tmp_path / str(i) / "models" / "rlhf" / "sft.pt", weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
