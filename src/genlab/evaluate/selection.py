"""Validation-only selection: every choice a stage makes (training steps, guidance w, sampler, η) is a
function of validation data, and handing one a test split is an error.

A ``Split`` is data tagged with the name of the split it came from (``train`` | ``val`` | ``test``);
a selection function states what it chooses and calls ``selectable`` on the splits it reads, which
refuses ``test``. The test split is read once, after every choice is fixed, by code that selects
nothing (the stages' final evaluation), on fresh samples drawn under a seed no selection used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from genlab.errors import GenlabError

SPLITS = ("train", "val", "test")
TEST_SEED_OFFSET = 10_000     # test-time sampling seeds are this far from every seed a selection used


def test_seed(seed: int) -> int:
    """The sampling seed of the final test samples of a model trained under ``seed``: never a selection seed."""
    return seed + TEST_SEED_OFFSET


class TestSplitSelection(GenlabError):
    """A selection function was handed the test split."""


@dataclass(frozen=True)
class Split:
    """Arrays of one split: ``x`` (and ``y``), tagged by ``name`` ∈ SPLITS."""
    name: str
    x: Any
    y: Any = None

    def __post_init__(self):
        if self.name not in SPLITS:
            raise GenlabError(f"unknown split {self.name!r}", f"use one of {SPLITS}")

    def __len__(self) -> int:
        return len(self.x)


def split_name(data: Split | str) -> str:
    return data if isinstance(data, str) else data.name


def selectable(data: Split | str, what: str) -> None:
    """Refuse to choose ``what`` on the test split (``data``: a Split or a split name)."""
    if split_name(data) == "test":
        raise TestSplitSelection(f"{what} was about to be chosen on the test split",
                                 "choose on the validation split; test numbers come after every choice, "
                                 "from fresh samples under another seed")


def choose_guidance(rows: Sequence[Mapping], split: str, accuracy_bar: float) -> dict:
    """The guidance rule: among the rows (one per w, all scored on ``split``, with ``fid`` and
    ``accuracy``) whose sample accuracy ≥ ``accuracy_bar``, the lowest FID; if none reaches the bar,
    the lowest FID of all. Ties go to the smaller w (less guidance, cheaper). Returns the chosen row."""
    selectable(split, "the guidance weight")
    if not rows:
        raise GenlabError("no guidance runs to choose from", "give a non-empty guidance grid")
    passing = [r for r in rows if r["accuracy"] >= accuracy_bar] or list(rows)
    return min(passing, key=lambda r: (r["fid"], r["guidance_w"]))


def choose_lowest(rows: Sequence[Mapping], key: str, split: str, what: str) -> dict:
    """The row with the lowest ``key`` (e.g. validation FID over η), scored on ``split``; ties: the first."""
    selectable(split, what)
    if not rows:
        raise GenlabError(f"no candidates for {what}", "give a non-empty grid")
    return min(rows, key=lambda r: r[key])
