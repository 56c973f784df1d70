"""Synthetic numbers: MNIST digits written in a row, as people write them on a line, for measuring and
training the reading of whole numbers.

Each number is 2 to 8 digits of one MNIST split placed with gaps of four classes (sizes in pixels at a
28-pixel digit height: the MNIST frame): separated (4 to 10 px between the digits' ink), near (1 to
3 px), touching (0 px) and overlapping (1 to 2 px of overlap); each number at its own size (digits 32 to
96 px high), each digit scaled ±15 % and moved up or down by up to 8 % of the digit height, dark ink on
light, slightly noisy paper. The true box of every digit comes with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

GAPS = {"separated": (4.0, 10.0), "near": (1.0, 3.0), "touching": (0.0, 0.0), "overlapping": (-2.0, -1.0)}
LENGTHS = range(2, 9)
INK = 0.3  # of the peak: a digit's box is where its ink is above this (what the reader's mask keeps)
# the last training digits: numbers to validate and tune the reader on, never to train the segment network
VALIDATION_DIGITS = 6000


@dataclass(frozen=True)
class Number:
    image: np.ndarray  # H×W uint8, dark ink on light paper
    text: str
    picks: list[int]  # the digits' indices in the set they came from
    boxes: list[tuple[int, int, int, int]]  # each digit's ink box: x0, y0, x1, y1 (exclusive)
    gap: str


def make_number(
    digits: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    length: int,
    gap: str,
    digit_height: float | None = None,
) -> Number:
    """A number of `length` random digits (28×28 uint8, light on dark) in a row, as described above."""
    height = digit_height or rng.uniform(32, 96)
    scale = height / 28
    picks = rng.integers(0, len(digits), length)
    patches, tops, lefts, x = [], [], [], 0
    for i, pick in enumerate(picks):
        digit = digits[pick].astype(np.float32) / 255
        columns = np.flatnonzero(digit.max(0) > 0)
        digit = digit[:, columns[0] : columns[-1] + 1]
        size = scale * rng.uniform(0.85, 1.15)
        patch = Image.fromarray(digit).resize(
            (max(1, round(digit.shape[1] * size)), round(28 * size)), Image.Resampling.BILINEAR
        )
        patches.append(np.clip(np.asarray(patch), 0, 1))
        if i:
            x += round(rng.uniform(*GAPS[gap]) * scale)
        lefts.append(x)
        tops.append(round(height - patches[-1].shape[0] + rng.uniform(-0.08, 0.08) * height))  # bottoms in line
        x += patches[-1].shape[1]
    margin = round(0.3 * height)
    top = min(tops)
    canvas = np.zeros(
        (max(t + p.shape[0] for t, p in zip(tops, patches)) - top + 2 * margin, x + 2 * margin), np.float32
    )
    boxes = []
    for patch, t, left in zip(patches, tops, lefts):
        y0, x0 = t - top + margin, left + margin
        window = canvas[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]]
        np.maximum(window, patch, out=window)
        rows, cols = np.nonzero(patch > INK * patch.max())
        boxes.append((x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()) + 1, y0 + int(rows.max()) + 1))
    paper = rng.uniform(225, 255)
    pixels = paper - (paper - rng.uniform(0, 60)) * canvas + rng.normal(0, rng.uniform(0, 6), canvas.shape)
    return Number(
        np.clip(np.rint(pixels), 0, 255).astype(np.uint8),
        "".join(str(int(labels[p])) for p in picks),
        [int(p) for p in picks],
        boxes,
        gap,
    )


def make_numbers(
    digits: np.ndarray,
    labels: np.ndarray,
    count: int,
    seed: int,
    lengths: Sequence[int] = LENGTHS,
    gaps: Sequence[str] = tuple(GAPS),
) -> list[Number]:
    """`count` numbers, their lengths and gap classes drawn evenly from those given."""
    rng = np.random.default_rng(seed)
    return [
        make_number(digits, labels, rng, int(rng.choice(list(lengths))), str(rng.choice(list(gaps))))
        for _ in range(count)
    ]
