"""`DigitPredictor`, its command line and the latency benchmark, with a model trained in the session."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitrec import DigitPredictor
from digitrec.bench.latency import main as latency_main
from digitrec.bench.latency import untrained_checkpoint
from digitrec.bench.rerender import main as rerender_main
from digitrec.bench.rerender import rerender, rerendered_accuracy
from digitrec.data.corruptions import CORRUPTIONS
from digitrec.data.mnist import load_split, raw_dir
from digitrec.errors import CheckpointError, ConfigError, DigitrecError
from digitrec.evaluation.robustness import corrupted
from digitrec.inference.cli import main as predict_main
from digitrec.inference.images import ImageError
from digitrec.models import MODELS

RESULT_KEYS = {"digit", "confidence", "probabilities", "is_digit", "reason", "error"}


@pytest.fixture(scope="module")
def checkpoint(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "mlp-best.ckpt"


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> DigitPredictor:
    return DigitPredictor(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def test_split(mnist_dir: Path):
    split = load_split(raw_dir(mnist_dir), train=False)
    return split.images[:, 0].numpy(), split.labels.numpy()


def calibrated_copy(checkpoint: Path, folder: Path, report: dict | str) -> Path:
    """The checkpoint copied into a run folder whose eval/metrics.json holds `report`."""
    copy = folder / "run" / "checkpoints" / checkpoint.name
    copy.parent.mkdir(parents=True)
    shutil.copy(checkpoint, copy)
    (folder / "run" / "eval").mkdir()
    (folder / "run" / "eval" / "metrics.json").write_text(report if isinstance(report, str) else json.dumps(report))
    return copy


def assert_answer(answer: dict) -> None:
    assert set(answer) == RESULT_KEYS
    assert isinstance(answer["digit"], int) and 0 <= answer["digit"] <= 9
    assert isinstance(answer["confidence"], float) and isinstance(answer["is_digit"], bool)
    probs = answer["probabilities"]
    assert isinstance(probs, list) and len(probs) == 10 and all(isinstance(p, float) for p in probs)
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-6)
    assert answer["confidence"] == max(probs) and answer["digit"] == int(np.argmax(probs))
    assert answer["error"] is None


# --- the API contract ------------------------------------------------------------------------------


def test_import_digitrec_is_light_and_exports_the_predictor() -> None:
    code = (
        "import sys, digitrec; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "from digitrec import DigitPredictor; print(DigitPredictor.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "digitrec.inference.predictor"


def test_every_input_kind_gets_a_well_formed_answer(predictor: DigitPredictor, test_split, tmp_path: Path) -> None:
    images, labels = test_split
    digit = images[0]
    path = tmp_path / "digit.png"
    Image.fromarray(255 - digit).save(path)
    inputs = {
        "path": path,
        "str path": str(path),
        "PIL": Image.open(path),
        "uint8 H×W": digit,
        "float H×W×3": np.stack([digit / 255.0] * 3, axis=-1),
        "tensor C×H×W": torch.from_numpy(digit)[None],
    }
    for name, image in inputs.items():
        answer = predictor.predict(image)
        assert_answer(answer)
        assert answer["digit"] == labels[0], name
    assert "mlp" in repr(predictor) and "temperature=1" in repr(predictor) and "uncalibrated" in repr(predictor)


def test_predict_batch_keeps_order_and_reports_bad_items(checkpoint: Path, test_split, tmp_path: Path) -> None:
    images, _ = test_split
    predictor = DigitPredictor(checkpoint, device="cpu", batch_size=2)  # several network batches
    bad_file = tmp_path / "notes.png"
    bad_file.write_text("not an image")
    nan_image = np.full((28, 28), np.nan)
    batch = [
        images[0],
        tmp_path / "missing.png",
        images[1],
        bad_file,
        Image.fromarray(images[2]),
        nan_image,
        np.zeros((40, 40)),
        images[3],
    ]
    answers = predictor.predict_batch(batch)
    assert len(answers) == len(batch)
    for i in (0, 2, 4, 7):
        assert_answer(answers[i])
        alone = predictor.predict(batch[i])
        assert answers[i]["digit"] == alone["digit"]
        assert np.allclose(answers[i]["probabilities"], alone["probabilities"], atol=1e-6)
    for i, needle in ((1, "missing.png: no such file"), (3, "notes.png: not an image file"), (5, "NaN")):
        assert answers[i]["error"] and needle in answers[i]["error"], answers[i]
        assert answers[i]["digit"] is None and answers[i]["is_digit"] is False
        assert answers[i]["confidence"] is None and answers[i]["reason"] is None  # the error is said once
    assert answers[6]["error"] is None and answers[6]["is_digit"] is False and "blank" in answers[6]["reason"]
    as_array = predictor.predict_batch(images[:3])  # an array is a batch along its first axis
    assert [a["digit"] for a in as_array] == [predictor.predict(d)["digit"] for d in images[:3]]
    with pytest.raises(ConfigError, match="use predict"):
        predictor.predict_batch(str(tmp_path / "one.png"))


def test_bad_input_to_predict_raises_one_clear_error(predictor: DigitPredictor, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nothing.png: no such file"):
        predictor.predict(tmp_path / "nothing.png")
    with pytest.raises(ImageError, match="expected an image of shape"):
        predictor.predict(np.zeros((2, 28, 28, 1)))


def test_blank_image_is_not_a_digit(predictor: DigitPredictor) -> None:
    for blank in (np.full((100, 80), 255, np.uint8), np.zeros((50, 50, 4), np.uint8)):
        answer = predictor.predict(blank)
        assert set(answer) == RESULT_KEYS
        assert answer["is_digit"] is False and answer["digit"] is None and "blank" in answer["reason"]
        assert answer["probabilities"] is None and answer["confidence"] is None  # nothing invented


def test_confidence_threshold(predictor: DigitPredictor, test_split) -> None:
    digit = test_split[0][0]
    strict = predictor.with_options(threshold=1.0).predict(digit)
    assert strict["is_digit"] is False and strict["reason"].startswith("low confidence")
    assert strict["digit"] == predictor.predict(digit)["digit"]  # the best guess is still given
    assert predictor.with_options(threshold=0.0).predict(digit)["is_digit"] is True
    for bad in (1.5, -0.1, float("nan"), "0.5", True):
        with pytest.raises(ConfigError, match="threshold"):
            predictor.with_options(threshold=bad)


# --- what it is worth on users' digits -------------------------------------------------------------


def test_rerendered_digits_are_recognised_as_well_as_mnist(predictor: DigitPredictor, test_split) -> None:
    images, labels = test_split
    table = rerendered_accuracy(predictor, images[:400], labels[:400], seed=0)
    plain = table["MNIST test digits, preprocessing off"]
    assert plain > 0.9, table
    assert table["re-rendered, RGB (dark on light paper)"] >= plain - 0.01, table
    assert table["re-rendered, RGBA (dark on transparent)"] >= plain - 0.01, table


def test_preprocessing_rarely_changes_a_prediction_on_mnist(predictor: DigitPredictor, test_split) -> None:
    images = list(test_split[0][:2000])
    plain = [a["digit"] for a in predictor.with_options(preprocess=False).predict_batch(images)]
    through = [a["digit"] for a in predictor.predict_batch(images)]
    changed = np.mean(np.array(plain) != np.array(through))
    assert changed < 0.005, changed


def test_rerendered_example_is_recognised(predictor: DigitPredictor, test_split, tmp_path: Path) -> None:
    images, labels = test_split
    path = tmp_path / "user.png"
    Image.fromarray(rerender(images[0], np.random.default_rng(3))).save(path)
    answer = predictor.predict(path)
    assert answer["digit"] == labels[0] and answer["is_digit"]


# --- checkpoints, temperature, device -------------------------------------------------------------


def test_calibrated_temperature_is_used(
    checkpoint: Path, predictor: DigitPredictor, test_split, tmp_path: Path
) -> None:
    calibrated = DigitPredictor(
        calibrated_copy(checkpoint, tmp_path, {"temperature": 2.5, "checkpoint": str(checkpoint)}), device="cpu"
    )
    assert calibrated.temperature == 2.5 and "calibrated" in calibrated.temperature_source
    assert "temperature=2.5" in repr(calibrated)
    digit = test_split[0][0]
    p1 = np.array(predictor.predict(digit)["probabilities"])
    p2 = np.array(calibrated.predict(digit)["probabilities"])
    expected = np.exp(np.log(p1) / 2.5)
    assert np.allclose(p2, expected / expected.sum(), atol=1e-6)


@pytest.mark.parametrize(
    "report, note",
    [
        ({"temperature": 2.0, "checkpoint": "/elsewhere/last.ckpt"}, "is for last.ckpt"),
        ({"accuracy": 0.9}, "no positive 'temperature'"),
        ({"temperature": -1}, "no positive 'temperature'"),
        ("{not json", "unreadable"),
    ],
)
def test_unusable_calibration_means_temperature_one(checkpoint: Path, tmp_path: Path, report, note: str) -> None:
    calibrated = DigitPredictor(calibrated_copy(checkpoint, tmp_path, report), device="cpu")
    assert calibrated.temperature == 1.0 and "uncalibrated" in repr(calibrated) and note in repr(calibrated)


def test_model_name_must_match_the_checkpoint(checkpoint: Path) -> None:
    assert DigitPredictor(checkpoint, device="cpu", model_name="mlp").model_name == "mlp"
    with pytest.raises(ConfigError, match="a 'cnn' model was expected.*holds a 'mlp' model"):
        DigitPredictor(checkpoint, device="cpu", model_name="cnn")
    with pytest.raises(ConfigError, match="Unknown model 'vgg'"):
        DigitPredictor(checkpoint, device="cpu", model_name="vgg")


def test_device_choice(checkpoint: Path) -> None:
    auto = DigitPredictor(checkpoint).device
    assert auto == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"device='abacus' is not a device; use auto, cpu, cuda \(or gpu\)") as error:
        DigitPredictor(checkpoint, device="abacus")
    assert "\n" not in str(error.value)  # one line, not torch's list of device types
    if not torch.cuda.is_available():
        for cuda in ("cuda", "gpu", "gpu:0"):  # gpu, as train.py's trainer.accelerator says it, means CUDA
            with pytest.raises(ConfigError, match="no CUDA device"):
                DigitPredictor(checkpoint, device=cuda)


class CreatesFile:
    """Unpickling this object calls open(target, "w"): arbitrary code a checkpoint must not run."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    proof = tmp_path / "proof.txt"
    pickle.loads(pickle.dumps(CreatesFile(proof))).close()  # the payload is live for a plain unpickler
    assert proof.exists()
    for name, write in {
        "zip.ckpt": lambda path, payload: torch.save({"state_dict": {}, "hyper_parameters": payload}, path),
        "pickle.ckpt": lambda path, payload: path.write_bytes(pickle.dumps(payload, protocol=2)),
    }.items():
        target = tmp_path / f"pwned-by-{name}"
        path = tmp_path / name
        write(path, CreatesFile(target))
        with pytest.raises(CheckpointError, match="refused: unpickling it would call io.open") as error:
            DigitPredictor(path, device="cpu")
        assert str(path) in str(error.value)
        assert not target.exists()


def test_bad_checkpoints_raise_one_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "text.ckpt").write_text("hello")
    torch.save(torch.zeros(3), tmp_path / "tensor.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "no-hparams.ckpt")
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["hyper_parameters"]["net"] = {"name": "mlp", "hidden": [64]}
    torch.save(content, tmp_path / "mismatch.ckpt")
    (tmp_path / "truncated.ckpt").write_bytes(checkpoint.read_bytes()[:5000])
    cases = {
        "missing.ckpt": "no such checkpoint file",
        ".": r"No \*-best.ckpt under",
        "empty.ckpt": "not a PyTorch",
        "text.ckpt": "not a PyTorch",
        "tensor.ckpt": "not a digitrec training checkpoint",
        "no-hparams.ckpt": "not a digitrec training checkpoint",
        "mismatch.ckpt": "cannot rebuild its network",
        "truncated.ckpt": "not a PyTorch checkpoint",
    }
    for name, message in cases.items():
        path = tmp_path / name
        with pytest.raises(CheckpointError, match=message) as error:
            DigitPredictor(path, device="cpu")
        assert str(path) in str(error.value)


# --- pictures and the command line -----------------------------------------------------------------


def test_visualise_writes_a_png(predictor: DigitPredictor, test_split, tmp_path: Path) -> None:
    digit = test_split[0][0]
    out = tmp_path / "nested" / "seen.png"
    answer = predictor.visualise(np.stack([255 - digit] * 3, axis=-1), out)
    assert answer == predictor.predict(np.stack([255 - digit] * 3, axis=-1))
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > 600 and picture.height > 200
    assert predictor.visualise(np.zeros((40, 40)), tmp_path / "blank.png")["is_digit"] is False
    with pytest.raises(DigitrecError, match="cannot write"):
        predictor.visualise(digit, tmp_path / "nested" / "seen.png" / "below-a-file.png")


@pytest.fixture
def folder(test_split, tmp_path: Path) -> Path:
    images, _ = test_split
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(255 - images[i]).save(folder / f"digit{i}.png")
    return folder


def test_cli_answers_a_folder(checkpoint: Path, folder: Path, test_split, capsys) -> None:
    _, labels = test_split
    assert predict_main([str(folder), "--checkpoint", str(checkpoint)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"{folder / f'digit{i}.png'}: {labels[i]} (confidence ")


def test_cli_takes_a_run_folder_and_says_what_a_folder_held_besides_images(
    checkpoint: Path, folder: Path, test_split, tmp_path: Path, capsys
) -> None:
    _, labels = test_split
    (folder / "notes.txt").write_text("not an image")
    (folder / "more").mkdir()
    (folder / "more" / "digit9.png").write_bytes((folder / "digit0.png").read_bytes())
    empty = tmp_path / "empty"
    empty.mkdir()
    run_folder = checkpoint.parent.parent  # the run: its newest *-best.ckpt is used
    code = predict_main([str(folder), str(empty), "--checkpoint", str(run_folder)])
    captured = capsys.readouterr()
    assert code == 1  # the empty folder is an error; the images are still answered
    lines = captured.out.splitlines()
    assert len(lines) == 3 and all(
        line.startswith(f"{folder / f'digit{i}.png'}: {labels[i]} (confidence ") for i, line in enumerate(lines)
    )
    assert (
        f"note: {folder}: skipped 2 entries that are not image files (subfolders are not searched): more/, notes.txt"
        in captured.err
    )
    assert f"error: {empty}: no image files in this folder (bmp, gif," in captured.err


def test_cli_bad_file_gets_an_error_line_and_status_1(checkpoint: Path, folder: Path, capsys) -> None:
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = predict_main([str(folder), str(folder / "missing.jpg"), "--checkpoint", str(checkpoint), "--json"])
    captured = capsys.readouterr()
    answers = json.loads(captured.out)
    assert code == 1 and len(answers) == 5
    by_name = {Path(a["image"]).name: a for a in answers}
    assert by_name["broken.png"]["error"] and by_name["missing.jpg"]["error"]
    assert all(by_name[f"digit{i}.png"]["error"] is None for i in range(3))
    assert "error: " in captured.err and "broken.png" in captured.err and "missing.jpg: no such file" in captured.err


def test_cli_visualise_and_warnings(checkpoint: Path, folder: Path, test_split, tmp_path: Path, capsys) -> None:
    images, _ = test_split
    Image.fromarray(images[5]).save(folder / "anim.gif", save_all=True, append_images=[Image.fromarray(images[6])])
    assert (
        predict_main(
            [
                str(folder / "anim.gif"),
                str(folder / "digit0.png"),
                "--checkpoint",
                str(checkpoint),
                "--visualise",
                str(tmp_path / "pics" / "out.png"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "warning: " in err
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["out-000-anim.png", "out-001-digit0.png"]
    assert f"picture: {tmp_path / 'pics' / 'out-001-digit0.png'}" in err  # says where it wrote

    # the format the extension names; numbered without a gap where an image could not be read
    (folder / "broken.png").write_bytes(b"not a png")
    assert (
        predict_main(
            [
                str(folder / "broken.png"),
                str(folder / "digit0.png"),
                str(folder / "digit1.png"),
                "--checkpoint",
                str(checkpoint),
                "--visualise",
                str(tmp_path / "jpg" / "out.jpg"),
            ]
        )
        == 1
    )
    assert sorted(p.name for p in (tmp_path / "jpg").iterdir()) == ["out-000-digit0.jpg", "out-001-digit1.jpg"]
    with Image.open(tmp_path / "jpg" / "out-000-digit0.jpg") as picture:
        assert picture.format == "JPEG"
    with pytest.raises(ConfigError, match="cannot tell the picture format from '.bmpx'"):
        DigitPredictor(checkpoint, device="cpu").visualise(folder / "digit0.png", tmp_path / "out.bmpx")


def test_cli_bad_checkpoint_and_options(folder: Path, checkpoint: Path, caplog) -> None:
    # one line through `exit_on_user_error` (to the log when logging is set up, as under pytest)
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(folder), "--checkpoint", str(folder / "none.ckpt")])
    assert exit_info.value.code == 1 and "none.ckpt: no such checkpoint file" in caplog.text
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(folder), "--checkpoint", str(checkpoint), "--threshold", "2"])
    assert exit_info.value.code == 1 and "threshold must be a number in [0, 1]" in caplog.text


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "digitrec.inference.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_cli_runs_as_a_program(checkpoint: Path, folder: Path) -> None:
    proc = run_cli(str(folder / "digit0.png"), str(folder / "x.png"), "--checkpoint", str(checkpoint))
    assert proc.returncode == 1, proc.stderr
    assert "digit0.png: " in proc.stdout and "error: " in proc.stderr and "x.png: no such file" in proc.stderr
    proc = run_cli(str(folder), "--checkpoint", str(folder / "digit0.png"))
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "digit0.png: not a PyTorch" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- latency benchmark -------------------------------------------------------------------------------


def test_latency_benchmark_runs(checkpoint: Path, capsys) -> None:
    assert latency_main(["--checkpoint", str(checkpoint), "--repeats", "3", "--batch-size", "8"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mlp |")]
    assert len(rows) == 1 and all(float(v.replace(",", "")) > 0 for v in rows[0].strip("|").split("|")[2:])


def test_startup_benchmark_times_both_commands(checkpoint: Path, capsys) -> None:
    assert latency_main(["--startup", "1", "--checkpoint", str(checkpoint)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [
        "python -c 'import torch'",
        "digitrec-predict one.png --checkpoint CKPT",
    ]
    assert rows[0].endswith("| 1.00× |") and float(rows[1].rsplit("|", 2)[1].strip(" ×")) > 0


def test_untrained_checkpoints_load_for_every_model(tmp_path: Path) -> None:
    for name in MODELS:
        predictor = DigitPredictor(untrained_checkpoint(name, tmp_path / f"{name}.ckpt"), device="cpu")
        assert predictor.model_name == name
        assert_answer(predictor.with_options(threshold=0.0).predict(np.eye(28)))


def test_rerender_command_prints_the_table(checkpoint: Path, mnist_dir: Path, capsys) -> None:
    assert rerender_main(["--checkpoint", str(checkpoint), "--count", "20", "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| re-rendered") or line.startswith("| MNIST")]
    assert len(rows) == 4 and all(line.endswith(" % |") for line in rows)
    assert "Predictions changed by the preprocessing" in out


# --- damaged digits at the user's door ------------------------------------------------------------


def _damaged(digit: np.ndarray, kind: str, rng: np.random.Generator) -> Image.Image:
    """An MNIST digit as a user's 112×112 scan (dark ink on white), then damaged."""
    from PIL import ImageDraw, ImageFilter

    if kind == "low resolution":  # a 12×12 source scaled up
        digit = np.asarray(Image.fromarray(digit).resize((12, 12), Image.Resampling.BILINEAR))
    page = Image.fromarray(255 - digit).resize((112, 112), Image.Resampling.BILINEAR)
    if kind == "noise":
        page = Image.fromarray(np.clip(np.asarray(page) + rng.normal(0, 25, (112, 112)), 0, 255).astype(np.uint8))
    elif kind == "blur":
        page = page.filter(ImageFilter.GaussianBlur(2))
    elif kind == "thick pen":
        page = page.filter(ImageFilter.MinFilter(5))
    elif kind == "thin pen":
        page = page.filter(ImageFilter.MaxFilter(3))
    elif kind == "occlusion":
        ImageDraw.Draw(page).rectangle([0, 52, 111, 59], fill=255)  # a white band across the middle
    return page


@pytest.mark.parametrize(
    "kind, at_least",
    [("noise", 0.8), ("blur", 0.8), ("thick pen", 0.8), ("thin pen", 0.8), ("low resolution", 0.8), ("occlusion", 0.7)],
)
def test_damaged_user_images_get_well_formed_sensible_answers(
    predictor: DigitPredictor, test_split, kind: str, at_least: float
) -> None:
    images, labels = test_split
    rng = np.random.default_rng(0)
    answers = predictor.predict_batch([_damaged(images[i], kind, rng) for i in range(40)])
    for answer in answers:
        assert answer["error"] is None and set(answer) == RESULT_KEYS
        if answer["digit"] is not None:
            assert_answer(answer)
    right = np.mean([a["digit"] == labels[i] for i, a in enumerate(answers)])
    assert right >= at_least, f"{kind}: {right:.0%} of 40 damaged digits recognised"


def test_every_report_corruption_as_a_user_scan_gets_a_well_formed_answer(
    predictor: DigitPredictor, test_split
) -> None:
    """The robustness report's corruptions (severity 1), drawn as 84×84 dark-on-white scans, through `predict_batch`."""
    images, labels = test_split
    digits = torch.from_numpy(images[:20]).unsqueeze(1)
    right = {}
    for name in CORRUPTIONS:
        damaged = (corrupted(digits, name, 1, seed=0)[:, 0] * 255).round().byte().numpy()
        scans = [Image.fromarray(255 - d).resize((84, 84), Image.Resampling.BILINEAR) for d in damaged]
        answers = predictor.predict_batch(scans)
        for answer in answers:
            assert answer["error"] is None and set(answer) == RESULT_KEYS
            if answer["digit"] is not None:
                assert_answer(answer)
        right[name] = np.mean([a["digit"] == labels[i] for i, a in enumerate(answers)])
    assert np.mean(list(right.values())) >= 0.8, right
