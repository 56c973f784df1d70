"""Measuring speed: timings with warm-up and medians, FLOP counts, the matmul peak, training timelines."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn) for _ in range(repeats))


def segment_median(values: Sequence[float], size: int) -> float:
    """Median over consecutive segments of `size` values of each segment's mean (all values if fewer)."""
    if not values:
        raise ValueError("no timings to summarise")
    whole = len(values) - len(values) % size
    segments = [values[i : i + size] for i in range(0, whole, size)] or [values]
    return statistics.median(statistics.fmean(s) for s in segments)


def forward_flops(net: nn.Module, sample: torch.Tensor) -> int:
    """FLOPs of one forward pass per image: 2 × the multiply-adds of every Conv2d and Linear layer.

    Counted from each layer's output shape with forward hooks; biases, BatchNorm, activations and
    pooling are not counted (they are a fraction of a percent here).
    """
    macs = 0

    def count(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        per_output = layer.in_features if isinstance(layer, nn.Linear) else (
            layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1])
        macs += output.numel() // output.shape[0] * per_output

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(sample)
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return 2 * macs


def matmul_peak(n: int, repeats: int) -> float:
    """fp32 GFLOP/s of an n×n by n×n matrix product (2n³ FLOPs), median of `repeats`."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    return 2 * n**3 / median_time(lambda: torch.mm(a, b, out=out), warmup=2, repeats=repeats) / 1e9


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

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.val_batch_ended(len(batch[1]))

    def step_seconds(self, warmup: int) -> list[float]:
        """Training step only: forward, backward, optimizer and scheduler (data excluded)."""
        return [end - start for start, end in zip(self.step_starts, self.step_ends)][warmup:]

    def iteration_seconds(self, warmup: int) -> list[float]:
        """Whole iterations, end to end: data fetch, augmentation and the step."""
        return [b - a for a, b in zip(self.step_ends, self.step_ends[1:])][max(warmup - 1, 0):]

    def val_seconds_per_image(self) -> float:
        """Median over validation batches after the first (a warm-up) of seconds per image."""
        per_image = [(b - a) / n for a, b, n in zip(self.val_marks, self.val_marks[1:], self.val_sizes)][1:]
        if not per_image:
            raise ValueError("need at least two validation batches")
        return statistics.median(per_image)
