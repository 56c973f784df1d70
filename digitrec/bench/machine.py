"""Which machine a number comes from: numbers are only comparable on the same CPU."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, with its family and model numbers (a virtual machine's
    name can be as short as "AMD EPYC"): numbers are only comparable on the same CPU."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return platform.processor() or platform.machine() or "unknown"
    family, model = fields.get("cpu family"), fields.get("model")
    return fields["model name"] + (f" (family {family}, model {model})" if family and model else "")
