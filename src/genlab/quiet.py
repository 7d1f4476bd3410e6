"""Keep logs to what a researcher reads: no library tips or known-harmless warnings.

Called by the CLI at start-up and by every pool worker (``genlab.parallel``): a spawned worker is a fresh
interpreter, so the filters set in the parent do not reach it."""
from __future__ import annotations

import logging
import warnings

HARMLESS = (".*does not have many workers.*", ".*LeafSpec.*", ".*is deprecated.*",
            ".*The number of training batches.*", ".*but have no `val_dataloader`.*",
            ".*module\\(s\\) in eval mode at the start of training.*")   # frozen reference / reward models


def quiet_logs() -> None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    for pattern in HARMLESS:
        warnings.filterwarnings("ignore", message=pattern)
