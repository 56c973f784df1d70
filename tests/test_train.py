"""End to end through the real `train.py` (Hydra entry point) in subprocesses."""

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import REPO, once_per_session, run_train, run_trains

from digitrec.training.precision import cpu_has_bf16


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="session")
def short_run(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    def train(folder: Path) -> None:
        run_train("model=mlp", "debug=limit", "trainer.log_every_n_steps=5", f"hydra.run.dir={folder}")

    return once_per_session(tmp_path_factory, "short-run", train)


def test_short_run_writes_checkpoints_logs_and_summary(short_run: Path) -> None:
    assert (short_run / "checkpoints" / "mlp-best.ckpt").is_file()
    assert (short_run / "checkpoints" / "last.ckpt").is_file()
    assert list((short_run / "tensorboard").glob("events.out.tfevents.*"))
    assert (short_run / ".hydra" / "config.yaml").is_file() and (short_run / "train.log").is_file()
    result = summary(short_run)
    assert result["epochs"] == 2 and result["best_checkpoint"].endswith("mlp-best.ckpt")
    ckpt = torch.load(short_run / "checkpoints" / "mlp-best.ckpt", weights_only=True)  # plain data only
    assert ckpt["hyper_parameters"]["net"] == {
        "_target_": "digitrec.models.MLP",
        "hidden": [512, 256, 128],
        "dropout": 0.2,
    }
    assert "Done: mlp (569,226 params)" in (short_run / "train.log").read_text()


def test_hparams_tab_has_final_metrics(short_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (short_run / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"hp/best_val_acc", "hp/test_acc", "train/loss_epoch", "train/acc", "val/acc", "val/loss"} <= tags
    assert any(t.startswith("lr-") for t in tags)


@pytest.mark.slow
def test_multirun_over_the_three_models(tmp_path: Path, mnist_dir: Path) -> None:
    proc = run_train(
        *"-m model=mlp,cnn,deep_cnn debug=limit trainer.max_epochs=1 trainer.limit_train_batches=2 trainer.limit_val_batches=1 trainer.limit_test_batches=1".split(),
        f"hydra.sweep.dir={tmp_path}",
    )
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert jobs == ["0_mlp", "1_cnn", "2_deep_cnn"]
    precision = "bf16-mixed" if cpu_has_bf16() else "32-true"  # precision: auto on this CPU
    for job in jobs:
        model = job.split("_", 1)[1]
        result = summary(tmp_path / job)
        assert result["model"] == model and result["precision"] == precision and 0 <= result["test_acc"] <= 1
        assert (tmp_path / job / "checkpoints" / f"{model}-best.ckpt").is_file()
    assert (proc.stdout + proc.stderr).count(f"Precision {precision}: no CUDA device") == 3


@pytest.mark.slow
def test_same_seed_twice_gives_identical_metrics(tmp_path: Path, mnist_dir: Path) -> None:
    args = (
        "model=cnn",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    )
    a, b = tmp_path / "a", tmp_path / "b"
    run_trains((*args, f"hydra.run.dir={a}"), (*args, f"hydra.run.dir={b}"))
    assert summary(a)["best_val_acc"] == summary(b)["best_val_acc"]
    assert summary(a)["test_loss"] == summary(b)["test_loss"]


@pytest.mark.slow
def test_resume_from_last_checkpoint_matches_uninterrupted_run(tmp_path: Path, mnist_dir: Path) -> None:
    args = [
        "model=mlp",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=100",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    full, cut, resumed = tmp_path / "full", tmp_path / "cut", tmp_path / "resumed"
    with ThreadPoolExecutor(1) as pool:  # the uninterrupted run meanwhile, in its own process
        uninterrupted = pool.submit(run_train, *args, f"hydra.run.dir={full}")

        # Ctrl-C as in a terminal: a suite started in the background (`cmd &`) passes SIGINT on ignored.
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={cut}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        last = cut / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 120
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=120)[0].decode(errors="replace")
        assert not (cut / "summary.json").exists(), f"the run was meant to be interrupted:\n{output[-3000:]}"
        stopped_at = torch.load(last, weights_only=True)["epoch"]
        assert stopped_at < 2

        run_train(*args, f"ckpt_path={last}", f"hydra.run.dir={resumed}")
        uninterrupted.result()
    assert summary(resumed)["epochs"] == summary(full)["epochs"] == 3
    for key in ("best_val_acc", "test_acc", "test_loss"):
        assert summary(resumed)[key] == summary(full)[key], key


@pytest.mark.slow
def test_a_checkpoint_monitoring_nothing_keeps_the_final_weights(tmp_path: Path, mnist_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_train("model=mlp", "debug=limit", "callbacks.model_checkpoint.monitor=null", f"hydra.run.dir={tmp_path}")
    kept, last = (
        torch.load(tmp_path / "checkpoints" / name, weights_only=True) for name in ("mlp-best.ckpt", "last.ckpt")
    )
    assert kept["epoch"] == last["epoch"] == 1
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in last["state_dict"].items())
    val_acc = []  # the run's scalars; the HPARAMS summary goes to files of its own
    for path in (tmp_path / "tensorboard").glob("events.out.tfevents.*"):
        events = EventAccumulator(str(path))
        events.Reload()
        val_acc += events.Scalars("val/acc") if "val/acc" in events.Tags()["scalars"] else []
    final_val_acc = max(val_acc, key=lambda e: e.step).value
    assert summary(tmp_path)["best_val_acc"] == pytest.approx(final_val_acc)  # the kept weights' score


def test_a_batch_limit_below_one_batch_is_a_clear_error(tmp_path: Path, mnist_dir: Path) -> None:
    proc = run_train(
        "model=mlp",
        "data.val_fraction=0.01",
        "trainer.limit_val_batches=0.1",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path}",
        check=False,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output
    assert "Invalid trainer configuration" in output and "limit_val_batches" in output


@pytest.mark.slow
def test_cnn_one_short_epoch_on_real_mnist_beats_97_percent(tmp_path: Path, mnist_dir: Path) -> None:
    run_train(
        "model=cnn",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=150",
        f"hydra.run.dir={tmp_path}",
        timeout=1200,
    )
    assert summary(tmp_path)["test_acc"] >= 0.97


def test_nan_loss_stops_at_once_with_a_clear_message(tmp_path: Path, mnist_dir: Path) -> None:
    proc = run_train(
        *"model=mlp optimizer=sgd optimizer.lr=1e12 scheduler=cosine trainer.gradient_clip_val=null trainer.max_epochs=1".split(),
        f"hydra.run.dir={tmp_path}",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "training diverged. Lower optimizer.lr" in output and "Traceback" not in output
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_failed_job_does_not_stop_the_sweep(tmp_path: Path, mnist_dir: Path) -> None:
    run_train(
        *"-m model=mlp optimizer.lr=1e12,0.05 optimizer=sgd scheduler=cosine trainer.gradient_clip_val=null trainer.max_epochs=1 trainer.limit_train_batches=20 trainer.limit_val_batches=2 trainer.limit_test_batches=2".split(),
        f"hydra.sweep.dir={tmp_path}",
    )
    failed, ok = summary(tmp_path / "0_mlp"), summary(tmp_path / "1_mlp")
    assert failed["status"] == "failed" and "TrainingDiverged" in failed["error"]
    assert ok["status"] == "ok" and ok["test_acc"] > 0.5


def test_sigterm_leaves_a_resume_command(tmp_path: Path, mnist_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            "model=mlp",
            "trainer.max_epochs=50",
            "trainer.limit_train_batches=100",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-2000:]
    assert f"ckpt_path={last}" in output and "model=mlp trainer.max_epochs=50" in output
