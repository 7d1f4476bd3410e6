"""scikit-learn's 8×8 digits (1,797 images, 17 grey levels): a small 64-D density-estimation set."""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def prepare(cfg, seed: int) -> dict[str, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(x.astype(np.uint8), y.astype(np.int64),
                                                        test_size=cfg.test_fraction, stratify=y, random_state=seed)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
