"""Two-process DDP on CPU (gloo) through the real entry point."""

import json
from pathlib import Path

import lightning as L
import pytest
from conftest import run_train

from digitrec.data.datamodule import MNISTDataModule
from digitrec.training.module import DigitClassifier


@pytest.mark.slow  # a launcher's own processes: in `make test-slow` (CI runs it)
def test_ddp_cpu_writes_one_run_and_tests_exactly(tmp_path: Path, mnist_dir: Path) -> None:
    run_dir = tmp_path / "ddp"
    run_train(
        "trainer=ddp_cpu",
        "model=mlp",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=20",
        f"hydra.run.dir={run_dir}",
        timeout=300,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # every rank wrote into the same folder
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", "mlp-best.ckpt"]
    summary = json.loads((run_dir / "summary.json").read_text())

    module = DigitClassifier.load_from_checkpoint(summary["best_checkpoint"], weights_only=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    single = trainer.test(module, datamodule=MNISTDataModule(data_dir=str(mnist_dir)), verbose=False)[0]
    assert summary["test_acc"] == pytest.approx(single["test/acc"], abs=1e-6)
    assert summary["test_loss"] == pytest.approx(single["test/loss"], rel=1e-4)


@pytest.mark.slow  # a launcher's own processes: in `make test-slow` (CI runs it)
def test_optuna_sweep_records_best_parameters(tmp_path: Path, mnist_dir: Path) -> None:
    import yaml

    run_train(
        *"-m hparams_search=optuna model=mlp hydra.sweeper.n_trials=2 trainer.max_epochs=1 trainer.limit_train_batches=10 trainer.limit_val_batches=2 trainer.limit_test_batches=1".split(),
        f"hydra.sweep.dir={tmp_path}",
        timeout=300,
    )
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout", "data.batch_size"}
    trials = [json.loads((tmp_path / f"{i}_mlp" / "summary.json").read_text()) for i in range(2)]
    assert results["best_value"] == pytest.approx(max(t["best_val_acc"] for t in trials))


def test_slurm_launcher_config_follows_the_trainer(tmp_path: Path) -> None:
    from conftest import REPO
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm_ddp", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_share_one_run(tmp_path: Path, mnist_dir: Path) -> None:
    import subprocess
    import sys

    from conftest import REPO

    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(REPO / "train.py"),
        "trainer=ddp_cpu",
        "model=mlp",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=20",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", "mlp-best.ckpt"]
    assert json.loads((run_dir / "summary.json").read_text())["test_acc"] > 0.5


@pytest.mark.slow  # a launcher's own processes: in `make test-slow` (CI runs it)
def test_submitit_local_launcher_runs_a_job(tmp_path: Path, mnist_dir: Path) -> None:
    run_train(
        "-m",
        "hydra/launcher=submitit_local",
        "model=mlp",
        "trainer.fast_dev_run=true",
        f"hydra.sweep.dir={tmp_path}",
        timeout=300,
    )
    summary = json.loads((tmp_path / "0_mlp" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["best_val_acc"] is None and 0 <= summary["test_acc"] <= 1
