"""Claims table: the verdict follows the CI (and cannot be set by hand), the collector merges and validates."""
from __future__ import annotations

import dataclasses
import json

import pytest

from genlab.errors import GenlabError
from genlab.evaluate.stats import paired_difference, summarize
from genlab.io import write_json
from genlab.report.conclusions import (Claim, add_conclusions, claim_from_difference, collect, from_sections,
                                       load, render_html, render_markdown, table_rows)

FID_DIFFUSION = [30.1, 28.7, 31.5]
FID_FM = [18.0, 17.2, 19.9]


def fm_claim(a=FID_DIFFUSION, b=FID_FM, **kw) -> Claim:
    result = paired_difference(a, b)
    return claim_from_difference("fm_beats_diffusion_fid", "generative_eval",
                                 "Flow matching reaches a lower FID than diffusion at 10 NFE.", result,
                                 statistic="FID(diffusion) − FID(FM)", baseline="real-vs-real FID 14.2", **kw)


def test_verdict_follows_ci():
    c = fm_claim()
    assert c.ci95[0] > 0 and c.verdict == "holds" and c.n_seeds == 3 and not c.few_seeds
    assert fm_claim(FID_FM, FID_DIFFUSION).verdict == "does not hold"
    assert fm_claim([30.1, 18.7, 31.5], [18.0, 27.2, 19.9]).verdict == "inconclusive"
    # two seeds: allowed, flagged; one seed: no CI → inconclusive however large the estimate
    assert fm_claim(FID_DIFFUSION[:2], FID_FM[:2]).few_seeds
    single = fm_claim(FID_DIFFUSION[:1], FID_FM[:1])
    assert single.ci95 is None and single.verdict == "inconclusive"
    # a "within" claim: scaling-law extrapolation error within 10%
    err = claim_from_difference("scaling_extrapolates", "scaling_fit", "The fit predicts the held-out loss within 10%.",
                                summarize([0.03, -0.02, 0.05, 0.01]), statistic="relative error",
                                direction="within", tolerance=0.1)
    assert err.verdict == "holds"


def test_verdict_cannot_be_set_by_hand():
    with pytest.raises(TypeError):
        Claim(id="x", stage="s", claim="c", statistic="d", estimate=1.0, ci95=(-1.0, 3.0), n_seeds=3,
              verdict="holds")
    c = fm_claim()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.verdict = "does not hold"
    # a row edited by hand (verdict flipped, or CI changed under a stored verdict) is refused on read
    row = c.row()
    Claim.from_row(row)
    with pytest.raises(GenlabError, match="contradicts"):
        Claim.from_row(row | {"verdict": "inconclusive"})
    with pytest.raises(GenlabError, match="contradicts"):
        Claim.from_row(row | {"ci95": [-1.0, 2.0]})


def test_claim_refusals():
    with pytest.raises(GenlabError, match="95%"):
        claim_from_difference("a", "s", "c", summarize([1.0, 2.0, 3.0], 0.9), "x")
    with pytest.raises(GenlabError, match="slug"):
        claim_from_difference("Not A Slug", "s", "c", summarize([1.0, 2.0]), "x")
    with pytest.raises(GenlabError, match="tolerance"):
        claim_from_difference("a", "s", "c", summarize([1.0, 2.0]), "x", direction="within")


def test_collector_merges_sorts_and_writes_valid_json(tmp_path):
    metrics = tmp_path / "metrics"
    other = claim_from_difference("rm_beats_chance", "reward_model", "The reward model ranks pairs above chance.",
                                  summarize([0.71, 0.69, 0.74]), statistic="pair accuracy", null=0.5)
    few = claim_from_difference("dpo_beats_sft", "dpo", "DPO raises gold reward over SFT.",
                                paired_difference([1.2, 1.5], [0.9, 1.4]), statistic="gold(DPO) − gold(SFT)")
    write_json(metrics / "generative.json", add_conclusions({"fid": 18.4}, [fm_claim()]))
    write_json(metrics / "reward_model.json", add_conclusions({"pair_accuracy": 0.71}, [other]))
    write_json(metrics / "dpo.json", add_conclusions({}, [few]))
    write_json(metrics / "classifier.json", {"mlp": {"test_accuracy": 0.9}})        # a stage without claims
    rows = collect(tmp_path)
    assert [(r["stage"], r["id"]) for r in rows] == [("dpo", "dpo_beats_sft"),
                                                     ("generative_eval", "fm_beats_diffusion_fid"),
                                                     ("reward_model", "rm_beats_chance")]
    on_disk = json.loads((metrics / "conclusions.json").read_text())
    assert on_disk["claims"] == rows == load(tmp_path)
    assert on_disk["counts"] == {"holds": 2, "does not hold": 0, "inconclusive": 1}
    assert on_disk["verdicts"]["dpo_beats_sft"] == "inconclusive"
    assert rows[0]["few_seeds"] and rows[0]["verdict"] == "inconclusive"
    # Holm over the two claims with a p-value (paired differences): adjusted ≥ raw, and ≤ 1
    tested = [r for r in rows if r["p_value"] is not None]
    assert len(tested) == 2 and all(r["p_value"] <= r["p_holm"] <= 1 for r in tested)
    assert "p_holm" not in rows[2]
    # re-collecting is idempotent (conclusions.json itself is not read back in as a stage)
    assert collect(tmp_path) == rows
    assert not list(metrics.glob(".*.tmp"))                                          # atomic write left no temp file


def test_collector_refuses_tampered_and_duplicate_rows(tmp_path):
    row = fm_claim().row()
    write_json(tmp_path / "metrics" / "generative.json", {"conclusions": [row | {"verdict": "does not hold"}]})
    with pytest.raises(GenlabError, match="contradicts"):
        collect(tmp_path)
    write_json(tmp_path / "metrics" / "generative.json", {"conclusions": [row]})
    write_json(tmp_path / "metrics" / "diffusion.json", {"conclusions": [row]})
    with pytest.raises(GenlabError, match="twice"):
        collect(tmp_path)


def test_renderers(tmp_path):
    small = claim_from_difference("fm_fid_small", "generative_eval", "A | pipe.",
                                  paired_difference([1.0, 2.0], [0.0, 2.5]), statistic="Δ")
    write_json(tmp_path / "metrics" / "generative.json", add_conclusions({}, [fm_claim(), small]))
    rows = collect(tmp_path)
    page = render_html(rows)
    assert page.startswith("<section id='claims'>") and "#cdeccd" in page and "holds" in page
    assert "2†" in page                                                              # few seeds marked
    md = render_markdown(rows)
    assert md[0] == "## conclusions" and any("**holds**" in ln for ln in md) and any("A \\| pipe." in ln for ln in md)
    assert len(table_rows(rows)[0]) == 9
    assert render_html([]) == "" and render_markdown([]) == []
    # the report's sections carry the rows through build.flatten unchanged, and the report opens with them
    from genlab.report import build
    secs = build.sections(tmp_path)
    assert from_sections(secs) == rows
    page = build.render_html("t", secs, {}, [], ([], "no diff"), {})
    assert page.index("<section id='claims'>") < page.index("<section id='headline'>")
    md = build.render_markdown("t", secs, {}, [])
    assert md.index("## conclusions") < md.index("| model | key metric")
    assert "claims" not in build.render_html("t", [], {}, [], ([], "no diff"), {})   # no claims: no table
