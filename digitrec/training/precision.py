"""Which numeric precision a run trains in: `precision: auto` resolved for the device at hand."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def _uses_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.cache
def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX-BF16), from /proc/cpuinfo's flags.

    False where that file does not exist (macOS, Windows): those CPUs have not been measured.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return bool(_BF16_FLAGS & set(flags))


def choose_precision(requested: str | int | None, accelerator: str = "auto") -> tuple[str, str]:
    """Return (precision, reason). `auto`: 16-mixed on CUDA; on a CPU bf16-mixed where it has bf16
    units, 32-true elsewhere.

    bf16 autocast trains the conv nets faster than fp32 on CPUs with bf16 units and several times
    slower on CPUs without them. An explicit `16-mixed` on a CPU is resolved the same way as `auto`:
    Lightning would otherwise silently run bf16 autocast, whatever the CPU.
    """
    requested = "auto" if requested is None else str(requested)
    cuda = _uses_cuda(str(accelerator))
    if requested not in ("auto", "16", "16-mixed") or (cuda and requested != "auto"):
        return requested, "as configured"
    if cuda:
        return "16-mixed", "CUDA device: mixed precision (fp16 autocast)"
    asked = "" if requested == "auto" else f"precision={requested} asked for on a CPU; "
    if cpu_has_bf16():
        return "bf16-mixed", (
            f"{asked}no CUDA device, and this CPU has bf16 units (AVX512-BF16/AMX): bf16 autocast "
            "(trainer.precision=32-true for fp32)"
        )
    return "32-true", f"{asked}no CUDA device and no bf16 units on this CPU: fp32 (bf16 autocast would be slower)"
