"""scikit-learn's 8×8 digits (1,797 images, 17 grey levels): a small 64-D density-estimation set,
split stratified by class into train / val / test."""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from genlab.evaluate.selection import Split


def prepare(cfg, seed: int) -> dict[str, np.ndarray]:
    """``{train,val,test}_x`` uint8 ``[N, 64]`` (0..16) and ``_y`` int64 ``[N]``; val and test are
    ``val_fraction`` and ``test_fraction`` of all images."""
    x, y = load_digits(return_X_y=True)
    x, y = x.astype(np.uint8), y.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(x, y, test_size=cfg.test_fraction, stratify=y,
                                                      random_state=seed)
    val = cfg.val_fraction / (1 - cfg.test_fraction)          # of what remains after the test split
    train_x, val_x, train_y, val_y = train_test_split(rest_x, rest_y, test_size=val, stratify=rest_y,
                                                      random_state=seed)
    return {"train_x": train_x, "train_y": train_y, "val_x": val_x, "val_y": val_y,
            "test_x": test_x, "test_y": test_y}


def splits(arrays: dict[str, np.ndarray]) -> dict[str, Split]:
    """The prepared arrays as tagged splits {train, val, test}."""
    return {s: Split(s, arrays[f"{s}_x"], arrays[f"{s}_y"]) for s in ("train", "val", "test")}
