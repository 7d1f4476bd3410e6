"""Assemble ``reports/index.html`` and ``reports/report.md`` from what the stages wrote.

A stage contributes by writing files; nothing here knows the stages:
  reports/metrics/<stage>.json   → a metrics table (nested keys flattened to a.b.c)
  reports/figures/<stage>/*.png  → figures (embedded as data URIs: one self-contained file)
  reports/figures/<stage>/*.txt  → preformatted text (e.g. generated samples)
  reports/plots/<stage>/*.csv    → listed (DVC renders them with `dvc plots show`)
"""
from __future__ import annotations

import base64
import html
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ORDER = ["prepare", "classifier", "generalization", "cnf", "flow_matching", "diffusion", "generative",
         "gpt", "scaling", "emergence", "rlhf", "sft", "reward_model",
         "ppo", "dpo", "overoptimization"]
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
    if isinstance(v, list) and len(v) > 8:
        return "[" + ", ".join(fmt(x) for x in v[:8]) + f", … ({len(v)} values)]"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def environment(data_dir: Path, sha: str) -> dict[str, str]:
    env = {"python": platform.python_version(), "platform": platform.platform(), "git": sha}
    for pkg in PACKAGES:
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    for manifest in sorted(data_dir.glob("*.json")):
        env[f"data/{manifest.stem} sha256"] = json.loads(manifest.read_text()).get("sha256", "?")[:16]
    return env


def sections(reports: Path) -> list[dict]:
    metrics = {p.stem: json.loads(p.read_text()) for p in (reports / "metrics").glob("*.json")}
    names = [s for s in ORDER if s in metrics] + sorted(set(metrics) - set(ORDER))
    out = []
    for name in names:
        figures = reports / "figures" / name
        out.append({"name": name, "metrics": flatten(metrics[name]),
                    "images": sorted(figures.glob("*.png")), "texts": sorted(figures.glob("*.txt")),
                    "csvs": sorted((reports / "plots" / name).glob("*.csv"))})
    return out


def render_html(title: str, secs: list[dict], env: dict[str, str]) -> str:
    toc = "".join(f'<li><a href="#{s["name"]}">{s["name"]}</a></li>' for s in secs)
    body = []
    for s in secs:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(fmt(v))}</td></tr>" for k, v in s["metrics"].items())
        imgs = "".join(
            f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
            f"<figcaption>{p.stem}</figcaption></figure>" for p in s["images"])
        texts = "".join(f"<h4>{p.stem}</h4><pre>{html.escape(p.read_text())}</pre>" for p in s["texts"])
        csvs = ", ".join(p.name for p in s["csvs"])
        body.append(f'<section id="{s["name"]}"><h2>{s["name"]}</h2><table><tr><th>metric</th><th>value</th></tr>'
                    f"{rows}</table><div class='figs'>{imgs}</div>{texts}"
                    + (f"<p class='csv'>plot data: {csvs}</p>" if csvs else "") + "</section>")
    env_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in env.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}}
figure{{display:inline-block;margin:.5em;vertical-align:top}}img{{max-width:520px}}figcaption{{font-size:12px;color:#666}}
pre{{background:#f6f6f6;padding:.5em;font-size:12px;white-space:pre-wrap}}.csv{{font-size:12px;color:#666}}
</style></head><body><h1>{html.escape(title)}</h1><nav><ul>{toc}<li><a href="#environment">environment</a></li></ul></nav>
{''.join(body)}<section id="environment"><h2>environment</h2><table>{env_rows}</table></section></body></html>
"""


def render_markdown(title: str, secs: list[dict], env: dict[str, str]) -> str:
    lines = [f"# {title}", ""]
    for s in secs:
        lines += [f"## {s['name']}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in s["metrics"].items()]
        lines += [""] + [f"![{p.stem}](figures/{s['name']}/{p.name})" for p in s["images"]] + [""]
    lines += ["## environment", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env.items()]
    return "\n".join(lines) + "\n"
