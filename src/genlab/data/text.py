"""Character-level text corpus: CPython's offline documentation by default, or any UTF-8 file/URL."""
from __future__ import annotations

import platform
import urllib.request
from pathlib import Path

import numpy as np

from genlab.errors import GenlabError


def pydoc_corpus() -> str:
    """~465 KB of real English: the help topics shipped with CPython (``pydoc_data.topics``).

    The topics change between CPython patch releases (3.11.2 and 3.11.7 differ by ~1,000 characters), so
    the corpus, and every language-model number, depends on the interpreter: ``prepare`` records its version.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def read_text(path: str | Path) -> str:
    path = Path(path).expanduser()
    if not path.exists():
        raise GenlabError(f"text file {path} does not exist", "set data.text.file to an existing UTF-8 file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise GenlabError(f"text file {path} is not valid UTF-8 (byte {e.start})",
                          "convert it with `iconv -t utf-8` or choose another file") from None
    if len(text) < 1000:
        raise GenlabError(f"text file {path} has {len(text)} characters; at least 1,000 are needed",
                          "use a larger corpus")
    return text


def download_text(url: str, cache_dir: str | Path = "~/.cache/genlab/text") -> str:
    """Download ``url`` once into the cache, then read it like a local file."""
    target = Path(cache_dir).expanduser() / Path(url.split("?")[0]).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                data = r.read()
        except OSError as e:
            raise GenlabError(f"cannot download {url}: {e}", "check the URL/network or use data.text.source=pydoc") from None
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return read_text(target)


def encode(text: str, vocab: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))


def prepare(cfg) -> tuple[dict[str, np.ndarray], dict]:
    """Return (arrays {train, val} of token ids, meta {vocab, source, n_chars})."""
    text = {"pydoc": lambda: pydoc_corpus(), "file": lambda: read_text(cfg.file),
            "url": lambda: download_text(cfg.url)}[cfg.source]()
    vocab = sorted(set(text))
    ids = encode(text, vocab)
    n_val = int(len(ids) * cfg.val_fraction)
    return {"train": ids[: len(ids) - n_val], "val": ids[len(ids) - n_val:]}, \
        {"vocab": vocab, "source": cfg.source, "n_chars": len(text), "python": platform.python_version()}
