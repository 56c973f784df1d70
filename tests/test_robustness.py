"""Corruptions (deterministic, in range, growing with severity), the robustness report, corruption training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from digitrec.data.corruptions import CORRUPTIONS, SEVERITIES
from digitrec.data.datamodule import MNISTDataModule
from digitrec.data.mnist import load_split, raw_dir
from digitrec.data.training_corruptions import TRAINING_ONLY, corrupt_randomly
from digitrec.errors import ConfigError
from digitrec.evaluation.figures import robustness_figure
from digitrec.evaluation.report import EvalOptions, evaluate_checkpoint
from digitrec.evaluation.robustness import corrupted, format_robustness, robustness_report


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> torch.Tensor:
    return load_split(raw_dir(mnist_dir), train=False).images[:64]


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_in_range_and_grows_with_severity(name: str, digits: torch.Tensor) -> None:
    clean = digits.float() / 255
    damage = []
    for severity in SEVERITIES:
        a = corrupted(digits, name, severity, seed=3)
        assert a.shape == clean.shape and a.dtype == torch.float32
        assert 0 <= a.min() and a.max() <= 1
        assert torch.equal(a, corrupted(digits, name, severity, seed=3))  # same seed, same images
        damage.append(float((a - clean).abs().mean()))
    # more damage at each severity (a far shift saturates this measure: 2 % slack)
    assert 0 < damage[0] < damage[1] <= damage[2] * 1.02 and damage[0] < damage[2], damage
    random_parts = name not in ("scale", "brightness", "thin_pen", "thick_pen", "low_resolution", "canny_edges")
    if random_parts:
        assert not torch.equal(corrupted(digits, name, 2, seed=3), corrupted(digits, name, 2, seed=4))


@pytest.mark.parametrize("name", list(TRAINING_ONLY))
def test_each_training_only_corruption_is_deterministic_in_range_and_grows_with_severity(
    name: str, digits: torch.Tensor
) -> None:
    clean = digits.float() / 255
    apply = TRAINING_ONLY[name].apply
    damage = []
    for severity in SEVERITIES:
        a = apply(clean, severity, torch.Generator().manual_seed(3))
        assert a.shape == clean.shape and 0 <= a.min() and a.max() <= 1
        assert torch.equal(a, apply(clean, severity, torch.Generator().manual_seed(3)))
        damage.append(float((a - clean).abs().mean()))
    assert 0 < damage[0] < damage[1] < damage[2], damage
    assert name not in CORRUPTIONS  # the report's set stays fixed


def test_binarize_is_a_one_bit_scan_that_thickens_some_strokes_and_thins_others(digits: torch.Tensor) -> None:
    clean = digits.float() / 255
    apply = TRAINING_ONLY["binarize"].apply
    assert torch.equal(apply(clean, 1, torch.Generator().manual_seed(0)), (clean > 0.5).float())
    scan = apply(clean, 3, torch.Generator().manual_seed(0))
    assert set(scan.unique().tolist()) <= {0.0, 1.0}
    ink_change = scan.sum((1, 2, 3)) - (clean > 0.5).sum((1, 2, 3))
    assert (ink_change > 0).any() and (ink_change < 0).any()


def test_training_corruption_touches_the_share_asked_for(digits: torch.Tensor) -> None:
    x = digits.float() / 255
    assert torch.equal(corrupt_randomly(x, ["impulse_noise"], p=0.0), x)
    changed = (corrupt_randomly(x, ["impulse_noise", "brightness", "inverted_patch"], p=1.0) != x).flatten(1).any(1)
    assert changed.all()
    torch.manual_seed(0)
    half = (corrupt_randomly(x.repeat(16, 1, 1, 1), ["brightness"], p=0.5) != x.repeat(16, 1, 1, 1)).flatten(1).any(1)
    assert 0.4 < half.float().mean() < 0.6


def test_unknown_training_corruption_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown corruption.*gauss_noise.*known: shot_noise"):
        MNISTDataModule(data_dir=str(tmp_path), corruptions=["shot_noise", "gauss_noise"])
    with pytest.raises(ConfigError, match=r"corruption_p must be a number in \[0, 1\]"):
        MNISTDataModule(data_dir=str(tmp_path), corruption_p=1.5)


def test_report_marks_trained_and_held_out_corruptions(digits: torch.Tensor) -> None:
    labels = torch.arange(len(digits)) % 10
    always_zero = lambda x: torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()  # noqa: E731
    report = robustness_report(always_zero, digits, labels, size=50, trained_on=["shot_noise", "fog", "outline"])
    expected = float((labels[torch.randperm(64, generator=torch.Generator().manual_seed(0))[:50]] == 0).float().mean())
    assert report["clean"] == pytest.approx(expected) and report["mean"] == pytest.approx(expected)
    assert [n for n, row in report["corruptions"].items() if row["trained_on"]] == ["shot_noise", "fog"]
    assert set(report) >= {"held_out_mean", "trained_mean", "worst", "low_resolution"}
    assert format_robustness(report).endswith("also trained on, not rows of this report: outline")
    examples = {name: torch.zeros(len(SEVERITIES), 28, 28) for name in CORRUPTIONS}
    figure = robustness_figure(report, examples, torch.zeros(28, 28), title="always zero")
    titles = [ax.get_title() for ax in figure.get_axes()]
    assert any(t.endswith("also trained on, not rows here: outline") for t in titles), titles
    with pytest.raises(ValueError, match=r"robustness_images must be an integer in \[1, 64\]"):
        robustness_report(always_zero, digits, labels, size=65)


def test_evaluation_writes_the_robustness_report(trained_run: Path, mnist_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "mlp-best.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "mlp-best.ckpt", ckpt)
    options = EvalOptions(data_dir=str(mnist_dir), robustness=True, robustness_images=300)
    report = evaluate_checkpoint(ckpt, tmp_path / "reports", options)
    written = json.loads((tmp_path / "reports" / "robustness.json").read_text())
    assert list(written["corruptions"]) == list(CORRUPTIONS) and written["images"] == 300
    assert all(len(row["severity"]) == len(SEVERITIES) for row in written["corruptions"].values())
    assert written["trained_on"] == [] and "held_out_mean" in written  # nothing trained on: all held out
    assert report["robustness"]["mean"] == written["mean"] < written["clean"]
    assert written["worst"]["accuracy"] == min(r["accuracy"] for r in written["corruptions"].values())
    assert (tmp_path / "reports" / "robustness.png").stat().st_size > 10_000
    assert "low_resolution" in (tmp_path / "reports" / "robustness.txt").read_text()


def test_training_corruptions_are_kept_as_a_plain_list(tmp_path: Path) -> None:
    """Hydra passes a ListConfig; a checkpoint must hold only what `torch.load(weights_only=True)` reads."""
    from omegaconf import OmegaConf

    module = MNISTDataModule(data_dir=str(tmp_path), corruptions=OmegaConf.create(["shot_noise", "fog"]))
    assert type(module.hparams["corruptions"]) is list
    path = tmp_path / "hparams.pt"
    torch.save(dict(module.hparams), path)
    assert torch.load(path, weights_only=True)["corruptions"] == ["shot_noise", "fog"]


def test_the_last_clean_epochs_train_on_undamaged_digits(
    digits: torch.Tensor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batch = (digits, torch.arange(len(digits)) % 10)

    def training_batch(dm: MNISTDataModule, epoch: int, max_epochs: int = 5) -> torch.Tensor:
        dm.trainer = SimpleNamespace(training=True, current_epoch=epoch, max_epochs=max_epochs)
        torch.manual_seed(0)
        return dm.on_after_batch_transfer(batch, 0)[0]

    plain = MNISTDataModule(data_dir=str(tmp_path))
    tail = MNISTDataModule(data_dir=str(tmp_path), corruptions=["brightness"], corruption_p=1.0, clean_epochs=2)
    assert not torch.equal(training_batch(tail, 2), training_batch(plain, 2))
    with caplog.at_level("INFO", logger="digitrec.data.datamodule"):
        assert torch.equal(training_batch(tail, 3), training_batch(plain, 3))
    assert "Epoch 3: clean digits only from here to the end (data.clean_epochs=2)" in caplog.text
    assert torch.equal(training_batch(tail, 4), training_batch(plain, 4))
    with pytest.raises(ConfigError, match=r"clean_epochs=2 needs trainer.max_epochs above it \(got -1\)"):
        training_batch(tail, 0, max_epochs=-1)
    for bad in (-1, "2", None):
        with pytest.raises(ConfigError, match=f"clean_epochs must be a non-negative integer, got {bad!r}"):
            MNISTDataModule(data_dir=str(tmp_path), clean_epochs=bad)
