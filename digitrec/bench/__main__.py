"""One-command CPU benchmark: `python -m digitrec.bench [--quick] [--models mlp,cnn] [--json out.json]`.

Measures, in one run, per model: forward FLOPs, training and evaluation throughput, achieved
GFLOP/s against a measured fp32 matmul peak, and the seconds an epoch costs through
`Trainer.fit`, through a per-sample torchvision pipeline and through a plain PyTorch
loop; plus batched versus per-sample augmentation. In full mode, when the cnn is benchmarked, it
also times the cnn's training step in the variants a user might try (NCHW instead of
channels_last, bf16 autocast, torch.compile). Every time is a median after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from digitrec.bench.machine import cpu_model
from digitrec.bench.measure import matmul_peak
from digitrec.bench.report import report
from digitrec.bench.setup import FULL, MATMUL_SIZE, QUICK, load_data, silence_lightning
from digitrec.bench.training import (
    VARIANT_MODEL,
    VARIANT_PLAN,
    bench_augmentation,
    bench_model,
    bench_variants,
    progress,
)
from digitrec.errors import ConfigError, exit_on_user_error
from digitrec.models import MODELS
from digitrec.training.precision import choose_precision


def parse_models(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise ConfigError(
            f"--models {text!r}: unknown model(s) {', '.join(unknown) or '(none given)'}; "
            f"valid models: {', '.join(MODELS)}."
        )
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
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": cpu_model(),
            "mode": "quick" if quick else "full",
            "data": data,
            "device": "cpu",
            "precision": "fp32",
            "auto_precision": choose_precision("auto", "cpu")[0],
            "load_average_at_start": load,
        },
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


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m digitrec.bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer steps and repeats; mlp and cnn only; no cnn training variants (under a minute)",
    )
    parser.add_argument(
        "--models", help=f"comma-separated, from: {', '.join(MODELS)} (default: all; mlp,cnn with --quick)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("outputs/bench.json"),
        help="where to write the results (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, help=f"torch intra-op threads (default: torch's choice, here {torch.get_num_threads()})"
    )
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
