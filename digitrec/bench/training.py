"""Timing training and evaluation: `Trainer.fit` against the per-sample and plain-loop pipelines,
evaluation throughput, batched augmentation, and the cnn's training-step variants."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from digitrec.bench.baselines import PerSampleMNIST, per_sample_loaders, per_sample_transforms, plain_loop_timeline
from digitrec.bench.measure import forward_flops, median_time, segment_median
from digitrec.bench.setup import Plan, build_module, compose_config
from digitrec.bench.timeline import Timeline
from digitrec.data.augment import augment_batch
from digitrec.data.datamodule import MNISTDataModule
from digitrec.data.mnist import normalize, to_network_input, to_pixels
from digitrec.training.trainer import build_trainer


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def fit_timeline(cfg: DictConfig, compile_net: bool = False, **fit_args: Any) -> Timeline:
    """One `Trainer.fit` of a fresh module (the trainer train.py builds), timed by a `Timeline`."""
    timeline = Timeline()
    trainer = build_trainer(cfg)
    trainer.callbacks.append(timeline)
    module = build_module(cfg)
    if compile_net:
        module.net = torch.compile(module.net)
    trainer.fit(module, **fit_args)
    return timeline


@dataclass
class EpochCost:
    """Seconds per epoch extrapolated from a timeline: per-image training and validation times."""

    train_seconds_per_image: float
    val_seconds_per_image: float
    train_images: int
    val_images: int
    step_images_per_s: float

    @property
    def seconds(self) -> float:
        return self.train_seconds_per_image * self.train_images + self.val_seconds_per_image * self.val_images


def epoch_cost(timeline: Timeline, plan: Plan, datamodule: MNISTDataModule) -> EpochCost:
    batch = datamodule.hparams.batch_size
    return EpochCost(
        train_seconds_per_image=segment_median(timeline.iteration_seconds(plan.warmup_steps), plan.segment) / batch,
        val_seconds_per_image=timeline.val_seconds_per_image(),
        train_images=len(datamodule.train_set),
        val_images=len(datamodule.val_set),
        step_images_per_s=batch / segment_median(timeline.step_seconds(plan.warmup_steps), plan.segment),
    )


def _median_cost(costs: list[EpochCost]) -> EpochCost:
    return sorted(costs, key=lambda c: c.seconds)[(len(costs) - 1) // 2]


def eval_rate(cfg: DictConfig, images: torch.Tensor, plan: Plan) -> float:
    """Images/s of the module's forward pass on one evaluation batch, without gradients."""
    module = build_module(cfg).eval()
    x = to_network_input(images)
    with torch.inference_mode():
        return len(x) / median_time(lambda: module(x), warmup=1, repeats=plan.eval_repeats)


def bench_model(name: str, plan: Plan, datamodule: MNISTDataModule, peak: float, root: Path) -> dict[str, Any]:
    cfg = compose_config(name, plan, root)
    module = build_module(cfg)
    flops = forward_flops(module, torch.zeros(1, 1, 28, 28))
    fits, plains = [], []
    for i in range(plan.rounds):  # alternating: a drift in the machine's speed hits both alike
        progress(f"{name}: Trainer.fit and plain PyTorch loop, round {i + 1} of {plan.rounds}")
        fits.append(epoch_cost(fit_timeline(cfg, datamodule=datamodule), plan, datamodule))
        plains.append(
            epoch_cost(
                plain_loop_timeline(
                    build_module(cfg), cfg, datamodule, plan.warmup_steps + plan.measured_steps, plan.val_batches
                ),
                plan,
                datamodule,
            )
        )
    fit, plain = _median_cost(fits), _median_cost(plains)
    progress(f"{name}: per-sample pipeline")
    per_sample = epoch_cost(fit_timeline(cfg, **per_sample_loaders(datamodule)), plan, datamodule)
    progress(f"{name}: evaluation")
    eval_batch = datamodule.hparams.eval_batch_size
    eval_ips = eval_rate(cfg, datamodule.val_set.images[:eval_batch], plan)
    eval_ips_4x = eval_rate(cfg, datamodule.val_set.images[: 4 * eval_batch], plan)  # is the batch size a win?
    train_gflops = 3 * flops * fit.step_images_per_s / 1e9
    epoch_flops = flops * (3 * fit.train_images + fit.val_images)
    return {
        "parameters": module.num_parameters,
        "forward_mflops": flops / 1e6,
        "train_images_per_s": fit.step_images_per_s,
        "eval_images_per_s": eval_ips,
        "eval_images_per_s_4x_batch": eval_ips_4x,
        "train_gflops": train_gflops,
        "train_peak_fraction": train_gflops / peak,
        "epoch_seconds": {"trainer_fit": fit.seconds, "per_sample": per_sample.seconds, "plain_loop": plain.seconds},
        "epoch_peak_fraction": epoch_flops / fit.seconds / 1e9 / peak,
        "speedup_vs_per_sample": per_sample.seconds / fit.seconds,
        "fit_vs_plain": statistics.median(p.seconds / f.seconds for f, p in zip(fits, plains)),
        "plain_loop_train_images_per_s": plain.step_images_per_s,
        "per_sample_train_images_per_s": per_sample.step_images_per_s,
    }


def bench_augmentation(images: torch.Tensor, labels: torch.Tensor, batch: int, plan: Plan) -> dict[str, float]:
    """Images/s of the batched augmentation (as the data module applies it) and of the original per-image path."""
    batched = median_time(
        lambda: normalize(augment_batch(to_pixels(images[:batch]))), warmup=2, repeats=plan.augment_batches
    )
    dataset = PerSampleMNIST(images, labels, per_sample_transforms(True))
    per_sample = median_time(lambda: [dataset[i] for i in range(batch)], warmup=1, repeats=plan.per_sample_batches)
    return {
        "batched_images_per_s": batch / batched,
        "per_sample_images_per_s": batch / per_sample,
        "ratio": per_sample / batched,
    }


# ---- training variants: what was tried, kept or dropped ---------------------------------------------

VARIANT_MODEL = "cnn"
DEFAULT_VARIANT = "fp32, channels_last (default)"
VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {  # label: (config overrides, compile the network)
    DEFAULT_VARIANT: ((), False),
    "fp32, contiguous NCHW": (("module.channels_last=false",), False),
    "bf16-mixed autocast": (("trainer.precision=bf16-mixed",), False),
    "torch.compile (fp32, channels_last)": ((), True),
}
# Few steps: the slow variants (bf16 on a CPU without bf16 units) cost seconds per step.
VARIANT_PLAN = Plan(warmup_steps=3, measured_steps=10, segment=2)


def bench_variants(
    name: str,
    datamodule: MNISTDataModule,
    root: Path,
    plan: Plan = VARIANT_PLAN,
    variants: dict[str, tuple[tuple[str, ...], bool]] = VARIANTS,
) -> dict[str, dict[str, float]]:
    """Training images/s of one model per variant (the first is the reference), and each first step's
    seconds (where torch.compile compiles)."""
    results = {}
    for label, (overrides, compile_net) in variants.items():
        progress(f"{name}: variant {label}")
        cfg = compose_config(name, plan, root, overrides)
        timeline = fit_timeline(cfg, compile_net=compile_net, datamodule=datamodule)
        step = segment_median(timeline.step_seconds(plan.warmup_steps), plan.segment)
        results[label] = {
            "train_images_per_s": datamodule.hparams.batch_size / step,
            "first_step_seconds": timeline.step_seconds(0)[0],
        }
    reference = next(iter(results.values()))["train_images_per_s"]
    for result in results.values():
        result["vs_reference"] = result["train_images_per_s"] / reference
    return results
