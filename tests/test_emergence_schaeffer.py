"""The Schaeffer test per (size, length) cell, the abrupt-vs-smooth detector, early stopping, the problem splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.evaluate import emergence as em


# --- p^L with each cell's own p -----------------------------------------------------------

def test_prediction_uses_each_cells_own_p_not_a_pooled_one():
    """A hand-made table: one size, one seed, two lengths with different per-token accuracies."""
    lengths = np.array([4, 5])                                  # 2 and 3 digits: L = d + 2
    token_accuracy = np.array([[[0.9, 0.6]]])                   # [S=1, R=1, K=2]
    token_loss = np.array([[[0.1, 0.7]]])
    exact = np.array([[[0.9 ** 4, 0.6 ** 5]]])
    pred = em.cell_predictions(exact, token_accuracy, token_loss, lengths)
    assert pred["p_tok"][0, 0].tolist() == pytest.approx([0.6561, 0.07776])
    assert pred["exp_ce"][0, 0].tolist() == pytest.approx([np.exp(-0.4), np.exp(-3.5)])
    assert np.abs(pred["err_p_tok"]).max() == pytest.approx(0.0, abs=1e-12)
    pooled = token_accuracy.mean() ** lengths                   # the bug this replaces: one p for both lengths
    assert not np.allclose(pred["p_tok"][0, 0], pooled)


def test_transition_and_saturated_errors_are_separate_and_per_seed():
    exact = np.array([[[0.0, 0.0]], [[0.5, 1.0]]]).repeat(2, axis=1)     # [S=2, R=2, K=2]
    errors = np.zeros_like(exact)
    errors[1, :, 0] = [0.1, 0.3]                                          # the one transition cell
    cells = em.transition_cells(exact.mean(1), (0.05, 0.95))
    assert cells.tolist() == [[False, False], [True, False]]
    assert em.per_seed_mean_abs_error(errors, cells).tolist() == pytest.approx([0.1, 0.3])
    assert em.per_seed_mean_abs_error(errors, ~cells).tolist() == [0.0, 0.0]
    assert em.per_seed_mean_abs_error(errors, np.zeros_like(cells)) is None


def test_exp_ce_underestimates_a_confident_greedy_decoder():
    """p(y) = 0.6 on every token: argmax always right (exact match 1), exp(−L_CE)^L = 0.6^L."""
    pred = em.cell_predictions(np.ones((1, 1, 1)), np.ones((1, 1, 1)), -np.log(np.full((1, 1, 1), 0.6)), [5])
    assert pred["err_p_tok"].item() == 0.0 and pred["err_exp_ce"].item() == pytest.approx(0.6 ** 5 - 1)


# --- abrupt vs smooth ------------------------------------------------------------------------

N = np.array([1e3, 2e3, 4e3, 8e3, 1.6e4, 3.2e4, 6.4e4])


def seeds_around(curve: np.ndarray, sd: float, seed: int = 0) -> np.ndarray:
    return curve[:, None] + np.random.default_rng(seed).normal(0, sd, (curve.size, 3))


def test_detector_says_smooth_on_a_planted_power_law():
    loss = seeds_around(2.0 * (N / 1e3) ** -0.5, 0.005)
    out = em.largest_change(N, loss, window=2.0, higher_is_better=False, log=True)
    assert out["verdict"] == "smooth" and out["share"] == pytest.approx(1 / 6, abs=0.02)   # log 2 / log 64
    accuracy = seeds_around(1 - 0.5 * (N / 1e3) ** -0.3, 0.005)                            # linear scale
    assert em.largest_change(N, accuracy, window=2.0)["verdict"] == "smooth"


def test_detector_says_abrupt_on_a_planted_step():
    step = seeds_around(np.where(N >= 8e3, 0.95, 0.02), 0.01)
    out = em.largest_change(N, step, window=2.0)
    assert out["verdict"] == "abrupt" and out["interval"] == [4e3, 8e3] and out["share"] > 0.9


def test_detector_is_inconclusive_when_seeds_disagree_and_flat_without_change():
    noisy = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.2], [1.0, 1.0, 1.0]])
    assert em.largest_change(N[:3], noisy, window=2.0)["verdict"] == "inconclusive"
    assert em.largest_change(N[:3], np.zeros((3, 3)), window=2.0)["verdict"] == "flat"


def test_detector_measures_a_given_interval():
    ramp = seeds_around(np.linspace(0, 1, N.size), 0.001)
    out = em.largest_change(N, ramp, window=2.0, interval=(0, 3))
    assert out["share"] == pytest.approx(0.5, abs=0.01) and out["index"] == [0, 3]


# --- early stopping ---------------------------------------------------------------------------

class _Trainer:
    sanity_checking, should_stop = False, False


class _Module:
    def __init__(self):
        self.net = torch.nn.Linear(1, 1)
        self.val_history: list[dict] = []


def test_solved_or_stalled_stops_when_solved_and_keeps_the_best_weights():
    from genlab.models.arithmetic_lm import SolvedOrStalled

    stop, trainer, module = SolvedOrStalled(0.99, patience=3, min_rel_delta=0.01), _Trainer(), _Module()
    for step, (loss, em2) in enumerate([(1.4, 0.0), (0.5, 0.6), (0.05, 1.0)], start=1):
        module.val_history.append({"step": step, "val_loss": loss, "val_exact_match_2": em2})
        with torch.no_grad():
            module.net.weight.fill_(step)
        stop.on_validation_end(trainer, module)
    assert trainer.should_stop and stop.reason == "solved" and stop.best_step == 3
    assert stop.best_state["weight"].item() == 3.0


def test_solved_or_stalled_waits_out_patience_on_a_plateau():
    from genlab.models.arithmetic_lm import SolvedOrStalled

    stop, trainer, module = SolvedOrStalled(0.99, patience=3, min_rel_delta=0.01), _Trainer(), _Module()
    for step, loss in enumerate([1.40, 1.399, 1.398, 1.5], start=1):   # improvements < 1%: not progress
        module.val_history.append({"step": step, "val_loss": loss, "val_exact_match_2": 0.0})
        stop.on_validation_end(trainer, module)
        assert trainer.should_stop == (step == 4)
    assert stop.reason == "stalled" and stop.best_step == 3


# --- the problems ------------------------------------------------------------------------------

def test_sample_splits_are_disjoint_and_stable_per_digit_count():
    from genlab.data.arithmetic import sample_splits

    one = sample_splits([2, 3], 300, 50, 100, seed=0)
    more = sample_splits([1, 2, 3, 5], 300, 50, 100, seed=0)
    for d in (2, 3):   # adding digit counts leaves the others' problems unchanged
        for k in ("train_a", "test_b", "val_a"):
            split = k.split("_")[0]
            assert np.array_equal(one[k][one[f"{split}_digits"] == d], more[k][more[f"{split}_digits"] == d])
    pairs = {s: set(zip(more[f"{s}_a"].tolist(), more[f"{s}_b"].tolist(), more[f"{s}_digits"].tolist()))
             for s in ("train", "val", "test")}
    assert not (pairs["train"] & pairs["test"]) and not (pairs["train"] & pairs["val"]) and not (pairs["val"] & pairs["test"])
    ones = {s: int((more[f"{s}_digits"] == 1).sum()) for s in ("train", "val", "test")}
    assert ones == {"train": 70, "val": 10, "test": 20}          # 100 pairs: ≤ 1/5 test, ≤ 1/10 validation
    assert (more["test_a"][more["test_digits"] == 5] < 10**5).all()


def test_teacher_forced_exact_match_agrees_with_greedy_generation():
    """On a briefly trained tiny model the two agree problem by problem (greedy feeds back true tokens
    while every earlier argmax is right)."""
    from genlab.data.arithmetic import VOCAB, tokenize
    from genlab.models.arithmetic_lm import ArithmeticLM
    from genlab.nn.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids, prompt_len, answer_len = tokenize(rng.integers(0, 10, 512), rng.integers(0, 10, 512), [1] * 512, True)
    net = Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=ids.size(1), n_layer=1, n_head=2,
                                        n_embd=32))
    module = ArithmeticLM(net, lr=1e-2, weight_decay=0.0, warmup_steps=1, max_steps=150)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        module.answer_nll(ids, prompt_len, answer_len).backward()
        opt.step()
    greedy = module.score(ids, int(prompt_len[0]), int(answer_len[0]))
    forced = module.teacher_forced(ids, prompt_len, answer_len)
    assert 0 < greedy["exact_match"].mean() and torch.equal(greedy["exact_match"], forced["exact_match"])
    assert torch.allclose(greedy["token_accuracy"], forced["right_tokens"] / forced["tokens"])


def test_training_mix_weights_every_digit_count_equally():
    from genlab.stages.emergence import balanced

    digits = np.array([1] * 3 + [2] * 10)
    a, b, d = balanced(np.arange(13), np.arange(13), digits)
    assert (d == 1).sum() == (d == 2).sum() == 10
    assert sorted(set(a[d == 1].tolist())) == [0, 1, 2] and np.array_equal(a, b)
