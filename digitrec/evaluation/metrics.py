"""Scores and their summaries: logits for a test set, classification metrics, calibration, the text report."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from digitrec.data.mnist import NUM_CLASSES, to_network_input
from digitrec.evaluation.calibration import ECE_BINS, calibration_errors, fit_temperature
from digitrec.inference.ensemble import TTA_VIEWS

_PER_CLASS = {"precision": MulticlassPrecision, "recall": MulticlassRecall, "f1": MulticlassF1Score}


@torch.inference_mode()
def predict_logits(net: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits (float32, on the CPU) for uint8 (N, 1, 28, 28) images, preprocessed as in training (no augmentation)."""
    net = net.to(device).eval()
    chunks = [net(to_network_input(batch.to(device))).float().cpu() for batch in images.split(batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, NUM_CLASSES)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows whose highest logit is the label."""
    return float((logits.argmax(1) == labels).float().mean())


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> dict[str, Any]:
    """Accuracy; precision / recall / F1 (macro, weighted, per class); confusion matrix; loss.

    No per-class accuracy: the share of one digit's images answered right is its recall.
    """
    preds = logits.argmax(1)

    def metric(cls: type, average: str | None) -> torch.Tensor:
        return cls(NUM_CLASSES, average=average)(preds, labels)

    confusion = MulticlassConfusionMatrix(NUM_CLASSES)(preds, labels)
    support = confusion.sum(1).tolist()
    per_class = {name: metric(cls, None).tolist() for name, cls in _PER_CLASS.items()}
    return {
        "accuracy": float(metric(MulticlassAccuracy, "micro")),
        "errors": int((preds != labels).sum()),
        "test_size": len(labels),
        "test_loss": float(F.cross_entropy(logits, labels, label_smoothing=label_smoothing)),
        "macro": {name: float(metric(cls, "macro")) for name, cls in _PER_CLASS.items()},
        "weighted": {name: float(metric(cls, "weighted")) for name, cls in _PER_CLASS.items()},
        "per_class": {
            str(d): {**{k: v[d] for k, v in per_class.items()}, "support": support[d]} for d in range(NUM_CLASSES)
        },
        "confusion_matrix": confusion.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """A per-digit table (precision, recall, F1, support) with macro and weighted averages."""
    n = report["test_size"]
    lines = [
        f"Classification report: {report['model']} ({report['parameters']:,} parameters) on {n:,} MNIST test digits",
        *(
            f"checkpoint: {c}"
            for c in ([report["checkpoint"]] if isinstance(report["checkpoint"], str) else report["checkpoint"])
        ),
        *([f"test-time augmentation: {len(TTA_VIEWS)} views (1-px shifts, ±8° rotations)"] if report["tta"] else []),
        "",
        f"{'digit':>12}{'precision':>11}{'recall':>9}{'f1-score':>10}{'support':>10}",
    ]
    for digit, row in report["per_class"].items():
        lines.append(f"{digit:>12}{row['precision']:>11.4f}{row['recall']:>9.4f}{row['f1']:>10.4f}{row['support']:>10}")
    lines += ["", f"{'accuracy':>12}{'':>20}{report['accuracy']:>10.4f}{n:>10}"]
    for name in ("macro", "weighted"):
        avg = report[name]
        lines.append(f"{name + ' avg':>12}{avg['precision']:>11.4f}{avg['recall']:>9.4f}{avg['f1']:>10.4f}{n:>10}")
    lines += [
        "",
        f"errors: {report['errors']}   test loss: {report['test_loss']:.4f}   temperature: {report['temperature']:.3f}",
    ]
    lines += [
        f"member {m['accuracy']:.4f} test, {m['validation_accuracy']:.4f} validation: {m['checkpoint']}"
        for m in report.get("members", [])
    ]
    lines.append("A digit's recall is its accuracy: the share of its test images answered right.")
    return "\n".join(lines) + "\n"


def calibrate(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    fit: bool = True,
) -> tuple[float, dict[str, Any]]:
    """The temperature fitted on the validation split (1.0 without `fit`), and ECE / NLL of both
    splits before and after it."""
    temperature = fit_temperature(val_logits, val_labels) if fit else 1.0
    report: dict[str, Any] = {"bins": ECE_BINS}
    for split, logits, labels in (("test", test_logits, test_labels), ("validation", val_logits, val_labels)):
        report[split] = {
            "before": calibration_errors(logits, labels),
            "after": calibration_errors(logits / temperature, labels),
        }
    return temperature, report
