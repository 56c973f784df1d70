"""The callbacks digitrec adds to Lightning's: RNG state in checkpoints, EMA weights, TensorBoard diagnostics."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassConfusionMatrix

from digitrec.data.mnist import MNIST_MEAN, MNIST_STD, NUM_CLASSES
from digitrec.evaluation.figures import confusion_figure, figure_to_array, misclassified_figure
from digitrec.validation import check_range

log = logging.getLogger(__name__)


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


def _ema_update(
    averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, decay: float | None
) -> torch.Tensor:
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
        if decay is not None:
            check_range("EMA decay", decay, 0, 1, open_low=True, open_high=True, hint=" (e.g. 0.999) or null")
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
            log.warning(
                "EMA decay %g is reached after %s updates, but this run makes %s: the warm-up decay "
                "(1+n)/(10+n) sets the average for the whole run and ends at %.4f: any callbacks.ema.decay "
                "above that gives the same run.",
                self.decay,
                f"{reached_after:,}",
                f"{int(updates):,}",
                last_decay,
            )


def _to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Network-scale images back to [0, 1] pixels."""
    return (x * MNIST_STD + MNIST_MEAN).clamp(0, 1)


class DiagnosticsLogger(L.Callback):
    """Confusion matrix and most confident errors as TensorBoard images after validation and test,
    and after testing the per-digit accuracy as scalars `test/acc_digit_<d>`: of MNIST's digits (the
    first dataloader), not of users' digits when data.extra adds a second.

    Reads the logits that `validation_step`/`test_step` return; all bookkeeping stays on the
    device (no host sync) until the end of the epoch.
    """

    def __init__(self, num_errors: int = 16) -> None:
        self.num_errors = num_errors
        self._confusion: MulticlassConfusionMatrix | None = None
        self._errors: tuple[torch.Tensor, ...] = ()

    def _reset(self, pl_module: L.LightningModule) -> None:
        self._confusion = MulticlassConfusionMatrix(NUM_CLASSES, validate_args=False).to(pl_module.device)
        self._errors = ()

    def _update(self, outputs: object, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        if not isinstance(outputs, torch.Tensor) or self._confusion is None:
            return
        x, y = batch
        confidence, pred = outputs.detach().float().softmax(1).max(1)
        self._confusion.update(pred, y)
        score = confidence.masked_fill(pred == y, -1.0)  # right answers rank below every error
        candidates = (score, x.detach()[:, 0], y, pred)
        if self._errors:
            candidates = tuple(torch.cat(pair) for pair in zip(self._errors, candidates))
        top = candidates[0].topk(min(self.num_errors, len(candidates[0]))).indices
        self._errors = tuple(t[top] for t in candidates)

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> torch.Tensor | None:
        if self._confusion is None or trainer.sanity_checking or not self._confusion.update_called:
            return None
        counts = self._confusion.compute()
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if trainer.is_global_zero and writers:
            score, images, labels, preds = (t.cpu() for t in self._errors)
            wrong = score >= 0
            grids = {
                f"{stage}/confusion_matrix": confusion_figure(counts, f"{stage} confusion matrix"),
                f"{stage}/misclassified": misclassified_figure(
                    _to_pixels(images[wrong]),
                    labels[wrong],
                    preds[wrong],
                    score[wrong],
                    f"{stage}: most confident errors",
                ),
            }
            for tag, fig in grids.items():
                image = figure_to_array(fig)
                for writer in writers:
                    writer.add_image(tag, image, global_step=trainer.global_step, dataformats="HWC")
        return counts

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if dataloader_idx == 0:  # MNIST's; users' digits (data.extra) have their accuracy alone
            self._update(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if dataloader_idx == 0:
            self._update(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        counts = self._finish(trainer, pl_module, "test")
        if counts is None:
            return
        support = counts.sum(1)
        accuracy = counts.diagonal().float() / support.clamp(min=1)
        present = support.cpu() > 0
        pl_module.log_dict(
            {f"test/acc_digit_{d}": accuracy[d] for d in range(NUM_CLASSES) if present[d]},
            sync_dist=True,
            add_dataloader_idx=False,
        )  # already global (torchmetrics syncs), this only silences DDP advice
