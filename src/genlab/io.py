"""Atomic, hash-checked files: the only way genlab writes anything a later stage reads.

* Every write goes to a temp file in the target directory, is fsync'd, then renamed
  over the target, so a crash (or a full disk) never leaves a half-written file.
* A dataset is an ``.npz`` (no pickles) plus a ``.json`` manifest holding its sha256;
  ``load_arrays`` refuses a file whose bytes no longer match.
* Checkpoints load with ``torch.load(weights_only=True)``: plain tensors and containers only.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from genlab.errors import GenlabError


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fh)`` on a temp file next to ``path``, then rename it into place.

    Every genlab output goes through here, so under DDP only global rank 0 writes (the other
    ranks return the path without touching the disk).
    """
    path = Path(path)
    if rank_zero_only.rank != 0:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise GenlabError(f"cannot write {path}: {e.strerror}", "check that the directory is writable") from None
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise GenlabError(f"writing {path} failed: {e.strerror or e}", "free disk space or fix permissions, then re-run") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=2, sort_keys=True) + "\n"), mode="w")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise GenlabError(f"missing file {path}", "run the stage that produces it (e.g. `dvc repro`)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenlabError(f"corrupt JSON in {path}: {e}", "delete it and re-run the stage that writes it") from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- datasets: npz + manifest ----------------------------------------------------------

def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], meta: dict | None = None) -> str:
    """Write ``<path>.npz`` and ``<path>.json`` (meta + sha256 + shapes); return the sha256."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    npz = atomic_write(path.with_suffix(".npz"), lambda fh: fh.write(buf.getvalue()))
    digest = sha256_file(npz)
    manifest = {"sha256": digest, "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
                "meta": meta or {}}
    write_json(path.with_suffix(".json"), manifest)
    return digest


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a dataset written by ``save_arrays``; verify its hash. Returns (arrays, meta)."""
    path = Path(path)
    npz, manifest_path = path.with_suffix(".npz"), path.with_suffix(".json")
    if not npz.exists():
        raise GenlabError(f"missing dataset {npz}", "run `genlab prepare` (or `dvc repro prepare`)")
    manifest = read_json(manifest_path)
    if sha256_file(npz) != manifest.get("sha256"):
        raise GenlabError(f"dataset {npz} does not match its recorded sha256 (truncated or modified)",
                          "re-create it with `dvc repro -f prepare`")
    with np.load(npz, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays, manifest["meta"] | {"sha256": manifest["sha256"]}


# --- model artefacts -------------------------------------------------------------------

def save_model(path: str | Path, state_dict: dict, config: dict, **extra: Any) -> Path:
    """Save weights with the config that built them (plain types only: weights_only-safe)."""
    payload = {"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "config": config, **extra}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def load_model(path: str | Path, expect_config: dict | None = None) -> dict:
    """Load a ``save_model`` file safely; refuse one built from a different config."""
    path = Path(path)
    if not path.exists():
        raise GenlabError(f"missing model file {path}", "run the stage that trains it (e.g. `dvc repro`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError… for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenlabError(f"cannot load {path} safely ({first[:160]})",
                          "it is corrupt or not a genlab weights file: delete it and re-run its stage") from None
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise GenlabError(f"{path} is not a genlab weights file", "delete it and re-run its stage")
    if expect_config is not None and payload.get("config") != expect_config:
        raise GenlabError(f"{path} was trained with a different config than the one requested",
                          "re-run the stage that produced it with the current params (`dvc repro`)")
    return payload
