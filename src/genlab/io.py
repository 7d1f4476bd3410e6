"""Atomic, hash-checked files: the only way genlab writes anything a later stage reads.

* Every write goes to a temp file in the target directory, is fsync'd, then renamed
  over the target, so a crash (or a full disk) never leaves a half-written file.
* Inside ``outputs_together()`` (the CLI wraps every stage in it) the renames wait until the stage
  has finished: a stage that fails half-way — after its weights, before its metrics — replaces
  nothing, so weights and metrics on disk are always both old or both new.
* ``check_writable`` refuses an output location that cannot be written, before any work starts.
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from genlab.errors import GenlabError


# target → its finished temp file, while ``outputs_together`` holds the renames back (None: rename at once)
_pending: dict[Path, Path] | None = None


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fh)`` on a temp file next to ``path``, then rename it into place (inside
    ``outputs_together``: when the stage ends without an error).

    Every genlab output goes through here, so under DDP only global rank 0 writes (the other
    ranks return the path without touching the disk).
    """
    path = Path(path)
    if rank_zero_only.rank != 0:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the pid in the name lets a later run tell a killed run's leftovers from a live run's files
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise GenlabError(f"cannot write {path}: {e.strerror}", "check that the directory is writable") from None
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        if _pending is None:
            os.replace(tmp, path)
        else:
            if (earlier := _pending.pop(path.absolute(), None)) is not None:   # written twice: the last wins
                earlier.unlink(missing_ok=True)
            _pending[path.absolute()] = Path(tmp)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise GenlabError(f"writing {path} failed: {e.strerror or e}", "free disk space or fix permissions, then re-run") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def outputs_together() -> Iterator[None]:
    """Hold back the renames of every ``atomic_write`` in the block; do them all when it ends without
    an exception, delete the temp files when it raises (then no output of the block is replaced).

    Ordering: every temp file is complete and fsync'd before the first rename; the renames then run in
    the order the files were first written (a stage writes its weights, then its metrics and figures),
    so only a crash during these few renames — not a failure anywhere in the stage's work — could mix
    old and new outputs. Leftover temp files of killed runs next to the outputs are removed here too.
    """
    global _pending
    outer, _pending = _pending, {}
    mine = _pending
    try:
        yield
    except BaseException:
        for tmp in mine.values():
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _pending = outer
    try:
        for path, tmp in mine.items():
            os.replace(tmp, path)
    except OSError as e:
        for tmp in mine.values():
            tmp.unlink(missing_ok=True)
        raise GenlabError(f"writing {path} failed: {e.strerror or e}", "free disk space or fix permissions, then re-run") from None
    for parent in {p.parent for p in mine}:
        _remove_stale_temp_files(parent)


def _remove_stale_temp_files(folder: Path) -> None:
    """Delete ``.<name>.<pid>.*.tmp`` files in ``folder`` whose process no longer exists (a killed run's)."""
    for tmp in folder.glob(".*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 3)[-3])
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            pass


def check_writable(*folders: str | Path) -> None:
    """Refuse, before any work, an output folder that cannot be created or written.

    Nothing is created: the nearest existing ancestor is probed with a temp file (permission bits
    alone do not tell, e.g. for root or a read-only mount).
    """
    for folder in folders:
        folder = Path(folder).absolute()
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            if not probe.is_dir():
                raise NotADirectoryError(20, "Not a directory")
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError as e:
            raise GenlabError(f"cannot write {folder} ({probe} is not writable: {e.strerror or e})",
                              "make it writable, or point that paths.* key at a writable folder") from None


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
    atomic_write(path.with_suffix(".npz"), lambda fh: fh.write(buf.getvalue()))
    digest = hashlib.sha256(buf.getvalue()).hexdigest()   # the bytes written (the rename may be held back)
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
