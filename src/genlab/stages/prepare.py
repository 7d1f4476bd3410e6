"""Stage `prepare`: write every embedded dataset under ``data/`` with a sha256 manifest.

data/mnist       uint8 images [N,28,28] + labels, stratified train/val/test
data/digits      scikit-learn 8×8 digits [N,64] (0..16) + labels
data/toy2d       <name>_train / <name>_test point clouds [N,2]
data/text        char ids (train/val) + vocabulary in the manifest
data/arithmetic  (a, b, digits) triples, disjoint train/test
"""
from __future__ import annotations

from genlab.data import arithmetic, digits, mnist, prepared, text, toy2d
from genlab.report.artifacts import write_metrics


def run(cfg) -> None:
    d = cfg.data
    summary = {}
    arrays = mnist.prepare(d.mnist, cfg.seed)
    prepared.save(cfg, "mnist", arrays, {"source": d.mnist.source})
    summary["mnist"] = {s: int(len(arrays[f"{s}_y"])) for s in ("train", "val", "test")}

    arrays = digits.prepare(d.digits, cfg.seed)
    prepared.save(cfg, "digits", arrays)
    summary["digits"] = {s: int(len(arrays[f"{s}_y"])) for s in ("train", "test")}

    arrays = toy2d.prepare(d.toy2d, cfg.seed)
    prepared.save(cfg, "toy2d", arrays, {"names": list(d.toy2d.names)})
    summary["toy2d"] = {"n_train": d.toy2d.n_train, "n_test": d.toy2d.n_test, "sets": len(d.toy2d.names)}

    arrays, meta = text.prepare(d.text)
    prepared.save(cfg, "text", arrays, meta)
    summary["text"] = {"train_chars": int(len(arrays["train"])), "val_chars": int(len(arrays["val"])),
                       "vocab_size": len(meta["vocab"]), "corpus_sha256": meta["corpus_sha256"]}

    arrays = arithmetic.prepare(d.arithmetic, cfg.seed)
    prepared.save(cfg, "arithmetic", arrays, {"vocab": arithmetic.VOCAB, "reverse": d.arithmetic.reverse})
    summary["arithmetic"] = {"train": int(len(arrays["train_a"])), "test": int(len(arrays["test_a"]))}

    write_metrics(cfg, "prepare", summary)
    for name, counts in summary.items():
        print(f"[genlab] prepare: {name}: {counts}")
