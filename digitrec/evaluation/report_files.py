"""The report folder: where reports go, whose they are, and writing them so that a failure leaves it as it was."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from digitrec.data.corruptions import SEVERITIES
from digitrec.data.mnist import to_pixels
from digitrec.errors import ConfigError
from digitrec.evaluation.calibration import reliability_bins
from digitrec.evaluation.figures import (
    confusion_figure,
    demo_figure,
    misclassified_figure,
    reliability_figure,
    robustness_figure,
    save_figure,
    training_curves_figure,
)
from digitrec.evaluation.metrics import format_report
from digitrec.evaluation.robustness import corrupted, format_robustness, subset
from digitrec.evaluation.training_logs import read_training_curves
from digitrec.inference.checkpoints import run_dir_of
from digitrec.inference.ensemble import members_key

REPORT_FILES = (
    "metrics.json",
    "classification_report.txt",
    "confusion_matrix.png",
    "misclassified.png",
    "training_curves.png",
    "demo.png",
    "reliability.png",
)


def default_output_dir(ckpt: Path) -> Path:
    """`<run>/eval` for the run's best checkpoint, `<run>/eval-<name>` for any other (e.g. eval-last)."""
    return run_dir_of(ckpt) / ("eval" if ckpt.name.endswith("-best.ckpt") else f"eval-{ckpt.stem}")


def check_output_dir(out: Path, ckpt: Path | list[Path]) -> None:
    """Refuse a folder that is a file or already holds the reports of another checkpoint (or ensemble)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir={out} is a file; give a folder for the reports.")
    metrics = out / "metrics.json"
    if (isinstance(ckpt, Path) and out == default_output_dir(ckpt)) or not metrics.is_file():
        return
    try:
        owner = json.loads(metrics.read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        owner = None
    if owner != (str(ckpt) if isinstance(ckpt, Path) else [str(c) for c in ckpt]):
        raise ConfigError(
            f"output_dir={out} already holds the reports of {owner or 'another checkpoint'}; "
            "give another output_dir=... or delete that folder."
        )


def publish(out: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary folder next to `out`, then move its files in: a failure leaves `out` as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-tmp-", dir=out.parent))
    try:
        write(tmp)
        out.mkdir(exist_ok=True)
        for path in sorted(tmp.iterdir()):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensemble_output_dir(ckpts: Sequence[Path], tta: bool = False) -> Path:
    """`<common parent of the runs>/ensemble-<n>-<hash of the members>[-tta]`: one folder per set of members."""
    runs = [run_dir_of(c) for c in ckpts]
    return Path(os.path.commonpath(runs)) / f"ensemble-{members_key(ckpts)}{'-tta' if tta else ''}"


def write_reports(
    folder: Path,
    report: dict[str, Any],
    images: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    num_errors: int,
    num_demo: int,
    seed: int,
) -> None:
    """The files of `REPORT_FILES` into `folder`, from the report and the test set's logits
    (training_curves.png only for a single checkpoint: an ensemble has no one training run)."""
    name, temperature = report["model"], report["temperature"]
    (folder / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (folder / "classification_report.txt").write_text(format_report(report))
    confidence, preds = logits.softmax(1).max(1)
    save_figure(
        confusion_figure(
            torch.tensor(report["confusion_matrix"]),
            f"{name}: test confusion matrix (accuracy {report['accuracy']:.4f})",
        ),
        folder / "confusion_matrix.png",
    )
    hardest = confidence.masked_fill(preds == labels, -1.0).topk(min(num_errors, report["errors"])).indices
    save_figure(
        misclassified_figure(
            images[hardest],
            labels[hardest],
            preds[hardest],
            confidence[hardest],
            f"{name}: the {len(hardest)} most confident of {report['errors']} errors",
        ),
        folder / "misclassified.png",
    )
    demo = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:num_demo]
    save_figure(demo_figure(images[demo], labels[demo], preds[demo], confidence[demo]), folder / "demo.png")
    if "members" not in report:
        save_figure(
            training_curves_figure(*read_training_curves(Path(report["run_dir"]))), folder / "training_curves.png"
        )
    ece = report["calibration"]["test"]
    panels = {"test, raw (T = 1)": {**reliability_bins(logits, labels), "ece": ece["before"]["ece"]}}
    if temperature != 1.0:
        panels[f"test, temperature-scaled (T = {temperature:.3f})"] = {
            **reliability_bins(logits / temperature, labels),
            "ece": ece["after"]["ece"],
        }
    save_figure(reliability_figure(panels), folder / "reliability.png")


def write_robustness(
    folder: Path, robust: dict[str, Any], images: torch.Tensor, labels: torch.Tensor, title: str
) -> None:
    (folder / "robustness.json").write_text(json.dumps(robust, indent=2, allow_nan=False) + "\n")
    (folder / "robustness.txt").write_text(format_robustness(robust) + "\n")
    shown = subset(labels, len(labels), robust["seed"])
    first = shown[labels[shown] != 1][:1]  # a digit with more shape to damage than a 1
    examples = {
        name: torch.cat([corrupted(images[first], name, s, robust["seed"])[:, 0] for s in SEVERITIES])
        for name in robust["corruptions"]
    }
    save_figure(robustness_figure(robust, examples, to_pixels(images[first][0, 0]), title), folder / "robustness.png")
