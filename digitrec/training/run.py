"""A training run's start and end: resuming from a checkpoint, Ctrl-C, and the summary it leaves."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from digitrec.data.mnist import REPO_ROOT
from digitrec.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """The top-level keys of conf/train.yaml: what the run itself is told (its components have their own groups)."""

    seed: int = 42  # seeds python, numpy, torch and the dataloader workers
    ckpt_path: str | None = None  # resume from this checkpoint (or `last`)
    test: bool = True  # test the kept checkpoint on the official 10k test set after fitting
    init_from: str | None = None  # start from these weights (a .ckpt, a weights file, or `bundled`), anew


def merge_results(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """`trainer.test` answers one dict per dataloader (MNIST's, then users' digits): one dict of them all."""
    return {key: value for result in results for key, value in result.items()}


def _test_scores(test: Mapping[str, float]) -> dict[str, float | None]:
    return {
        "test_acc": test.get("test/acc"),
        "test_loss": test.get("test/loss"),
        "test_acc_extra": test.get("test/acc_extra"),
    }


def report_run(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: L.LightningModule,
    fit_seconds: float,
    test: dict[str, float],
    last_val_acc: Any = None,
    before: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Log the final summary, write `summary.json` in the run folder and fill TensorBoard's HPARAMS tab.

    `best_val_acc` is the monitored score of the checkpoint kept, else `last_val_acc` (the final epoch's,
    whose weights are then the ones kept); none for fast_dev_run, whose validation is one batch.
    `before`: the test scores of the initial weights of a run started with `init_from`."""
    ckpt = trainer.checkpoint_callback
    best_score = ckpt.best_model_score if ckpt is not None else None
    if best_score is None and not trainer.fast_dev_run:
        best_score = last_val_acc
    epochs = max(trainer.current_epoch, 1)
    summary = {
        "status": "ok",
        "model": module.model_name,
        "parameters": module.num_parameters,
        "best_val_acc": _number(best_score),
        **_test_scores(test),
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "seconds_per_epoch": round(fit_seconds / epochs, 2),
        "best_checkpoint": ckpt.best_model_path if ckpt is not None else "",
        "precision": str(trainer.precision),
        "commit": source_commit(),
    }
    if cfg.get("init_from"):
        summary["init_from"] = cfg.init_from
    if before:
        summary["before"] = _test_scores(before)
    if trainer.is_global_zero:
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        shown = ("hp/best_val_acc", "hp/test_acc") + (("hp/test_acc_extra",) if cfg.data.get("extra") else ())
        hparams_metrics = {k: summary[k.removeprefix("hp/")] for k in shown}
        hparams_metrics = {k: float("nan") if v is None else v for k, v in hparams_metrics.items()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(_loggable(cfg), metrics=hparams_metrics)
                logger.finalize("success")
        log.info(
            "Done: %s (%s params) | best val/acc %s | test/acc %s | %d epochs in %.1f s (%.1f s/epoch) | best checkpoint: %s",
            summary["model"],
            f"{summary['parameters']:,}",
            _fmt(summary["best_val_acc"]),
            _fmt(summary["test_acc"]),
            summary["epochs"],
            fit_seconds,
            summary["seconds_per_epoch"],
            summary["best_checkpoint"] or ("none (fast_dev_run saves none)" if trainer.fast_dev_run else "none"),
        )
        _log_extra(summary)
    return summary


def _log_extra(summary: Mapping[str, Any]) -> None:
    """Users' held-out digits, and a fine-tuned run's scores before and after, on a line of their own."""
    before = summary.get("before")
    if before is not None:
        log.info(
            "Started from %s: test/acc %s -> %s | test/acc_extra %s -> %s",
            summary["init_from"],
            _fmt(before["test_acc"]),
            _fmt(summary["test_acc"]),
            _fmt(before["test_acc_extra"]),
            _fmt(summary["test_acc_extra"]),
        )
    elif summary["test_acc_extra"] is not None:
        log.info("test/acc_extra (users' held-out digits) %s", _fmt(summary["test_acc_extra"]))


def source_commit() -> str | None:
    """The git commit of the code that runs (None outside a git checkout): a run records what made it."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return result.stdout.strip() or None


def _number(value: Any) -> float | None:
    """A finite float for JSON, or None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _loggable(cfg: DictConfig) -> dict[str, Any]:
    """The run's configuration minus Hydra's own section, resolved to plain values."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}


def resolve_resume_path(ckpt_path: str | None, model: str, outputs: Path = Path("outputs")) -> str | None:
    """`last` means the newest `last.ckpt` of a `<model>` run under `outputs/`; a path must exist."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        candidates = [p for p in outputs.glob("**/checkpoints/last.ckpt") if p.parents[1].name.endswith(f"_{model}")]
        if not candidates:
            raise ConfigError(
                f"ckpt_path=last: no {model} run with a last.ckpt under {outputs.resolve()}; "
                "give the checkpoint's path instead."
            )
        newest = max(candidates, key=lambda p: p.stat().st_mtime)
        log.info("Resuming from the newest %s run: %s", model, newest)
        return str(newest)
    if not Path(ckpt_path).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no such checkpoint file. Give the path of a .ckpt "
            "written by an earlier run, e.g. outputs/<run>/checkpoints/last.ckpt, or ckpt_path=last."
        )
    return str(ckpt_path)


@contextlib.contextmanager
def explain_interrupts(trainer: L.Trainer) -> Iterator[None]:
    """On Ctrl-C or SIGTERM (Lightning shuts down gracefully, then exits), say how to resume; exit 130."""
    try:
        yield
    except SystemExit:
        if not trainer.interrupted:
            raise
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        if trainer.is_global_zero:
            if last.is_file():
                overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
                command = " ".join(["python train.py", *overrides, f"ckpt_path={last}"])
                log.warning(
                    "Interrupted during epoch %d. The last finished epoch is saved; resume with:\n  %s",
                    trainer.current_epoch,
                    command,
                )
            else:
                log.warning("Interrupted during the first epoch, before any checkpoint was written: nothing to resume.")
        raise SystemExit(130) from None
