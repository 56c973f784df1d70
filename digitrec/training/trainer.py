"""Assembling the Lightning `Trainer` from the `trainer`, `callbacks` and `logger` config groups."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from digitrec.errors import ConfigError
from digitrec.training.callbacks import RNGState
from digitrec.training.precision import _uses_cuda, choose_precision

log = logging.getLogger(__name__)


def _fit_to_cpu(trainer_cfg: dict[str, Any]) -> dict[str, Any]:
    """A GPU recipe (e.g. `trainer=ddp`) run on CPUs: SyncBatchNorm off, and `devices=-1` refused."""
    if _uses_cuda(str(trainer_cfg.get("accelerator", "auto"))):
        return trainer_cfg
    if trainer_cfg.get("devices") == -1:
        raise ConfigError(
            "trainer.devices=-1 means every GPU, and this run has none: give a number of CPU "
            "processes instead, e.g. trainer=ddp_cpu (2 processes) or trainer.devices=2."
        )
    if trainer_cfg.get("sync_batchnorm"):
        log.info(
            "sync_batchnorm off: SyncBatchNorm works on GPUs only; on CPUs each process normalises "
            "with its own batch statistics."
        )
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


@contextlib.contextmanager
def lightning_config_errors(*also: type[Exception]) -> Iterator[None]:
    """Lightning's checks of the trainer settings (`MisconfigurationException`, plus the exception types
    `also`) as `ConfigError`s: when the Trainer is built, and once a loop meets the data (e.g. a
    `limit_val_batches` fraction smaller than one batch of the split)."""
    try:
        yield
    except (MisconfigurationException, *also) as e:
        raise ConfigError(f"Invalid trainer configuration: {e}") from None
