"""MNIST test digits re-rendered the way users give them, to measure the preprocessing.

`python -m digitrec.bench.rerender --checkpoint CKPT [--count 1000]` prints a markdown table: accuracy
on the plain test digits, on the same digits through the preprocessing, and on re-rendered
copies (dark ink on light paper, scaled 3-10×, off-centre on a larger canvas, mild noise; as RGB
and as RGBA with a transparent background).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from digitrec.errors import ConfigError, exit_on_user_error

if TYPE_CHECKING:
    from digitrec.inference.predictor import DigitPredictor

NOISE_LEVEL = 10.0  # standard deviation of the added Gaussian noise, in 0-255 gray levels


def rerender(digit: np.ndarray, rng: np.random.Generator, transparent: bool = False) -> np.ndarray:
    """A 28×28 uint8 MNIST digit as a user's picture: H×W×3 (RGB) or, if `transparent`, H×W×4 (RGBA) uint8.

    Dark ink on off-white paper (RGB) or dark ink on a transparent background (RGBA), the
    digit scaled up 3-10× and pasted at a random place on a canvas 1.2-1.8× larger, with noise.
    """
    side = round(28 * rng.uniform(3, 10))
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255
    height, width = (round(side * rng.uniform(1.2, 1.8)) for _ in range(2))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    coverage = np.zeros((height, width, 1), np.float32)
    coverage[top : top + side, left : left + side, 0] = np.clip(ink, 0, 1)
    ink_colour = rng.uniform(0, 70, 3).astype(np.float32)
    noise = rng.normal(0, NOISE_LEVEL, (height, width, 4 if transparent else 3)).astype(np.float32)
    if transparent:
        colour = np.broadcast_to(ink_colour, (height, width, 3))
        pixels = np.concatenate([colour, 255 * coverage], axis=-1) + noise
    else:
        paper = rng.uniform(190, 255, 3).astype(np.float32)
        pixels = paper * (1 - coverage) + ink_colour * coverage + noise
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def rerendered_accuracy(
    predictor: DigitPredictor, digits: np.ndarray, labels: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Accuracy (0-1) of `predictor` on N×28×28 uint8 digits, plain and re-rendered, and the
    fraction of predictions the preprocessing changes on the plain digits."""
    plain_predictor = predictor.with_options(preprocess=False)
    rng = np.random.default_rng(seed)
    plain = _digits(plain_predictor.predict_batch(list(digits)))
    through = _digits(predictor.predict_batch(list(digits)))
    rgb = _digits(predictor.predict_batch([rerender(d, rng) for d in digits]))
    rgba = _digits(predictor.predict_batch([rerender(d, rng, transparent=True) for d in digits]))
    return {
        "MNIST test digits, preprocessing off": float((plain == labels).mean()),
        "MNIST test digits, through the preprocessing": float((through == labels).mean()),
        "re-rendered, RGB (dark on light paper)": float((rgb == labels).mean()),
        "re-rendered, RGBA (dark on transparent)": float((rgba == labels).mean()),
        "predictions changed by the preprocessing": float((through != plain).mean()),
    }


def _digits(results: list[dict]) -> np.ndarray:
    return np.array([-1 if r["digit"] is None else r["digit"] for r in results])


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    from digitrec.data.mnist import default_data_dir, load_split, raw_dir  # torch and the networks: only when run
    from digitrec.inference.predictor import DigitPredictor

    parser = argparse.ArgumentParser(prog="python -m digitrec.bench.rerender", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--count", type=int, default=1000, help="first N test digits (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $DIGITREC_DATA_DIR or data/")
    args = parser.parse_args(argv)
    if args.count < 1:
        raise ConfigError(f"--count must be positive, got {args.count}.")
    split = load_split(raw_dir(args.data_dir or default_data_dir()), train=False)
    digits = split.images[: args.count, 0].numpy()
    labels = split.labels[: args.count].numpy()
    predictor = DigitPredictor(args.checkpoint, device="cpu")
    table = rerendered_accuracy(predictor, digits, labels, args.seed)
    changed = table.pop("predictions changed by the preprocessing")
    print(f"{predictor.model_name} ({args.checkpoint}), first {len(labels)} MNIST test digits, seed {args.seed}\n")
    print("| input | accuracy |\n|---|---:|")
    for name, value in table.items():
        print(f"| {name} | {100 * value:.2f} % |")
    print(f"\nPredictions changed by the preprocessing on the plain test digits: {100 * changed:.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
