"""Ensembles and test-time augmentation: in evaluation, DigitPredictor, the CLIs and one exported graph."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import once_per_session

from digitrec import DigitPredictor
from digitrec.data.mnist import MNIST_MEAN, MNIST_STD, load_split, normalize, raw_dir
from digitrec.errors import ConfigError
from digitrec.evaluation.report import EvalOptions, evaluate_checkpoint
from digitrec.inference.cli import main as predict_main
from digitrec.inference.ensemble import TTA_VIEWS, Ensemble
from digitrec.inference.export import METADATA_KEY, run_exported
from digitrec.inference.export import main as export_main

REPO = Path(__file__).resolve().parents[1]


def _member(source: Path, run: Path, noise: float, seed: int, **data_hparams) -> Path:
    """A copy of the trained checkpoint with its weights perturbed: another member of the ensemble."""
    content = torch.load(source, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(seed)
    for key, value in content["state_dict"].items():
        if value.is_floating_point() and key.endswith("weight"):
            value.add_(torch.randn(value.shape, generator=generator) * noise * value.std())
    content.setdefault("datamodule_hyper_parameters", {}).update(data_hparams)
    path = run / "checkpoints" / "mlp-best.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(content, path)
    return path


@pytest.fixture(scope="session")
def ensemble(trained_run: Path, mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two members and their ensemble's report, built once per session (a folder all workers share)."""

    def build(root: Path) -> None:
        source = trained_run / "checkpoints" / "mlp-best.ckpt"
        members = [_member(source, root / f"run{i}", noise=0.3 * i, seed=i) for i in range(2)]
        report = evaluate_checkpoint(members, options=EvalOptions(data_dir=str(mnist_dir)))
        (root / "report.json").write_text(json.dumps(report, default=str))

    return once_per_session(tmp_path_factory, "ensemble", build)


@pytest.fixture
def members(ensemble: Path) -> list[Path]:
    return [ensemble / f"run{i}" / "checkpoints" / "mlp-best.ckpt" for i in range(2)]


@pytest.fixture
def ensemble_report(ensemble: Path) -> dict:
    return json.loads((ensemble / "report.json").read_text())


def test_ensemble_report_has_each_member_beside_the_mean(ensemble_report: dict, members: list[Path]) -> None:
    assert [m["checkpoint"] for m in ensemble_report["members"]] == [str(p) for p in members]
    assert ensemble_report["checkpoint"] == [str(p) for p in members]
    accuracies = [m["accuracy"] for m in ensemble_report["members"]]
    assert len(set(accuracies)) == 2  # really different members
    assert ensemble_report["accuracy"] >= min(accuracies)
    folders = list(Path(ensemble_report["run_dir"]).glob("ensemble-2-*"))  # beside the members' runs
    assert len(folders) == 1 and (folders[0] / "metrics.json").is_file()
    assert not (folders[0] / "training_curves.png").exists()  # an ensemble has no one training run
    text = (folders[0] / "classification_report.txt").read_text()
    assert all(f"member {m['accuracy']:.4f} test" in text for m in ensemble_report["members"])
    for member in members:  # each member was calibrated on the validation split: its temperature is beside it
        assert member.with_name("mlp-best.calibration.json").is_file()


def test_predictor_ensemble_is_the_mean_of_calibrated_member_probabilities(
    ensemble_report, members, mnist_dir: Path
) -> None:
    batch = normalize(load_split(raw_dir(mnist_dir), train=False).images[:32].float() / 255)
    singles = [DigitPredictor(m, device="cpu").probabilities(batch) for m in members]
    together = DigitPredictor(members, device="cpu")
    assert together.model_name == "ensemble of 2 (mlp)"
    torch.testing.assert_close(together.probabilities(batch), torch.stack(singles).mean(0), atol=1e-6, rtol=0)


def test_members_from_different_validation_splits_are_refused(trained_run: Path, tmp_path: Path) -> None:
    source = trained_run / "checkpoints" / "mlp-best.ckpt"
    a = _member(source, tmp_path / "a", 0.0, 0)
    b = _member(source, tmp_path / "b", 0.0, 0, split_seed=7)
    with pytest.raises(ConfigError, match="different validation splits"):
        evaluate_checkpoint([a, b], output_dir=tmp_path / "out")


def test_tta_views_are_the_image_shifted_and_rotated() -> None:
    image = torch.zeros(2, 1, 28, 28)
    image[:, 0, 14, 14] = 1.0
    net = Ensemble([torch.nn.Flatten()], [1.0], tta=True)
    views = net.views(normalize(image))
    assert len(views) == len(TTA_VIEWS) == 7
    pixels = [v * MNIST_STD + MNIST_MEAN for v in views]
    torch.testing.assert_close(pixels[0], image, atol=1e-5, rtol=0)  # the first view is the image itself
    for view, (dx, dy, _) in zip(pixels[1:5], TTA_VIEWS[1:5]):
        assert view[0, 0, 14 + dy, 14 + dx] == pytest.approx(1.0, abs=1e-5)
    bar = torch.zeros(1, 1, 28, 28)
    bar[0, 0, 14, 2:27] = 1.0  # a horizontal bar through the centre leans under the rotations, each its own way
    rows = torch.arange(28.0)
    for view, (_, _, degrees) in zip(net.views(normalize(bar))[5:], TTA_VIEWS[5:]):
        column = (view * MNIST_STD + MNIST_MEAN)[0, 0, :, 23]  # 9 px right of the centre (13.5)
        lean = float((column * rows).sum() / column.sum()) - 14
        assert lean == pytest.approx(9.5 * math.tan(math.radians(degrees)), abs=0.3)


def test_tta_in_evaluation_and_prediction(members: list[Path], mnist_dir: Path) -> None:
    report = evaluate_checkpoint(members[0], options=EvalOptions(data_dir=str(mnist_dir), tta=True))
    assert report["tta"] and len(report["members"]) == 1
    assert (members[0].parents[1] / "eval-tta" / "metrics.json").is_file()
    assert report["validation_accuracy"] > 0.9 and report["accuracy"] > 0.9
    plain, tta = DigitPredictor(members[0], device="cpu"), DigitPredictor(members[0], device="cpu", tta=True)
    batch = normalize(load_split(raw_dir(mnist_dir), train=False).images[:8].float() / 255)
    assert not torch.allclose(plain.probabilities(batch), tta.probabilities(batch))
    torch.testing.assert_close(tta.probabilities(batch).sum(1), torch.ones(8, dtype=torch.float64))


def test_cli_ensembles(members: list[Path], mnist_dir: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(load_split(raw_dir(mnist_dir), train=False).images[0, 0].numpy()).save(image)
    args = [a for m in members for a in ("--checkpoint", str(m))]
    assert predict_main([*args, "--tta", "--json", str(image)]) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    expected = DigitPredictor(members, device="cpu", tta=True).predict(image)
    assert answer["digit"] == expected["digit"] == 7
    assert answer["probabilities"] == pytest.approx(expected["probabilities"])

    assert export_main([*args, "--output-dir", str(tmp_path / "export"), "--format", "onnx"]) == 0
    [path] = (tmp_path / "export").glob("ensemble-2-*.onnx")
    info = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY])
    assert info["checkpoint"] == [str(m) for m in members]
    pixels = np.random.default_rng(1).random((5, 1, 28, 28), dtype=np.float32)
    expected = DigitPredictor(members, device="cpu").probabilities(normalize(torch.from_numpy(pixels)))
    np.testing.assert_allclose(run_exported(path, pixels), expected.numpy(), atol=1e-5)


def test_evaluate_cli_takes_a_list_of_checkpoints(members: list[Path], mnist_dir: Path, tmp_path: Path) -> None:
    listed = ",".join(str(m) for m in members)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "evaluate.py"),
            f"ckpt_path=[{listed}]",
            f"data_dir={mnist_dir}",
            f"output_dir={tmp_path / 'pair'}",
            "robustness=true",
            "robustness_images=100",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "pair" / "metrics.json").read_text())
    assert len(metrics["members"]) == 2 and "robustness" in metrics
    assert "ensemble of 2 (mlp)" in proc.stdout and "member" in proc.stdout and "zigzag" in proc.stdout


def test_server_answers_as_the_ensemble_its_command_line_names(members: list[Path], mnist_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from digitrec.serve.__main__ import _parser, load_predictor
    from digitrec.serve.app import create_app

    predictor, _ = load_predictor(
        _parser().parse_args([a for m in members for a in ("--checkpoint", str(m))] + ["--tta"])
    )
    assert predictor.checkpoints == members and predictor.tta
    image = load_split(raw_dir(mnist_dir), train=False).images[0, 0].numpy()
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    with TestClient(create_app(predictor)) as client:
        health = client.get("/health").json()
        answer = client.post("/predict", files={"file": ("seven.png", buffer.getvalue(), "image/png")}).json()
    assert health["checkpoints"] == [str(m) for m in members] and health["tta"] is True
    assert health["model"] == "ensemble of 2 (mlp)"
    expected = DigitPredictor(members, device="cpu", tta=True).predict(image)
    assert answer["digit"] == expected["digit"] == 7
    assert answer["probabilities"] == pytest.approx(expected["probabilities"])


def test_server_command_names_a_missing_member(members: list[Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ckpt"
    proc = subprocess.run(
        [sys.executable, "-m", "digitrec.serve", "--checkpoint", str(members[0]), "--checkpoint", str(missing)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and str(missing) in proc.stderr and len(proc.stderr.splitlines()) == 1
