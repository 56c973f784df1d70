"""evaluate.py on a real trained run: report files, metrics, calibration, TensorBoard images, sweeps, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, once_per_session, run_train
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from digitrec.data.mnist import FILES, NUM_CLASSES
from digitrec.errors import CheckpointError, ConfigError
from digitrec.evaluation.calibration import calibration_errors, fit_temperature
from digitrec.evaluation.report import EvalOptions, evaluate_checkpoint
from digitrec.evaluation.report_files import REPORT_FILES
from digitrec.evaluation.sweep import COLUMNS, compare_sweep, comparison_markdown
from digitrec.evaluation.training_logs import read_training_curves
from digitrec.inference.checkpoints import find_newest_checkpoint, load_network


def run_evaluate(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def strict_json(path: Path) -> dict:
    def reject(constant: str) -> None:
        raise ValueError(f"{path}: {constant} is not valid JSON")

    return json.loads(path.read_text(), parse_constant=reject)


@pytest.fixture(scope="session")
def project(trained_run: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder whose outputs/ holds a copy of the trained run, then `python evaluate.py` run
    in it with no checkpoint given (it must find the run's best checkpoint itself); built once per session."""

    def build(root: Path) -> None:
        shutil.copytree(trained_run, root / "outputs" / "2026-01-01" / "run", ignore=shutil.ignore_patterns("eval*"))
        proc = run_evaluate(f"data_dir={mnist_dir}", cwd=root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (root / "console.txt").write_text(proc.stdout)

    return once_per_session(tmp_path_factory, "evaluate-project", build)


@pytest.fixture
def console(project: Path) -> str:
    """What `python evaluate.py` printed."""
    return (project / "console.txt").read_text()


@pytest.fixture
def run_dir(project: Path) -> Path:
    return project / "outputs" / "2026-01-01" / "run"


@pytest.fixture
def metrics(run_dir: Path) -> dict:
    return strict_json(run_dir / "eval" / "metrics.json")


def test_cli_takes_the_newest_best_checkpoint_and_says_which(console: str, run_dir: Path) -> None:
    best = run_dir / "checkpoints" / "mlp-best.ckpt"
    assert f"newest best checkpoint under outputs: {best}" in console
    assert "test accuracy" in console and "temperature" in console  # the console summary
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == [".hydra"]  # no temp folders left


def test_every_report_file_is_valid(metrics: dict, run_dir: Path) -> None:
    out = run_dir / "eval"
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    for name in REPORT_FILES:
        if name.endswith(".png"):
            with Image.open(out / name) as image:
                image.verify()
                assert image.format == "PNG" and min(image.size) > 100
    report = (out / "classification_report.txt").read_text(encoding="utf-8")
    for text in ("precision", "recall", "f1-score", "support", "macro avg", "weighted avg", *map(str, range(10))):
        assert text in report
    assert f"{metrics['accuracy']:.4f}" in report


def test_metrics_agree_with_trainer_test(metrics: dict, run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["test_acc"], abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-4)
    assert metrics["errors"] == round((1 - summary["test_acc"]) * metrics["test_size"])
    assert metrics["model"] == summary["model"] == "mlp" and metrics["parameters"] == summary["parameters"]
    assert metrics["checkpoint"] == str(run_dir / "checkpoints" / "mlp-best.ckpt")
    assert {k: v for k, v in metrics["data"]["checksums"].items() if k.startswith("t10k")} == {
        k: v for k, v in FILES.items() if k.startswith("t10k")
    }


def test_supports_and_confusion_matrix_are_consistent(metrics: dict) -> None:
    supports = [metrics["per_class"][str(d)]["support"] for d in range(NUM_CLASSES)]
    confusion = torch.tensor(metrics["confusion_matrix"])
    assert sum(supports) == metrics["test_size"] == 10_000
    assert confusion.sum(1).tolist() == supports
    assert int(confusion.trace()) == metrics["test_size"] - metrics["errors"]
    for d in range(NUM_CLASSES):  # recall is each digit's accuracy; no separate column repeats it
        assert metrics["per_class"][str(d)]["recall"] == pytest.approx(float(confusion[d, d]) / supports[d], abs=1e-6)
    assert set(metrics["per_class"]["0"]) == {"precision", "recall", "f1", "support"}
    assert 0 < metrics["macro"]["f1"] <= 1


def test_temperature_scaling_does_not_worsen_validation_calibration(metrics: dict) -> None:
    assert isinstance(metrics["temperature"], float) and metrics["temperature"] > 0
    val = metrics["calibration"]["validation"]
    assert val["after"]["nll"] <= val["before"]["nll"]
    assert val["after"]["ece"] <= val["before"]["ece"]
    assert metrics["calibration"]["bins"] == 15


def test_fit_temperature_recovers_a_known_overconfidence() -> None:
    g = torch.Generator().manual_seed(0)
    true_logits = 2 * torch.randn(20_000, NUM_CLASSES, generator=g)
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g).squeeze(1)  # calibrated by construction
    overconfident = 3 * true_logits
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3, rel=0.05)
    before, after = calibration_errors(overconfident, labels), calibration_errors(overconfident / temperature, labels)
    assert after["ece"] < before["ece"] and after["nll"] < before["nll"]


def test_training_curves_come_from_the_runs_tensorboard_logs(run_dir: Path) -> None:
    curves, x_label, source = read_training_curves(run_dir)
    assert (x_label, source) == ("epoch", "TensorBoard")
    for tag in ("train/loss_epoch", "val/loss", "train/acc", "val/acc"):
        assert [round(x) for x, _ in curves[tag]] == [1, 2], tag
    assert any(tag.startswith("lr-") and len(points) > 2 for tag, points in curves.items())


def test_training_logs_confusion_images_and_per_digit_accuracy(trained_run: Path) -> None:
    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    images = events.Tags()["images"]
    for stage in ("val", "test"):
        assert {f"{stage}/confusion_matrix", f"{stage}/misclassified"} <= set(images)
    assert len(events.Images("val/confusion_matrix")) == 2  # one per epoch
    per_digit = [events.Scalars(f"test/acc_digit_{d}")[-1].value for d in range(NUM_CLASSES)]
    assert all(0.8 < acc <= 1 for acc in per_digit)


def test_cli_without_checkpoints_says_how_to_train_one(tmp_path: Path) -> None:
    proc = run_evaluate(cwd=tmp_path)
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "No *-best.ckpt" in output and "python train.py" in output and "Traceback" not in output


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoints" / "junk-best.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(2048))
    proc = run_evaluate(f"ckpt_path={bad}", cwd=tmp_path)
    assert proc.returncode == 1
    assert str(bad) in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


@pytest.fixture
def real_checkpoint(trained_run: Path) -> dict:
    return torch.load(trained_run / "checkpoints" / "mlp-best.ckpt", map_location="cpu", weights_only=True)


def _bad_checkpoints(folder: Path, real: dict, real_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the error must contain)"""
    folder.mkdir(parents=True)
    cases = {"missing": (folder / "absent.ckpt", "no such checkpoint")}
    (folder / "random.ckpt").write_bytes(os.urandom(4096))
    cases["random bytes"] = (folder / "random.ckpt", "cannot read")
    (folder / "truncated.ckpt").write_bytes(real_path.read_bytes()[:50_000])
    cases["truncated"] = (folder / "truncated.ckpt", "cannot read")
    torch.save({"weights": torch.zeros(3)}, folder / "plain.ckpt")
    cases["plain dict"] = (folder / "plain.ckpt", "not a Lightning checkpoint")
    unknown = {**real, "hyper_parameters": {**real["hyper_parameters"], "net": {"name": "resnet999"}}}
    torch.save(unknown, folder / "unknown_model.ckpt")
    cases["unknown model"] = (folder / "unknown_model.ckpt", "cannot rebuild")
    resized = {**real, "hyper_parameters": {**real["hyper_parameters"], "net": {"name": "mlp", "hidden": [32]}}}
    torch.save(resized, folder / "wrong_shapes.ckpt")
    cases["weights do not fit"] = (folder / "wrong_shapes.ckpt", "cannot rebuild")
    return cases


def test_bad_checkpoints_raise_a_clear_error_and_write_nothing(
    tmp_path: Path, real_checkpoint: dict, trained_run: Path
) -> None:
    run = tmp_path / "run"
    cases = _bad_checkpoints(run / "checkpoints", real_checkpoint, trained_run / "checkpoints" / "mlp-best.ckpt")
    for name, (path, words) in cases.items():
        with pytest.raises(CheckpointError) as error:
            evaluate_checkpoint(path)
        assert str(path) in str(error.value) and words in str(error.value), name
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]  # no eval/ and no temporary folder
    with pytest.raises(CheckpointError, match="is a directory"):
        load_network(run)


def test_a_failure_while_writing_leaves_no_report_files(
    trained_run: Path, tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fig, path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("digitrec.evaluation.report_files.save_figure", broken)
    with pytest.raises(OSError, match="disk full"):
        evaluate_checkpoint(
            trained_run / "checkpoints" / "mlp-best.ckpt", tmp_path / "reports", EvalOptions(data_dir=str(mnist_dir))
        )
    assert list(tmp_path.iterdir()) == []


def test_output_dir_holding_another_checkpoints_reports_is_refused(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"checkpoint": "/elsewhere/cnn-best.ckpt"}))
    with pytest.raises(ConfigError, match="/elsewhere/cnn-best.ckpt"):
        evaluate_checkpoint(trained_run / "checkpoints" / "mlp-best.ckpt", output_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_newest_checkpoint_is_found_by_modification_time(tmp_path: Path) -> None:
    older, newer = tmp_path / "a" / "checkpoints" / "cnn-best.ckpt", tmp_path / "b" / "checkpoints" / "mlp-best.ckpt"
    for path, mtime in ((older, 1_000_000), (newer, 2_000_000)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    (tmp_path / "b" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert find_newest_checkpoint(tmp_path) == newer


@pytest.mark.slow
def test_sweep_comparison_lists_every_job(tmp_path: Path, mnist_dir: Path) -> None:
    sweep = tmp_path / "multirun"
    run_train(
        *"-m model=mlp optimizer.lr=0.001,0.003 debug=limit trainer.limit_train_batches=2 trainer.max_epochs=1".split(),
        f"data.data_dir={mnist_dir}",
        f"hydra.sweep.dir={sweep}",
    )
    # Two jobs that went wrong: one stopped before writing its summary, one left a corrupt checkpoint.
    shutil.copytree(sweep / "0_mlp" / ".hydra", sweep / "2_mlp" / ".hydra")
    shutil.copytree(sweep / "0_mlp", sweep / "3_mlp", ignore=shutil.ignore_patterns("*.json"))
    summary = json.loads((sweep / "0_mlp" / "summary.json").read_text())
    (sweep / "3_mlp" / "summary.json").write_text(json.dumps({**summary, "best_checkpoint": ""}))
    corrupt = sweep / "3_mlp" / "checkpoints" / "mlp-best.ckpt"
    corrupt.write_bytes(corrupt.read_bytes()[:1000])
    # ... and one whose training failed: train.py records that in its summary.json.
    shutil.copytree(sweep / "0_mlp" / ".hydra", sweep / "4_mlp" / ".hydra")
    (sweep / "4_mlp" / "summary.json").write_text(json.dumps({"status": "failed", "error": "TrainingDiverged: NaN"}))

    rows = compare_sweep(sweep, options=EvalOptions(data_dir=str(mnist_dir)))

    assert [row["job"] for row in rows] == ["0_mlp", "1_mlp", "2_mlp", "3_mlp", "4_mlp"]
    assert [row["status"] == "ok" for row in rows] == [True, True, False, False, False]
    assert "summary.json" in rows[2]["status"] and "cannot read" in rows[3]["status"]
    assert rows[4]["status"] == "failed: TrainingDiverged: NaN"
    assert rows[2]["model"] == "mlp" and rows[2]["test_acc"] is None
    for row in rows[:2]:
        report = strict_json(sweep / row["job"] / "eval" / "metrics.json")
        assert row["test_acc"] == report["accuracy"] and row["macro_f1"] == report["macro"]["f1"]
    with (sweep / "comparison.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["job"] for r in table] == [row["job"] for row in rows]
    assert {"model", "parameters", "test_acc", "macro_f1", "ece", "fit_seconds", "status"} <= set(table[0])
    markdown = (sweep / "comparison.md").read_text()
    assert all(f"| {row['job']} |" in markdown for row in rows) and "2 of 5 jobs evaluated, 3 failed" in markdown
    assert "optimizer.lr=0.001" in markdown and "optimizer.lr=0.003" in markdown
    with Image.open(sweep / "comparison.png") as image:
        assert image.format == "PNG"
    assert not [p for p in sweep.iterdir() if p.name.startswith(".")]


def test_sweep_comparison_shows_users_digits_only_when_jobs_trained_on_them(tmp_path: Path) -> None:
    row = dict.fromkeys(COLUMNS) | {"job": "0_cnn", "overrides": "model=cnn", "model": "cnn", "test_acc": 0.99}
    assert "users' test acc" not in comparison_markdown(tmp_path, [row])
    table = comparison_markdown(tmp_path, [row | {"test_acc_extra": 0.975}, {**row, "job": "1_cnn"}])
    assert "| test acc | users' test acc |" in table
    assert "| 0.9900 | 0.9750 |" in table and "| 0.9900 | n/a |" in table


def test_sweep_dir_without_jobs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no job folders"):
        compare_sweep(tmp_path)


def test_the_temperature_travels_with_the_checkpoint(
    trained_run: Path, tmp_path: Path, mnist_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reports written elsewhere still calibrate DigitPredictor; an uncalibrated one says so, once."""
    from digitrec.inference.predictor import DigitPredictor

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval*", "*.calibration.json"))
    ckpt = run / "checkpoints" / "mlp-best.ckpt"
    with caplog.at_level("WARNING", logger="digitrec.inference.predictor"):
        uncalibrated = DigitPredictor(ckpt, device="cpu")
        uncalibrated.with_options(threshold=0.9).predict(np.zeros((28, 28)))
    assert uncalibrated.temperature == 1.0
    assert sum("is not calibrated" in r.getMessage() for r in caplog.records) == 1

    report = evaluate_checkpoint(ckpt, tmp_path / "elsewhere", EvalOptions(data_dir=str(mnist_dir)))
    assert not (run / "eval").exists() and (tmp_path / "elsewhere" / "metrics.json").is_file()
    predictor = DigitPredictor(ckpt, device="cpu")
    assert predictor.temperature == report["temperature"] != 1.0
    assert "mlp-best.calibration.json" in predictor.temperature_source


def test_training_curves_zoom_the_accuracy_past_the_first_epoch() -> None:
    from digitrec.evaluation.figures import training_curves_figure

    curves = {
        "train/acc": [(0, 0.60), (1, 0.970), (2, 0.985)],
        "val/acc": [(0, 0.90), (1, 0.980), (2, 0.990)],
        "train/loss_epoch": [(0, 1.0), (1, 0.5)],
    }
    accuracy = training_curves_figure(curves, "epoch", "test").axes[1]
    low, high = accuracy.get_ylim()
    assert 0.95 < low < 0.97 and 0.99 < high < 1.0  # the last epochs fill the panel; 0.60 and 0.90 fall below
    assert "zoomed" in accuracy.get_title()
