"""Evaluating a checkpoint on the official MNIST test set: finding and loading it, metrics, report files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

from digitrec.data.corruptions import SEVERITIES
from digitrec.data.datamodule import EVAL_BATCH_SIZE, MNISTDataModule
from digitrec.data.mnist import NUM_CLASSES, normalize
from digitrec.errors import CheckpointError, ConfigError, DigitrecError
from digitrec.evaluation.calibration import ECE_BINS, calibration_errors, fit_temperature, reliability_bins
from digitrec.evaluation.figures import (
    confusion_figure,
    demo_figure,
    misclassified_figure,
    reliability_figure,
    robustness_figure,
    save_figure,
    training_curves_figure,
)
from digitrec.evaluation.robustness import corrupted, format_robustness, robustness_report, subset
from digitrec.evaluation.training_logs import read_training_curves
from digitrec.inference.checkpoints import read_checkpoint, resolve_device, run_dir_of, save_temperature
from digitrec.inference.ensemble import TTA_VIEWS, Ensemble, members_key
from digitrec.training.module import DigitClassifier

log = logging.getLogger(__name__)

REPORT_FILES = ("metrics.json", "classification_report.txt", "confusion_matrix.png", "misclassified.png",
                "training_curves.png", "demo.png", "reliability.png")
_PER_CLASS = {"precision": MulticlassPrecision, "recall": MulticlassRecall, "f1": MulticlassF1Score}


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
        *(f"checkpoint: {c}" for c in ([report["checkpoint"]] if isinstance(report["checkpoint"], str)
                                        else report["checkpoint"])),
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
    lines += ["", f"errors: {report['errors']}   test loss: {report['test_loss']:.4f}   "
                  f"temperature: {report['temperature']:.3f}"]
    lines += [f"member {m['accuracy']:.4f} test, {m['validation_accuracy']:.4f} validation: {m['checkpoint']}"
              for m in report.get("members", [])]
    lines.append("A digit's recall is its accuracy: the share of its test images answered right.")
    return "\n".join(lines) + "\n"


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
              test_labels: torch.Tensor, fit: bool = True) -> tuple[float, dict[str, Any]]:
    """The temperature fitted on the validation split (1.0 without `fit`), and ECE / NLL of both
    splits before and after it."""
    temperature = fit_temperature(val_logits, val_labels) if fit else 1.0
    report: dict[str, Any] = {"bins": ECE_BINS}
    for split, logits, labels in (("test", test_logits, test_labels), ("validation", val_logits, val_labels)):
        report[split] = {"before": calibration_errors(logits, labels),
                         "after": calibration_errors(logits / temperature, labels)}
    return temperature, report


def _write_reports(folder: Path, report: dict[str, Any], images: torch.Tensor, labels: torch.Tensor,
                   logits: torch.Tensor, num_errors: int, num_demo: int, seed: int) -> None:
    """The files of `REPORT_FILES` into `folder`, from the report and the test set's logits
    (training_curves.png only for a single checkpoint: an ensemble has no one training run)."""
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
    if "members" not in report:
        save_figure(training_curves_figure(*read_training_curves(Path(report["run_dir"]))),
                    folder / "training_curves.png")
    ece = report["calibration"]["test"]
    panels = {"test, raw (T = 1)": {**reliability_bins(logits, labels), "ece": ece["before"]["ece"]}}
    if temperature != 1.0:
        panels[f"test, temperature-scaled (T = {temperature:.3f})"] = {
            **reliability_bins(logits / temperature, labels), "ece": ece["after"]["ece"]}
    save_figure(reliability_figure(panels), folder / "reliability.png")


def _write_robustness(folder: Path, robust: dict[str, Any], images: torch.Tensor, labels: torch.Tensor,
                      title: str) -> None:
    (folder / "robustness.json").write_text(json.dumps(robust, indent=2, allow_nan=False) + "\n")
    (folder / "robustness.txt").write_text(format_robustness(robust) + "\n")
    shown = subset(labels, len(labels), robust["seed"])
    first = shown[labels[shown] != 1][:1]  # a digit with more shape to damage than a 1
    examples = {name: torch.cat([corrupted(images[first], name, s, robust["seed"])[:, 0] for s in SEVERITIES])
                for name in robust["corruptions"]}
    save_figure(robustness_figure(robust, examples, images[first][0, 0].float() / 255, title),
                folder / "robustness.png")


@dataclass
class _Member:
    """One checkpoint's network and its numbers on the validation and test splits."""
    path: Path
    module: DigitClassifier
    data_hparams: dict[str, Any]
    val_logits: torch.Tensor | None = None
    test_logits: torch.Tensor | None = None
    temperature: float = 1.0
    calibration: dict[str, Any] | None = None


def ensemble_output_dir(ckpts: Sequence[Path], tta: bool = False) -> Path:
    """`<common parent of the runs>/ensemble-<n>-<hash of the members>[-tta]`: one folder per set of members."""
    runs = [run_dir_of(c) for c in ckpts]
    return Path(os.path.commonpath(runs)) / f"ensemble-{members_key(ckpts)}{'-tta' if tta else ''}"


def _check_same_split(members: Sequence[_Member]) -> None:
    """Members calibrated (and TTA decided) on one validation split need the same split: else one
    member's validation digits are another's training digits."""
    splits = {(m.data_hparams.get("val_fraction", 0.1), m.data_hparams.get("split_seed", 42)) for m in members}
    if len(splits) > 1:
        raise ConfigError("the checkpoints were trained with different validation splits "
                          f"(val_fraction, split_seed: {sorted(splits)}); an ensemble is calibrated on one "
                          "validation split, so give checkpoints trained with the same data.val_fraction and data.split_seed.")


def _combine(members: Sequence[_Member], tta: bool, datamodule: MNISTDataModule, batch_size: int,
             dev: torch.device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float, dict[str, Any]]:
    """What answers for the members, its test and validation scores, temperature and calibration.

    One member without TTA is its own network at its temperature; otherwise an `Ensemble`, whose
    mean of calibrated probabilities gets no temperature of its own.
    """
    test, val = datamodule.test_set, datamodule.val_set
    if len(members) == 1 and not tta:
        m = members[0]
        return m.module.to(dev).eval(), m.test_logits, m.val_logits, m.temperature, m.calibration
    scorer = Ensemble([m.module for m in members], [m.temperature for m in members], tta=tta).to(dev).eval()
    test_logits = predict_logits(scorer, test.images, batch_size, dev)
    val_logits = predict_logits(scorer, val.images, batch_size, dev)
    return (scorer, test_logits, val_logits,
            *calibrate(val_logits, val.labels, test_logits, test.labels, fit=False))


def evaluate_checkpoint(ckpt: str | Path | Sequence[str | Path], output_dir: str | Path | None = None,
                        data_dir: str | None = None, batch_size: int = EVAL_BATCH_SIZE, device: str = "auto",
                        num_errors: int = 25, num_demo: int = 16, seed: int = 0, tta: bool = False,
                        robustness: bool = False, robustness_images: int = 1_000) -> dict[str, Any]:
    """Evaluate one checkpoint, or the ensemble of several (the mean of their calibrated probabilities),
    on the official test set; with `tta`, also averaged over small shifts and rotations. Write the
    report files (`REPORT_FILES`; with `robustness`, also robustness.json / .txt / .png) into
    `output_dir` (default: `default_output_dir`, or `ensemble_output_dir`) and return metrics.json's content."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    paths = [Path(c).expanduser().absolute() for c in ([ckpt] if isinstance(ckpt, (str, Path)) else ckpt)]
    if not paths:
        raise ConfigError("ckpt_path is an empty list; give one checkpoint or several.")
    if robustness and (isinstance(robustness_images, bool) or not isinstance(robustness_images, int)
                       or robustness_images < 1):
        raise ConfigError(f"robustness_images must be a positive integer, got {robustness_images!r}.")
    members = [_Member(path, *load_checkpoint(path)) for path in paths]
    single = len(members) == 1
    out = Path(output_dir).expanduser().absolute() if output_dir else (
        ensemble_output_dir(paths, tta) if not single else
        default_output_dir(paths[0]).with_name(default_output_dir(paths[0]).name + ("-tta" if tta else "")))
    check_output_dir(out, paths[0] if single else paths)
    _check_same_split(members)
    dev = resolve_device(device)
    datamodule = _data_module(data_dir, members[0].data_hparams)
    test, val = datamodule.test_set, datamodule.val_set
    for m in members:
        m.test_logits = predict_logits(m.module, test.images, batch_size, dev)
        m.val_logits = predict_logits(m.module, val.images, batch_size, dev)
        m.temperature, m.calibration = calibrate(m.val_logits, val.labels, m.test_logits, test.labels)
    scorer, test_logits, val_logits, temperature, calibration = _combine(members, tta, datamodule, batch_size, dev)
    names = sorted({m.module.model_name for m in members})
    report = {
        "model": names[0] if single else f"ensemble of {len(members)} ({', '.join(names)})",
        "parameters": sum(m.module.num_parameters for m in members),
        "checkpoint": str(paths[0]) if single else [str(p) for p in paths],
        "run_dir": str(run_dir_of(paths[0]) if single else out.parent),
        "tta": bool(tta),
        **classification_metrics(test_logits, test.labels, members[0].module.hparams.label_smoothing),
        "validation_accuracy": float((val_logits.argmax(1) == val.labels).float().mean()),
        "temperature": temperature, "calibration": calibration,
        "data": {"data_dir": str(datamodule.data_dir), "checksums": datamodule.checksums,
                 "validation_size": len(val.labels), "val_fraction": datamodule.hparams.val_fraction,
                 "split_seed": datamodule.hparams.split_seed},
    }
    if not single or tta:
        report["members"] = [_member_summary(m, test.labels, val.labels) for m in members]
    robust = None
    if robustness:
        trained_on = sorted({c for m in members for c in (m.data_hparams.get("corruptions") or [])})
        started = time.perf_counter()
        robust = robustness_report(lambda x: scorer(x.to(dev)).float().cpu(), test.images, test.labels,
                                   min(robustness_images, len(test.labels)), seed, batch_size, trained_on)
        log.info("Robustness report: %d corruptions × %d severities on %d test digits in %.1f s.",
                 len(robust["corruptions"]), len(SEVERITIES), robust["images"], time.perf_counter() - started)
        report["robustness"] = {k: robust[k] for k in ("clean", "mean", "held_out_mean", "worst", "low_resolution")
                                if k in robust}

    def write(folder: Path) -> None:
        _write_reports(folder, report, test.images, test.labels, test_logits, num_errors, num_demo, seed)
        if robust is not None:
            _write_robustness(folder, robust, test.images, test.labels, f"{report['model']}: robustness")

    publish(out, write)
    for m in members:  # beside each checkpoint: found wherever the reports went
        save_temperature(m.path, m.temperature, out / "metrics.json")
    _log_summary(report, out, robust)
    return report


def _member_summary(m: _Member, test_labels: torch.Tensor, val_labels: torch.Tensor) -> dict[str, Any]:
    return {"checkpoint": str(m.path), "model": m.module.model_name, "parameters": m.module.num_parameters,
            "accuracy": float((m.test_logits.argmax(1) == test_labels).float().mean()),
            "validation_accuracy": float((m.val_logits.argmax(1) == val_labels).float().mean()),
            "temperature": m.temperature}


def _log_summary(report: dict[str, Any], out: Path, robust: dict[str, Any] | None) -> None:
    test, val = report["calibration"]["test"], report["calibration"]["validation"]
    rows = [
        ("model", f"{report['model']} ({report['parameters']:,} parameters)"),
        ("test accuracy", f"{report['accuracy']:.4f} ({report['errors']} errors in {report['test_size']:,})"),
        ("macro F1", f"{report['macro']['f1']:.4f}"),
        ("test loss", f"{report['test_loss']:.4f}"),
        ("validation accuracy", f"{report['validation_accuracy']:.4f} ({report['data']['validation_size']:,} digits)"),
        ("temperature", f"{report['temperature']:.3f} (fitted on the validation digits)" if "members" not in report
         else "each member's own; their calibrated probabilities are averaged"),
        (f"ECE ({ECE_BINS} bins)", f"test {test['before']['ece']:.4f} -> {test['after']['ece']:.4f}, "
                                   f"validation {val['before']['ece']:.4f} -> {val['after']['ece']:.4f}"),
        ("NLL", f"test {test['before']['nll']:.4f} -> {test['after']['nll']:.4f}"),
        ("reports", str(out)),
    ]
    for m in report.get("members", []):
        rows.insert(-1, ("member", f"{m['accuracy']:.4f} test, {m['validation_accuracy']:.4f} validation: {m['checkpoint']}"))
    if report["tta"]:
        rows.insert(1, ("TTA", f"{len(TTA_VIEWS)} views: shifts of 1 px, rotations of ±8°"))
    width = max(len(name) for name, _ in rows)
    log.info("Evaluation of %s\n%s", report["model"], "\n".join(f"  {n:<{width}}  {v}" for n, v in rows))
    if robust is not None:
        log.info("Robustness (%s)\n%s", out / "robustness.png", format_robustness(robust))
