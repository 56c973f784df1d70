"""Reading whole numbers: `python -m digitrec.bench.numbers [--checkpoint CKPT] [--count 500] [--seed 0]`.

Builds a seeded set of numbers of 2 to 8 digits from MNIST test digits (`--split train`: training
digits; `--split validation`: the last 6,000 of them, which the segment network never trained on: to tune
the reader on) as `digitrec.data.numbers` describes. Each is read with
`DigitPredictor.read`; the tables give, by gap class and by length, the exact readings, the digits read
right (matched by position: a digit in a split or merged reading is wrong), the segmentation mistakes
and the time per reading (from the decoded image); then the exact readings by gap class and length
together, the accuracy of the same digits one by one through `predict` (what the classifier allows),
and the time of a 4-digit reading of a 1000×300 image.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitrec.data.numbers import GAPS, LENGTHS, VALIDATION_DIGITS, Number, make_number, make_numbers
from digitrec.errors import ConfigError, exit_on_user_error

if TYPE_CHECKING:
    from digitrec.inference.predictor import DigitPredictor

MISTAKES = ("split", "merged", "missed", "order")


def judge(reading: dict[str, Any], number: Number) -> dict[str, int]:
    """Digits read right and segmentation mistakes of one reading, by matching boxes horizontally: each digit
    read goes to the true digit its box overlaps most; one covering over half of two true digits is merged."""
    truth = [(b[0], b[2]) for b in number.boxes]
    found = [(d["box"][0], d["box"][2]) for d in reading["digits"]]
    overlap = np.array([[max(0, min(f[1], t[1]) - max(f[0], t[0])) for t in truth] for f in found]).reshape(
        len(found), len(truth)
    )
    widths = np.array([t[1] - t[0] for t in truth])
    merged = [k for k in range(len(found)) if (overlap[k] > widths / 2).sum() >= 2]
    owner = [int(row.argmax()) if row.max() > 0 else -1 for row in overlap]
    covered = {t for k in merged for t in np.flatnonzero(overlap[k] > widths / 2)}
    counts = [owner.count(t) for t in range(len(truth))]
    right = sum(
        1
        for k, t in enumerate(owner)
        if t >= 0 and counts[t] == 1 and k not in merged and reading["digits"][k]["digit"] == int(number.text[t])
    )
    one_each = not merged and counts == [1] * len(truth)
    return {
        "exact": int(reading["text"] == number.text),
        "right": right,
        "digits": len(truth),
        "split": sum(c > 1 for c in counts),
        "merged": len(merged),
        "missed": sum(1 for t, c in enumerate(counts) if c == 0 and t not in covered),
        "order": int(one_each and owner != sorted(owner)),
    }


@contextmanager
def digit_bonus(value: float) -> Iterator[None]:
    """The reader's `DIGIT_BONUS` set to `value` inside, as it was again after."""
    from digitrec.inference import numbers as reader

    kept = reader.DIGIT_BONUS
    reader.DIGIT_BONUS = value
    try:
        yield
    finally:
        reader.DIGIT_BONUS = kept


def run(predictor: DigitPredictor, numbers: list[Number]) -> list[dict[str, Any]]:
    """Each number read and judged, with the time the reading took (seconds)."""
    rows = []
    for number in numbers:
        start = time.perf_counter()
        reading = predictor.read(number.image)
        seconds = time.perf_counter() - start
        rows.append({"gap": number.gap, "length": len(number.text), "seconds": seconds, **judge(reading, number)})
    return rows


def table(rows: list[dict[str, Any]], key: str, values: Sequence[Any]) -> str:
    lines = [
        f"| {key} | numbers | exact | digits right | " + " | ".join(MISTAKES) + " | ms per reading (p50) |",
        "|---|---:|---:|---:|" + "---:|" * len(MISTAKES) + "---:|",
    ]
    for value in [*values, "all"]:
        group = [r for r in rows if value == "all" or r[key] == value]
        if not group:
            continue
        exact = 100 * sum(r["exact"] for r in group) / len(group)
        right = 100 * sum(r["right"] for r in group) / sum(r["digits"] for r in group)
        mistakes = " | ".join(str(sum(r[m] for r in group)) for m in MISTAKES)
        ms = 1000 * statistics.median(r["seconds"] for r in group)
        lines.append(f"| {value} | {len(group)} | {exact:.1f} % | {right:.1f} % | {mistakes} | {ms:.1f} |")
    return "\n".join(lines)


def grid(rows: list[dict[str, Any]]) -> str:
    """Exact readings by gap class (rows) and length (columns): each cell's % and how many numbers."""
    lines = [
        "| exact (numbers) | " + " | ".join(f"{n} digits" for n in LENGTHS) + " |",
        "|---|" + "---:|" * len(LENGTHS),
    ]
    for gap in GAPS:
        cells = []
        for length in LENGTHS:
            group = [r["exact"] for r in rows if r["gap"] == gap and r["length"] == length]
            cells.append(f"{100 * sum(group) / len(group):.0f} % ({len(group)})" if group else "–")
        lines.append(f"| {gap} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def alone_accuracy(predictor: DigitPredictor, digits: np.ndarray, labels: np.ndarray, numbers: list[Number]) -> float:
    """Accuracy of `predict` on the numbers' digits one by one, as 28×28 MNIST images: what the reader
    could at best do per digit (an n-digit number is read right at best this to the n-th)."""
    picks = [p for number in numbers for p in number.picks]
    answers = predictor.predict_batch(list(digits[picks]))
    return float(np.mean([a["digit"] == labels[p] for a, p in zip(answers, picks)]))


def wide_image_ms(
    predictor: DigitPredictor, digits: np.ndarray, labels: np.ndarray, seed: int, repeats: int
) -> tuple[float, float]:
    """p50 and p95 (ms) of reading a separated 4-digit number written 180 px high on a 1000×300 image."""
    number = make_number(digits, labels, np.random.default_rng(seed), 4, "separated", digit_height=180)
    image = np.full((300, 1000), int(np.median(number.image)), np.uint8)
    part = number.image[:300, :1000]
    top, left = (300 - part.shape[0]) // 2, (1000 - part.shape[1]) // 2
    image[top : top + part.shape[0], left : left + part.shape[1]] = part
    predictor.read(image)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.read(image)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    import torch  # torch and the networks: only when run

    from digitrec.bench.machine import cpu_model
    from digitrec.data.mnist import default_data_dir, load_split, raw_dir
    from digitrec.inference import numbers as reader
    from digitrec.inference.options import choose_model
    from digitrec.inference.predictor import DigitPredictor

    parser = argparse.ArgumentParser(prog="python -m digitrec.bench.numbers", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a .ckpt or a run folder (default: the newest *-best.ckpt under outputs/, else the bundled model)",
    )
    parser.add_argument("--count", type=int, default=500, help="numbers to read (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=50, help="readings of the 1000×300 image timed (default 50)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $DIGITREC_DATA_DIR or data/")
    parser.add_argument(
        "--split",
        choices=("test", "train", "validation"),
        default="test",
        help="the MNIST digits the numbers are made of (default test; train, or validation: the last "
        f"{VALIDATION_DIGITS:,} training digits, which the segment network never trained on, to tune the reader)",
    )
    parser.add_argument(
        "--digit-bonus",
        type=float,
        default=None,
        help="read with this DIGIT_BONUS (log-probability added per digit read) instead of the reader's "
        f"({reader.DIGIT_BONUS:g})",
    )
    parser.add_argument(
        "--segments",
        type=Path,
        default=None,
        help="read with this segment network (a .pt of python -m digitrec.training.segments --out) instead of the bundled one",
    )
    parser.add_argument(
        "--gap", choices=list(GAPS), action="append", help="only numbers of this gap class (repeatable)"
    )
    parser.add_argument(
        "--length", type=int, choices=list(LENGTHS), action="append", help="only numbers of this length"
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError("--count, --repeats and --threads must be positive.")
    bonus = reader.DIGIT_BONUS if args.digit_bonus is None else args.digit_bonus
    if not math.isfinite(bonus):
        raise ConfigError(f"--digit-bonus {bonus}: give a finite number, such as 0.25.")
    if args.threads:
        torch.set_num_threads(args.threads)
    split = load_split(raw_dir(args.data_dir or default_data_dir()), train=args.split != "test")
    digits, labels = split.images[:, 0].numpy(), split.labels.numpy()
    if args.split == "validation":
        digits, labels = digits[-VALIDATION_DIGITS:], labels[-VALIDATION_DIGITS:]
    (checkpoint,), _ = choose_model([args.checkpoint] if args.checkpoint else None)
    predictor = DigitPredictor(checkpoint, device="cpu", segments=args.segments)
    numbers = make_numbers(digits, labels, args.count, args.seed, args.length or LENGTHS, args.gap or tuple(GAPS))
    with digit_bonus(bonus):
        rows = run(predictor, numbers)
    print(
        f"CPU: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{predictor.model_name} ({checkpoint}, temperature {predictor.temperature:g} "
        f"{predictor.temperature_source}); {args.count} numbers from MNIST {args.split} digits, seed {args.seed}; "
        f"digit bonus {bonus:g}, segment network {args.segments or 'bundled'}"
        + "".join(
            f", {name}: {' '.join(map(str, only))}"
            for name, only in (("gaps", args.gap), ("lengths", args.length))
            if only
        )
        + "\n"
    )
    print(table(rows, "gap", list(GAPS)) + "\n")
    print(table(rows, "length", list(LENGTHS)) + "\n")
    print(grid(rows) + "\n")
    alone = alone_accuracy(predictor, digits, labels, numbers)
    print(
        f"The same digits one by one through predict (28×28 MNIST): {100 * alone:.2f} % right; at best "
        + ", ".join(f"{100 * alone**n:.1f} %" for n in (2, 4, 8))
        + " of 2, 4 and 8-digit numbers read exactly"
    )
    p50, p95 = wide_image_ms(predictor, digits, labels, args.seed, args.repeats)
    print(
        f"A separated 4-digit number on a 1000×300 image: {p50:.1f} ms per reading (p50), {p95:.1f} ms (p95), "
        f"{args.repeats} readings"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
