"""The bundled model: what ships is what its card says, and it answers with nothing else installed or trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from digitrec.data.mnist import load_split, raw_dir
from digitrec.evaluation.metrics import predict_logits
from digitrec.inference.checkpoints import card_file, load_network, load_temperature, save_weights
from digitrec.inference.options import choose_model
from digitrec.inference.pretrained import bundled_weights, describe_bundled, read_card, sha256_file
from digitrec.models import build_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def card() -> dict:
    return read_card(bundled_weights())


def test_the_weights_are_the_ones_the_card_describes(card: dict) -> None:
    weights = bundled_weights()
    assert sha256_file(weights) == card["sha256"]
    assert card["checkpoint"] == weights.name and weights.stat().st_size < 10 * 2**20
    net = load_network(weights)
    assert net.name == card["model"] and net.num_parameters == card["parameters"]
    assert load_temperature(weights) == (card["temperature"], f"calibrated ({card_file(weights)})")
    for key in ("recipe", "command", "seed", "commit", "cpu", "mnist_test_accuracy", "robustness", "regenerate"):
        assert card[key] is not None, key


@pytest.mark.slow
def test_the_stored_weights_score_what_the_card_says_on_all_of_mnist_test(card: dict, mnist_dir: Path) -> None:
    """float16 storage is measured, not assumed: within 0.02 points of the float32 checkpoint's accuracy."""
    test = load_split(raw_dir(mnist_dir), train=False)
    logits = predict_logits(load_network(bundled_weights()).net, test.images, 500, torch.device("cpu"))
    accuracy = float((logits.argmax(1) == test.labels).float().mean())
    assert len(test.labels) == 10_000
    assert abs(accuracy - card["mnist_test_accuracy"]) <= 0.0002, (accuracy, card["mnist_test_accuracy"])
    assert accuracy == pytest.approx(card["weights_mnist_test_accuracy"], abs=1e-9)


def test_predicting_needs_no_checkpoint_no_lightning_and_no_repository(tmp_path: Path) -> None:
    """From a folder outside the repository with no outputs/: the CLI says it uses the bundled model and reads
    a drawn 7; the Python API imports neither Lightning nor Hydra."""
    from digitrec.bench.latency import user_like_digit

    image = user_like_digit(tmp_path / "seven.png")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cli = subprocess.run(
        [sys.executable, "-m", "digitrec.inference.cli", str(image)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert "model: bundled robust_best" in cli.stderr and cli.stdout.startswith(f"{image}: 7 (confidence")
    code = (
        "import sys; from digitrec import DigitPredictor; answer = DigitPredictor().predict(sys.argv[1]); "
        "print(answer['digit'], sorted(m for m in ('lightning', 'hydra', 'omegaconf', 'torchmetrics') "
        "if m in sys.modules))"
    )
    api = subprocess.run(
        [sys.executable, "-c", code, str(image)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert api.returncode == 0, api.stderr
    assert api.stdout.split(maxsplit=1) == ["7", "[]\n"]
    assert not (tmp_path / "outputs").exists()


def test_a_checkpoint_under_outputs_wins_over_the_bundled_model_and_a_given_one_wins_over_both(tmp_path: Path) -> None:
    assert choose_model(None, tmp_path / "outputs")[0] == [bundled_weights()]
    assert "bundled robust_best" in describe_bundled(bundled_weights())
    run = tmp_path / "outputs" / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "cnn-best.ckpt").write_bytes(b"")
    assert choose_model(None, tmp_path / "outputs")[0] == [run / "cnn-best.ckpt"]
    given = tmp_path / "mine.ckpt"
    assert choose_model([given], tmp_path / "outputs") == ([given], f"model: {given}")


def test_a_weights_file_round_trips_through_float16(tmp_path: Path) -> None:
    net = build_model("speednet")
    save_weights(tmp_path / "w.pt", {"name": "speednet"}, net.state_dict())
    content = torch.load(tmp_path / "w.pt", weights_only=True)
    assert {v.dtype for v in content["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    loaded = load_network(tmp_path / "w.pt").net
    for key, value in net.state_dict().items():
        restored = loaded.state_dict()[key]
        assert restored.dtype == value.dtype and torch.allclose(restored, value, rtol=1e-3, atol=1e-4), key
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_card_is_valid_json_shipped_as_package_data() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"digitrec.inference" = ["pretrained/*"]' in pyproject
    assert json.loads(card_file(bundled_weights()).read_text())["dtype"] == "float16"
