"""The benchmark's helpers on tiny inputs, one model through all three pipelines, and `--quick` as a smoke test.

Nothing here asserts a speed: timings only have to exist and be positive.
"""

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from digitrec.bench import measure, report, setup, timeline, training
from digitrec.bench.__main__ import main as bench_main
from digitrec.bench.__main__ import parse_models
from digitrec.bench.baselines import PerSampleMNIST, per_sample_transforms, plain_loop_timeline
from digitrec.data.datamodule import MNISTDataModule
from digitrec.errors import ConfigError
from digitrec.models import MODELS, build_model, count_parameters
from digitrec.training.precision import cpu_has_bf16

TINY = setup.Plan(
    warmup_steps=1,
    measured_steps=2,
    segment=1,
    val_batches=2,
    eval_repeats=1,
    matmul_repeats=1,
    augment_batches=1,
    per_sample_batches=1,
)


@pytest.fixture
def restore_determinism() -> Iterator[None]:
    """The project's Trainer turns on deterministic algorithms process-wide; undo it after the test."""
    before, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(before, warn_only=warn_only)


@pytest.fixture
def tiny_data(fake_mnist: Path) -> MNISTDataModule:
    datamodule = MNISTDataModule(data_dir=str(fake_mnist), batch_size=16, eval_batch_size=8, download=False)
    datamodule.setup("fit")
    return datamodule


def test_flops_of_a_linear_layer_are_two_per_multiply_add() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 7))
    assert measure.forward_flops(net, torch.zeros(1, 4, 5)) == 2 * 20 * 7


@pytest.mark.parametrize(("stride", "groups"), [(1, 1), (2, 1), (1, 4)])
def test_flops_of_a_conv_layer_match_the_formula(stride: int, groups: int) -> None:
    conv = nn.Conv2d(8, 12, kernel_size=(3, 5), stride=stride, padding=2, groups=groups)
    h_out = (10 + 2 * 2 - 3) // stride + 1
    w_out = (10 + 2 * 2 - 5) // stride + 1
    expected = 2 * (12 * h_out * w_out) * (8 // groups * 3 * 5)
    assert measure.forward_flops(conv, torch.zeros(1, 8, 10, 10)) == expected


def test_flops_are_per_image_and_leave_the_network_as_found() -> None:
    net = build_model("mlp").train()
    one, many = (
        measure.forward_flops(net, torch.zeros(1, 1, 28, 28)),
        measure.forward_flops(net, torch.zeros(6, 1, 28, 28)),
    )
    assert one == many
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_flops_of_each_model_agree_with_torch_flop_counter(name: str) -> None:
    net = build_model(name).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 1, 28, 28))
    assert measure.forward_flops(net, torch.zeros(1, 1, 28, 28)) == counter.get_total_flops()


def test_segment_median_takes_the_median_of_segment_means() -> None:
    assert measure.segment_median([1, 2, 3, 100, 5, 6, 7, 8, 9], 3) == pytest.approx(8.0)  # means 2, 37, 8
    assert measure.segment_median([1, 2, 3, 4, 50], 2) == pytest.approx(2.5)  # the incomplete segment is dropped
    assert measure.segment_median([1.0, 3.0], 5) == pytest.approx(2.0)  # fewer than a segment: all of them
    with pytest.raises(ValueError):
        measure.segment_median([], 2)


def test_matmul_peak_is_a_positive_rate() -> None:
    assert measure.matmul_peak(64, repeats=2) > 0


def test_timeline_splits_steps_iterations_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(
        [
            0.0,
            1.0,  # step 0 (warm-up)
            3.0,
            4.0,  # step 1: 2 s of data, 1 s of step
            4.5,
            6.5,  # step 2
            7.0,  # validation starts
            9.0,
            10.0,
            10.5,
        ]
    )  # three validation batches of 4, 4 and 2 images
    monkeypatch.setattr(timeline.time, "perf_counter", lambda: next(clock))
    tl = timeline.Timeline()
    for _ in range(3):
        tl.step_started()
        tl.step_ended()
    tl.val_started()
    for size in (4, 4, 2):
        tl.val_batch_ended(size)
    assert tl.step_seconds(warmup=1) == [1.0, 2.0]
    assert tl.iteration_seconds(warmup=1) == [3.0, 2.5]
    assert tl.val_seconds_per_image() == pytest.approx(0.25)  # median of 1/4 and 0.5/2, first batch skipped


def test_format_table_pads_columns_and_rejects_ragged_rows() -> None:
    table = report.format_table(("a", "long header"), [["wide cell", "1"], ["x", "22"]])
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["a", "long header"]
    assert set(lines[1].replace("|", "").replace(" ", "")) == {"-"}
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        report.format_table(("a", "b"), [["1", "2", "3"]])


def test_parse_models_names_the_valid_ones() -> None:
    assert parse_models("mlp, cnn") == ["mlp", "cnn"]
    with pytest.raises(ConfigError, match=f"unknown model.*vgg.*valid models: {', '.join(MODELS)}"):
        parse_models("mlp,vgg")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "vgg"], "valid models"),
        (["--threads", "0"], "positive number of threads"),
        (["--json", "."], "not a writable file path"),
    ],
)
def test_bad_arguments_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bench_main.__wrapped__([*argv, "--quick"])  # the undecorated entry point


def test_a_bad_argument_ends_the_command_with_one_error_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "digitrec.bench", "--quick", "--models", "mlp,vgg"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: --models 'mlp,vgg': unknown model(s) vgg; valid models: {', '.join(MODELS)}."
    ]


def test_per_sample_items_are_normalised_images(tiny_data: MNISTDataModule) -> None:
    train = tiny_data.train_set
    dataset = PerSampleMNIST(train.images, train.labels, per_sample_transforms(train=False))
    x, y = dataset[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == int(train.labels[0])
    assert x.min() < 0  # background pixels are below the mean after normalisation
    torch.manual_seed(0)
    warped = PerSampleMNIST(train.images, train.labels, per_sample_transforms(train=True))
    assert not torch.equal(
        torch.stack([warped[i][0] for i in range(8)]), torch.stack([dataset[i][0] for i in range(8)])
    )


def test_plain_loop_records_every_step_and_validation_batch(tiny_data: MNISTDataModule, tmp_path: Path) -> None:
    cfg = setup.compose_config("mlp", TINY, tmp_path)
    timeline = plain_loop_timeline(setup.build_module(cfg), cfg, tiny_data, steps=3, val_batches=2)
    assert len(timeline.step_starts) == len(timeline.step_ends) == 3
    assert timeline.val_sizes == [8, 8]


def test_one_model_through_all_pipelines(tiny_data: MNISTDataModule, tmp_path: Path, restore_determinism: None) -> None:
    result = training.bench_model("cnn", TINY, tiny_data, peak=50.0, root=tmp_path)
    assert result["parameters"] == count_parameters(build_model("cnn"))
    assert set(result["epoch_seconds"]) == {"trainer_fit", "per_sample", "plain_loop"}
    numbers = [v for v in result.values() if isinstance(v, float)] + list(result["epoch_seconds"].values())
    assert all(math.isfinite(v) and v > 0 for v in numbers)
    assert result["train_gflops"] == pytest.approx(
        3 * result["forward_mflops"] * 1e6 * result["train_images_per_s"] / 1e9
    )
    assert len(report.table_row("cnn", result)) == len(report.COLUMNS)
    assert "eval_images_per_s_4x_batch" in result


def test_missing_mnist_falls_back_to_random_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITREC_DATA_DIR", str(tmp_path / "empty"))
    datamodule, description = setup.load_data(tmp_path)
    assert description.startswith("RANDOM") and str(tmp_path / "empty") in description
    assert len(datamodule.train_set) + len(datamodule.val_set) == 60_000 and len(datamodule.test_set) == 10_000
    assert datamodule.train_set.images.shape[1:] == (1, 28, 28) and datamodule.train_set.images.dtype == torch.uint8
    assert not (tmp_path / "empty").exists()  # nothing was downloaded


def test_quick_mode_prints_the_table_and_writes_json(tmp_path: Path, mnist_dir: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "DIGITREC_DATA_DIR": str(mnist_dir)}
    # one thread and the mlp alone keep this well under a minute on a busy 2-core machine;
    # the conv path through the same code is covered by test_one_model_through_all_pipelines
    proc = subprocess.run(
        [sys.executable, "-m", "digitrec.bench", "--quick", "--models", "mlp", "--threads", "1", "--json", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("digitrec benchmark (quick)") and "threads: 1" in lines[0]
    assert lines[1].startswith("data: real MNIST")
    auto = "bf16-mixed" if cpu_has_bf16() else "32-true"  # the tables stay fp32 whatever auto picks
    assert lines[2].startswith(f"precision: every table in fp32; `trainer.precision=auto` trains in {auto} on this CPU")
    header = next(line for line in lines if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(report.COLUMNS)
    rows = [line for line in lines if line.startswith("| mlp")]
    assert len(rows) == 1 and len(rows[0].strip("|").split("|")) == len(report.COLUMNS)
    assert any(line.startswith("augmentation: batched") for line in lines)
    assert any(re.match(r"- eval img/s: batch 256, .* against batch 1024: mlp \d+\.\d\d×\.$", line) for line in lines)

    result = json.loads(out.read_text())
    assert {
        "environment",
        "plan",
        "matmul_gflops",
        "augmentation",
        "models",
        "batch_size",
        "eval_batch_size",
        "train_images",
        "val_images",
    } <= set(result)
    assert set(result["models"]) == {"mlp"}
    assert {
        "parameters",
        "forward_mflops",
        "train_images_per_s",
        "eval_images_per_s",
        "train_gflops",
        "train_peak_fraction",
        "epoch_seconds",
        "epoch_peak_fraction",
        "speedup_vs_per_sample",
        "fit_vs_plain",
    } <= set(result["models"]["mlp"])
    assert {"batched_images_per_s", "per_sample_images_per_s", "ratio"} <= set(result["augmentation"])
    assert result["environment"]["threads"] == 1 and result["environment"]["mode"] == "quick"
    assert result["environment"]["auto_precision"] == auto


def test_training_variants_each_get_a_rate_against_the_first(
    tiny_data: MNISTDataModule, tmp_path: Path, restore_determinism: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[nn.Module] = []  # a real torch.compile costs ~30 s here: record the call instead
    monkeypatch.setattr(training.torch, "compile", lambda net: compiled.append(net) or net)
    variants = {"default": ((), False), "bf16": (("trainer.precision=bf16-mixed",), False), "compiled": ((), True)}
    result = training.bench_variants("mlp", tiny_data, tmp_path, plan=TINY, variants=variants)
    assert len(compiled) == 1 and isinstance(compiled[0], type(build_model("mlp")))
    assert list(result) == ["default", "bf16", "compiled"]
    assert result["default"]["vs_reference"] == 1.0
    for r in result.values():
        assert r["train_images_per_s"] > 0 and r["first_step_seconds"] > 0
        assert r["vs_reference"] == pytest.approx(r["train_images_per_s"] / result["default"]["train_images_per_s"])
    table = report.variants_table(result).splitlines()
    assert len(table) == 2 + len(variants) and table[2].startswith("| default")


def test_extra_overrides_replace_the_benchmarks_own(tmp_path: Path) -> None:
    cfg = setup.compose_config("cnn", TINY, tmp_path, ["trainer.limit_val_batches=0", "module.channels_last=false"])
    assert cfg.trainer.limit_val_batches == 0 and cfg.module.channels_last is False
    assert cfg.trainer.precision == "32-true"  # fp32 tables on every CPU, against the fp32 matmul peak
    assert (
        setup.compose_config("cnn", TINY, tmp_path, ["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"
    )
    assert cfg.trainer.limit_train_batches == TINY.warmup_steps + TINY.measured_steps
