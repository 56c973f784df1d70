"""One-command CPU benchmark: `python -m digitrec.bench [--quick] [--models mlp,cnn] [--json out.json]`.

Measures, in one run, per model: forward FLOPs, training and evaluation throughput, achieved
GFLOP/s against a measured fp32 matmul peak, and the seconds an epoch costs through
`Trainer.fit`, through a seed-style per-sample torchvision pipeline and through a plain PyTorch
loop; plus batched versus per-sample augmentation. In full mode, when the cnn is benchmarked, it
also times the cnn's training step in the variants a user might try (NCHW instead of
channels_last, bf16 autocast, torch.compile). Every time is a median after warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from digitrec.augment import augment_batch
from digitrec.baselines import PerSampleMNIST, plain_loop_timeline, seed_loaders, seed_transforms
from digitrec.data import MNISTDataModule
from digitrec.mnist import REPO_ROOT, normalize
from digitrec.errors import ConfigError, DataError, exit_on_user_error
from digitrec.latency import cpu_model
from digitrec.measure import Timeline, forward_flops, matmul_peak, median_time, segment_median
from digitrec.models import MODELS
from digitrec.module import DigitClassifier
from digitrec.trainer import build_trainer, choose_precision

MATMUL_SIZE = 2048


@dataclass(frozen=True)
class Plan:
    """How much to measure: warm-up and measured steps, repeats for each median."""

    warmup_steps: int
    measured_steps: int
    segment: int  # steps per timed segment; rates are medians over segments
    val_batches: int  # validation batches per fit, the first one a warm-up
    eval_repeats: int
    matmul_repeats: int
    augment_batches: int
    per_sample_batches: int
    rounds: int = 1  # Trainer.fit and the plain loop alternate this many times; medians are reported


FULL = Plan(warmup_steps=5, measured_steps=50, segment=5, val_batches=4, eval_repeats=7,
            matmul_repeats=10, augment_batches=30, per_sample_batches=8, rounds=3)
QUICK = Plan(warmup_steps=2, measured_steps=6, segment=2, val_batches=2, eval_repeats=3,
             matmul_repeats=3, augment_batches=8, per_sample_batches=2)


# ---- data ------------------------------------------------------------------------------------

def _write_idx(path: Path, tensor: torch.Tensor) -> None:
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in tensor.shape)
    path.write_bytes(header + tensor.numpy().tobytes())


def write_random_mnist(folder: Path) -> Path:
    """Random uint8 images and labels with MNIST's shapes, as IDX files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", torch.randint(0, 10, (n,), dtype=torch.uint8))
    return folder


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_data(tmp: Path) -> tuple[MNISTDataModule, str]:
    """The real MNIST when it is on disk (never downloaded here), else random data of the same shapes."""
    datamodule = MNISTDataModule(download=False)
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
        return datamodule, f"real MNIST from {datamodule.raw_dir}"
    except DataError:
        missing_in = datamodule.raw_dir
    datamodule = MNISTDataModule(data_dir=str(write_random_mnist(tmp / "random")), download=False)
    with quiet_logger("digitrec.mnist"):  # it warns that the files are not the canonical ones
        datamodule.setup("fit")
    return datamodule, f"RANDOM uint8 data with MNIST's shapes (no MNIST in {missing_in}; set DIGITREC_DATA_DIR)"


# ---- one model ---------------------------------------------------------------------------------

def compose_config(model: str, plan: Plan, root: Path, extra: Sequence[str] = ()) -> DictConfig:
    """The training config train.py would use, with logging, checkpoints and progress bar off.

    `extra` overrides (`key=value`) replace the benchmark's own for the same key.
    """
    conf_dir = REPO_ROOT / "conf"
    if not conf_dir.is_dir():
        raise ConfigError(f"No Hydra configs in {conf_dir}: run the benchmark from a clone of the repository.")
    settings = {"model": model, "~callbacks": None, "~logger": None, "trainer.accelerator": "cpu",
                "trainer.devices": 1, "trainer.precision": "32-true", "trainer.max_epochs": 1,
                "trainer.limit_train_batches": plan.warmup_steps + plan.measured_steps,
                "trainer.limit_val_batches": plan.val_batches, "trainer.num_sanity_val_steps": 0,
                "trainer.enable_checkpointing": "false", "trainer.enable_progress_bar": "false",
                "trainer.enable_model_summary": "false", "trainer.default_root_dir": root}
    settings |= dict(override.split("=", 1) for override in extra)
    overrides = [key if value is None else f"{key}={value}" for key, value in settings.items()]
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir), job_name="bench"):
            return compose("train", overrides=overrides)
    except ConfigCompositionException as e:
        raise ConfigError(f"Cannot compose the training config for model {model!r} from {conf_dir}: {e}") from None


def build_module(cfg: DictConfig) -> DigitClassifier:
    return DigitClassifier(net=cfg.model, optimizer=cfg.optimizer, scheduler=cfg.scheduler,
                           label_smoothing=cfg.label_smoothing, channels_last=cfg.channels_last)


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
    x = normalize(images.float().div(255))
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
        plains.append(epoch_cost(plain_loop_timeline(build_module(cfg), cfg, datamodule,
                                                     plan.warmup_steps + plan.measured_steps, plan.val_batches),
                                 plan, datamodule))
    fit, plain = _median_cost(fits), _median_cost(plains)
    progress(f"{name}: seed-style per-sample pipeline")
    seed = epoch_cost(fit_timeline(cfg, **seed_loaders(datamodule)), plan, datamodule)
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
        "epoch_seconds": {"trainer_fit": fit.seconds, "seed_style": seed.seconds, "plain_loop": plain.seconds},
        "epoch_peak_fraction": epoch_flops / fit.seconds / 1e9 / peak,
        "speedup_vs_seed": seed.seconds / fit.seconds,
        "fit_vs_plain": statistics.median(p.seconds / f.seconds for f, p in zip(fits, plains)),
        "plain_loop_train_images_per_s": plain.step_images_per_s,
        "seed_style_train_images_per_s": seed.step_images_per_s,
    }


def bench_augmentation(images: torch.Tensor, labels: torch.Tensor, batch: int, plan: Plan) -> dict[str, float]:
    """Images/s of the batched augmentation (as the data module applies it) and of the seed's per-image path."""
    batched = median_time(lambda: normalize(augment_batch(images[:batch].float().div(255))),
                          warmup=2, repeats=plan.augment_batches)
    dataset = PerSampleMNIST(images, labels, seed_transforms(True))
    per_sample = median_time(lambda: [dataset[i] for i in range(batch)], warmup=1, repeats=plan.per_sample_batches)
    return {"batched_images_per_s": batch / batched, "per_sample_images_per_s": batch / per_sample,
            "ratio": per_sample / batched}


# ---- training variants: what was tried, kept or dropped ---------------------------------------------

VARIANT_MODEL = "cnn"
DEFAULT_VARIANT = "fp32, channels_last (default)"
VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {  # label: (config overrides, compile the network)
    DEFAULT_VARIANT: ((), False),
    "fp32, contiguous NCHW": (("channels_last=false",), False),
    "bf16-mixed autocast": (("trainer.precision=bf16-mixed",), False),
    "torch.compile (fp32, channels_last)": ((), True),
}
# Few steps: the slow variants (bf16 on a CPU without bf16 units) cost seconds per step.
VARIANT_PLAN = Plan(warmup_steps=3, measured_steps=10, segment=2, val_batches=0, eval_repeats=0,
                    matmul_repeats=0, augment_batches=0, per_sample_batches=0)


def bench_variants(name: str, datamodule: MNISTDataModule, root: Path, plan: Plan = VARIANT_PLAN,
                   variants: dict[str, tuple[tuple[str, ...], bool]] = VARIANTS) -> dict[str, dict[str, float]]:
    """Training images/s of one model per variant (the first is the reference), and each first step's
    seconds (where torch.compile compiles)."""
    results = {}
    for label, (overrides, compile_net) in variants.items():
        progress(f"{name}: variant {label}")
        cfg = compose_config(name, plan, root, overrides)
        timeline = fit_timeline(cfg, compile_net=compile_net, datamodule=datamodule)
        step = segment_median(timeline.step_seconds(plan.warmup_steps), plan.segment)
        results[label] = {"train_images_per_s": datamodule.hparams.batch_size / step,
                          "first_step_seconds": timeline.step_seconds(0)[0]}
    reference = next(iter(results.values()))["train_images_per_s"]
    for result in results.values():
        result["vs_reference"] = result["train_images_per_s"] / reference
    return results


def variants_table(variants: dict[str, dict[str, float]]) -> str:
    rows = [[label, f"{r['train_images_per_s']:,.0f}", f"{r['vs_reference']:.2f}×", f"{r['first_step_seconds']:.1f}"]
            for label, r in variants.items()]
    return format_table(("variant", "train img/s", "vs first", "first step s"), rows)


# ---- report --------------------------------------------------------------------------------------

COLUMNS = ("model", "params", "fwd MFLOP/img", "train img/s", "eval img/s", "train GFLOP/s", "% peak",
           "epoch s fit", "epoch % peak", "epoch s seed-style", "fit vs seed", "epoch s plain", "fit vs plain")


def table_row(name: str, r: dict[str, Any]) -> list[str]:
    epoch = r["epoch_seconds"]
    return [name, f"{r['parameters']:,}", f"{r['forward_mflops']:.1f}", f"{r['train_images_per_s']:,.0f}",
            f"{r['eval_images_per_s']:,.0f}", f"{r['train_gflops']:.1f}", f"{100 * r['train_peak_fraction']:.0f}",
            f"{epoch['trainer_fit']:.1f}", f"{100 * r['epoch_peak_fraction']:.0f}", f"{epoch['seed_style']:.1f}",
            f"{r['speedup_vs_seed']:.2f}×", f"{epoch['plain_loop']:.1f}", f"{r['fit_vs_plain']:.2f}×"]


def format_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, columns padded to their widest cell."""
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {list(row)} has {len(row)} cells for {len(columns)} columns")
    widths = [max(len(str(c)) for c in col) for col in zip(columns, *rows)]
    lines = [columns, ["-" * w for w in widths], *rows]
    return "\n".join("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in lines)


def report(result: dict[str, Any]) -> str:
    env, aug, plan = result["environment"], result["augmentation"], result["plan"]
    steps, batch = plan["measured_steps"], result["batch_size"]
    lines = [
        f"digitrec benchmark ({env['mode']}): torch {env['torch']}, threads: {env['threads']}, CPU: {env['cpu']}, fp32",
        f"data: {env['data']}",
        f"precision: every table in fp32; `trainer.precision=auto` trains in {env['auto_precision']} on this CPU"
        + (" (see the variants)" if env["auto_precision"] != "32-true" else ""),
        *load_warning(env["load_average_at_start"]),
        f"fp32 matmul peak: {result['matmul_gflops']:.1f} GFLOP/s ({MATMUL_SIZE}×{MATMUL_SIZE} sgemm, median of {plan['matmul_repeats']})",
        "",
        format_table(COLUMNS, [table_row(name, r) for name, r in result["models"].items()]),
        "",
        f"augmentation: batched augment_batch {aug['batched_images_per_s']:,.0f} img/s vs the seed's per-sample "
        f"torchvision v2 {aug['per_sample_images_per_s']:,.0f} img/s: {aug['ratio']:.1f}× faster "
        "(both from uint8 to normalised float; per-sample includes the PIL image torchvision's MNIST makes)",
        "",
        "- FLOPs: multiply-adds of Conv2d/Linear layers counted with forward hooks, 2 FLOPs each (bias, BN, ReLU,",
        "  pooling not counted); a training step ≈ 3× forward; % peak is of the matmul peak above.",
        f"- train img/s: batch {batch}, forward + backward + AdamW + OneCycle (+ gradient clipping) timed inside",
        f"  Trainer.fit: median of {steps // plan['segment']} segments of {plan['segment']} steps after {plan['warmup_steps']} warm-up steps.",
        f"- eval img/s: batch {result['eval_batch_size']}, no grad: median of {plan['eval_repeats']} after 1 warm-up; "
        f"against batch {4 * result['eval_batch_size']}: "
        + ", ".join(f"{name} {r['eval_images_per_s'] / r['eval_images_per_s_4x_batch']:.2f}×"
                    for name, r in result["models"].items()) + ".",
        f"- epoch s: training with augmentation + validation, extrapolated from {steps} training batches (after",
        f"  {plan['warmup_steps']} warm-up) and {plan['val_batches'] - 1} validation batch(es) (after 1 warm-up) "
        f"to {result['train_images']:,} + {result['val_images']:,} images.",
        "  fit: Trainer.fit with MNISTDataModule (batched augmentation on the batch's device);",
        "  seed-style: per-sample PIL + torchvision v2 transforms in a DataLoader (num_workers=0), same Trainer.fit;",
        "  plain: a plain PyTorch loop over the same in-memory tensors with batched augmentation.",
        f"  fit and plain alternate {plan['rounds']} time(s): their median epoch, and the median of the per-round ratios.",
        "- fit vs seed / fit vs plain: the other pipeline's epoch time over Trainer.fit's (> 1: Trainer.fit is faster).",
    ]
    if result.get("variants"):
        vplan = result["variant_plan"]
        lines += ["", f"{result['variant_model']} training variants (Trainer.fit, batch {batch}, median of "
                      f"{vplan['measured_steps'] // vplan['segment']} segments of {vplan['segment']} steps after "
                      f"{vplan['warmup_steps']} warm-up steps; the first step includes compilation):", "",
                  variants_table(result["variants"])]
    return "\n".join(lines)


def load_warning(load: float | None) -> list[str]:
    """A note when other processes were already busy: shared cores make every number here low."""
    if load is None or load < 0.5:
        return []
    return [f"note: load average was {load:.1f} at start (other processes share the {os.cpu_count()} cores): "
            "rates are lower and noisier than on a quiet machine (--threads 1 suffers less from sharing)."]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---- command line ------------------------------------------------------------------------------

def parse_models(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ConfigError(f"--models {text!r}: unknown model(s) {', '.join(unknown) or '(none given)'}; "
                          f"valid models: {', '.join(MODELS)}.")
    return names


def run(models: list[str], quick: bool) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="digitrec-bench-") as tmp:
        progress("loading data")
        datamodule, data = load_data(Path(tmp))
        progress("matmul peak")
        peak = matmul_peak(MATMUL_SIZE, plan.matmul_repeats)
        progress("augmentation")
        train = datamodule.train_set
        augmentation = bench_augmentation(train.images, train.labels, datamodule.hparams.batch_size, plan)
        results = {name: bench_model(name, plan, datamodule, peak, Path(tmp)) for name in models}
        variants = bench_variants(VARIANT_MODEL, datamodule, Path(tmp)) if VARIANT_MODEL in models and not quick else {}
    return {
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
                        "mode": "quick" if quick else "full", "data": data, "device": "cpu", "precision": "fp32",
                        "auto_precision": choose_precision("auto", "cpu")[0],
                        "load_average_at_start": load},
        "plan": asdict(plan),
        "batch_size": datamodule.hparams.batch_size,
        "eval_batch_size": datamodule.hparams.eval_batch_size,
        "train_images": len(train),
        "val_images": len(datamodule.val_set),
        "matmul_gflops": peak,
        "augmentation": augmentation,
        "models": results,
        "variant_model": VARIANT_MODEL,
        "variant_plan": asdict(VARIANT_PLAN),
        "variants": variants,
    }


def silence_lightning() -> None:
    """Lightning's start-up notes and data-loader hints are not results; keep the output to the table."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\.")
    warnings.filterwarnings("ignore", message=r".*(does not have many workers|smaller than the logging interval).*")


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m digitrec.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer steps and repeats; mlp and cnn only; no cnn training variants (under a minute)")
    parser.add_argument("--models", help=f"comma-separated, from: {', '.join(MODELS)} (default: all; mlp,cnn with --quick)")
    parser.add_argument("--json", type=Path, default=Path("outputs/bench.json"), help="where to write the results (default: %(default)s)")
    parser.add_argument("--threads", type=int,
                        help=f"torch intra-op threads (default: torch's choice, here {torch.get_num_threads()})")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads}: give a positive number of threads.")
        torch.set_num_threads(args.threads)
    models = parse_models(args.models or ("mlp,cnn" if args.quick else ",".join(MODELS)))
    try:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--json {args.json}: cannot create its folder ({e}); give a writable path.") from None
    if args.json.is_dir() or not os.access(args.json.parent, os.W_OK):
        raise ConfigError(f"--json {args.json}: not a writable file path; give a writable path.")
    silence_lightning()
    result = run(models, args.quick)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
