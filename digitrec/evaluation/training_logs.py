"""Reading a run's logged scalars back: its TensorBoard event files, else the CSV logger's metrics.csv."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

Points = list[tuple[int, float]]  # (global step, value)


def tensorboard_scalars(folder: Path) -> dict[str, Points]:
    """Every scalar tag in the event files directly in `folder` (later values win on a repeated step)."""
    if not any(folder.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    try:
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
        events.Reload()
        return {tag: _sorted((e.step, e.value) for e in events.Scalars(tag)) for tag in events.Tags()["scalars"]}
    except Exception as e:  # tensorboard raises several types on damaged event files
        log.warning("Cannot read the TensorBoard logs in %s (%s); no training curves from them.", folder, e)
        return {}


def csv_scalars(path: Path) -> dict[str, Points]:
    """Every column of a Lightning `CSVLogger` metrics.csv, as (step, value) points."""
    if not path.is_file():
        return {}
    points: dict[str, dict[int, float]] = {}
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                step = int(float(row.get("step") or 0))
                for tag, value in row.items():
                    if tag not in ("step", "epoch") and value not in (None, ""):
                        points.setdefault(tag, {})[step] = float(value)
    except (OSError, ValueError, csv.Error) as e:
        log.warning("Cannot read %s (%s); no training curves from it.", path, e)
        return {}
    return {tag: sorted(values.items()) for tag, values in points.items()}


def _sorted(points: Iterable[tuple[int, float]]) -> Points:
    return sorted(dict(points).items())


def read_training_curves(run_dir: Path) -> tuple[dict[str, list[tuple[float, float]]], str, str]:
    """(tag -> (x, value) points, x-axis label, source description) for a run folder.

    x is in epochs when the run logged `train/loss_epoch` (an epoch ends at the step where that is
    logged, so step s sits at (s + 1) / steps-per-epoch); otherwise it is the optimizer step.
    """
    source = "TensorBoard"
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    if not scalars:
        source, scalars = "CSV log", csv_scalars(run_dir / "csv" / "metrics.csv")
    if not scalars:
        log.warning(
            "No training logs in %s (tensorboard/ or csv/metrics.csv): the training curves stay empty.", run_dir
        )
        return {}, "step", f"no logs found in {run_dir}"
    epoch_ends = scalars.get("train/loss_epoch")
    if not epoch_ends:
        return {tag: [(float(s), v) for s, v in pts] for tag, pts in scalars.items()}, "step", source
    steps_per_epoch = epoch_ends[0][0] + 1
    return {tag: [((s + 1) / steps_per_epoch, v) for s, v in pts] for tag, pts in scalars.items()}, "epoch", source
