"""Evaluating a checkpoint, or an ensemble of several, on the official MNIST test set: `evaluate_checkpoint`."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from digitrec.data.corruptions import SEVERITIES
from digitrec.data.datamodule import EVAL_BATCH_SIZE, MNISTDataModule
from digitrec.errors import ConfigError
from digitrec.evaluation.calibration import ECE_BINS
from digitrec.evaluation.metrics import accuracy, calibrate, classification_metrics, predict_logits
from digitrec.evaluation.report_files import (
    check_output_dir,
    default_output_dir,
    ensemble_output_dir,
    publish,
    write_reports,
    write_robustness,
)
from digitrec.evaluation.robustness import format_robustness, robustness_report
from digitrec.inference.checkpoints import TrainedNetwork, load_network, resolve_device, run_dir_of, save_temperature
from digitrec.inference.ensemble import TTA_VIEWS, combine, scorer_name
from digitrec.validation import positive_int

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate, whatever is evaluated: the keys of conf/eval.yaml with these names."""

    data_dir: str | None = None  # None: the folder the checkpoint was trained on, else the default
    batch_size: int = EVAL_BATCH_SIZE
    device: str = "auto"
    num_errors: int = 25  # most confident errors in misclassified.png
    num_demo: int = 16  # test digits in demo.png, chosen with `seed`
    seed: int = 0
    tta: bool = False
    robustness: bool = False
    robustness_images: int = 1_000
    extra: list[str] | None = None  # `data.extra`: users' digits, scored on the held-out test part (checked on reading)

    def __post_init__(self) -> None:
        for name in ("batch_size", "robustness_images", "num_demo"):
            positive_int(name, getattr(self, name))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> EvalOptions:
        given = {f.name: cfg[f.name] for f in fields(cls) if f.name in cfg and f.name != "extra"}
        extra = (cfg.get("data") or {}).get("extra")
        if extra is not None:
            given["extra"] = [extra] if isinstance(extra, str) else [str(source) for source in extra]
        return cls(**given)


@dataclass
class _Member:
    """One checkpoint's network and its scores on the validation and test splits."""

    path: Path
    trained: TrainedNetwork
    val_logits: torch.Tensor = field(init=False)
    test_logits: torch.Tensor = field(init=False)
    temperature: float = 1.0
    calibration: dict[str, Any] = field(default_factory=dict)


def evaluate_checkpoint(
    ckpt: str | Path | Sequence[str | Path], output_dir: str | Path | None = None, options: EvalOptions = EvalOptions()
) -> dict[str, Any]:
    """Evaluate one checkpoint, or the ensemble of several (the mean of their calibrated probabilities),
    on the official test set; with `tta`, also averaged over small shifts and rotations. Write the
    report files (with `robustness`, also robustness.json / .txt / .png) into `output_dir` (default:
    `default_output_dir`, or `ensemble_output_dir`) and return metrics.json's content."""
    paths = [Path(c).expanduser().absolute() for c in ([ckpt] if isinstance(ckpt, (str, Path)) else ckpt)]
    if not paths:
        raise ConfigError("ckpt_path is an empty list; give one checkpoint or several.")
    members = [_Member(path, load_network(path)) for path in paths]
    out = _output_dir(paths, output_dir, options.tta)
    check_output_dir(out, paths[0] if len(paths) == 1 else paths)
    _check_same_split(members)
    dev = resolve_device(options.device)
    datamodule = _data_module(options.data_dir, members[0].trained.data_hparams, options.extra)
    scorer, report, test_logits = _score(members, datamodule, options, dev, out)
    if datamodule.extra_test_set is not None:
        report.update(_extra_scores(scorer, datamodule, options, dev))
    robust = _robustness(scorer, members, datamodule, options, dev) if options.robustness else None
    if robust is not None:
        report["robustness"] = {
            k: robust[k] for k in ("clean", "mean", "held_out_mean", "worst", "low_resolution") if k in robust
        }
    test = datamodule.test_set

    def write(folder: Path) -> None:
        write_reports(
            folder, report, test.images, test.labels, test_logits, options.num_errors, options.num_demo, options.seed
        )
        if robust is not None:
            write_robustness(folder, robust, test.images, test.labels, f"{report['model']}: robustness")

    publish(out, write)
    for m in members:  # beside each checkpoint: found wherever the reports went
        save_temperature(m.path, m.temperature, out / "metrics.json")
    _log_summary(report, out, robust)
    return report


def _output_dir(paths: Sequence[Path], output_dir: str | Path | None, tta: bool) -> Path:
    if output_dir:
        return Path(output_dir).expanduser().absolute()
    if len(paths) > 1:
        return ensemble_output_dir(paths, tta)
    default = default_output_dir(paths[0])
    return default.with_name(default.name + ("-tta" if tta else ""))


def _score(
    members: Sequence[_Member], datamodule: MNISTDataModule, options: EvalOptions, dev: torch.device, out: Path
) -> tuple[torch.nn.Module, dict[str, Any], torch.Tensor]:
    """Each member's logits and temperature, then what answers for them all (`combine`) and its report."""
    test, val = datamodule.test_set, datamodule.val_set
    for m in members:
        m.test_logits = predict_logits(m.trained.net, test.images, options.batch_size, dev)
        m.val_logits = predict_logits(m.trained.net, val.images, options.batch_size, dev)
        m.temperature, m.calibration = calibrate(m.val_logits, val.labels, m.test_logits, test.labels)
    scorer, temperature = combine([m.trained.net for m in members], [m.temperature for m in members], options.tta)
    scorer = scorer.to(dev)
    alone = len(members) == 1 and not options.tta
    if alone:
        test_logits, val_logits, calibration = members[0].test_logits, members[0].val_logits, members[0].calibration
    else:  # the mean of calibrated probabilities gets no temperature of its own
        test_logits = predict_logits(scorer, test.images, options.batch_size, dev)
        val_logits = predict_logits(scorer, val.images, options.batch_size, dev)
        calibration = calibrate(val_logits, val.labels, test_logits, test.labels, fit=False)[1]
    paths = [m.path for m in members]
    report = {
        "model": scorer_name([m.trained.name for m in members]),
        "parameters": sum(m.trained.num_parameters for m in members),
        "checkpoint": str(paths[0]) if len(paths) == 1 else [str(p) for p in paths],
        "run_dir": str(run_dir_of(paths[0]) if len(paths) == 1 else out.parent),
        "tta": bool(options.tta),
        **classification_metrics(test_logits, test.labels, members[0].trained.hparams.get("label_smoothing", 0.0)),
        "validation_accuracy": accuracy(val_logits, val.labels),
        "temperature": temperature,
        "calibration": calibration,
        "data": {
            "data_dir": str(datamodule.data_dir),
            "checksums": datamodule.checksums,
            "validation_size": len(val.labels),
            "val_fraction": datamodule.hparams.val_fraction,
            "split_seed": datamodule.hparams.split_seed,
            **({"extra": options.extra, "extra_holdout": datamodule.hparams.extra_holdout} if options.extra else {}),
        },
    }
    if not alone:
        report["members"] = [_member_summary(m, test.labels, val.labels) for m in members]
    return scorer, report, test_logits


def _robustness(
    scorer: torch.nn.Module,
    members: Sequence[_Member],
    datamodule: MNISTDataModule,
    options: EvalOptions,
    dev: torch.device,
) -> dict[str, Any]:
    test = datamodule.test_set
    trained_on = sorted({c for m in members for c in (m.trained.data_hparams.get("corruptions") or [])})
    started = time.perf_counter()
    robust = robustness_report(
        lambda x: scorer(x.to(dev)).float().cpu(),
        test.images,
        test.labels,
        min(options.robustness_images, len(test.labels)),
        options.seed,
        options.batch_size,
        trained_on,
    )
    log.info(
        "Robustness report: %d corruptions × %d severities on %d test digits in %.1f s.",
        len(robust["corruptions"]),
        len(SEVERITIES),
        robust["images"],
        time.perf_counter() - started,
    )
    return robust


def _extra_scores(
    scorer: torch.nn.Module, datamodule: MNISTDataModule, options: EvalOptions, dev: torch.device
) -> dict[str, Any]:
    """Accuracy on the held-out test part of users' digits (`data.extra`), and how many digits that is."""
    held_out = datamodule.extra_test_set
    logits = predict_logits(scorer, held_out.images, options.batch_size, dev)
    return {"test_acc_extra": accuracy(logits, held_out.labels), "test_size_extra": len(held_out.labels)}


def _data_module(data_dir: str | None, hparams: dict[str, Any], extra: list[str] | None = None) -> MNISTDataModule:
    """The checkpoint's own validation split (same fraction and seed) and the official test set; with
    `extra`, users' digits split as the checkpoint's run split them (its split seed and holdout)."""
    trained_on = hparams.get("data_dir")
    datamodule = MNISTDataModule(
        data_dir=data_dir or (trained_on if trained_on and Path(trained_on).is_dir() else None),
        val_fraction=hparams.get("val_fraction", 0.1),
        split_seed=hparams.get("split_seed", 42),
        augment=False,
        extra=extra,
        extra_holdout=hparams.get("extra_holdout", 0.2),
    )
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def _check_same_split(members: Sequence[_Member]) -> None:
    """Members calibrated (and TTA decided) on one validation split need the same split: else one
    member's validation digits are another's training digits."""
    splits = {
        (m.trained.data_hparams.get("val_fraction", 0.1), m.trained.data_hparams.get("split_seed", 42)) for m in members
    }
    if len(splits) > 1:
        raise ConfigError(
            "the checkpoints were trained with different validation splits "
            f"(val_fraction, split_seed: {sorted(splits)}); an ensemble is calibrated on one "
            "validation split, so give checkpoints trained with the same data.val_fraction and data.split_seed."
        )


def _member_summary(m: _Member, test_labels: torch.Tensor, val_labels: torch.Tensor) -> dict[str, Any]:
    return {
        "checkpoint": str(m.path),
        "model": m.trained.name,
        "parameters": m.trained.num_parameters,
        "accuracy": accuracy(m.test_logits, test_labels),
        "validation_accuracy": accuracy(m.val_logits, val_labels),
        "temperature": m.temperature,
    }


def _log_summary(report: dict[str, Any], out: Path, robust: dict[str, Any] | None) -> None:
    test, val = report["calibration"]["test"], report["calibration"]["validation"]
    rows = [
        ("model", f"{report['model']} ({report['parameters']:,} parameters)"),
        ("test accuracy", f"{report['accuracy']:.4f} ({report['errors']} errors in {report['test_size']:,})"),
        ("macro F1", f"{report['macro']['f1']:.4f}"),
        ("test loss", f"{report['test_loss']:.4f}"),
        ("validation accuracy", f"{report['validation_accuracy']:.4f} ({report['data']['validation_size']:,} digits)"),
        (
            "temperature",
            f"{report['temperature']:.3f} (fitted on the validation digits)"
            if "members" not in report
            else "each member's own; their calibrated probabilities are averaged",
        ),
        (
            f"ECE ({ECE_BINS} bins)",
            f"test {test['before']['ece']:.4f} -> {test['after']['ece']:.4f}, "
            f"validation {val['before']['ece']:.4f} -> {val['after']['ece']:.4f}",
        ),
        ("NLL", f"test {test['before']['nll']:.4f} -> {test['after']['nll']:.4f}"),
        ("reports", str(out)),
    ]
    if "test_acc_extra" in report:
        rows.insert(4, ("users' digits", f"{report['test_acc_extra']:.4f} ({report['test_size_extra']} held-out)"))
    for m in report.get("members", []):
        rows.insert(
            -1, ("member", f"{m['accuracy']:.4f} test, {m['validation_accuracy']:.4f} validation: {m['checkpoint']}")
        )
    if report["tta"]:
        rows.insert(1, ("TTA", f"{len(TTA_VIEWS)} views: shifts of 1 px, rotations of ±8°"))
    width = max(len(name) for name, _ in rows)
    log.info("Evaluation of %s\n%s", report["model"], "\n".join(f"  {n:<{width}}  {v}" for n, v in rows))
    if robust is not None:
        log.info("Robustness (%s)\n%s", out / "robustness.png", format_robustness(robust))
