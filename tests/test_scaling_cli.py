"""`python -m genlab.scaling_cli` (wired as `genlab fit-scaling`) on CSVs it has never seen."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from genlab.scaling_cli import main

TRUE = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}


def write_csv(path, with_tokens: bool, noise: float = 0.004):
    rng = np.random.default_rng(7)
    lines = ["model,params,tokens,flops,eval_loss" if with_tokens else "params,flops,eval_loss"]
    for c in np.geomspace(1e17, 1e20, 6):
        for n in np.geomspace(3e7, 3e9, 6) * (c / 1e17) ** 0.25:
            d = c / (6 * n)
            loss = (TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]) * np.exp(rng.normal(0, noise))
            lines.append(f"m{len(lines)},{n:.6g},{d:.6g},{c:.6g},{loss:.6f}" if with_tokens else f"{n:.6g},{c:.6g},{loss:.6f}")
    path.write_text("\n".join(lines) + "\n")


def test_cli_fits_a_csv_with_its_own_column_names(tmp_path, capsys):
    write_csv(tmp_path / "runs.csv", with_tokens=True)
    assert main([str(tmp_path / "runs.csv"), "--n", "params", "--d", "tokens", "--loss", "eval_loss",
                 "--drop-highest", "3", "--bootstrap", "20"]) == 0
    out = json.loads((tmp_path / "runs.fit.json").read_text())
    assert out["n_runs"] == 36 and out["n_fitted"] == 33 and len(out["held_out"]) == 3
    assert out["fit"]["E"] == pytest.approx(TRUE["E"], rel=0.1)
    assert out["fit"]["a"] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.1)
    assert all(abs(h["rel_error"]) < 0.03 for h in out["held_out"])
    assert out["ci"]["E"][0] <= out["fit"]["E"] <= out["ci"]["E"][1]
    assert (tmp_path / "runs.fit.png").exists() and "alpha" in capsys.readouterr().out


def test_cli_takes_compute_instead_of_tokens_and_fails_in_one_line(tmp_path):
    write_csv(tmp_path / "c.csv", with_tokens=False)
    assert main([str(tmp_path / "c.csv"), "--n", "params", "--c", "flops", "--loss", "eval_loss",
                 "--bootstrap", "0", "--out", str(tmp_path / "out/fit")]) == 0
    assert json.loads((tmp_path / "out/fit.fit.json").read_text())["fit"]["E"] == pytest.approx(TRUE["E"], rel=0.1)
    r = subprocess.run([sys.executable, "-m", "genlab.scaling_cli", str(tmp_path / "c.csv"), "--n", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_genlab_fit_scaling_is_the_cli_entry_point(tmp_path, monkeypatch, capsys):
    """`genlab fit-scaling …` runs the same fitter; a missing file is one line and exit 2."""
    from genlab import cli

    write_csv(tmp_path / "runs.csv", with_tokens=False)
    monkeypatch.setattr(sys, "argv", ["genlab", "fit-scaling", str(tmp_path / "runs.csv"), "--n", "params",
                                      "--c", "flops", "--loss", "eval_loss", "--bootstrap", "0"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 0 and (tmp_path / "runs.fit.json").exists()
    monkeypatch.setattr(sys, "argv", ["genlab", "fit-scaling", str(tmp_path / "nope.csv"), "--n", "N", "--d", "D",
                                      "--loss", "loss"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert done.value.code == 2 and len(err) == 1 and err[0].startswith("genlab: error: cannot read")
