"""Reading whole numbers (`digitrec.inference.numbers`, `DigitPredictor.read`) on constructed images.

The digits are drawn from strokes; a stub scorer reads a crop by how closely it matches each digit drawn
alone (through the same preprocessing), so these tests check the segmentation, not a digit classifier;
candidates are judged whole or not by the bundled segment network, as in `DigitPredictor.read`. The
predictor, command line and HTTP tests put the same matching inside an untrained checkpoint's predictor.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import re
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from test_serve_browser import answered
from torch import nn

from digitrec.data.mnist import MNIST_MEAN, MNIST_STD
from digitrec.inference import numbers
from digitrec.inference.components import MAX_CUTS, Piece, _strokes_crossed, label
from digitrec.inference.numbers import read_numbers
from digitrec.inference.preprocess import Preprocessed, mnist_style
from digitrec.inference.segments import load_segment_net, whole_digit_log_prob
from digitrec.models.segments import GEOMETRY

Stroke = list[tuple[float, float]]
_OVAL = [(0.5 + 0.42 * math.sin(t), 0.5 - 0.48 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 40)]
# Digits as strokes in a unit box (x right, y down). The 4's bar stops short of its stem, the 5's bar is
# apart from its body and the 7's cross is two dashes either side of its stem: none is one component.
GLYPHS: dict[int, list[Stroke]] = {
    0: [_OVAL],
    1: [[(0.35, 0.15), (0.55, 0.0), (0.55, 1.0)]],
    2: [[(0.08, 0.25), (0.3, 0.02), (0.7, 0.02), (0.88, 0.25), (0.1, 0.98), (0.92, 0.98)]],
    3: [[(0.1, 0.05), (0.85, 0.05), (0.45, 0.45), (0.85, 0.65), (0.7, 0.95), (0.1, 0.92)]],
    4: [[(0.5, 0.05), (0.05, 0.6), (0.52, 0.6)], [(0.75, 0.0), (0.75, 1.0)]],
    5: [[(0.3, 0.02), (0.92, 0.02)], [(0.22, 0.2), (0.15, 0.48), (0.65, 0.45), (0.9, 0.7), (0.65, 0.98), (0.08, 0.92)]],
    6: [[(0.75, 0.0), (0.2, 0.55), (0.25, 0.95), (0.75, 0.95), (0.8, 0.6), (0.25, 0.6)]],
    7: [[(0.05, 0.02), (0.95, 0.02), (0.4, 1.0)], [(0.2, 0.5), (0.42, 0.5)], [(0.92, 0.5), (1.12, 0.5)]],
    8: [
        [
            (0.5, 0.5),
            (0.15, 0.25),
            (0.5, 0.0),
            (0.85, 0.25),
            (0.5, 0.5),
            (0.1, 0.75),
            (0.5, 1.0),
            (0.9, 0.75),
            (0.5, 0.5),
        ]
    ],
    9: [[(0.8, 0.45), (0.2, 0.45), (0.2, 0.05), (0.8, 0.05), (0.8, 1.0)]],
}
WIDTHS = {0: 0.75, 1: 0.35, 2: 0.7, 3: 0.65, 4: 0.75, 5: 0.65, 6: 0.65, 7: 0.65, 8: 0.6, 9: 0.6}
SUPERSAMPLE = 4


def draw(
    placements: list[tuple[int, float, float, float]],
    size: tuple[int, int],
    light_ink: bool = False,
    strokes: dict[int, list[Stroke]] | None = None,
) -> np.ndarray:
    """A uint8 image (H×W) of digits drawn with a pen 12 % of their height wide; each placement is
    (digit, left, top, height) in pixels. Dark on white unless `light_ink`."""
    width, height = size
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    pen = ImageDraw.Draw(canvas)
    for digit, left, top, tall in placements:
        scale = tall * SUPERSAMPLE
        radius = 0.06 * scale
        for stroke in (strokes or GLYPHS)[digit]:
            points = [
                ((left * SUPERSAMPLE + x * WIDTHS[digit] * scale), top * SUPERSAMPLE + y * scale) for x, y in stroke
            ]
            pen.line(points, fill=255, width=round(2 * radius), joint="curve")
            for x, y in (points[0], points[-1]):
                pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    ink = np.asarray(canvas.resize(size, Image.Resampling.BOX))
    return ink if light_ink else 255 - ink


def row(
    digits: list[int],
    height: float = 60,
    gap: float = 15,
    left: float = 20,
    top: float = 20,
    tops: list[float] | None = None,
    heights: list[float] | None = None,
) -> list[tuple[int, float, float, float]]:
    """Placements of digits left to right from (`left`, `top`), `gap` pixels apart (negative: overlapping)."""
    placements, x = [], left
    for k, digit in enumerate(digits):
        tall = heights[k] if heights else height
        placements.append((digit, x, tops[k] if tops else top, tall))
        x += WIDTHS[digit] * tall + 0.12 * tall + gap
    return placements


def _templates() -> np.ndarray:
    """Each digit drawn alone and preprocessed, shifted by up to a pixel each way: (10, 9, 784) unit vectors."""
    pixels = [mnist_style(draw([(d, 20, 20, 80)], (140, 120)).astype(np.float32) / 255).pixels for d in range(10)]
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.stack([[_unit(np.roll(p, shift, axis=(0, 1))) for shift in shifts] for p in pixels])


def _unit(pixels: np.ndarray) -> np.ndarray:
    """Blurred, as a unit vector: similar shapes have a dot product near 1."""
    padded = np.pad(pixels, 1)
    blurred = sum(padded[dy : dy + 28, dx : dx + 28] for dy in range(3) for dx in range(3))
    return (blurred / np.linalg.norm(blurred)).ravel()


def likeness(pixels: np.ndarray) -> np.ndarray:
    """How much a 28×28 image looks like each digit: the best dot product over the shifts."""
    return (TEMPLATES @ _unit(pixels)).max(1)


TEMPLATES = _templates()
SHARPNESS = 60.0


def stub_score(crops: list[Preprocessed]) -> np.ndarray:
    """Probabilities by likeness to the drawn digits, with an eleventh 'none of them' class left out: a crop
    like no digit (half of one, two in one) gets low probabilities."""
    similarity = np.stack([likeness(crop.pixels) for crop in crops])
    logits = SHARPNESS * np.concatenate([similarity, np.full((len(crops), 1), 0.9)], axis=1)
    odds = np.exp(logits - logits.max(1, keepdims=True))
    return (odds / odds.sum(1, keepdims=True))[:, :10]


SEGMENTS = load_segment_net()


def judge(crops: list[Preprocessed], shapes: np.ndarray) -> np.ndarray:
    return whole_digit_log_prob(SEGMENTS, crops, shapes)


def read(image: np.ndarray, threshold: float = 0.5) -> dict:
    return read_numbers([image.astype(np.float32) / 255], stub_score, threshold, judge=judge)[0]


def boxes_of(answer: dict) -> list[list[int]]:
    return [d["box"] for d in answer["digits"]]


# --- the stub reads single digits --------------------------------------------------------------------


@pytest.mark.parametrize("digit", range(10))
def test_each_drawn_digit_alone_reads_as_itself(digit: int) -> None:
    answer = read(draw([(digit, 30, 25, 70)], (140, 120)))
    assert answer["text"] == str(digit) and answer["is_number"], answer["reason"]
    (only,) = answer["digits"]
    assert only["confidence"] > 0.9 and answer["confidence"] == pytest.approx(only["confidence"])


# --- segmentation ---------------------------------------------------------------------------------------


def test_multi_stroke_digits_are_read_whole() -> None:
    image = draw(row([4, 5, 7, 4]), (340, 100))
    for digit in (4, 5, 7):  # none of them is one connected component
        alone = draw([(digit, 20, 20, 60)], (100, 100)) < 128
        assert label(alone).count >= 2
    answer = read(image)
    assert answer["text"] == "4574" and answer["is_number"]
    five, seven = row([4, 5, 7])[1:]
    assert boxes_of(answer)[1][1] <= five[2] + 1  # the 5's bar is in its box ...
    assert boxes_of(answer)[2][0] <= seven[1] + 0.2 * 0.65 * 60  # ... and the 7's left dash in the 7's


def test_touching_digits_are_cut_apart() -> None:
    image = draw(row([2, 3, 0, 2], gap=-9), (300, 100))  # the 2's base runs into the 3, the 3 into the 0 ...
    assert label(image < 128).count == 2
    answer = read(image)
    assert answer["text"] == "2302"
    lefts = [box[0] for box in boxes_of(answer)]
    assert lefts == sorted(lefts)


def test_slightly_overlapping_digits_are_cut_apart() -> None:
    image = draw(row([7, 1, 9, 6], gap=-9), (280, 100))  # each digit's box reaches into the next one's
    answer = read(image)
    assert answer["text"] == "7196"


def test_a_wide_zero_is_not_cut_into_parts_that_each_look_like_a_digit() -> None:
    # A scorer fooled by parts, as real networks are: a narrow crop is a sure 1, anything wider a fair 0.
    def fooled(crops: list[Preprocessed]) -> np.ndarray:
        probabilities = np.zeros((len(crops), 10))
        for k, crop in enumerate(crops):
            columns = np.flatnonzero(crop.pixels.max(0) > 0.3)
            narrow = columns[-1] - columns[0] < 12
            probabilities[k, 1 if narrow else 0] = 0.99 if narrow else 0.7
        return probabilities

    wide = {0: [[(0.5 + 0.65 * math.sin(t), 0.5 - 0.48 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 40)]]}
    image = draw([(0, 30, 20, 60)], (140, 100), strokes=wide).astype(np.float32) / 255
    assert read_numbers([image], fooled, 0.5, judge=judge)[0]["text"] == "0"  # the parts are judged not whole
    assert set(read_numbers([image], fooled, 0.5)[0]["text"]) == {"1"}  # what the classifier alone would read


def test_a_cut_counts_the_strokes_it_goes_through() -> None:
    ring = np.zeros((9, 9), bool)
    ring[[1, 7], 2:7] = ring[1:8, [2, 6]] = True
    middle = np.full(9, 4)
    assert _strokes_crossed(ring, middle) == (2, 2)  # strokes, and pixels of ink
    assert _strokes_crossed(ring, np.full(9, 2)) == (1, 7)  # down a side: one long run
    assert _strokes_crossed(ring, np.full(9, 8)) == (0, 0)
    assert _strokes_crossed(ring, np.array([4, 4, 3, 2, 2, 2, 3, 4, 4])) == (3, 5)  # the top, a side, the bottom


def test_a_broken_stroke_is_still_one_digit() -> None:
    broken = {
        **GLYPHS,
        1: [[(0.35, 0.15), (0.55, 0.0), (0.55, 0.45)], [(0.55, 0.62), (0.55, 1.0)]],
        9: [[(0.8, 0.45), (0.2, 0.45), (0.2, 0.05), (0.8, 0.05), (0.8, 0.55)], [(0.8, 0.72), (0.8, 1.0)]],
    }
    image = draw(row([1, 9, 1]), (240, 100), strokes=broken)
    assert label(image < 128).count == 6
    assert read(image)["text"] == "191"
    tail = {
        **GLYPHS,
        2: [
            [(0.08, 0.25), (0.3, 0.02), (0.7, 0.02), (0.88, 0.25), (0.1, 0.98), (0.35, 0.98)],
            [(0.65, 0.98), (1.4, 0.98)],
        ],
    }  # the end of its base apart, reaching towards the next
    image = draw(row([2, 2]), (240, 100), strokes=tail)
    assert label(image < 128).count == 4
    answer = read(image)
    assert answer["text"] == "22" and boxes_of(answer)[0][2] >= 20 + 1.4 * 0.7 * 60  # the tail is in its box


def test_specks_and_stray_dots_are_ignored() -> None:
    image = draw(row([3, 8]), (200, 110))
    rng = np.random.default_rng(0)
    for y, x in zip(rng.integers(0, 110, 40), rng.integers(0, 200, 40)):  # specks of 1-2 pixels
        image[y : y + rng.integers(1, 3), x : x + rng.integers(1, 3)] = 0
    yy, xx = np.mgrid[:110, :200]
    image[(yy - 95) ** 2 + (xx - 160) ** 2 <= 16] = 0  # a pen dot of 9 pixels across, below the line
    image[(yy - 10) ** 2 + (xx - 40) ** 2 <= 9] = 0  # one above the 3
    right = max(np.flatnonzero((image < 128).any(0)))
    image[(yy - 50) ** 2 + (xx - right - 8) ** 2 <= 16] = 0  # and one just right of the 8
    answer = read(image)
    assert answer["text"] == "38"
    (three, eight) = boxes_of(answer)
    assert three[1] >= 18 and eight[3] <= 84 and eight[2] <= right + 2  # the dots are not in the boxes


def test_uneven_baseline_and_different_sizes() -> None:
    heights, tops = [50, 80, 40, 65, 55], [40, 10, 60, 20, 45]
    image = draw(row([2, 1, 4, 5, 6], tops=tops, heights=heights), (400, 140))
    answer = read(image)
    assert answer["text"] == "21456"
    for box, top, tall in zip(boxes_of(answer), tops, heights):
        assert abs(box[1] - top) <= 0.1 * tall + 2 and abs(box[3] - (top + tall)) <= 0.1 * tall + 2


def test_digits_drawn_right_to_left_read_left_to_right() -> None:
    placements = row([9, 0, 2, 5])
    image = draw(placements[::-1], (330, 100))
    assert np.array_equal(image, draw(placements, (330, 100)))  # a picture keeps no drawing order ...
    answer = read(image)
    assert answer["text"] == "9025"  # ... so reading order is left to right


def test_a_lone_digit_reads_as_one_character_with_its_box() -> None:
    image = draw([(7, 50, 30, 60)], (200, 120))
    answer = read(image)
    assert answer["text"] == "7" and len(answer["digits"]) == 1
    pen = 0.06 * 60  # the pen's radius: the ink reaches this far beyond the strokes' ends
    expected = [50 + 0.05 * 0.65 * 60 - pen, 30 + 0.02 * 60 - pen, 50 + 1.12 * 0.65 * 60 + pen, 30 + 60 + pen]
    assert np.abs(np.array(answer["digits"][0]["box"]) - expected).max() <= 2


def test_light_ink_on_dark_and_large_images_give_boxes_in_the_images_pixels() -> None:
    small = draw(row([3, 1, 4]), (260, 100))
    large = draw([(d, 4 * x, 4 * y, 4 * h) for d, x, y, h in row([3, 1, 4])], (1040, 400), light_ink=True)
    answers = [read(small), read(large)]
    assert [a["text"] for a in answers] == ["314", "314"]
    for box_small, box_large in zip(*(boxes_of(a) for a in answers)):
        assert np.abs(np.array(box_large) - 4 * np.array(box_small)).max() <= 8


def test_a_small_number_in_a_large_noisy_photo_is_found_and_boxed() -> None:
    rng = np.random.default_rng(1)
    photo = np.clip(rng.normal(200, 6, (2000, 3000)), 0, 255).astype(np.uint8)  # grey, noisy paper
    number = draw(row([6, 3, 9]), (240, 100))
    photo[1200:1300, 700:940] = np.minimum(photo[1200:1300, 700:940], number)
    answer = read(photo)
    assert answer["text"] == "639"
    for box, (_, left, top, tall) in zip(boxes_of(answer), row([6, 3, 9])):
        assert abs(box[0] - (700 + left)) <= 8 and abs(box[1] - (1200 + top)) <= 8 and box[3] - box[1] >= tall


def test_blank_and_speck_only_images_are_no_number() -> None:
    blank = read(np.full((80, 200), 250, np.uint8))
    assert blank == {
        "text": "",
        "digits": [],
        "confidence": None,
        "is_number": False,
        "reason": blank["reason"],
        "error": None,
    }
    assert blank["reason"].startswith("blank image")
    specks = np.full((80, 200), 255, np.uint8)
    specks[10:12, 10:12] = specks[50:51, 150:152] = 0
    answer = read(specks)
    assert answer["text"] == "" and not answer["is_number"] and answer["reason"]


@pytest.mark.parametrize("shape", [(2000, 8), (8, 2000), (8, 8)])
def test_thin_strips_and_tiny_images_read_without_warnings(shape: tuple[int, int]) -> None:
    image = np.full(shape, 255, np.uint8)
    image[:, shape[1] // 2] = image[shape[0] // 2, :] = 0  # a cross
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        answer = read(image)
    for x0, y0, x1, y1 in boxes_of(answer):
        assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
    # a rule hundreds of line heights long gets only the cheapest cuts, not a straight cut per few pixels
    assert len(numbers.layout(image / 255).pieces) <= MAX_CUTS + 1


def test_a_page_of_digits_is_not_a_number_and_costs_little() -> None:
    page = np.full((900, 1500), 255, np.uint8)
    glyph = draw([(8, 2, 2, 36)], (30, 40))
    for y in range(30, 860, 60):
        for x in range(20, 1460, 45):
            page[y : y + 40, x : x + 30] = glyph
    answer = read(page)
    assert answer["text"] == "" and answer["reason"] == "not a number: over 100 separate marks"


def test_an_unclear_digit_makes_it_not_a_number_and_says_which() -> None:
    answer = read(draw(row([2, 8]), (200, 100)), threshold=1.0)
    assert answer["text"] == "28" and answer["is_number"] is False
    assert "digit 1 of 2" in answer["reason"] and "digit 2 of 2" in answer["reason"]
    assert answer["confidence"] == pytest.approx(math.prod(d["confidence"] for d in answer["digits"]))


def test_all_crops_of_all_images_are_scored_and_judged_in_one_call() -> None:
    calls = []

    def counting(crops):
        calls.append(("score", len(crops)))
        return stub_score(crops)

    def counting_judge(crops, shapes):
        calls.append(("judge", len(crops)))
        assert shapes.shape == (len(crops), len(GEOMETRY))
        return judge(crops, shapes)

    images = [draw(row([1, 2]), (200, 100)), np.full((50, 50), 255, np.uint8), draw(row([2, 3, 0], gap=-9), (260, 100))]
    answers = read_numbers([image / 255 for image in images], counting, 0.5, judge=counting_judge)
    assert [a["text"] for a in answers] == ["12", "", "230"]
    assert [kind for kind, _ in calls] == ["judge", "score"] and calls[1][1] <= calls[0][1]  # parts ruled out


def one_or_two(part: float, merged: float, units: tuple[int, int] = (0, 0)) -> str:
    """The reading of two pieces (of one cut unit, or of two `units`) that the classifier reads alone as 1 and 2
    (each with probability `part`) or together as an 8 (`merged`), every candidate judged whole."""
    boxes = [(0, 0, 28, 28), (28, 0, 56, 28), (0, 0, 56, 28)]
    pieces = [Piece(np.ones(1, bool), (0, np.zeros(0), np.zeros(0)), box, unit) for box, unit in zip(boxes, units)]
    layout = numbers.Layout((28, 56), pieces=pieces, spans=[(0, 1), (1, 2), (0, 2)], boxes=boxes)
    probabilities = np.zeros((3, 10))
    probabilities[0, 1] = probabilities[1, 2] = part
    probabilities[2, 8] = merged
    return numbers.reading(layout, probabilities, np.zeros(3), 0.5)["text"]


def test_two_confident_digits_beat_one_slightly_more_confident_merged_digit() -> None:
    assert 0.9 * 0.9 < 0.85  # the plain product prefers the merged 8 ...
    assert one_or_two(part=0.9, merged=0.85) == "12"  # ... the bonus per digit read does not
    assert one_or_two(part=0.5, merged=0.99) == "8"  # two unlikely parts still lose
    # two units joined (a 4 whose bar stops short of its stem): the bonus takes no side
    assert one_or_two(part=0.9, merged=0.85, units=(0, 1)) == "8"
    assert one_or_two(part=0.9, merged=0.8, units=(0, 1)) == "12"


# --- connected components ---------------------------------------------------------------------------


def _flood_fill_count(mask: np.ndarray) -> int:
    seen, count = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        queue = deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return count


def test_components_match_a_flood_fill_and_paint_back_the_mask() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        mask = rng.random(tuple(rng.integers(1, 25, 2))) < rng.uniform(0.1, 0.7)
        comps = label(mask)
        assert comps.count == _flood_fill_count(mask)
        height, width = mask.shape
        painted = [comps.paint(np.arange(comps.count) == k, (0, 0, width, height)) for k in range(comps.count)]
        assert np.array_equal(sum(p.astype(int) for p in painted), mask.astype(int))  # a partition of the mask
        for k, part in enumerate(painted):
            rows, cols = np.nonzero(part)
            assert tuple(comps.boxes[k]) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert comps.areas[k] == part.sum()


def test_components_of_a_long_snake_are_one() -> None:
    snake = np.zeros((61, 40), bool)
    snake[::2] = True
    snake[1::4, -1] = snake[3::4, 0] = True
    assert label(snake).count == 1 and label(np.zeros((5, 5), bool)).count == 0


# --- through DigitPredictor -------------------------------------------------------------------------


class TemplateNet(nn.Module):
    """A stand-in network: logits from the likeness of the normalised 28×28 input to the drawn digits."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = (batch[:, 0] * MNIST_STD + MNIST_MEAN).numpy()
        return torch.from_numpy(SHARPNESS * np.stack([likeness(p) for p in pixels])).float()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory):
    from digitrec import DigitPredictor
    from digitrec.bench.latency import untrained_checkpoint

    checkpoint = untrained_checkpoint("mlp", tmp_path_factory.mktemp("numbers") / "mlp.ckpt")
    predictor = DigitPredictor(checkpoint, device="cpu")
    predictor.net, predictor.temperature = TemplateNet(), 1.0
    return predictor


def png(image: np.ndarray, path: Path) -> Path:
    Image.fromarray(image).save(path)
    return path


def test_predictor_reads_a_file_with_probabilities_that_sum_to_one(predictor, tmp_path: Path) -> None:
    path = png(np.stack([draw(row([2, 0, 4, 7]), (330, 100))] * 3, axis=-1), tmp_path / "number.png")
    answer = predictor.read(path)
    assert set(answer) == {"text", "digits", "confidence", "is_number", "reason", "error"}
    assert answer["text"] == "2047" and answer["is_number"] and answer["error"] is None
    for digit in answer["digits"]:
        assert set(digit) == {"digit", "confidence", "probabilities", "box"}
        assert math.isclose(sum(digit["probabilities"]), 1.0, abs_tol=1e-6)
        assert digit["confidence"] == max(digit["probabilities"])
        assert all(isinstance(v, int) for v in digit["box"])


def test_predictor_reads_with_the_segment_network_it_is_given(predictor, tmp_path: Path) -> None:
    from digitrec import DigitPredictor
    from digitrec.errors import CheckpointError

    judge_none_whole = load_segment_net()
    with torch.no_grad():
        judge_none_whole.head.bias.fill_(-50.0)  # no part of a cut unit is read, and fewer digits score higher
    path = tmp_path / "none_whole.pt"
    torch.save(judge_none_whole.state_dict(), path)
    own = DigitPredictor(predictor.checkpoint, device="cpu", segments=path)
    own.net, own.temperature = TemplateNet(), 1.0
    image = draw(row([2, 3, 0, 2], gap=-9), (300, 100))  # two units of two touching digits each
    assert predictor.read(image)["text"] == "2302"
    assert len(own.read(image)["text"]) < 4
    with pytest.raises(CheckpointError, match=r"nowhere\.pt: no such file for the network that reads numbers"):
        DigitPredictor(predictor.checkpoint, device="cpu", segments=tmp_path / "nowhere.pt")


def test_predictor_reads_a_lone_digit_like_predict(predictor) -> None:
    image = draw([(3, 40, 20, 60)], (150, 100))
    answer, single = predictor.read(image), predictor.predict(image)
    assert answer["text"] == str(single["digit"]) == "3"
    assert answer["digits"][0]["probabilities"] == pytest.approx(single["probabilities"], abs=0.02)


def test_bad_input_to_read_raises_like_predict_and_read_batch_keeps_going(predictor, tmp_path: Path) -> None:
    from digitrec.errors import ConfigError, DigitrecError

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DigitrecError) as from_predict:
        predictor.predict(bad)
    with pytest.raises(DigitrecError) as from_read:
        predictor.read(bad)
    assert str(from_read.value) == str(from_predict.value)
    answers = predictor.read_batch([draw(row([1, 9]), (200, 100)), bad, np.full((40, 40), 255, np.uint8)])
    assert [a["text"] for a in answers] == ["19", "", ""]
    assert answers[1]["error"] == str(from_read.value) and answers[0]["error"] is None is answers[2]["error"]
    with pytest.raises(ConfigError, match="use read"):
        predictor.read_batch(bad)


# --- the command line and the HTTP app ------------------------------------------------------------


def test_cli_prints_each_number_and_draws_its_boxes(predictor, monkeypatch, tmp_path: Path, capsys) -> None:
    from digitrec.inference import cli

    monkeypatch.setattr(cli, "DigitPredictor", lambda *args, **kwargs: predictor)  # the stub network
    number = png(draw(row([2, 0, 4, 7]), (330, 100)), tmp_path / "number.png")
    blank = png(np.full((60, 90), 255, np.uint8), tmp_path / "blank.png")
    out = tmp_path / "pictures" / "out.png"
    assert cli.main([str(number), str(blank), "--checkpoint", "any.ckpt", "--number", "--visualise", str(out)]) == 0
    printed, notes = capsys.readouterr()
    lines = printed.splitlines()
    confidence = r"[01]\.\d{3}"
    assert re.fullmatch(
        rf"{number}: 2047 \(confidence {confidence}; digits 2 {confidence}, 0 {confidence}, "
        rf"4 {confidence}, 7 {confidence}\)",
        lines[0],
    ), lines[0]
    assert lines[1].startswith(f"{blank}: not a number: blank image")
    for name in ("out-000-number.png", "out-001-blank.png"):
        assert f"picture: {out.parent / name}" in notes
        with Image.open(out.parent / name) as picture:
            assert picture.format == "PNG" and picture.width > picture.height
    assert cli.main([str(number), "--checkpoint", "any.ckpt", "--number", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["image"] == str(number) and item["text"] == "2047" and len(item["digits"]) == 4


@pytest.fixture(scope="module")
def client(predictor):
    from fastapi.testclient import TestClient

    from digitrec.serve.app import create_app

    with TestClient(create_app(predictor, max_body_bytes=200_000)) as client:
        yield client


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_read_endpoint_answers_the_reading_with_what_the_network_saw(client, predictor) -> None:
    image = draw(row([5, 1, 8]), (260, 100))
    response = client.post("/read", files={"file": ("number.png", png_bytes(image), "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = predictor.read(image)
    assert answer["text"] == expected["text"] == "518" and answer["is_number"] is True
    assert answer["confidence"] == pytest.approx(expected["confidence"]) and "error" not in answer
    for digit, same in zip(answer["digits"], expected["digits"]):
        assert digit["box"] == same["box"] and digit["probabilities"] == pytest.approx(same["probabilities"])
        seen = Image.open(io.BytesIO(base64.b64decode(digit["seen"].removeprefix("data:image/png;base64,"))))
        assert seen.size == (28, 28) and seen.mode == "L"
    blank = client.post("/read", files={"file": ("blank.png", png_bytes(np.full((50, 50), 255, np.uint8)))}).json()
    assert blank["text"] == "" and blank["digits"] == [] and blank["is_number"] is False and blank["reason"]


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"files": {"file": ("notes.txt", b"not an image at all", "text/plain")}},
        {"files": {"file": ("tiny.png", png_bytes(np.zeros((4, 4), np.uint8)))}},
        {"files": {"file": ("big.png", b"\0" * 300_000)}},
        {"content": json.dumps({"image": "..."}), "headers": {"content-type": "application/json"}},
        {"data": {"picture": "x"}, "files": {"other": ("a.png", b"x")}},
    ],
)
def test_read_endpoint_errors_are_those_of_predict(client, request_kwargs) -> None:
    read, predict = client.post("/read", **request_kwargs), client.post("/predict", **request_kwargs)
    assert read.status_code == predict.status_code >= 400 and read.json() == predict.json()
    assert set(read.json()) == {"error"}


def test_read_endpoint_is_documented(client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"400", "413", "415", "422"} <= set(schema["paths"]["/read"]["post"]["responses"])
    assert schema["components"]["schemas"]["Reading"]["properties"]["text"]["examples"] == ["2047"]


# --- the benchmark --------------------------------------------------------------------------------


def test_bench_judges_segmentation_mistakes_by_boxes() -> None:
    from digitrec.bench.numbers import Number, judge

    number = Number(
        np.zeros((10, 10), np.uint8), "123", [0, 1, 2], [(0, 0, 10, 9), (12, 0, 20, 9), (22, 0, 30, 9)], "near"
    )

    def reading(*digits: tuple[int, int, int]) -> dict:
        return {
            "text": "".join(str(d) for d, _, _ in digits),
            "digits": [{"digit": d, "box": [x0, 0, x1, 9]} for d, x0, x1 in digits],
        }

    assert judge(reading((1, 0, 10), (2, 12, 20), (3, 22, 30)), number) == {
        "exact": 1,
        "right": 3,
        "digits": 3,
        "split": 0,
        "merged": 0,
        "missed": 0,
        "order": 0,
    }
    split = judge(reading((1, 0, 5), (7, 5, 10), (2, 12, 20), (3, 22, 30)), number)
    assert (split["split"], split["right"], split["exact"]) == (1, 2, 0)
    merged = judge(reading((8, 0, 20), (3, 22, 30)), number)
    assert (merged["merged"], merged["missed"], merged["right"]) == (1, 0, 1)
    missed = judge(reading((1, 0, 10), (3, 22, 30)), number)
    assert (missed["missed"], missed["right"]) == (1, 2)
    swapped = {
        "text": "213",
        "digits": [
            {"digit": 2, "box": [12, 0, 20, 9]},
            {"digit": 1, "box": [0, 0, 10, 9]},
            {"digit": 3, "box": [22, 0, 30, 9]},
        ],
    }
    assert judge(swapped, number)["order"] == 1


def test_bench_numbers_are_seeded_and_placed_as_their_gap_class_says(mnist_dir: Path) -> None:
    from digitrec.data.mnist import load_split, raw_dir
    from digitrec.data.numbers import GAPS, make_number, make_numbers

    split = load_split(raw_dir(mnist_dir), train=False)
    digits, labels = split.images[:200, 0].numpy(), split.labels[:200].numpy()
    first, again = make_numbers(digits, labels, 12, seed=3), make_numbers(digits, labels, 12, seed=3)
    assert [n.text for n in first] == [n.text for n in again] and np.array_equal(first[5].image, again[5].image)
    assert all(2 <= len(n.text) <= 8 and n.gap in GAPS for n in first)
    rng = np.random.default_rng(0)
    for gap, (low, high) in GAPS.items():
        number = make_number(digits, labels, rng, 3, gap, digit_height=56)
        assert number.text == "".join(str(labels[p]) for p in number.picks)
        lefts = [box[0] for box in number.boxes]
        assert lefts == sorted(lefts)
        gaps = [b[0] - a[2] for a, b in zip(number.boxes, number.boxes[1:])]  # between the boxes of the ink ...
        assert min(gaps) >= round(low * 2) and (high >= 0 or min(gaps) < 4)  # ... at least those of the frames
        ink = number.image < 200
        assert ink[:, : number.boxes[0][0] - 3].sum() == 0  # a margin of paper


def test_bench_command_prints_its_tables(tmp_path: Path, capsys) -> None:
    from digitrec.bench.latency import untrained_checkpoint
    from digitrec.bench.numbers import main

    checkpoint = untrained_checkpoint("speednet", tmp_path / "speednet.ckpt")
    assert main(["--checkpoint", str(checkpoint), "--count", "6", "--repeats", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "1 threads" in out and "6 numbers from MNIST test digits, seed 0" in out
    for header in (
        "| gap | numbers | exact | digits right | split | merged | missed | order | ms per reading",
        "| length | numbers |",
    ):
        assert header in out
    assert re.search(r"\| all \| 6 \| [\d.]+ % \| [\d.]+ % \|", out)
    assert "| exact (numbers) | 2 digits | 3 digits |" in out and "| overlapping |" in out
    assert "A separated 4-digit number on a 1000×300 image: " in out and "one by one through predict" in out


def test_bench_tunes_on_validation_digits_with_another_digit_bonus(tmp_path: Path, capsys, caplog) -> None:
    from digitrec.bench.latency import untrained_checkpoint
    from digitrec.bench.numbers import digit_bonus, main

    checkpoint = untrained_checkpoint("speednet", tmp_path / "speednet.ckpt")
    args = ["--checkpoint", str(checkpoint), "--count", "4", "--repeats", "1", "--threads", "1"]
    own = numbers.DIGIT_BONUS
    assert main([*args, "--split", "validation", "--digit-bonus", "0"]) == 0
    assert "4 numbers from MNIST validation digits, seed 0; digit bonus 0, segment network bundled\n" in (
        capsys.readouterr().out
    )
    assert numbers.DIGIT_BONUS == own  # the reader's own again
    with digit_bonus(0.0):  # the plain product of the probabilities: the merged 8
        assert one_or_two(part=0.9, merged=0.85) == "8"
    assert one_or_two(part=0.9, merged=0.85) == "12"
    with pytest.raises(SystemExit):
        main([*args, "--digit-bonus", "nan"])
    assert "--digit-bonus nan: give a finite number" in caplog.text
    with pytest.raises(SystemExit):
        main([*args, "--segments", str(tmp_path / "nowhere.pt")])
    assert "nowhere.pt: no such file for the network that reads numbers" in caplog.text


# --- the page's number mode, in a real browser (skipped without Chromium and Playwright, as the page's tests) --


@contextmanager
def serving(app) -> Iterator[str]:
    """The app served by uvicorn in a thread of this process, on a free port."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def page_url(predictor):
    """The app with the stub network, without feedback."""
    from digitrec.serve.app import create_app

    with serving(create_app(predictor)) as url:
        yield url


@pytest.fixture
def browser_page(page_url, browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.goto(page_url)
    yield page
    context.close()


def _write(page, digits: list[int]) -> None:
    """The drawn digits' strokes with the mouse (in the canvas's heights: it is 3 of them wide)."""
    box = page.get_by_test_id("canvas").bounding_box()
    for digit, left, top, tall in row(digits, height=0.6, gap=0.12, left=0.15, top=0.2):
        for stroke in GLYPHS[digit]:
            points = [
                (
                    box["x"] + (left + x * WIDTHS[digit] * tall) / 3 * box["width"],
                    box["y"] + (top + y * tall) * box["height"],
                )
                for x, y in stroke
            ]
            page.mouse.move(*points[0])
            page.mouse.down()
            for point in points[1:]:
                page.mouse.move(*point)
            page.mouse.up()


def test_page_number_mode_reads_the_number_and_boxes_each_digit(browser_page) -> None:
    page = browser_page
    assert page.get_by_test_id("mode-digit").get_attribute("aria-pressed") == "true"
    page.get_by_test_id("mode-number").click()
    canvas = page.get_by_test_id("canvas").bounding_box()
    assert canvas["width"] > 2.5 * canvas["height"] and page.get_by_test_id("prediction").is_hidden()
    assert page.get_by_test_id("number").text_content() == "?"
    _write(page, [2, 0, 4, 7])
    answered(page, endpoint="/read")
    assert page.get_by_test_id("number").text_content() == "2047"
    boxes = page.get_by_test_id("digit-box")
    assert [boxes.nth(k).get_attribute("data-digit") for k in range(boxes.count())] == ["2", "0", "4", "7"]
    lefts = [boxes.nth(k).bounding_box()["x"] for k in range(4)]
    assert lefts == sorted(lefts) and canvas["x"] <= lefts[0] and lefts[-1] < canvas["x"] + canvas["width"]
    assert "7 ·" in boxes.nth(3).text_content()
    page.wait_for_function("() => performance.getEntriesByType('resource').some(e => e.name.endsWith('/health'))")
    assert [boxes.nth(k).evaluate("box => box.tagName") for k in range(4)] == ["DIV"] * 4  # feedback off: no buttons
    assert page.get_by_test_id("feedback").is_hidden() and page.get_by_test_id("confirm").is_hidden()
    page.get_by_test_id("clear").click()
    assert page.get_by_test_id("number").text_content() == "?" and boxes.count() == 0
    page.get_by_test_id("mode-digit").click()
    canvas = page.get_by_test_id("canvas").bounding_box()
    assert canvas["width"] == pytest.approx(canvas["height"], abs=2) and page.get_by_test_id("number").is_hidden()
    assert page.get_by_test_id("prediction").is_visible()
    box = page.get_by_test_id("canvas").bounding_box()
    with page.expect_response(lambda r: r.url.endswith("/predict")):  # one digit, as before
        page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.15 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.85 * box["height"], steps=4)
        page.mouse.up()
    page.wait_for_function("() => document.querySelector('[data-testid=prediction]').textContent === '1'")
    assert "% confident" in page.get_by_test_id("confidence").text_content()


def test_page_number_mode_chips_do_not_overlap_on_a_phone(page_url, browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(page_url)
    page.get_by_test_id("mode-number").click()
    _write(page, [7, 1, 1, 4, 1])
    answered(page, endpoint="/read")
    assert page.get_by_test_id("number").text_content() == "71141"
    chips = [page.get_by_test_id("digit-box").nth(k).locator("span").bounding_box() for k in range(5)]
    for a, b in itertools.combinations(chips, 2):
        apart = a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
        assert apart or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"], (a, b)
    assert re.fullmatch(r"7 · \d+ %", page.get_by_test_id("digit-box").nth(0).text_content())  # only hidden
    context.close()


# --- feedback on each digit of the number (the server stores it) -----------------------------------------


@pytest.fixture
def feedback_page(predictor, browser, tmp_path: Path):
    """The page in number mode, on a touch screen too, the app storing feedback in `page.db` (SQLite);
    `page.reads` holds the answers of POST /read."""
    from digitrec.feedback.store import FeedbackStore
    from digitrec.serve.app import create_app

    with serving(create_app(predictor, feedback=FeedbackStore(tmp_path / "feedback.db"))) as url:
        context = browser.new_context(viewport={"width": 1100, "height": 800}, has_touch=True)
        page = context.new_page()
        page.db, page.reads = tmp_path / "feedback.db", []
        page.on("response", lambda r: page.reads.append(r) if r.url.endswith("/read") else None)
        page.goto(url)
        page.wait_for_function("() => performance.getEntriesByType('resource').some(e => e.name.endsWith('/health'))")
        page.get_by_test_id("mode-number").click()
        yield page
        context.close()


def _status(page, text: str) -> None:
    page.wait_for_function(
        "text => document.querySelector('[data-testid=feedback-status]').textContent === text", arg=text
    )


def _canvas(page) -> np.ndarray:
    """The canvas's pixels (RGBA), as the page sends them."""
    url = page.evaluate("() => document.getElementById('canvas').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def _stored(db: Path) -> list:
    import sqlalchemy as sa

    from digitrec.feedback.store import items

    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        return conn.execute(sa.select(items).order_by(items.c.id)).all()


def test_page_number_mode_saves_feedback_on_a_digit_with_its_crop(feedback_page) -> None:
    page = feedback_page
    _write(page, [2, 0, 4, 7])
    answered(page, endpoint="/read")
    assert page.get_by_test_id("number").text_content() == "2047"
    reading, canvas, sent = page.reads[-1].json(), _canvas(page), len(page.reads)
    boxes, status = page.get_by_test_id("digit-box"), page.get_by_test_id("feedback-status")
    confirm, digits = page.get_by_test_id("confirm"), page.get_by_test_id("correct").locator("[data-digit]")
    assert "Select its box" in page.get_by_test_id("feedback").text_content() and confirm.is_hidden()
    name = re.compile(r"^2nd digit: 0, [\d.]+ percent confident; select to say whether it is right$")
    assert page.get_by_role("button", name=name).is_visible()

    boxes.nth(1).click()  # with the mouse
    assert boxes.nth(1).get_attribute("aria-pressed") == "true"
    assert page.get_by_text("The 2nd digit, read as 0: is it right?").is_visible()
    assert confirm.is_enabled() and digits.nth(0).is_disabled() and digits.nth(6).is_enabled()
    digits.nth(6).click()
    _status(page, "Saved the 2nd digit as 6: thank you.")
    assert boxes.nth(1).text_content() == "0 → 6 ✓" and "saved as 6" in boxes.nth(1).get_attribute("aria-label")
    assert confirm.is_disabled() and all(digits.nth(d).is_disabled() for d in range(10))  # once per digit

    box = boxes.nth(3).bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # with a finger
    assert page.get_by_text("The 4th digit, read as 7: is it right?").is_visible() and status.text_content() == ""
    assert boxes.nth(1).get_attribute("aria-pressed") == "false"
    confirm.click()
    _status(page, "Saved the 4th digit as 7: thank you.")
    assert boxes.nth(3).text_content() == "7 ✓"

    boxes.nth(0).focus()  # with the keyboard
    page.keyboard.press("Enter")
    assert boxes.nth(0).get_attribute("aria-pressed") == "true" and confirm.is_enabled() and status.text_content() == ""
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # the next box: the saved one, as it was left
    assert status.text_content() == "Saved the 2nd digit as 6: thank you." and confirm.is_disabled()
    assert digits.nth(6).evaluate("button => button.classList.contains('chosen')")
    assert len(page.reads) == sent and page.get_by_test_id("number").text_content() == "2047"  # nothing drawn

    rows = _stored(page.db)
    # the server reads each crop as the digit of the number, as the page showed it
    assert [(r.label, r.shown, r.predicted) for r in rows] == [(6, 0, 0), (7, 7, 7)]
    for row, digit in zip(rows, [reading["digits"][1], reading["digits"][3]]):
        x0, y0, x1, y1 = digit["box"]
        margin = max(2, round(0.1 * max(x1 - x0, y1 - y0)))
        crop = np.array(Image.open(io.BytesIO(row.image)).convert("RGBA"))
        assert crop.shape == (y1 - y0 + 2 * margin, x1 - x0 + 2 * margin, 4)  # the box, not the canvas
        assert np.array_equal(crop[margin:-margin, margin:-margin], canvas[y0:y1, x0:x1])
        crop[margin:-margin, margin:-margin] = 255
        assert (crop == 255).all()  # on a margin of white paper: no neighbour reaches in
        assert row.strokes is None
        seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(digit["seen"].split(",", 1)[1]))), float)
        stored = np.frombuffer(row.pixels, np.uint8).reshape(28, 28).astype(float)
        assert np.corrcoef(seen.ravel(), stored.ravel())[0, 1] > 0.95  # the network sees what it saw in the number


def test_page_number_mode_a_stroke_from_a_box_draws_and_a_new_reading_asks_afresh(feedback_page) -> None:
    page = feedback_page
    _write(page, [4, 1])
    answered(page, endpoint="/read")
    one = page.reads[-1].json()["digits"][1]["box"]
    boxes, confirm = page.get_by_test_id("digit-box"), page.get_by_test_id("confirm")
    assert boxes.count() == 2
    boxes.nth(0).click()
    confirm.click()
    _status(page, "Saved the 1st digit as 4: thank you.")
    box = boxes.nth(1).bounding_box()  # the 1's: a stroke from its middle to the right, over the paper
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    pressed = [boxes.nth(k).get_attribute("aria-pressed") for k in range(2)]
    assert pressed == ["true", "false"]  # the stroke did not select the box it started on
    answered(page, 2, endpoint="/read")
    marked = "() => document.querySelectorAll('.digit-box[aria-pressed=true], .digit-box.saved').length"
    assert page.evaluate(marked) == 0  # no box selected, none saved
    assert confirm.is_hidden() and page.get_by_test_id("feedback-status").text_content() == ""
    assert "Select its box" in page.get_by_test_id("feedback").text_content()
    assert (_canvas(page)[:, one[2] + 20 :, 0] < 128).any()  # the stroke is on the canvas, right of the 1
    assert len(_stored(page.db)) == 1
