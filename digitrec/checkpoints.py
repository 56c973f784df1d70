"""Loading a trained network for inference: weights-only checkpoints, calibrated temperature, device."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from digitrec.errors import CheckpointError, ConfigError
from digitrec.models import build_model, model_name

log = logging.getLogger(__name__)


def load_network(checkpoint: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """The network stored in a digitrec training checkpoint, in eval mode, and its registry name.

    The file is unpickled with `weights_only=True`: a checkpoint that would need anything but
    tensors and plain data (i.e. could run code) is refused with a `CheckpointError`.
    """
    path = Path(checkpoint)
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise CheckpointError(f"{path}: {what}; give a .ckpt written by train.py "
                              "(outputs/<run>/checkpoints/<model>-best.ckpt).")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise CheckpointError(
                f"{path}: refused: unpickling it would call {refused.group(1)}, which a checkpoint of weights "
                "never needs; it was not loaded and nothing in it ran. Use a checkpoint written by train.py."
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (or a corrupt one).") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError, ImportError) as e:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or truncated or corrupt "
                              f"({type(e).__name__}: {e}).") from None
    hparams = content.get("hyper_parameters") if isinstance(content, dict) else None
    state = content.get("state_dict") if isinstance(content, dict) else None
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), (dict, str)) or not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a digitrec training checkpoint (no hyper_parameters.net and state_dict).")
    net_cfg = {"name": hparams["net"]} if isinstance(hparams["net"], str) else hparams["net"]
    try:
        name, net = model_name(net_cfg), build_model(net_cfg)
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    except (ConfigError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild its network: {e}") from None
    return net.to(map_location).eval(), name


def load_temperature(checkpoint: str | os.PathLike) -> tuple[float, str]:
    """The softmax temperature calibrated for this checkpoint by `evaluate.py`, and where it came from.

    Read from `<run>/eval-<checkpoint stem>/metrics.json` or `<run>/eval/metrics.json` (key
    `temperature`), `<run>` being the parent of the checkpoint's `checkpoints/` folder; a report
    that names another checkpoint is not used. Without one the temperature is 1.0 (uncalibrated).
    """
    path = Path(checkpoint).resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    notes = []
    for metrics in (run / f"eval-{path.stem}" / "metrics.json", run / "eval" / "metrics.json"):
        if not metrics.is_file():
            continue
        try:
            report = json.loads(metrics.read_text())
            temperature, owner = report.get("temperature"), report.get("checkpoint")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
            log.warning("%s: unreadable (%s); not using its temperature.", metrics, e)
            notes.append(f"{metrics} unreadable")
            continue
        if owner is not None and Path(str(owner)).name != path.name:
            notes.append(f"{metrics} is for {Path(str(owner)).name}")
        elif isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            notes.append(f"{metrics} has no positive 'temperature'")
        else:
            return float(temperature), f"calibrated ({metrics})"
    return 1.0, f"uncalibrated ({'; '.join(notes) or f'no {run}/eval/metrics.json'})"


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` → CUDA if available, else CPU; anything else must name an available device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device={device!r} is not a device ({e}); use auto, cpu or cuda.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but no CUDA device is available; use device='cpu' or 'auto'.")
    return resolved
