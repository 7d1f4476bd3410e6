"""The report: a section and an image per stage that ran, the headline table, the metrics diff (or its
one-line note); the report stage's wandb results runs hold the media, tables and summary metrics."""
from __future__ import annotations

import json
from pathlib import Path

from genlab.report.build import headline, metrics_diff, sections
from genlab.report.publish import text_table
from genlab.stages import report

GPT_SAMPLES = "--- sample 1 (temperature 0.8) ---\nthe cat\n\n--- sample 2 (temperature 0.8) ---\na dog\n"
RLHF_SAMPLES = ("answers are written least-significant digit first\n\nprompt        sft             ppo\n"
                "074+621=      5070⏎   0.60    5090⏎   0.80    (gold answer 5960)\n")


def fake_reports(root: Path) -> Path:
    """reports/ with a metrics file, a figure and a text file for two stages (a 1×1 PNG)."""
    import matplotlib.pyplot as plt

    from genlab.report.artifacts import save_figure

    reports = root / "reports"
    for stage, metrics in (("classifier", {"mlp": {"test_accuracy": 0.9, "parameters": 10}}),
                           ("gpt", {"val_bpc": 2.5, "train_seconds": 12.0})):
        (reports / "metrics").mkdir(parents=True, exist_ok=True)
        (reports / "metrics" / f"{stage}.json").write_text(json.dumps(metrics))
        save_figure(plt.figure(figsize=(1, 1)), reports / "figures" / stage / "curve.png")
    (reports / "figures" / "gpt" / "samples.txt").write_text(GPT_SAMPLES)
    (reports / "figures" / "classifier" / "samples.txt").write_text(RLHF_SAMPLES)
    return reports


def test_text_tables_for_lm_samples_and_rlhf_before_after():
    assert text_table(GPT_SAMPLES) == (["sample", "text"], [["sample 1 (temperature 0.8)", "the cat"],
                                                            ["sample 2 (temperature 0.8)", "a dog"]])
    columns, rows = text_table(RLHF_SAMPLES)
    assert columns == ["prompt", "sft response", "sft gold reward", "ppo response", "ppo gold reward", "note"]
    assert rows == [["074+621=", "5070⏎", "0.60", "5090⏎", "0.80", "gold answer 5960"]]
    assert text_table("free text\nmore") == (["line"], [["free text"], ["more"]])


def test_headline_rows_only_for_metrics_that_exist(tmp_path):
    heads = headline(sections(fake_reports(tmp_path)))
    assert [(h["model"], h["value"], h["seconds"]) for h in heads] == [("MLP classifier", 0.9, None),
                                                                       ("GPT (characters)", 2.5, 12.0)]


def test_metrics_diff_degrades_to_a_note_without_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                  # no git, no .dvc here
    rows, note = metrics_diff()
    assert rows == [] and note.startswith("no metrics diff against HEAD") and "\n" not in note


def test_report_stage_writes_sections_headline_diff_and_wandb_media(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reports = fake_reports(tmp_path)
    cfg = make_cfg(tmp_path, "logger.wandb.mode=offline")
    report.run(cfg)
    html = (reports / "index.html").read_text()
    for stage in ("classifier", "gpt"):
        assert f'<section id="{stage}">' in html and f'alt="curve"' in html
    assert html.count("data:image/png;base64") == 2
    assert '<section id=\'headline\'>' in html and '<a href="#classifier">MLP classifier</a>' in html
    assert 'href="#config-model.gpt"' in html and 'id="config-model.gpt"' in html
    assert "no metrics diff against HEAD" in html and "cores)" in html      # diff note; environment CPU
    runs = {r.name: r for r in (tmp_path / "logs" / "wandb").glob("offline-run-*")}
    assert len(runs) == 3                                              # classifier, gpt, conclusions
    media = sorted(p.relative_to(r).as_posix().split("/", 3)[-1].rsplit("_", 2)[0]
                   for r in runs.values() for p in (r / "files" / "media").rglob("*.*"))
    assert media == ["classifier/curve", "classifier/samples", "conclusions/claims", "gpt/curve", "gpt/samples"]
    blobs = b"".join(f.read_bytes() for r in runs.values() for f in r.glob("run-*.wandb"))
    for key, value in (("val_bpc", b"2.5"), ("test_accuracy", b"0.9"), ("train_seconds", b"12.0")):
        assert key.encode() in blobs and value in blobs                # summary == metrics file


def test_disabled_logger_logs_nothing(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_reports(tmp_path)
    report.run(make_cfg(tmp_path, "logger=disabled"))
    assert not (tmp_path / "logs" / "wandb").exists()
