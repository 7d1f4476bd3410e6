"""Training cost, measured apart from evaluation: the x-axis of "time to reach a test NLL".

``TrainClock`` adds up wall-clock and process-CPU seconds spent inside training batches
(forward, backward, optimizer step; not validation, checkpoints or logging between batches),
and at each validation end appends ``{step, seconds, cpu_seconds, <metric>: value}`` to
``history``. Its state is saved in checkpoints, so a resumed run keeps counting.
"""
from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback


class TrainClock(Callback):
    def __init__(self, metric: str | None = None):
        self.metric, self.seconds, self.cpu_seconds, self.steps = metric, 0.0, 0.0, 0
        self.history: list[dict] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._start[0]
        self.cpu_seconds += time.process_time() - self._start[1]
        self.steps += 1

    def on_validation_end(self, trainer, module):
        if self.metric and not trainer.sanity_checking:
            self.history.append({"step": trainer.global_step, "seconds": round(self.seconds, 3),
                                 "cpu_seconds": round(self.cpu_seconds, 3),
                                 self.metric: float(trainer.callback_metrics[self.metric])})

    @property
    def sec_per_iter(self) -> float:
        return self.seconds / max(self.steps, 1)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "steps": self.steps,
                "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.seconds, self.cpu_seconds, self.steps = state["seconds"], state["cpu_seconds"], state["steps"]
        self.history = state["history"]
