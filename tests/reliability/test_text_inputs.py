"""Silently wrong inputs become one-line errors: a stage given data settings its prepared file was not
made from, a binary or single-symbol corpus, a corpus shorter than one training window."""
from __future__ import annotations

import pytest

from conftest import genlab, one_line


@pytest.fixture
def work(tmp_path, monkeypatch, prepared):
    monkeypatch.chdir(tmp_path)
    paths = [f"paths.data={prepared / 'data'}"] + [f"paths.{k}={tmp_path / k}" for k in
                                                    ("models", "checkpoints", "reports", "logs")]
    return tmp_path, ["experiment=smoke", "logger.wandb.mode=disabled", *paths]


def test_a_data_override_the_prepared_file_did_not_come_from_is_refused(work, monkeypatch, capsys):
    tmp, args = work
    corpus = tmp / "mine.txt"
    corpus.write_text("my own corpus, not the one prepared\n" * 100)
    code, err = genlab(monkeypatch, capsys, "gpt", *args, "data.text.source=file", f"data.text.file={corpus}")
    line = one_line(err)
    assert code == 2 and "text.npz was prepared from data.text.file=None" in line and "genlab prepare" in line
    assert not (tmp / "models").exists()            # refused before any training


@pytest.mark.parametrize("body, problem", [(b"\x00" * 5000, "NUL bytes"), (b"a" * 5000, "single character")])
def test_a_degenerate_corpus_is_refused_by_prepare(work, monkeypatch, capsys, body, problem):
    tmp, args = work
    corpus = tmp / "bad.txt"
    corpus.write_bytes(body)
    args = [a for a in args if not a.startswith("paths.data=")] + [f"paths.data={tmp / 'data'}"]
    code, err = genlab(monkeypatch, capsys, "prepare", *args, "data.text.source=file", f"data.text.file={corpus}")
    assert code == 2 and problem in one_line(err)
    assert not (tmp / "data" / "text.npz").exists()


def test_a_corpus_shorter_than_one_window_is_refused(work, monkeypatch, capsys):
    tmp, args = work
    corpus = tmp / "short.txt"
    corpus.write_text("abcdefghij" * 100)           # 1,000 characters: 100 of them validate
    args = [a for a in args if not a.startswith("paths.data=")] + [f"paths.data={tmp / 'data'}"]
    text = ["data.text.source=file", f"data.text.file={corpus}", "data.text.val_fraction=0.01"]
    assert genlab(monkeypatch, capsys, "prepare", *args, *text)[0] == 0
    code, err = genlab(monkeypatch, capsys, "gpt", *args, *text, "model.gpt.arch.block_size=64",
                       "model.gpt.val_tokens=0")
    line = one_line(err)
    assert code == 2 and "block_size" in line
