"""Loading a trained network for inference: weights-only checkpoints, calibrated temperature, device."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from digitrec.errors import CheckpointError, ConfigError
from digitrec.models import build_model, count_parameters, model_name
from digitrec.validation import in_range

log = logging.getLogger(__name__)

_TRAINING_KEYS = ("hyper_parameters", "state_dict")
WEIGHTS_FORMAT = "digitrec-weights-1"  # a network's registry config and state dict, nothing else


def load_safely(path: Path, map_location: str | torch.device) -> Any:
    """`torch.load(weights_only=True)`, each way it can fail as one `CheckpointError`."""
    if not path.is_file():
        what = "is a directory, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise CheckpointError(
            f"{path}: {what}; give a .ckpt written by train.py (outputs/<run>/checkpoints/<model>-best.ckpt)."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise CheckpointError(
                f"{path}: refused: unpickling it would call {refused.group(1)}, which a checkpoint of weights "
                "never needs; it was not loaded and nothing in it ran. Use a checkpoint written by train.py."
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (or a corrupt one); cannot read it.") from None
    except Exception as e:  # random or truncated bytes fail in many ways (zip, struct, unpickling, I/O)
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint, or truncated or corrupt; cannot read it "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})."
        ) from None


def read_checkpoint(checkpoint: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The contents of a checkpoint written by `train.py`, unpickled with `weights_only=True`.

    A file that would need anything but tensors and plain data to unpickle (i.e. could run code)
    is refused with a `CheckpointError`, as is anything that is not a digitrec training checkpoint.
    """
    path = Path(checkpoint)
    content = load_safely(path, map_location)
    return _training_checkpoint(path, content)


def _training_checkpoint(path: Path, content: Any) -> dict[str, Any]:
    missing = [key for key in _TRAINING_KEYS if not isinstance(content, dict) or not isinstance(content.get(key), dict)]
    if not missing and not isinstance(content["hyper_parameters"].get("net"), (dict, str)):
        missing = ["hyper_parameters.net"]
    if missing:
        raise CheckpointError(
            f"{path}: not a digitrec training checkpoint: it has no {', '.join(missing)} "
            "(not a Lightning checkpoint written by train.py)."
        )
    return content


def save_weights(
    path: Path, net: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float16
) -> None:
    """A network as a compact weights file (`WEIGHTS_FORMAT`): its registry config and its state dict,
    floating-point tensors in `dtype`; written atomically."""
    content = {
        "format": WEIGHTS_FORMAT,
        "net": dict(net),
        "state_dict": {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(content, tmp)
    os.replace(tmp, path)


def find_newest_checkpoint(search_dir: Path, option: str = "ckpt_path=") -> Path:
    """The most recently written `*-best.ckpt` anywhere under `search_dir`; `option` is how the
    command that asks takes a checkpoint, for the error message."""
    found = sorted(search_dir.rglob("*-best.ckpt"), key=lambda p: p.stat().st_mtime) if search_dir.is_dir() else []
    if not found:
        raise CheckpointError(
            f"No *-best.ckpt under {search_dir}/. Train a model first, e.g. `python train.py model=cnn "
            f"trainer.max_epochs=1`, or pass {option}path/to/model.ckpt."
        )
    return found[-1]


def resolve_checkpoint(
    path: str | os.PathLike | None, search_dir: Path = Path("outputs"), option: str = "--checkpoint "
) -> Path:
    """A checkpoint file as given; for a folder (a run, a sweep), or None (`search_dir`), the newest
    `*-best.ckpt` under it."""
    if path is None:
        return find_newest_checkpoint(search_dir, option)
    path = Path(path)
    return find_newest_checkpoint(path, option) if path.is_dir() else path


@dataclass(frozen=True)
class TrainedNetwork:
    """A checkpoint's network, in eval mode, and what the checkpoint says about how it was trained."""

    net: nn.Module
    name: str  # the registry name: mlp, cnn, ...
    hparams: dict[str, Any]  # the training module's: net, optimizer, scheduler, label_smoothing, ...
    data_hparams: dict[str, Any]  # the data module's: data_dir, val_fraction, split_seed, corruptions, ...

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.net)


def load_network(checkpoint: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainedNetwork:
    """The network in a digitrec training checkpoint or weights file (`save_weights`), rebuilt through
    the model registry only, in float32."""
    path = Path(checkpoint)
    content = load_safely(path, map_location)
    if isinstance(content, dict) and content.get("format") == WEIGHTS_FORMAT:
        hparams, state, data_hparams = {"net": content["net"]}, content["state_dict"], {}
    else:
        content = _training_checkpoint(path, content)
        hparams, data_hparams = (
            dict(content["hyper_parameters"]),
            dict(content.get("datamodule_hyper_parameters") or {}),
        )
        state = {k.removeprefix("net."): v for k, v in content["state_dict"].items() if k.startswith("net.")}
    net_cfg = {"name": hparams["net"]} if isinstance(hparams["net"], str) else hparams["net"]
    try:
        name, net = model_name(net_cfg), build_model(net_cfg)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (ConfigError, RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild its network: {e}") from None
    return TrainedNetwork(net.to(map_location).eval(), name, hparams, data_hparams)


def calibration_file(checkpoint: str | os.PathLike) -> Path:
    """Where the temperature fitted for a checkpoint is kept: beside it, whatever folder its reports went to."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.calibration.json")


def card_file(weights: str | os.PathLike) -> Path:
    """The model card beside a weights file: its provenance, measured accuracy and calibrated temperature."""
    path = Path(weights)
    return path.with_name(f"{path.stem}.card.json")


def save_temperature(checkpoint: str | os.PathLike, temperature: float, report: Path) -> None:
    """Write `calibration_file` atomically; a checkpoint folder that cannot be written to only costs a warning."""
    target = calibration_file(checkpoint)
    content = {"checkpoint": Path(checkpoint).name, "temperature": temperature, "report": str(report)}
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
        os.replace(tmp, target)
    except OSError as e:
        log.warning("Cannot write %s (%s): tools will find the temperature only in %s.", target, e.strerror, report)


def run_dir_of(ckpt: str | os.PathLike) -> Path:
    """The training run a checkpoint belongs to: the parent of its `checkpoints/` folder."""
    path = Path(ckpt)
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def load_temperature(checkpoint: str | os.PathLike) -> tuple[float, str]:
    """The softmax temperature calibrated for this checkpoint by `evaluate.py`, and where it came from.

    Read from `calibration_file` beside the checkpoint, or a weights file's `card_file`, else from the reports in
    `<run>/eval-<checkpoint stem>/metrics.json` or `<run>/eval/metrics.json` (key `temperature`),
    `<run>` being the parent of the checkpoint's `checkpoints/` folder; a file that names another
    checkpoint is not used. Without one the temperature is 1.0 (uncalibrated).
    """
    path = Path(checkpoint).resolve()
    run = run_dir_of(path)
    notes = []
    sources = (
        calibration_file(path),
        card_file(path),
        run / f"eval-{path.stem}" / "metrics.json",
        run / "eval" / "metrics.json",
    )
    for source in sources:
        if not source.is_file():
            continue
        try:
            report = json.loads(source.read_text())
            temperature, owner = report.get("temperature"), report.get("checkpoint")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
            log.warning("%s: unreadable (%s); not using its temperature.", source, e)
            notes.append(f"{source} unreadable")
            continue
        if owner is not None and Path(str(owner)).name != path.name:
            notes.append(f"{source} is for {Path(str(owner)).name}")
        elif not in_range(temperature, 0, math.inf, open_low=True, open_high=True):
            notes.append(f"{source} has no positive 'temperature'")
        else:
            return float(temperature), f"calibrated ({source})"
    return 1.0, f"uncalibrated ({'; '.join(notes) or f'no {calibration_file(path).name} or {run}/eval/metrics.json'})"


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` → CUDA if available, else CPU; `gpu` means CUDA (as in train.py's trainer.accelerator);
    anything else must name an available device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("gpu"):
        device = "cuda" + str(device)[3:]
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not a device; use auto, cpu, cuda (or gpu) or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but no CUDA device is available; use device='cpu' or 'auto'.")
    return resolved
