"""Assembling the Lightning `Trainer` from the `trainer`, `callbacks` and `logger` config groups."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from digitrec.errors import ConfigError

log = logging.getLogger(__name__)

def _uses_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.cache
def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX-BF16), from /proc/cpuinfo's flags.

    False where that file does not exist (macOS, Windows): those CPUs have not been measured.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return bool(_BF16_FLAGS & set(flags))


def choose_precision(requested: str | int | None, accelerator: str = "auto") -> tuple[str, str]:
    """Return (precision, reason). `auto`: 16-mixed on CUDA; on a CPU bf16-mixed where it has bf16
    units, 32-true elsewhere.

    bf16 autocast trains the conv nets 1.4-2.3x faster than fp32 on CPUs with bf16 units and 7-12x
    slower on CPUs without them. An explicit `16-mixed` on a CPU is resolved the same way as `auto`:
    Lightning would otherwise silently run bf16 autocast, whatever the CPU.
    """
    requested = "auto" if requested is None else str(requested)
    cuda = _uses_cuda(str(accelerator))
    if requested not in ("auto", "16", "16-mixed") or (cuda and requested != "auto"):
        return requested, "as configured"
    if cuda:
        return "16-mixed", "CUDA device: mixed precision (fp16 autocast)"
    asked = "" if requested == "auto" else f"precision={requested} asked for on a CPU; "
    if cpu_has_bf16():
        return "bf16-mixed", (f"{asked}no CUDA device, and this CPU has bf16 units (AVX512-BF16/AMX): bf16 autocast "
                              "(trainer.precision=32-true for fp32)")
    return "32-true", f"{asked}no CUDA device and no bf16 units on this CPU: fp32 (bf16 autocast would be slower)"


class RNGState(Callback):
    """Saves torch's RNG state in checkpoints and restores it on resume.

    Shuffling, augmentation and dropout all draw from it, so a run resumed from an epoch-end
    checkpoint continues exactly as the uninterrupted run would have.
    """

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _warmup_decay(n: Any) -> Any:
    """The EMA's decay after n updates before the cap: a float for a float, a tensor for a tensor."""
    return (1 + n) / (10 + n)


def _ema_update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor,
                decay: float | None) -> torch.Tensor:
    # Kept as tensors (no float(num_averaged)): a host sync per parameter per step on a GPU otherwise.
    d = _warmup_decay(num_averaged)
    if decay is not None:
        d = d.clamp(max=decay)
    return averaged + (current - averaged) * (1 - d)


class EMA(WeightAveraging):
    """Exponential moving average of the weights (and BatchNorm statistics) with a warm-up.

    The decay after n updates is min(decay, (1 + n) / (10 + n)), so the average follows the model
    from the first epoch on; with a fixed decay it would stay close to the random initial weights
    for the first thousand steps, and `val/acc` (computed with the averaged weights) near chance.
    `decay=None` keeps the warm-up decay for the whole run (it grows towards 1 with the run's length).
    """

    def __init__(self, decay: float | None = 0.999, **kwargs: Any) -> None:
        if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1):
            raise ConfigError(f"EMA decay must be a number in (0, 1), e.g. 0.999, or null; got {decay!r}.")
        decay = None if decay is None else float(decay)
        super().__init__(avg_fn=functools.partial(_ema_update, decay=decay), **kwargs)
        self.decay = decay

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Warn when the run is too short for the warm-up to reach `decay`: then `decay` changes nothing."""
        if self.decay is None:
            return
        updates = trainer.estimated_stepping_batches
        last_decay = _warmup_decay(updates - 1)  # the first update copies; the n-th after it uses n
        if math.isfinite(updates) and last_decay < self.decay:
            # the n at which _warmup_decay(n) reaches decay
            reached_after = math.ceil((10 * self.decay - 1) / (1 - self.decay) - 1e-6)
            log.warning("EMA decay %g is reached after %s updates, but this run makes %s: the warm-up decay "
                        "(1+n)/(10+n) sets the average for the whole run and ends at %.4f: any callbacks.ema.decay "
                        "above that gives the same run.", self.decay, f"{reached_after:,}", f"{int(updates):,}",
                        last_decay)


def _fit_to_cpu(trainer_cfg: dict[str, Any]) -> dict[str, Any]:
    """A GPU recipe (e.g. `trainer=ddp`) run on CPUs: SyncBatchNorm off, and `devices=-1` refused."""
    if _uses_cuda(str(trainer_cfg.get("accelerator", "auto"))):
        return trainer_cfg
    if trainer_cfg.get("devices") == -1:
        raise ConfigError("trainer.devices=-1 means every GPU, and this run has none: give a number of CPU "
                          "processes instead, e.g. trainer=ddp_cpu (2 processes) or trainer.devices=2.")
    if trainer_cfg.get("sync_batchnorm"):
        log.info("sync_batchnorm off: SyncBatchNorm works on GPUs only; on CPUs each process normalises "
                 "with its own batch statistics.")
        trainer_cfg["sync_batchnorm"] = False
    return trainer_cfg


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Instantiate callbacks and loggers, resolve `precision: auto`, and build the Trainer."""
    trainer_cfg = _fit_to_cpu(OmegaConf.to_container(cfg.trainer, resolve=True))
    precision, reason = choose_precision(trainer_cfg.pop("precision", "auto"), trainer_cfg.get("accelerator", "auto"))
    log.info("Precision %s: %s.", precision, reason)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if trainer_cfg.get("enable_progress_bar") is False:  # Lightning refuses a progress bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if trainer_cfg.get("fast_dev_run"):  # Lightning says checkpointing is suppressed, yet saves last.ckpt at the end
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        trainer_cfg["enable_checkpointing"] = False
    callbacks.append(RNGState())
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    with lightning_config_errors(ValueError, TypeError):  # Lightning's own argument checks
        return L.Trainer(**trainer_cfg, precision=precision, callbacks=callbacks, logger=loggers or False)


def report_run(cfg: DictConfig, trainer: L.Trainer, module: L.LightningModule, fit_seconds: float,
               test: dict[str, float], last_val_acc: Any = None) -> dict[str, Any]:
    """Log the final summary, write `summary.json` in the run folder and fill TensorBoard's HPARAMS tab.

    `best_val_acc` is the monitored score of the checkpoint kept, else `last_val_acc` (the final epoch's,
    whose weights are then the ones kept); none for fast_dev_run, whose validation is one batch."""
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
        "test_acc": test.get("test/acc"),
        "test_loss": test.get("test/loss"),
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "seconds_per_epoch": round(fit_seconds / epochs, 2),
        "best_checkpoint": ckpt.best_model_path if ckpt is not None else "",
        "precision": str(trainer.precision),
    }
    if trainer.is_global_zero:
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        hparams_metrics = {k: summary[k.removeprefix("hp/")] for k in ("hp/best_val_acc", "hp/test_acc")}
        hparams_metrics = {k: float("nan") if v is None else v for k, v in hparams_metrics.items()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(_loggable(cfg), metrics=hparams_metrics)
                logger.finalize("success")
        log.info(
            "Done: %s (%s params) | best val/acc %s | test/acc %s | %d epochs in %.1f s (%.1f s/epoch) | best checkpoint: %s",
            summary["model"], f"{summary['parameters']:,}", _fmt(summary["best_val_acc"]), _fmt(summary["test_acc"]),
            summary["epochs"], fit_seconds, summary["seconds_per_epoch"],
            summary["best_checkpoint"] or ("none (fast_dev_run saves none)" if trainer.fast_dev_run else "none"),
        )
    return summary


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
            raise ConfigError(f"ckpt_path=last: no {model} run with a last.ckpt under {outputs.resolve()}; "
                              "give the checkpoint's path instead.")
        newest = max(candidates, key=lambda p: p.stat().st_mtime)
        log.info("Resuming from the newest %s run: %s", model, newest)
        return str(newest)
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file. Give the path of a .ckpt "
                          "written by an earlier run, e.g. outputs/<run>/checkpoints/last.ckpt, or ckpt_path=last.")
    return str(ckpt_path)


@contextlib.contextmanager
def lightning_config_errors(*also: type[Exception]) -> Iterator[None]:
    """Lightning's checks of the trainer settings (`MisconfigurationException`, plus the exception types
    `also`) as `ConfigError`s: when the Trainer is built, and once a loop meets the data (e.g. a
    `limit_val_batches` fraction smaller than one batch of the split)."""
    try:
        yield
    except (MisconfigurationException, *also) as e:
        raise ConfigError(f"Invalid trainer configuration: {e}") from None


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
                log.warning("Interrupted during epoch %d. The last finished epoch is saved; resume with:\n  %s",
                            trainer.current_epoch, command)
            else:
                log.warning("Interrupted during the first epoch, before any checkpoint was written: nothing to resume.")
        raise SystemExit(130) from None
