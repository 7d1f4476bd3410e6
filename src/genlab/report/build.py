"""Assemble ``reports/index.html`` and ``reports/report.md`` from what the stages wrote.

A stage contributes by writing files:
  reports/metrics/<stage>.json   → a metrics table (nested keys flattened to a.b.c)
  reports/figures/<stage>/*.png  → figures (embedded as data URIs: one self-contained file)
  reports/figures/<stage>/*.txt  → preformatted text (e.g. generated samples)
  reports/plots/<stage>/*.csv    → listed (DVC renders them with `dvc plots show`)
On top: a headline table (one line per model, from ``HEADLINE``), ``dvc metrics diff HEAD``
(or a one-line note when there is no git/DVC history), the config and the environment.
"""
from __future__ import annotations

import base64
import html
import json
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ORDER = ["prepare", "classifier", "generalization", "cnf", "flow_matching", "diffusion", "generative", "inpainting", "zoo",
         "sbi", "gpt", "scaling", "emergence", "rlhf", "sft", "reward_model",
         "ppo", "dpo", "overoptimization"]
# one line per model: (model, key metric "<metrics file>:<flattened key>", cost "<file>:<key>" in train
# seconds or None when the stage does not time itself, config section of `genlab show`)
HEADLINE = [
    ("MLP classifier", "classifier:mlp.test_accuracy", "classifier:mlp.train_seconds", "model.classifier"),
    ("CNN classifier", "classifier:cnn.test_accuracy", "classifier:cnn.train_seconds", "model.classifier"),
    ("CNF, toy 2D", "cnf:cnf_toy.test_nll", "cnf:cnf_toy.train_seconds", "model.cnf"),
    ("CNF, digits", "cnf:digits.test_bpd", "cnf:digits.train_seconds", "model.cnf"),
    ("flow matching, toy 2D", "flow_matching:fm_toy.test_nll", "flow_matching:fm_toy.train_seconds",
     "model.flow_matching"),
    ("flow matching, MNIST", "generative:flow_matching.fid", "flow_matching:mnist.train_seconds",
     "model.flow_matching"),
    ("diffusion, MNIST", "generative:diffusion.fid", "diffusion:train_seconds", "model.diffusion"),
    *[(f"{name}, digits bits/dim (zoo)", f"zoo:digits.models.{key}.test_nll",
       f"zoo:digits.models.{key}.train_seconds", "model.zoo")
      for name, key in (("coupling flow", "coupling"), ("VAE (IWAE bound)", "vae"),
                        ("flow matching (PF)", "flow_matching"), ("VP diffusion (PF-ODE)", "diffusion"))],
    *[(f"NPE, {name} (C2ST accuracy)", f"sbi:{key}.c2st", f"sbi:{key}.train_seconds", "model.sbi")
      for name, key in (("two moons", "two_moons"), ("Gaussian linear", "gaussian_linear"))],
    ("GPT (characters)", "gpt:val_bpc", "gpt:train_seconds", "model.gpt"),
    ("scaling-law fit (held-out error)", "scaling:holdout_rel_error", None, "model.scaling_fit"),
    ("scaling: plain power law (held-out error)", "scaling:holdout_rel_error_powerlaw", None, "model.scaling_fit"),
    ("emergence: p_tok^L error at transition cells", "emergence:schaeffer.transition.p_tok.mean", None,
     "model.emergence"),
    ("reward model", "reward_model:pair_accuracy", "reward_model:train_seconds", "model.rlhf"),
    ("SFT policy", "sft:sft.gold_reward", "sft:train_seconds.sft", "model.rlhf"),
    ("PPO policy", "ppo:ppo.gold_reward", "ppo:train_seconds", "model.rlhf"),
    ("DPO policy", "dpo:dpo.gold_reward", "dpo:dpo.train_seconds", "model.rlhf"),
]
PACKAGES = ["torch", "lightning", "torchmetrics", "hydra-core", "dvc", "wandb", "torchdiffeq", "scikit-learn", "numpy"]


def flatten(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and v and isinstance(v[0], dict):   # a curve: its CSV is under plot data
        return f"{len(v)} rows of ({', '.join(v[0])})"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list) and len(v) > 8:
        return "[" + ", ".join(fmt(x) for x in v[:8]) + f", … ({len(v)} values)]"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment(data_dir: Path, sha: str) -> dict[str, str]:
    env = {"python": platform.python_version(), "platform": platform.platform(), "git": sha,
           "cpu": f"{cpu_name()} ({os.cpu_count()} cores)"}
    for pkg in PACKAGES:
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    for manifest in sorted(data_dir.glob("*.json")):
        env[f"data/{manifest.stem} sha256"] = json.loads(manifest.read_text()).get("sha256", "?")[:16]
    return env


def sections(reports: Path) -> list[dict]:
    """One section per ``reports/metrics/<stage>.json`` (pipeline order); refuses a folder without any:
    an empty report with exit code 0 would look like a successful pipeline."""
    metrics = {p.stem: json.loads(p.read_text()) for p in (reports / "metrics").glob("*.json")}
    if not metrics:
        from genlab.errors import GenlabError
        raise GenlabError(f"no metrics in {reports / 'metrics'}: there is nothing to report",
                          "run the pipeline's stages first (`dvc repro`), or point paths.reports at a folder "
                          "holding metrics/*.json")
    names = [s for s in ORDER if s in metrics] + sorted(set(metrics) - set(ORDER))
    out = []
    for name in names:
        figures = reports / "figures" / name
        out.append({"name": name, "metrics": flatten(metrics[name]),
                    "images": sorted(figures.glob("*.png")), "texts": sorted(figures.glob("*.txt")),
                    "csvs": sorted((reports / "plots" / name).glob("*.csv"))})
    return out


def fmt_ci(row: dict) -> str:
    """A headline value with its 95% CI over seeds when the stage reports one (``<key>_ci95``)."""
    ci = row.get("ci95")
    return fmt(row["value"]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci and None not in ci else "")


def headline(secs: list[dict]) -> list[dict]:
    """Rows of ``HEADLINE`` whose metric exists: model, metric, value, cost, section and config anchors."""
    found = {s["name"]: s["metrics"] for s in secs}
    rows = []
    for model, metric, cost, config in HEADLINE:
        stage, key = metric.split(":")
        if key not in found.get(stage, {}):
            continue
        cost_stage, cost_key = cost.split(":") if cost else (None, None)
        value, ci = found[stage][key], found[stage].get(f"{key}_ci95")
        ci = ci if isinstance(ci, list) and len(ci) == 2 else None
        rows.append({"model": model, "metric": key, "value": value, "ci95": ci, "section": stage,
                     "seconds": found.get(cost_stage, {}).get(cost_key), "config": config})
    return rows


def metrics_diff(rev: str = "HEAD") -> tuple[list[tuple], str]:
    """``dvc metrics diff <rev> --json`` (run in the current directory) → (rows, note).

    Rows are (file, metric, old, new, change); the note says why there are none (no git/DVC
    history, e.g. in a fresh copy; or nothing changed).
    """
    try:
        # `python -m dvc` from this interpreter: the venv's bin/ need not be on PATH (CI calls .venv/bin/python)
        out = subprocess.run([sys.executable, "-m", "dvc", "metrics", "diff", rev, "--json"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"no metrics diff: dvc could not run ({e})"
    if out.returncode != 0:
        reason = next((ln.strip() for ln in out.stderr.splitlines() if ln.strip()), f"exit {out.returncode}")
        return [], f"no metrics diff against {rev}: {reason[:200]}"
    diff = json.loads(out.stdout or "{}")
    rows = [(path, key, d.get("old"), d.get("new"), d.get("diff"))
            for path, metrics in sorted(diff.items()) for key, d in sorted(metrics.items())]
    return rows, "" if rows else f"no metric changed since {rev}"


def config_sections(cfg: dict, keys: list[str]) -> dict[str, str]:
    """Dotted config key → its YAML (the part of ``genlab show`` a headline row links to)."""
    import yaml

    out = {}
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if node:
            out[key] = yaml.safe_dump(node, sort_keys=False)
    return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>" + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                                               for r in rows) + "</table>"


def render_html(title: str, secs: list[dict], env: dict[str, str], heads: list[dict],
                diff: tuple[list[tuple], str], configs: dict[str, str]) -> str:
    anchors = [s["name"] for s in secs] + ["config", "environment"]
    toc = "".join(f'<li><a href="#{a}">{a}</a></li>' for a in anchors)
    head_rows = [[f'<a href="#{h["section"]}">{html.escape(h["model"])}</a>', html.escape(h["metric"]),
                  html.escape(fmt_ci(h)), "—" if h["seconds"] is None else f"{h['seconds']:.0f}",
                  f'<a href="#config-{h["config"]}">{h["config"]}</a>'] for h in heads]
    rows, note = diff
    diff_html = (f"<p class='note'>{html.escape(note)}</p>" if note else
                 "<div class='scroll'>" + _table(["file", "metric", "old", "new", "change"],
                                                 [[html.escape(fmt(c)) for c in r] for r in rows]) + "</div>")
    config_html = "".join(f'<details id="config-{k}"><summary>{k}</summary><pre>{html.escape(v)}</pre></details>'
                          for k, v in configs.items())
    body = []
    for s in secs:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(fmt(v))}</td></tr>" for k, v in s["metrics"].items())
        imgs = "".join(
            f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
            f"<figcaption>{p.stem}</figcaption></figure>" for p in s["images"])
        texts = "".join(f"<h4>{p.stem}</h4><pre>{html.escape(p.read_text())}</pre>" for p in s["texts"])
        csvs = ", ".join(p.name for p in s["csvs"])
        table = f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"
        if len(s["metrics"]) > 40:     # long tables (e.g. per-size sweeps) fold away below the figures
            table = f"<details><summary>{len(s['metrics'])} metrics</summary>{table}</details>"
        body.append(f'<section id="{s["name"]}"><h2>{s["name"]}</h2>'
                    f"<div class='figs'>{imgs}</div>{texts}{table}"
                    + (f"<p class='csv'>plot data: {csvs}</p>" if csvs else "") + "</section>")
    env_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in env.items())
    top = (f"<section id='headline'><h2>headline</h2>"
           + _table(["model", "key metric", "value", "cost (train s)", "config"], head_rows)
           + f"</section><section id='diff'><h2>metrics diff (dvc metrics diff HEAD)</h2>{diff_html}</section>")
    from genlab.report.conclusions import from_sections, render_html as claims_html   # the claims table opens
    top = claims_html(from_sections(secs)) + top                                       # the report (if any)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}}
figure{{display:inline-block;margin:.5em;vertical-align:top}}img{{max-width:520px}}figcaption{{font-size:12px;color:#666}}
pre{{background:#f6f6f6;padding:.5em;font-size:12px;white-space:pre-wrap}}.csv,.note{{font-size:12px;color:#666}}
nav ul{{columns:4;font-size:13px}}.scroll{{max-height:300px;overflow-y:auto;display:inline-block}}
</style></head><body><h1>{html.escape(title)}</h1><nav><ul>{toc}</ul></nav>{top}
{''.join(body)}<section id="config"><h2>config</h2>{config_html}</section>
<section id="environment"><h2>environment</h2><table>{env_rows}</table></section></body></html>
"""


def render_markdown(title: str, secs: list[dict], env: dict[str, str], heads: list[dict]) -> str:
    from genlab.report.conclusions import from_sections, render_markdown as claims_md  # claims first (if any)
    lines = [f"# {title}", "", *claims_md(from_sections(secs)),
             "| model | key metric | value | cost (train s) |", "|---|---|---|---|"]
    lines += [f"| {h['model']} | {h['metric']} | {fmt_ci(h)} | "
              f"{'—' if h['seconds'] is None else format(h['seconds'], '.0f')} |" for h in heads]
    lines += [""]
    for s in secs:
        lines += [f"## {s['name']}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in s["metrics"].items()]
        lines += [""] + [f"![{p.stem}](figures/{s['name']}/{p.name})" for p in s["images"]] + [""]
    lines += ["## environment", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env.items()]
    return "\n".join(lines) + "\n"
