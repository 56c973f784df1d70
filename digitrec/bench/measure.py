"""Measuring speed: timings with warm-up and medians, FLOP counts, the matmul peak, training timelines."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def timings(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds taken by each of `repeats` calls of `fn`, after `warmup` calls that are not counted."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def median_time(fn: Callable[[], Any], warmup: int, repeats: int) -> float:
    return statistics.median(timings(fn, repeats, warmup))


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
        per_output = (
            layer.in_features
            if isinstance(layer, nn.Linear)
            else (layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1])
        )
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
