"""`Timeline`: timestamps of a training run, from `Trainer.fit` (as a callback) or from a plain loop."""

from __future__ import annotations

import statistics
import time

from lightning.pytorch.callbacks import Callback


class Timeline(Callback):
    """Timestamps of a training run: each step's start and end, and each validation batch's end.

    As a Lightning callback it records `Trainer.fit`; a plain loop calls the same methods.
    """

    def __init__(self) -> None:
        self.step_starts: list[float] = []
        self.step_ends: list[float] = []
        self.val_marks: list[float] = []
        self.val_sizes: list[int] = []

    def step_started(self) -> None:
        self.step_starts.append(time.perf_counter())

    def step_ended(self) -> None:
        self.step_ends.append(time.perf_counter())

    def val_started(self) -> None:
        self.val_marks = [time.perf_counter()]
        self.val_sizes = []

    def val_batch_ended(self, size: int) -> None:
        self.val_marks.append(time.perf_counter())
        self.val_sizes.append(size)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.step_started()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.step_ended()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.val_started()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.val_batch_ended(len(batch[1]))

    def step_seconds(self, warmup: int) -> list[float]:
        """Training step only: forward, backward, optimizer and scheduler (data excluded)."""
        return [end - start for start, end in zip(self.step_starts, self.step_ends)][warmup:]

    def iteration_seconds(self, warmup: int) -> list[float]:
        """Whole iterations, end to end: data fetch, augmentation and the step."""
        return [b - a for a, b in zip(self.step_ends, self.step_ends[1:])][max(warmup - 1, 0) :]

    def val_seconds_per_image(self) -> float:
        """Median over validation batches after the first (a warm-up) of seconds per image."""
        per_image = [(b - a) / n for a, b, n in zip(self.val_marks, self.val_marks[1:], self.val_sizes)][1:]
        if not per_image:
            raise ValueError("need at least two validation batches")
        return statistics.median(per_image)
