"""TorchScript and ONNX exports give the checkpoint's probabilities (checked in onnxruntime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from digitrec import DigitPredictor
from digitrec.bench.rerender import rerender
from digitrec.data.mnist import load_split, raw_dir
from digitrec.errors import CheckpointError, ConfigError
from digitrec.inference.export import METADATA_KEY, PARITY_TOLERANCE, default_output_dir, export, main, run_exported
from digitrec.inference.preprocess import preprocess


@pytest.fixture(scope="module")
def calibrated_checkpoint(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's trained checkpoint in a run folder of its own, with a calibrated temperature."""
    run = tmp_path_factory.mktemp("export") / "run"
    checkpoint = run / "checkpoints" / "mlp-best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "mlp-best.ckpt", checkpoint)
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps({"temperature": 1.7, "checkpoint": str(checkpoint)}))
    return checkpoint


@pytest.fixture(scope="module")
def exported(calibrated_checkpoint: Path) -> dict[str, Path]:
    return export(calibrated_checkpoint)


@pytest.fixture(scope="module")
def pixels(mnist_dir: Path) -> np.ndarray:
    """What the network sees for 48 MNIST test digits and 16 re-rendered ones: (64, 1, 28, 28) float32."""
    digits = load_split(raw_dir(mnist_dir), train=False).images[:64, 0].numpy()
    rng = np.random.default_rng(0)
    images = [*digits[:48], *(rerender(d, rng) for d in digits[48:])]
    return np.stack([preprocess(image).pixels for image in images])[:, None]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_both_formats_are_written_with_their_description(
    exported: dict[str, Path], calibrated_checkpoint: Path
) -> None:
    assert set(exported) == {"torchscript", "onnx"}
    assert all(path.parent == calibrated_checkpoint.parents[1] / "export" for path in exported.values())
    extra = {METADATA_KEY: ""}
    torch.jit.load(str(exported["torchscript"]), _extra_files=extra)
    onnx_meta = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    for info in (json.loads(extra[METADATA_KEY]), json.loads(onnx_meta[METADATA_KEY])):
        assert info["model"] == "mlp" and info["temperature"] == 1.7
        assert info["mnist_mean"] == pytest.approx(0.1307) and info["mnist_std"] == pytest.approx(0.3081)


def test_exports_match_the_checkpoint(
    exported: dict[str, Path], calibrated_checkpoint: Path, pixels: np.ndarray
) -> None:
    predictor = DigitPredictor(calibrated_checkpoint, device="cpu")
    assert predictor.temperature == 1.7
    normalised = torch.from_numpy((pixels - 0.1307) / 0.3081)
    expected = predictor.probabilities(normalised).numpy()
    for fmt, path in exported.items():
        got = run_exported(path, pixels)
        assert got.shape == (64, 10)
        assert np.abs(got - expected).max() <= PARITY_TOLERANCE, fmt
        assert np.array_equal(got.argmax(1), expected.argmax(1)), fmt


def test_onnx_takes_any_batch_size(exported: dict[str, Path], pixels: np.ndarray) -> None:
    session = onnxruntime.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        (probs,) = session.run(None, {"pixels": pixels[:n]})
        assert probs.shape == (n, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_export_command(calibrated_checkpoint: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "--checkpoint",
                str(calibrated_checkpoint),
                "--output-dir",
                str(tmp_path / "out"),
                "--format",
                "torchscript",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "torchscript: " in out and "largest probability difference" in out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mlp.torchscript.pt"]


def test_export_errors(tmp_path: Path, calibrated_checkpoint: Path, caplog) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        export(tmp_path / "none.ckpt", tmp_path)
    with pytest.raises(ConfigError, match="unknown export format"):
        export(calibrated_checkpoint, tmp_path, ["tflite"])
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        export(calibrated_checkpoint, tmp_path / "file")
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tmp_path / "none.ckpt")])
    assert exit_info.value.code == 1 and "none.ckpt: no such checkpoint file" in caplog.text
    assert default_output_dir([tmp_path / "loose.ckpt"]) == tmp_path / "export"
