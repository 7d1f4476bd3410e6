"""The claims table: one row per claim the pipeline makes, its estimate, 95% CI and verdict.

A claim is one sentence about a statistic ("flow matching reaches a lower FID than diffusion at
10 NFE") with the set of values it allows (statistic > null, < null, or within ±tolerance of
null). Its verdict — holds / does not hold / inconclusive — is computed from the CI by
``genlab.evaluate.stats.verdict`` and never written by hand: a ``Claim`` has no verdict field, and
the collector recomputes every verdict it reads and refuses a row whose stored one disagrees.

Flow of a row:

  stage      result = stats.paired_difference(fid_diffusion, fid_fm)           per-seed values
             claim = claim_from_difference("fm_beats_diffusion_fid", "generative_eval", "…", result, …)
             write_metrics(cfg, stage, add_conclusions(metrics, [claim]))    → metrics/<stage>.json
  report     collect(reports)            → metrics/conclusions.json (all rows, sorted, Holm p added)
             render_html / render_markdown → the table the report opens with

``conclusions.json`` = {"claims": [row, …], "counts": {"holds": k, …}, "verdicts": {id: verdict}, "alpha": α}
(DVC reads numbers and strings, not lists: ``dvc metrics diff`` shows the counts and any verdict that
changed — the cross-machine promise is "same verdicts"). A row is
{"id", "stage", "claim", "statistic", "estimate", "ci95": [lo, hi] | null, "n_seeds",
 "direction", "null", "tolerance", "baseline", "noise_floor", "p_value", "method",
 "verdict", "few_seeds", "p_holm"}.
Rows resting on fewer than ``MIN_SEEDS`` seeds are allowed but flagged (``few_seeds``) and marked †.

Holm (1979) adjusts the p-values of all claims that carry one as a single family; ``p_holm`` is
shown beside the verdict so a "holds" that would not survive the correction is visible. The
verdict itself stays the CI's.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping

from genlab.errors import GenlabError
from genlab.evaluate import stats
from genlab.io import read_json, write_json

MIN_SEEDS = 3                     # fewer seeds than this: the row is kept but flagged
FILE = "conclusions.json"         # under reports/metrics/
ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
COLORS = {"holds": "#cdeccd", "does not hold": "#f6cccc", "inconclusive": "#f3ecc8"}


@dataclass(frozen=True)
class Claim:
    """One claim: what is claimed, the estimate and CI it rests on. ``verdict`` is derived, not stored.

    ``ci95`` is a two-sided 95% CI [lo, hi] (None with one seed); ``direction``/``null``/``tolerance``
    define the values the claim allows (see ``stats.verdict``); ``baseline`` names the reference the
    estimate should be read against (e.g. "real-vs-real FID 14.2"); ``noise_floor`` the size of a
    difference that is within noise (e.g. seed-to-seed sd), number or text.
    """
    id: str
    stage: str
    claim: str
    statistic: str
    estimate: float
    ci95: tuple[float, float] | None
    n_seeds: int
    direction: str = "greater"
    null: float = 0.0
    tolerance: float | None = None
    baseline: str | None = None
    noise_floor: float | str | None = None
    p_value: float | None = None
    method: str = ""

    def __post_init__(self):
        if not ID.match(self.id):
            raise GenlabError(f"claim id {self.id!r} is not a slug", "use lower-case letters, digits, _ . -")
        if not math.isfinite(self.estimate):
            raise GenlabError(f"claim {self.id}: estimate is {self.estimate}", "a run diverged: fix it first")
        if self.ci95 is not None:
            if len(self.ci95) != 2:
                raise GenlabError(f"claim {self.id}: ci95 = {self.ci95}", "pass [low, high]")
            object.__setattr__(self, "ci95", (float(self.ci95[0]), float(self.ci95[1])))
        if self.n_seeds < 1:
            raise GenlabError(f"claim {self.id}: n_seeds = {self.n_seeds}", "a claim rests on at least one seed")
        self.verdict                    # validates direction / tolerance / CI order now, not at render time

    @property
    def verdict(self) -> str:
        return stats.verdict(self.ci95, self.null, self.direction, self.tolerance)

    @property
    def few_seeds(self) -> bool:
        return self.n_seeds < MIN_SEEDS

    def row(self) -> dict:
        """The JSON row: the fields, the CI as a list, and the derived ``verdict`` and ``few_seeds``."""
        row = asdict(self)
        row["ci95"] = None if self.ci95 is None else list(self.ci95)
        return row | {"verdict": self.verdict, "few_seeds": self.few_seeds}

    @classmethod
    def from_row(cls, row: Mapping) -> "Claim":
        """Rebuild a claim from a JSON row; refuse one whose stored verdict is not its CI's."""
        names = {f.name for f in fields(cls)}
        unknown = set(row) - names - {"verdict", "few_seeds", "p_holm"}
        if unknown:
            raise GenlabError(f"claim row {row.get('id')!r} has unknown keys {sorted(unknown)}",
                              "build rows with claim_from_difference / Claim(...).row()")
        try:
            claim = cls(**{k: v for k, v in row.items() if k in names})
        except TypeError as e:
            raise GenlabError(f"claim row {row.get('id')!r} is incomplete: {e}",
                              "build it with Claim(...).row()") from None
        if "verdict" in row and row["verdict"] != claim.verdict:
            raise GenlabError(f"claim {claim.id}: stored verdict {row['verdict']!r} contradicts its CI "
                              f"{row.get('ci95')} (which gives {claim.verdict!r})",
                              "verdicts are computed from the CI; never set one by hand")
        return claim


def claim_from_difference(id: str, stage: str, claim: str, result: Mapping, statistic: str,
                          direction: str = "greater", null: float = 0.0, tolerance: float | None = None,
                          baseline: str | None = None, noise_floor: float | str | None = None,
                          n_seeds: int | None = None) -> Claim:
    """A ``Claim`` from any result of ``genlab.evaluate.stats`` (paired/unpaired difference, summarize,
    bootstrap_ci) computed at 95% confidence. ``n_seeds`` defaults to the result's ``n`` — pass it when
    the unit was samples within seeds, so the row says how many seeds stand behind it.
    """
    if abs(result.get("confidence", 0.95) - 0.95) > 1e-12:
        raise GenlabError(f"claim {id}: the table holds 95% CIs, the result is at {result['confidence']}",
                          "recompute the result with confidence=0.95")
    return Claim(id=id, stage=stage, claim=claim, statistic=statistic, estimate=float(result["estimate"]),
                 ci95=result["ci"], n_seeds=int(n_seeds if n_seeds is not None else result["n"]),
                 direction=direction, null=null, tolerance=tolerance, baseline=baseline,
                 noise_floor=noise_floor, p_value=result.get("p_value"), method=result.get("method", ""))


def add_conclusions(metrics: dict, claims: Iterable[Claim]) -> dict:
    """``metrics`` with a ``conclusions`` list of rows, ready for ``write_metrics(cfg, stage, …)``."""
    return metrics | {"conclusions": [c.row() for c in claims]}


# --- the collector ---------------------------------------------------------------------------

def collect(reports: str | Path, alpha: float = 0.05) -> list[dict]:
    """Merge every ``reports/metrics/*.json`` ``conclusions`` list into ``metrics/conclusions.json``.

    Each row is re-validated (its verdict recomputed from its CI), ids must be unique, rows are
    sorted by (stage, id), and the p-values present are Holm-adjusted together (``p_holm``).
    Written atomically (``genlab.io.write_json``). Returns the rows.
    """
    metrics_dir = Path(reports) / "metrics"
    claims: dict[str, Claim] = {}
    for path in sorted(metrics_dir.glob("*.json")):
        if path.name == FILE:
            continue
        obj = read_json(path)
        for row in obj.get("conclusions", []) if isinstance(obj, dict) else []:
            c = Claim.from_row(row)
            if c.id in claims:
                raise GenlabError(f"claim id {c.id!r} appears twice ({claims[c.id].stage} and {c.stage}, "
                                  f"in {path.name})", "give every claim a unique id")
            claims[c.id] = c
    rows = [c.row() for c in sorted(claims.values(), key=lambda c: (c.stage, c.id))]
    tested = [r for r in rows if r["p_value"] is not None]
    if tested:
        _, adjusted = stats.holm([r["p_value"] for r in tested], alpha)
        for r, p in zip(tested, adjusted):
            r["p_holm"] = float(p)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in stats.VERDICTS}
    verdicts = {r["id"]: r["verdict"] for r in rows}    # strings: `dvc metrics diff` shows a flipped verdict
    write_json(metrics_dir / FILE, {"claims": rows, "counts": counts, "verdicts": verdicts, "alpha": alpha})
    return rows


def load(reports: str | Path) -> list[dict]:
    """The rows of ``metrics/conclusions.json`` (re-validated), or [] when there is none."""
    path = Path(reports) / "metrics" / FILE
    if not path.exists():
        return []
    rows = read_json(path).get("claims", [])
    for r in rows:
        Claim.from_row(r)
    return rows


# --- rendering ---------------------------------------------------------------------------------

def _num(x) -> str:
    return "—" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _estimate(r: Mapping) -> str:
    """``1.23 [0.71, 1.79]`` (or the estimate alone without a CI)."""
    ci = r["ci95"]
    return _num(r["estimate"]) + ("" if ci is None else f" [{_num(ci[0])}, {_num(ci[1])}]")


def _allowed(r: Mapping) -> str:
    """The claim as an inequality on the statistic: ``> 0``, ``< 0``, ``|· − 0| ≤ 0.1``."""
    if r["direction"] == "within":
        return f"|· − {_num(r['null'])}| ≤ {_num(r['tolerance'])}"
    return f"{'>' if r['direction'] == 'greater' else '<'} {_num(r['null'])}"


def _seeds(r: Mapping) -> str:
    return f"{r['n_seeds']}†" if r.get("few_seeds") else str(r["n_seeds"])


COLUMNS = ["claim", "stage", "statistic", "claimed", "estimate [95% CI]", "seeds", "baseline / noise floor",
           "p (Holm)", "verdict"]
LEGEND = ("Verdicts come from the 95% CI alone: holds = the whole CI lies where the claim says, does not hold = "
          f"none of it does, inconclusive = it straddles the boundary. † fewer than {MIN_SEEDS} seeds. "
          "p (Holm): two-sided p-value adjusted over all claims with one (Holm 1979).")


def table_rows(rows: list[Mapping]) -> list[list[str]]:
    """Rows as display strings in ``COLUMNS`` order (for markdown, HTML and ``wandb.Table``)."""
    out = []
    for r in rows:
        floor = " / ".join(_num(x) for x in (r.get("baseline"), r.get("noise_floor")) if x is not None) or "—"
        out.append([r["claim"], r["stage"], r["statistic"], _allowed(r), _estimate(r), _seeds(r), floor,
                    _num(r.get("p_holm")), r["verdict"]])
    return out


def render_html(rows: list[Mapping]) -> str:
    """The claims section (verdict cells coloured), or "" when there are no claims.

    Its anchor is ``claims``: ``#conclusions`` is the report's own section for conclusions.json.
    """
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = ""
    for r, cells in zip(rows, table_rows(rows)):
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells[:-1])
        tip = html.escape(f"{r['id']}: {r.get('method', '')}", quote=True)
        body += (f'<tr title="{tip}">{tds}<td style="background:{COLORS[r["verdict"]]}">'
                 f"<b>{html.escape(cells[-1])}</b></td></tr>")
    return (f"<section id='claims'><h2>conclusions</h2><table><tr>{head}</tr>{body}</table>"
            f"<p class='note'>{html.escape(LEGEND)}</p></section>")


def render_markdown(rows: list[Mapping]) -> list[str]:
    """The claims section as markdown lines, or [] when there are no claims."""
    if not rows:
        return []
    esc = lambda s: s.replace("|", "\\|")   # noqa: E731 — a pipe would split the cell
    lines = ["## conclusions", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(esc(c) for c in cells[:-1]) + f" | **{cells[-1]}** |" for cells in table_rows(rows)]
    return lines + ["", LEGEND, ""]


def from_sections(secs: list[dict]) -> list[dict]:
    """The claim rows inside ``report.build.sections(...)`` (its ``conclusions`` section), or []."""
    sec = next((s for s in secs if s["name"] == FILE.removesuffix(".json")), None)
    return list(sec["metrics"].get("claims", [])) if sec else []
