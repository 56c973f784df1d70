"""Evaluating a checkpoint on the official MNIST test set: finding and loading it, metrics, report files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from digitrec.calibration import ECE_BINS, calibration_errors, fit_temperature, reliability_bins
from digitrec.checkpoints import read_checkpoint, resolve_device, save_temperature
from digitrec.data import EVAL_BATCH_SIZE, MNISTDataModule
from digitrec.mnist import NUM_CLASSES, normalize
from digitrec.errors import CheckpointError, ConfigError, DigitrecError
from digitrec.module import DigitClassifier
from digitrec.plots import (
    confusion_figure,
    demo_figure,
    misclassified_figure,
    reliability_figure,
    save_figure,
    training_curves_figure,
)
from digitrec.training_logs import read_training_curves

log = logging.getLogger(__name__)

REPORT_FILES = ("metrics.json", "classification_report.txt", "confusion_matrix.png", "misclassified.png",
                "training_curves.png", "demo.png", "reliability.png")
_PER_CLASS = {"precision": MulticlassPrecision, "recall": MulticlassRecall, "f1": MulticlassF1Score}


def run_dir_of(ckpt: Path) -> Path:
    """The training run a checkpoint belongs to: the parent of its `checkpoints/` folder."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def _short(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    text = text[0] if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_checkpoint(path: Path) -> tuple[DigitClassifier, dict[str, Any]]:
    """Rebuild the `DigitClassifier` a checkpoint holds; also return its data module's hyper-parameters.

    Loads with `weights_only=True` (no code from the file runs) and rebuilds the network only
    through the model registry.
    """
    data = read_checkpoint(path)
    try:
        module = DigitClassifier(**data["hyper_parameters"])
        module.load_state_dict(data["state_dict"])
    except (DigitrecError, TypeError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: cannot rebuild its model from the stored hyper-parameters: {_short(e)}"
        ) from None
    return module.eval(), dict(data.get("datamodule_hyper_parameters") or {})


@torch.inference_mode()
def predict_logits(module: DigitClassifier, images: torch.Tensor, batch_size: int,
                   device: torch.device) -> torch.Tensor:
    """Logits for uint8 (N, 1, 28, 28) images, preprocessed as the data module does (no augmentation)."""
    module = module.to(device).eval()
    chunks = [module(normalize(batch.to(device).float() / 255)).float().cpu()
              for batch in images.split(batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, NUM_CLASSES)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor,
                           label_smoothing: float = 0.0) -> dict[str, Any]:
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
        "per_class": {str(d): {**{k: v[d] for k, v in per_class.items()}, "support": support[d]}
                      for d in range(NUM_CLASSES)},
        "confusion_matrix": confusion.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """A per-digit table (precision, recall, F1, support) with macro and weighted averages."""
    n = report["test_size"]
    lines = [
        f"Classification report: {report['model']} ({report['parameters']:,} parameters) on {n:,} MNIST test digits",
        f"checkpoint: {report['checkpoint']}",
        "",
        f"{'digit':>12}{'precision':>11}{'recall':>9}{'f1-score':>10}{'support':>10}",
    ]
    for digit, row in report["per_class"].items():
        lines.append(f"{digit:>12}{row['precision']:>11.4f}{row['recall']:>9.4f}{row['f1']:>10.4f}{row['support']:>10}")
    lines += ["", f"{'accuracy':>12}{'':>20}{report['accuracy']:>10.4f}{n:>10}"]
    for name in ("macro", "weighted"):
        avg = report[name]
        lines.append(f"{name + ' avg':>12}{avg['precision']:>11.4f}{avg['recall']:>9.4f}{avg['f1']:>10.4f}{n:>10}")
    lines += ["", f"errors: {report['errors']}   test loss: {report['test_loss']:.4f}   "
                  f"temperature: {report['temperature']:.3f}",
              "A digit's recall is its accuracy: the share of its test images answered right."]
    return "\n".join(lines) + "\n"


def default_output_dir(ckpt: Path) -> Path:
    """`<run>/eval` for the run's best checkpoint, `<run>/eval-<name>` for any other (e.g. eval-last)."""
    return run_dir_of(ckpt) / ("eval" if ckpt.name.endswith("-best.ckpt") else f"eval-{ckpt.stem}")


def check_output_dir(out: Path, ckpt: Path) -> None:
    """Refuse a folder that is a file or already holds the reports of another checkpoint."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir={out} is a file; give a folder for the reports.")
    metrics = out / "metrics.json"
    if out == default_output_dir(ckpt) or not metrics.is_file():
        return
    try:
        owner = json.loads(metrics.read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        owner = None
    if owner != str(ckpt):
        raise ConfigError(f"output_dir={out} already holds the reports of {owner or 'another checkpoint'}; "
                          "give another output_dir=... or delete that folder.")


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


def _data_module(data_dir: str | None, hparams: dict[str, Any]) -> MNISTDataModule:
    """The checkpoint's own validation split (same fraction and seed) and the official test set."""
    trained_on = hparams.get("data_dir")
    datamodule = MNISTDataModule(
        data_dir=data_dir or (trained_on if trained_on and Path(trained_on).is_dir() else None),
        val_fraction=hparams.get("val_fraction", 0.1), split_seed=hparams.get("split_seed", 42), augment=False,
    )
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def calibrate(val_logits: torch.Tensor, val_labels: torch.Tensor, test_logits: torch.Tensor,
              test_labels: torch.Tensor) -> tuple[float, dict[str, Any]]:
    """The temperature fitted on the validation split, and ECE / NLL of both splits before and after it."""
    temperature = fit_temperature(val_logits, val_labels)
    report: dict[str, Any] = {"bins": ECE_BINS}
    for split, logits, labels in (("test", test_logits, test_labels), ("validation", val_logits, val_labels)):
        report[split] = {"before": calibration_errors(logits, labels),
                         "after": calibration_errors(logits / temperature, labels)}
    return temperature, report


def _write_reports(folder: Path, report: dict[str, Any], images: torch.Tensor, labels: torch.Tensor,
                   logits: torch.Tensor, num_errors: int, num_demo: int, seed: int) -> None:
    """Every file of `REPORT_FILES` into `folder`, from the report and the test set's logits."""
    name, temperature = report["model"], report["temperature"]
    (folder / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (folder / "classification_report.txt").write_text(format_report(report))
    confidence, preds = logits.softmax(1).max(1)
    save_figure(confusion_figure(torch.tensor(report["confusion_matrix"]),
                                 f"{name}: test confusion matrix (accuracy {report['accuracy']:.4f})"),
                folder / "confusion_matrix.png")
    hardest = confidence.masked_fill(preds == labels, -1.0).topk(min(num_errors, report["errors"])).indices
    save_figure(misclassified_figure(images[hardest], labels[hardest], preds[hardest], confidence[hardest],
                                     f"{name}: the {len(hardest)} most confident of {report['errors']} errors"),
                folder / "misclassified.png")
    demo = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:num_demo]
    save_figure(demo_figure(images[demo], labels[demo], preds[demo], confidence[demo]), folder / "demo.png")
    save_figure(training_curves_figure(*read_training_curves(Path(report["run_dir"]))), folder / "training_curves.png")
    ece = report["calibration"]["test"]
    save_figure(reliability_figure({
        "test, raw (T = 1)": {**reliability_bins(logits, labels), "ece": ece["before"]["ece"]},
        f"test, temperature-scaled (T = {temperature:.3f})": {
            **reliability_bins(logits / temperature, labels), "ece": ece["after"]["ece"]},
    }), folder / "reliability.png")


def evaluate_checkpoint(ckpt: str | Path, output_dir: str | Path | None = None, data_dir: str | None = None,
                        batch_size: int = EVAL_BATCH_SIZE, device: str = "auto", num_errors: int = 25,
                        num_demo: int = 16, seed: int = 0) -> dict[str, Any]:
    """Evaluate one checkpoint on the official test set, write its report files (`REPORT_FILES`)
    into `output_dir` (default: `default_output_dir`) and return the content of metrics.json."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    ckpt = Path(ckpt).expanduser().absolute()
    module, data_hparams = load_checkpoint(ckpt)
    out = Path(output_dir).expanduser().absolute() if output_dir else default_output_dir(ckpt)
    check_output_dir(out, ckpt)
    dev = resolve_device(device)
    datamodule = _data_module(data_dir, data_hparams)
    test, val = datamodule.test_set, datamodule.val_set
    test_logits = predict_logits(module, test.images, batch_size, dev)
    temperature, calibration = calibrate(predict_logits(module, val.images, batch_size, dev), val.labels,
                                         test_logits, test.labels)
    report = {
        "model": module.model_name, "parameters": module.num_parameters, "checkpoint": str(ckpt),
        "run_dir": str(run_dir_of(ckpt)),
        **classification_metrics(test_logits, test.labels, module.hparams.label_smoothing),
        "temperature": temperature, "calibration": calibration,
        "data": {"data_dir": str(datamodule.data_dir), "checksums": datamodule.checksums,
                 "validation_size": len(val.labels), "val_fraction": datamodule.hparams.val_fraction,
                 "split_seed": datamodule.hparams.split_seed},
    }
    publish(out, lambda folder: _write_reports(folder, report, test.images, test.labels, test_logits,
                                               num_errors, num_demo, seed))
    save_temperature(ckpt, temperature, out / "metrics.json")  # beside the checkpoint: found wherever the reports went
    _log_summary(report, out)
    return report


def _log_summary(report: dict[str, Any], out: Path) -> None:
    test, val = report["calibration"]["test"], report["calibration"]["validation"]
    rows = [
        ("model", f"{report['model']} ({report['parameters']:,} parameters)"),
        ("test accuracy", f"{report['accuracy']:.4f} ({report['errors']} errors in {report['test_size']:,})"),
        ("macro F1", f"{report['macro']['f1']:.4f}"),
        ("test loss", f"{report['test_loss']:.4f}"),
        ("temperature", f"{report['temperature']:.3f} "
                        f"(fitted on {report['data']['validation_size']:,} validation digits)"),
        (f"ECE ({ECE_BINS} bins)", f"test {test['before']['ece']:.4f} -> {test['after']['ece']:.4f}, "
                                   f"validation {val['before']['ece']:.4f} -> {val['after']['ece']:.4f}"),
        ("NLL", f"test {test['before']['nll']:.4f} -> {test['after']['nll']:.4f}"),
        ("reports", str(out)),
    ]
    width = max(len(name) for name, _ in rows)
    log.info("Evaluation of %s\n%s", report["checkpoint"], "\n".join(f"  {n:<{width}}  {v}" for n, v in rows))
