"""CPU latency of the predictor: `python -m digitrec.bench.latency [--checkpoint CKPT ...] [--repeats 200]`.

For each checkpoint (or, without one, each registered model with untrained weights: the speed
is the same) it prints a markdown table row: single-image latency p50 / p95 of
`DigitPredictor.predict` on a 300×300 PNG file of a dark digit on light paper (reading,
preprocessing and the network included), the preprocessing's share of it, and the network's
throughput on batches of normalised 28×28 images.

`--startup N` instead times whole processes, N runs each, alternating: `python -c "import torch"`
against `digitrec-predict` answering for one image (start-up, imports, checkpoint, answer).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from digitrec.bench.machine import cpu_model
from digitrec.bench.measure import timings
from digitrec.data.mnist import IMAGE_SIZE
from digitrec.errors import ConfigError, exit_on_user_error
from digitrec.inference.predictor import DigitPredictor
from digitrec.models import MODELS, build_model, count_parameters


def user_like_digit(path: Path, side: int = 300, seed: int = 0) -> Path:
    """A '7' drawn in dark ink on light, slightly noisy paper, saved as PNG."""
    image = Image.new("L", (side, side), 235)
    ImageDraw.Draw(image).line(
        [(0.25 * side, 0.2 * side), (0.75 * side, 0.2 * side), (0.4 * side, 0.85 * side)],
        fill=30,
        width=max(2, side // 15),
        joint="curve",
    )
    noise = np.random.default_rng(seed).normal(0, 8, (side, side))
    Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8)).save(path)
    return path


def untrained_checkpoint(name: str, path: Path) -> Path:
    """A checkpoint in train.py's layout holding freshly initialised weights of a registered model."""
    net = build_model(name)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"net": {"name": name}}}, path)
    return path


def measure(predictor: DigitPredictor, image: Path, repeats: int, batch_size: int) -> dict[str, float]:
    """Latency percentiles (ms) and batch throughput (images/s) of one predictor on the CPU."""
    warmup = max(1, repeats // 10)
    single = np.array(timings(lambda: predictor.predict(image), repeats, warmup))
    prepare = np.array(timings(lambda: predictor.prepare(image), repeats, warmup))
    batch = torch.randn(batch_size, 1, IMAGE_SIZE, IMAGE_SIZE)
    batches = timings(lambda: predictor.probabilities(batch), max(3, repeats // 20), 1)
    return {
        "p50_ms": 1000 * float(np.percentile(single, 50)),
        "p95_ms": 1000 * float(np.percentile(single, 95)),
        "preprocess_p50_ms": 1000 * float(np.percentile(prepare, 50)),
        "batch_images_per_s": batch_size / float(np.median(batches)),
    }


def startup_seconds(checkpoint: Path, image: Path, runs: int) -> dict[str, list[float]]:
    """Wall times of whole processes: importing torch, and `digitrec-predict` on one image; alternated."""
    commands = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "digitrec-predict one.png --checkpoint CKPT": [
            sys.executable,
            "-m",
            "digitrec.inference.cli",
            str(image),
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    return times


def _print_startup(checkpoint: Path, image: Path, runs: int) -> None:
    times = startup_seconds(checkpoint, image, runs)
    base = statistics.median(next(iter(times.values())))
    print(f"| command | median of {runs} (s) | range (s) | vs import torch |\n|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {min(values):.2f}–{max(values):.2f} | {median / base:.2f}× |")


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digitrec.bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", nargs="+", type=Path, default=None, help="checkpoints to time (default: every model, untrained)"
    )
    parser.add_argument("--repeats", type=int, default=200, help="single-image calls per model (default 200)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    startup = "time RUNS whole processes instead: import torch vs digitrec-predict on one image"
    parser.add_argument("--startup", type=int, metavar="RUNS", help=startup)
    args = parser.parse_args(argv)
    if (
        args.repeats < 1
        or args.batch_size < 1
        or (args.threads is not None and args.threads < 1)
        or (args.startup is not None and args.startup < 1)
    ):
        raise ConfigError("--repeats, --batch-size, --threads and --startup must be positive.")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        image = user_like_digit(Path(tmp) / "digit.png")
        if args.startup:
            checkpoint = args.checkpoint[0] if args.checkpoint else untrained_checkpoint("cnn", Path(tmp) / "cnn.ckpt")
            print(f"CPU: {cpu_model()}, torch {torch.__version__}; {checkpoint.name}\n")
            _print_startup(checkpoint, image, args.startup)
            return 0
        checkpoints = args.checkpoint or [untrained_checkpoint(name, Path(tmp) / f"{name}.ckpt") for name in MODELS]
        print(
            f"CPU: {cpu_model()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; {args.repeats} single-image calls, batches of {args.batch_size}"
            + ("" if args.checkpoint else "; untrained weights")
            + "\n"
        )
        print(
            f"| model | parameters | single image p50 (ms) | p95 (ms) | of which preprocessing p50 (ms) "
            f"| batch of {args.batch_size}, network only (images/s) |\n|---|---:|---:|---:|---:|---:|"
        )
        for checkpoint in checkpoints:
            predictor = DigitPredictor(checkpoint, device="cpu")
            m = measure(predictor, image, args.repeats, args.batch_size)
            print(
                f"| {predictor.model_name} | {count_parameters(predictor.net):,} | {m['p50_ms']:.2f} | "
                f"{m['p95_ms']:.2f} | {m['preprocess_p50_ms']:.2f} | {m['batch_images_per_s']:,.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
