"""DigitClassifier's training-loss logging: written on logging steps only, exact epoch mean."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from digitrec.training.module import DigitClassifier


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))
        self.sizes.append(len(batch[1]))


def test_step_loss_logged_every_n_steps_and_epoch_loss_is_the_weighted_mean(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(70, 1, 28, 28), torch.randint(0, 10, (70,)))
    loader = torch.utils.data.DataLoader(data, batch_size=16)  # 5 batches, the last of 6 images
    module, losses = DigitClassifier(net="mlp"), _Losses()
    calls: list[str] = []
    log = module.log
    monkeypatch.setattr(module, "log", lambda name, *a, **k: (calls.append(name), log(name, *a, **k)))
    trainer = L.Trainer(
        max_epochs=1,
        log_every_n_steps=2,
        logger=CSVLogger(tmp_path, name="", version=""),
        callbacks=[losses],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader)

    assert calls.count("train/loss_step") == 2  # steps 1 and 3 of 0..4: self.log is not paid on the others
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    step_losses = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    assert step_losses.keys() == {1, 3}
    for step, value in step_losses.items():
        assert value == pytest.approx(losses.losses[step], rel=1e-5)
    (epoch_loss,) = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    expected = sum(loss * n for loss, n in zip(losses.losses, losses.sizes)) / sum(losses.sizes)
    assert losses.sizes[-1] == 6 and epoch_loss == pytest.approx(expected, rel=1e-5)
    assert epoch_loss != pytest.approx(sum(losses.losses) / len(losses.losses), rel=1e-5)  # weighted, not per batch


def test_test_step_runs_in_fp32_under_bf16_autocast(tmp_path: Path) -> None:
    """test/acc must be the checkpoint's fp32 accuracy (what evaluate.py reports), whatever the training precision."""
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    outputs: dict[str, list[torch.Tensor]] = {"val": [], "test": []}

    class Keep(L.Callback):
        def on_validation_batch_end(self, trainer, pl_module, out, batch, batch_idx, dataloader_idx=0) -> None:
            outputs["val"].append(out)

        def on_test_batch_end(self, trainer, pl_module, out, batch, batch_idx, dataloader_idx=0) -> None:
            outputs["test"].append(out)

    module = DigitClassifier(net="cnn").eval()
    trainer = L.Trainer(
        precision="bf16-mixed",
        accelerator="cpu",
        logger=False,
        callbacks=[Keep()],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(module, loader)
    trainer.test(module, loader)
    assert outputs["val"][0].dtype == torch.bfloat16  # validation keeps the fast autocast
    assert all(logits.dtype == torch.float32 for logits in outputs["test"])
    with torch.no_grad():
        expected = torch.cat([module(x) for x, _ in loader])
    torch.testing.assert_close(torch.cat(outputs["test"]), expected)
