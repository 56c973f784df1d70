"""`DigitClassifier`: one LightningModule for every network in the registry."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import MulticlassAccuracy

from digitrec.data.mnist import NUM_CLASSES
from digitrec.errors import ConfigError, TrainingDiverged
from digitrec.models import build_model, count_parameters, model_name
from digitrec.validation import check_range

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 1e-4}
DEFAULT_SCHEDULER = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True, "max_lr": 3e-3}
# Scheduler arguments that mean "length of the whole run in optimizer steps": filled in from the trainer.
_RUN_LENGTH_ARGS = ("total_steps", "T_max")


def plain(cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A config as plain Python data, so checkpoints hold no objects and load with `weights_only=True`."""
    if cfg is None:
        return None
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def _check_rates(section: str, cfg: Mapping[str, Any]) -> None:
    for key in ("lr", "max_lr", "weight_decay", "momentum"):
        if cfg.get(key) is not None:
            check_range(f"{section}.{key}", cfg[key], 0, open_low=key in ("lr", "max_lr"))


def fused_default(cfg: Mapping[str, Any], make_optimizer: Any, precision: str | None) -> dict[str, bool]:
    """`fused=True` when the optimizer (a partial) has it and its config leaves it open: one kernel
    per step instead of one per parameter and operation (see docs/benchmark.md).

    Not under mixed precision: Lightning's AMP plugin refuses to clip the gradients of a fused optimizer.
    """
    if {"fused", "foreach"} & cfg.keys() or "mixed" in str(precision) or str(precision) in ("16", "bf16"):
        return {}
    return {"fused": True} if "fused" in inspect.signature(make_optimizer.func).parameters else {}


def _instantiate(section: str, cfg: Mapping[str, Any]) -> Any:
    try:
        return instantiate(cfg)
    except Exception as e:  # Hydra wraps import and argument errors in several exception types
        raise ConfigError(f"Cannot build {section} from {cfg}: {e}") from None


def build_optimization(
    params: Any,
    optimizer_cfg: Mapping[str, Any],
    scheduler_cfg: Mapping[str, Any] | None,
    run_length: int,
    precision: str | None = None,
) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer and (or None) the per-step scheduler for a run of `run_length` optimizer steps.

    Any error in either config (unknown class, unknown or invalid argument) is a `ConfigError`.
    """
    make_optimizer = _instantiate("optimizer", optimizer_cfg)
    fused = fused_default(optimizer_cfg, make_optimizer, precision)
    try:
        optimizer = make_optimizer(params=params, **fused)
    except Exception as e:
        raise ConfigError(f"Cannot build optimizer from {optimizer_cfg}: {e}") from None
    if scheduler_cfg is None:
        return optimizer, None
    make_scheduler = _instantiate("scheduler", scheduler_cfg)
    wanted = inspect.signature(make_scheduler.func).parameters
    try:
        return optimizer, make_scheduler(optimizer, **{k: run_length for k in _RUN_LENGTH_ARGS if k in wanted})
    except Exception as e:
        raise ConfigError(f"Cannot build scheduler from {scheduler_cfg}: {e}") from None


class DigitClassifier(L.LightningModule):
    """Cross-entropy with label smoothing, micro accuracy from torchmetrics, per-step LR schedule.

    `net`, `optimizer` and `scheduler` are configs (plain dicts, Hydra style): the network is
    built through the model registry, the optimizer and scheduler from their `_partial_` configs.
    """

    def __init__(
        self,
        net: Mapping[str, Any] | str = "cnn",
        optimizer: Mapping[str, Any] = DEFAULT_OPTIMIZER,
        scheduler: Mapping[str, Any] | None = DEFAULT_SCHEDULER,
        label_smoothing: float = 0.05,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        net = {"name": net} if isinstance(net, str) else plain(net)
        optimizer, scheduler = plain(optimizer), plain(scheduler)
        if "_target_" not in optimizer:
            raise ConfigError(f"optimizer config needs a _target_ (e.g. torch.optim.AdamW), got {optimizer}.")
        _check_rates("optimizer", optimizer)
        _check_rates("scheduler", scheduler or {})
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        # Built once on a stand-in parameter, so that a bad config stops the run before any data is read.
        build_optimization([torch.nn.Parameter(torch.zeros(1))], optimizer, scheduler, run_length=100)
        self.save_hyperparameters(
            {
                "net": net,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "label_smoothing": label_smoothing,
                "channels_last": channels_last,
            }
        )
        self.model_name = model_name(net)
        self.net = build_model(net)
        self.num_parameters = count_parameters(self.net)
        self.channels_last = channels_last and any(isinstance(m, torch.nn.Conv2d) for m in self.net.modules())
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        # Training accuracy is only updated per step (no per-step value, no input checks on the model's
        # own logits) and logged once per epoch: logging a metric object costs Lightning bookkeeping on every call.
        self.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
        # `_extra`: on users' held-out digits, the second validation and test dataloader when data.extra is given
        self.val_acc, self.test_acc, self.val_acc_extra, self.test_acc_extra = (
            MulticlassAccuracy(NUM_CLASSES, average="micro") for _ in range(4)
        )
        self.on_train_epoch_start()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing), logits, y

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._step(batch)
        self.train_acc.update(logits, y)
        self._loss_sum += loss.detach() * len(y)  # on the device: no host sync
        self._loss_count += len(y)
        if self._is_logging_step():
            self.log("train/loss_step", loss, prog_bar=True)
        return loss

    def _is_logging_step(self) -> bool:
        """True on the steps the loggers write (every `log_every_n_steps`).

        `self.log` costs Lightning's result bookkeeping at every call, written or not: asked only
        on the steps that are written.
        """
        trainer = self._trainer
        if trainer is None or trainer.fast_dev_run:
            return True
        # the loggers write after the step that makes `global_step + 1` a multiple of log_every_n_steps
        return (trainer.global_step + 1) % trainer.log_every_n_steps == 0

    def on_train_epoch_end(self) -> None:
        # Per-process means, averaged across processes by sync_dist; compute() gathers under DDP.
        self.log("train/loss_epoch", self._loss_sum / max(self._loss_count, 1), prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc.compute())
        self.train_acc.reset()

    def on_train_batch_end(self, outputs: dict[str, torch.Tensor], batch, batch_idx: int) -> None:
        # On CPU the check is free; on an accelerator it syncs, so look only every few batches
        # (a NaN stays NaN: the run still stops within a few steps).
        loss = outputs["loss"]
        if (loss.device.type == "cpu" or batch_idx % 25 == 0) and not torch.isfinite(loss):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise TrainingDiverged(
                f"Loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step} "
                f"(learning rate {lr:.3g}): training diverged. Lower optimizer.lr or check the data."
            )

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """MNIST's validation digits (`val/loss`, `val/acc`), or users' held-out digits (dataloader 1, `val/acc_extra`)."""
        loss, logits, y = self._step(batch)
        if dataloader_idx == 0:
            self.val_acc(logits, y)
            self.log("val/loss", loss, prog_bar=True, sync_dist=True, add_dataloader_idx=False)
            self.log("val/acc", self.val_acc, prog_bar=True, add_dataloader_idx=False)
        else:
            self.val_acc_extra(logits, y)
            self.log("val/acc_extra", self.val_acc_extra, add_dataloader_idx=False)
        return logits  # for callbacks (digitrec.training.callbacks.DiagnosticsLogger)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """MNIST's test set (`test/loss`, `test/acc`), or users' held-out test digits (dataloader 1, `test/acc_extra`)."""
        # In fp32 whatever the training precision, so that test/acc is the accuracy evaluate.py and
        # DigitPredictor (fp32) report for the same checkpoint, not a few digits off under autocast.
        with torch.autocast(self.device.type, enabled=False):
            loss, logits, y = self._step(batch)
        if dataloader_idx == 0:
            self.test_acc(logits, y)
            self.log("test/loss", loss, sync_dist=True, add_dataloader_idx=False)
            self.log("test/acc", self.test_acc, add_dataloader_idx=False)
        else:
            self.test_acc_extra(logits, y)
            self.log("test/acc_extra", self.test_acc_extra, add_dataloader_idx=False)
        return logits

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, scheduler = build_optimization(
            self.parameters(),
            self.hparams.optimizer,
            self.hparams.scheduler,
            run_length=int(self.trainer.estimated_stepping_batches),
            precision=getattr(self._trainer, "precision", None),
        )
        if scheduler is None:
            return {"optimizer": optimizer}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
