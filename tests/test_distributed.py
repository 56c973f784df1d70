"""Two-process DDP on CPU (gloo) through the real entry point."""

import json
from pathlib import Path

import lightning as L
import pytest

from conftest import run_train
from digitrec.data import MNISTDataModule
from digitrec.module import DigitClassifier


def test_ddp_cpu_writes_one_run_and_tests_exactly(tmp_path: Path, mnist_dir: Path) -> None:
    run_dir = tmp_path / "ddp"
    run_train("trainer=ddp_cpu", "model=mlp", "trainer.max_epochs=1", "trainer.limit_train_batches=20",
              f"hydra.run.dir={run_dir}", timeout=300)
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # every rank wrote into the same folder
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", "mlp-best.ckpt"]
    summary = json.loads((run_dir / "summary.json").read_text())

    module = DigitClassifier.load_from_checkpoint(summary["best_checkpoint"], weights_only=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    single = trainer.test(module, datamodule=MNISTDataModule(data_dir=str(mnist_dir)), verbose=False)[0]
    assert summary["test_acc"] == pytest.approx(single["test/acc"], abs=1e-6)
    assert summary["test_loss"] == pytest.approx(single["test/loss"], rel=1e-4)
