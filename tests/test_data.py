"""Datasets: embedded MNIST, splits, hashes, the full-MNIST downloader (on a local fixture), text."""
from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from genlab.data import arithmetic, mnist, text
from genlab.errors import GenlabError
from genlab.io import load_arrays, save_arrays, sha256_file


def test_embedded_mnist_is_real_and_balanced():
    x, y = mnist.load_embedded()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10
    assert 0.1 < (x > 0).mean() < 0.3          # real digits: ~19% ink, not noise or blanks


def test_prepare_is_deterministic_and_stratified(make_cfg, tmp_path):
    from genlab.stages import prepare

    digests = []
    for run in ("a", "b"):
        prepare.run(make_cfg(tmp_path / run))
        digests.append({p.name: sha256_file(p) for p in sorted((tmp_path / run / "data").glob("*.npz"))})
    assert digests[0] == digests[1] and len(digests[0]) == 5
    arrays, meta = load_arrays(tmp_path / "a" / "data" / "mnist")
    assert [len(arrays[f"{s}_y"]) for s in ("train", "val", "test")] == [3500, 500, 1000]
    assert np.bincount(arrays["test_y"]).tolist() == [100] * 10                 # stratified
    train = {r.tobytes() for r in arrays["train_x"]}
    assert not any(r.tobytes() in train for r in arrays["test_x"][:200])      # disjoint splits
    other = make_cfg(tmp_path / "c", "seed=1")
    prepare.run(other)
    assert sha256_file(tmp_path / "c" / "data" / "mnist.npz") != digests[0]["mnist.npz"]
    _, text_meta = load_arrays(tmp_path / "a" / "data" / "text")       # the corpus is pinned, not the interpreter
    assert text_meta["corpus_sha256"] == text.VENDORED["tinyshakespeare"][1]


def test_corrupted_dataset_is_refused(tmp_path):
    save_arrays(tmp_path / "d", {"x": np.arange(1000)})
    npz = tmp_path / "d.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(GenlabError, match="does not match its recorded sha256.*fix: re-create it"):
        load_arrays(tmp_path / "d")
    with pytest.raises(GenlabError, match="missing dataset"):
        load_arrays(tmp_path / "nothing")


def _idx(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_mirror(tmp_path):
    """A local 'server' (file:// URL) holding tiny IDX files in MNIST's layout."""
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte.gz": _idx(rng.integers(0, 255, (60, 28, 28))),
             "train-labels-idx1-ubyte.gz": _idx(np.arange(60) % 10),
             "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 255, (20, 28, 28))),
             "t10k-labels-idx1-ubyte.gz": _idx(np.arange(20) % 10)}
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, blob in files.items():
        (mirror / name).write_bytes(blob)
    return mirror, {name: hashlib.md5(blob).hexdigest() for name, blob in files.items()}


def test_full_mnist_downloads_verifies_and_caches(idx_mirror, tmp_path):
    mirror, md5 = idx_mirror
    cache = tmp_path / "cache"
    arrays = mnist.download_full(mirror.as_uri(), cache, md5)
    assert arrays["train_x"].shape == (60, 28, 28) and arrays["test_y"].tolist() == [i % 10 for i in range(20)]
    for f in mirror.iterdir():
        f.unlink()                                  # cached: a second call needs no "network"
    assert mnist.download_full(mirror.as_uri(), cache, md5)["train_x"].shape == (60, 28, 28)


def test_full_mnist_rejects_a_corrupt_download(idx_mirror, tmp_path):
    mirror, md5 = idx_mirror
    blob = (mirror / "t10k-images-idx3-ubyte.gz").read_bytes()
    (mirror / "t10k-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(GenlabError, match="checksum mismatch for downloaded t10k-images"):
        mnist.download_full(mirror.as_uri(), tmp_path / "cache", md5)
    assert not list((tmp_path / "cache").glob("t10k-images*"))      # nothing half-written is kept


def test_truncated_idx_file_is_reported(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100))
    with pytest.raises(GenlabError, match="truncated"):
        mnist.read_idx(path)


def test_unreachable_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(GenlabError, match="cannot download .* fix: .*source=embedded"):
        mnist.download_full((tmp_path / "nowhere").as_uri(), tmp_path / "cache")


def test_text_corpus_and_bad_text_files(tmp_path):
    corpus, digest = text.vendored_corpus("tinyshakespeare")
    assert len(corpus) == 1_115_394 and len(set(corpus)) == 65 and corpus.startswith("First Citizen:")
    assert hashlib.md5(corpus.encode()).hexdigest() == "6fb458f1232090904fb40fe944165e91"   # the published file
    assert digest == text.VENDORED["tinyshakespeare"][1]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café ".encode("latin-1") * 500)
    with pytest.raises(GenlabError, match="not valid UTF-8"):
        text.read_text(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(GenlabError, match="at least 1,000"):
        text.read_text(empty)
    good = tmp_path / "good.txt"
    good.write_text("hello world\n" * 200)
    body, digest = text.read_text(good)
    assert body.startswith("hello") and digest == hashlib.sha256(good.read_bytes()).hexdigest()


def test_text_split_matches_nanogpt_shakespeare_char(make_cfg):
    """First 90 % train, last 10 % val, sorted-character vocabulary: nanoGPT's prepare.py split."""
    cfg = make_cfg(Path("/unused"))
    arrays, meta = text.prepare(cfg.data.text)
    assert len(arrays["train"]) == int(1_115_394 * 0.9) + 1 and len(arrays["val"]) == 111_539
    assert meta["vocab"][:3] == ["\n", " ", "!"] and len(meta["vocab"]) == 65
    assert meta["corpus_sha256"] == text.VENDORED["tinyshakespeare"][1]


def test_text_from_url_uses_the_cache_keyed_by_the_whole_url(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("to be or not to be\n" * 100)
    other = tmp_path / "b" / "corpus.txt"          # the same file name under another URL
    other.parent.mkdir()
    other.write_text("all the world's a stage\n" * 100)
    assert text.download_text(src.as_uri(), tmp_path / "cache")[0].startswith("to be")
    assert text.download_text(other.as_uri(), tmp_path / "cache")[0].startswith("all the world")
    src.unlink()
    assert text.download_text(src.as_uri(), tmp_path / "cache")[0].startswith("to be")


def test_text_checksum_is_enforced(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("to be or not to be\n" * 100)
    right = hashlib.sha256(src.read_bytes()).hexdigest()
    assert text.read_text(src, right)[1] == right
    with pytest.raises(GenlabError, match="not the pinned .* fix: "):
        text.read_text(src, "0" * 64)
    with pytest.raises(GenlabError, match="not the pinned"):    # a bad download never enters the cache
        text.download_text(src.as_uri(), tmp_path / "cache", sha256="0" * 64)
    assert not list((tmp_path / "cache").glob("*"))


def test_arithmetic_is_exact_and_disjoint(make_cfg):
    cfg = make_cfg(Path("/unused"), "data.arithmetic.digits=[2,3]", "data.arithmetic.n_train=3000",
                   "data.arithmetic.n_test=500")
    d = arithmetic.prepare(cfg.data.arithmetic, seed=0)
    train = set(zip(d["train_a"], d["train_b"], d["train_digits"]))
    assert not train & set(zip(d["test_a"], d["test_b"], d["test_digits"]))
    ids, plen, alen = arithmetic.tokenize(d["test_a"][:5], d["test_b"][:5], d["test_digits"][:5], reverse=True)
    for row, p, a, x, y in zip(ids, plen, alen, d["test_a"], d["test_b"]):
        answer = arithmetic.decode(row[p: p + a])
        assert int(answer[::-1]) == x + y
