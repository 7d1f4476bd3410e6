"""Character-level text corpus: tiny Shakespeare (vendored, pinned by sha256) by default, or any UTF-8 file/URL.

The default is Karpathy's ``tinyshakespeare`` (1,115,394 characters, 65 symbols, public domain), the
standard character-level benchmark: nanoGPT's ``shakespeare_char`` splits it the same way (first 90 %
train, last 10 % val), so the ``gpt`` stage is directly comparable with its published figures. It ships
xz-compressed inside the package and is verified by its sha256 on every read, so the corpus, and every
language-model number, is the same on every machine and interpreter.

A file or URL corpus may be pinned the same way with ``data.text.sha256``; its hash is recorded in the
manifest either way. Downloads are cached under a key derived from the whole URL.
"""
from __future__ import annotations

import hashlib
import lzma
import urllib.request
from pathlib import Path

import numpy as np

from genlab.errors import GenlabError

CORPORA = Path(__file__).with_name("corpora")
# name → (file in CORPORA, sha256 of the decompressed UTF-8 bytes)
VENDORED = {
    "tinyshakespeare": ("tinyshakespeare.txt.xz",
                        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}
MIN_CHARS = 1000


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_hash(data: bytes, expected: str | None, where: str) -> str:
    """Return the sha256 of ``data``; refuse it when ``expected`` is given and differs."""
    digest = sha256_bytes(data)
    if expected and digest != expected.lower():
        raise GenlabError(f"{where} has sha256 {digest[:16]}…, not the pinned {expected[:16]}…",
                          "restore the original file, or set data.text.sha256 to the new hash if the change is intended")
    return digest


def decode(data: bytes, where: str) -> str:
    """UTF-8 text that a character model can learn from: long enough, not binary, ≥ 2 symbols."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GenlabError(f"text {where} is not valid UTF-8 (byte {e.start})",
                          "convert it with `iconv -t utf-8` or choose another file") from None
    if len(text) < MIN_CHARS:
        raise GenlabError(f"text {where} has {len(text)} characters; at least {MIN_CHARS:,} are needed",
                          "use a larger corpus")
    if "\x00" in text:
        raise GenlabError(f"text {where} contains NUL bytes (a binary file?)", "give a plain UTF-8 text file")
    if len(set(text)) < 2:
        raise GenlabError(f"text {where} uses a single character: there is nothing to predict",
                          "give a corpus of real text")
    return text


def vendored_corpus(name: str = "tinyshakespeare") -> tuple[str, str]:
    """(text, sha256) of a corpus shipped in ``genlab/data/corpora``, verified against its pinned hash."""
    filename, pinned = VENDORED[name]
    data = lzma.decompress((CORPORA / filename).read_bytes())
    return decode(data, f"corpus {name}"), check_hash(data, pinned, f"the vendored corpus {filename}")


def read_text(path: str | Path, sha256: str | None = None) -> tuple[str, str]:
    """(text, sha256) of a local UTF-8 file, checked against ``sha256`` when given."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GenlabError(f"text file {path} does not exist", "set data.text.file to an existing UTF-8 file")
    data = path.read_bytes()
    digest = check_hash(data, sha256, f"text file {path}")
    return decode(data, f"file {path}"), digest


def download_text(url: str, cache_dir: str | Path = "~/.cache/genlab/text", sha256: str | None = None) -> tuple[str, str]:
    """Download ``url`` once into the cache (keyed by the whole URL), then read it like a local file."""
    key = sha256_bytes(url.encode())[:16]
    target = Path(cache_dir).expanduser() / f"{key}-{Path(url.split('?')[0]).name or 'corpus'}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                data = r.read()
        except OSError as e:
            raise GenlabError(f"cannot download {url}: {e}",
                              "check the URL/network or use data.text.source=tinyshakespeare") from None
        check_hash(data, sha256, f"the download {url}")   # a bad download never enters the cache
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return read_text(target, sha256)


def encode(text: str, vocab: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))


def prepare(cfg) -> tuple[dict[str, np.ndarray], dict]:
    """Return (arrays {train, val} of token ids, meta {vocab, source, n_chars, corpus_sha256}).

    The split is contiguous: the first ``1 − val_fraction`` of the text trains, the rest validates.
    """
    sha = cfg.get("sha256")
    if cfg.source == "file":
        text, digest = read_text(cfg.file, sha)
    elif cfg.source == "url":
        text, digest = download_text(cfg.url, sha256=sha)
    else:
        text, digest = vendored_corpus(cfg.source)
    vocab = sorted(set(text))
    ids = encode(text, vocab)
    n_val = int(len(ids) * cfg.val_fraction)
    return {"train": ids[: len(ids) - n_val], "val": ids[len(ids) - n_val:]}, \
        {"vocab": vocab, "source": cfg.source, "n_chars": len(text), "corpus_sha256": digest}
