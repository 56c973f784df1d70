"""Reading whole numbers: several handwritten digits in a row, in one image (`DigitPredictor.read`).

1. Ink: the image is turned into ink over the background with the single-digit preprocessing's polarity
   rule (`ink_contrast`), first reduced to about `COARSE_PIXELS` to find the line height, then, around the
   ink, resized to make the line `LINE` pixels high. A mask keeps the ink above the noise and
   `MASK_FRACTION` of the peak; it is taken apart into 8-connected components (`components.label`).
2. Units (`components.group`): the line height is the area-weighted median height of the components.
   Specks (smaller than `SPECK` line heights, or than `MIN_SIDE` pixels of the given image, both ways) are
   dropped; fragments (lower than `FRAGMENT`: the bar of a 5, the cross of a 7, a piece of a broken stroke)
   join the nearest component within `ATTACH`, and what is left of only fragments is a stray mark, dropped
   too. Components overlapping over `OVERLAP` of the narrower one's width (the two strokes of a 4) are one
   unit. Units are read left to right.
3. Pieces (`components.cut`): a unit wider than `SPLIT` of its height may be touching digits: it is cut
   along the cheapest paths through its ink (top to bottom, leaning where the digits do), one per
   `CUT_SPACING` of width, and straight down between them (overlapping digits share ink no path avoids).
4. Candidates: every whole unit, every run of neighbouring pieces of a cut unit tall and narrow enough
   for a digit, and two neighbouring units nearly touching (`JOIN`) when one is much lower (`JOIN_HEIGHT`:
   a 4 whose bar stops short of its stem). Each is cropped to its own ink and made MNIST-like as `predict`
   does (its last steps, `centred`: the ink is clean already). All candidates of the image are judged
   whole or not in one batch, and those not ruled out are scored by the classifier in one more.
5. The reading is the partition of the pieces into candidates with the highest joint probability, each
   candidate's the classifier's probability of its digit times the probability that it is one whole digit
   (`digitrec.inference.segments`: a network that sees the crop and its shape on the line; the classifier
   alone reads half a 0 as a confident 1 and two overlapping digits as one), by dynamic programming, each
   digit read worth `DIGIT_BONUS` more (twice for one of two units).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from digitrec.data.mnist import NUM_CLASSES
from digitrec.inference.components import MAX_MARKS, Box, Components, Piece, cut, group, label, union
from digitrec.inference.images import MIN_SIDE
from digitrec.inference.preprocess import (
    MIN_CONTRAST,
    NOISE_SIGMAS,
    Preprocessed,
    bounding_box,
    centred,
    ink_contrast,
)
from digitrec.inference.segments import geometry
from digitrec.models.segments import GEOMETRY

COARSE_PIXELS = 1 << 16  # the image is first reduced to about this many pixels to find the line height ...
LINE = 48  # ... then the part around the ink is resized (never enlarged) to make the line this many pixels high,
MAX_PIXELS = 1 << 20  # unless that part would then have more pixels than this
MASK_FRACTION = 0.3  # ink above this fraction of the peak is in the mask
JOIN = 0.15  # line heights: neighbouring units this close ...
JOIN_HEIGHT = 0.75  # ... one of them lower than this fraction of the other, may be one digit
MIN_HEIGHT = 0.5  # of the unit's height: the lowest part of a cut unit that may be a digit
RULED_OUT = math.log(1e-3)  # log P(one whole digit): a part of a cut unit judged less likely is not read at all
MAX_WIDTH = 1.4  # of the larger of its height and the line height: the widest part of a cut unit that may be one
# log-probability added per digit read: a reading with more digits multiplies more probabilities below 1, so without
# it two overlapping digits lose to one confident merged reading more often than they should. A candidate of two
# units (a 4 whose bar stops short of its stem) gets it twice: joining units is left to the probabilities alone.
DIGIT_BONUS = 0.25

Scorer = Callable[[Sequence[Preprocessed]], np.ndarray]  # (N, 10) calibrated probabilities per crop
Judge = Callable[[Sequence[Preprocessed], np.ndarray], np.ndarray]  # crops, their geometry → log P(one whole digit)


@dataclass(frozen=True)
class Ink:
    clean: np.ndarray  # ink contrast over the background (light on dark), 0 below the noise floor
    mask: np.ndarray
    comps: Components
    units: np.ndarray  # each component's unit, -1 for the dropped ones
    line: float  # line height


@dataclass
class Layout:
    """What one image holds (in work pixels): the candidate digits to score, or why there are none."""

    shape: tuple[int, int]  # the given image's height and width
    scale: float = 1.0  # work pixels per image pixel ...
    origin: tuple[int, int] = (0, 0)  # ... of the part of the image worked on, from this x, y on
    ink: Ink | None = None
    pieces: list[Piece] | None = None
    spans: list[tuple[int, int]] | None = None  # candidate digits: pieces[i:j]
    boxes: list[Box] | None = None
    shapes: np.ndarray | None = None  # each candidate's `segments.geometry`
    crops: list[Preprocessed] | None = None
    reason: str | None = None


def read_numbers(
    grays: Sequence[np.ndarray], score: Scorer, threshold: float, seen: bool = False, judge: Judge | None = None
) -> list[dict[str, Any]]:
    """Readings of grayscale images (H×W in [0, 1]). The candidates of all the images are judged whole or not
    in one call (without a `judge`, every candidate counts as whole), then those not ruled out (`RULED_OUT`)
    are scored in one more. With `seen`, each digit also has `seen`: the 28×28 image (float, in [0, 1]) the
    network saw."""
    layouts = [layout(gray) for gray in grays]
    crops = [crop for item in layouts for crop in item.crops or []]
    inked = np.array([crop.has_ink for crop in crops], bool)
    scored = inked.copy()
    probabilities = np.zeros((len(crops), NUM_CLASSES))  # not scored: no digit, probability 0
    whole = np.zeros(len(crops))  # log P(one whole digit): without a judge, 1 for every candidate
    if inked.any():
        if judge is not None:
            shapes = np.concatenate([item.shapes for item in layouts if item.crops])
            whole[inked] = judge([crop for crop, ink in zip(crops, inked) if ink], shapes[inked])
            unit = shapes[:, GEOMETRY.index("part of a cut unit")] == 0  # always scored: a reading always exists
            scored &= unit | (whole > RULED_OUT)
    if scored.any():
        probabilities[scored] = np.asarray(score([crop for crop, use in zip(crops, scored) if use]), np.float64)
    readings, start = [], 0
    for item in layouts:
        count = len(item.crops or [])
        span = slice(start, start + count)
        readings.append(reading(item, probabilities[span], whole[span], threshold, seen))
        start += count
    return readings


def layout(gray: np.ndarray) -> Layout:
    """The candidate digits of one grayscale image, each cropped and preprocessed; or why there are none."""
    height, width = gray.shape
    scale = _at_least_3(min(1.0, math.sqrt(COARSE_PIXELS / (height * width))), gray.shape)
    ink = _ink(gray, scale)
    if isinstance(ink, str):
        return Layout((height, width), reason=ink)
    origin, line = (0, 0), ink.line / scale
    x0, y0, x1, y1 = (v / scale for v in union(ink.comps.boxes[ink.units >= 0]))
    x0, y0 = max(0, math.floor(x0 - line)), max(0, math.floor(y0 - line))  # the ink and a line around it
    x1, y1 = min(width, math.ceil(x1 + line)), min(height, math.ceil(y1 + line))
    finer = _at_least_3(min(1.0, LINE / line, math.sqrt(MAX_PIXELS / ((x1 - x0) * (y1 - y0)))), (y1 - y0, x1 - x0))
    if abs(math.log(finer / scale)) > math.log(1.25):  # again, at the scale for LINE
        finer_ink = _ink(gray[y0:y1, x0:x1], finer)
        if not isinstance(finer_ink, str):
            ink, scale, origin = finer_ink, finer, (x0, y0)
    comps, units = ink.comps, ink.units
    order = sorted(range(units.max() + 1), key=lambda u: _centre(comps.boxes[units == u]))
    pieces = [piece for u in order for piece in cut(comps, units == u, u, ink.line)]
    spans = _spans(pieces, ink.line)
    boxes = [union([p.box for p in pieces[i:j]]) for i, j in spans]
    shapes = geometry(pieces, spans, boxes, ink.line)
    crops = [_crop(ink, pieces[i:j], box) for (i, j), box in zip(spans, boxes)]
    return Layout((height, width), scale, origin, ink, pieces, spans, boxes, shapes, crops)


def reading(
    item: Layout, probabilities: np.ndarray, whole: np.ndarray, threshold: float, seen: bool = False
) -> dict[str, Any]:
    """The answer for one image from its candidates' probabilities and log P(whole digit): the best partition
    into digits."""
    if item.reason is not None:
        return {"text": "", "digits": [], "confidence": None, "is_number": False, "reason": item.reason, "error": None}
    units = np.array([len({piece.unit for piece in item.pieces[i:j]}) for i, j in item.spans])
    scores = np.log(np.maximum(probabilities.max(1), 1e-12)) + whole + DIGIT_BONUS * units
    chosen = _best_partition(item.spans, scores)
    digits = [_digit(probabilities[k], item.boxes[k], item) for k in chosen]
    if seen:
        for digit, k in zip(digits, chosen):
            digit["seen"] = item.crops[k].pixels
    unclear = [
        f"digit {n} of {len(digits)} at {d['confidence']:.2f}"
        for n, d in enumerate(digits, 1)
        if d["confidence"] < threshold
    ]
    reason = f"low confidence: {', '.join(unclear)} < threshold {threshold:.2f}" if unclear else None
    return {
        "text": "".join(str(d["digit"]) for d in digits),
        "digits": digits,
        "confidence": math.prod(d["confidence"] for d in digits),
        "is_number": not unclear,
        "reason": reason,
        "error": None,
    }


def _ink(gray: np.ndarray, scale: float) -> Ink | str:
    """The ink of the image resized by `scale`, its components and units; or why there are none."""
    if scale != 1:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = np.asarray(Image.fromarray(gray.astype(np.float32)).resize(size, Image.Resampling.BOX))
    ink, _, noise = ink_contrast(gray, max(3, max(gray.shape) // 40))
    floor = NOISE_SIGMAS * noise
    peak = _peak(ink)
    if peak < max(MIN_CONTRAST, floor):
        return f"blank image: no ink stands out from the background (contrast {max(peak, 0):.2f})"
    clean = np.where(ink > floor, np.clip(ink, 0, 1), 0).astype(np.float32)
    mask = clean > max(floor, MASK_FRACTION * peak)
    comps = label(mask)
    units, line = group(comps, MIN_SIDE * scale)
    if line < 0:
        return f"not a number: over {MAX_MARKS} separate marks"
    if units.max(initial=-1) < 0:
        return "no digit: only specks and stray marks"
    return Ink(clean, mask, comps, units, line)


def _at_least_3(scale: float, shape: tuple[int, int]) -> float:
    """The scale, raised if need be (never above 1) so that a strip of an image stays 3 pixels wide."""
    return max(scale, min(1.0, 3 / min(shape)))


def _peak(ink: np.ndarray) -> float:
    """The brightest ink, as the largest 3×3 mean: a single hot pixel is not ink."""
    if min(ink.shape) < 3:
        return float(ink.max())
    rows = ink[:-2] + ink[1:-1] + ink[2:]
    return float((rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]).max()) / 9


def _spans(pieces: list[Piece], line: float) -> list[tuple[int, int]]:
    """The candidate digits, as runs pieces[i:j]: each whole unit; the parts of a cut unit tall and narrow
    enough for a digit; and a whole unit with its neighbour when they nearly touch and one is much lower
    than the other (a 4 whose bar stops short of its stem)."""
    spans = []
    bounds = [i for i in range(len(pieces) + 1) if i in (0, len(pieces)) or pieces[i].unit != pieces[i - 1].unit]
    units = [union([p.box for p in pieces[a:b]]) for a, b in itertools.pairwise(bounds)]
    for (first, stop), unit in zip(itertools.pairwise(bounds), units):
        for i, j in itertools.combinations(range(first, stop + 1), 2):
            x0, y0, x1, y1 = union([p.box for p in pieces[i:j]])
            if (i, j) == (first, stop) or (
                y1 - y0 >= MIN_HEIGHT * _height(unit) and x1 - x0 <= MAX_WIDTH * max(y1 - y0, line)
            ):
                spans.append((i, j))
    for k, (left, right) in enumerate(itertools.pairwise(units)):
        x0, y0, x1, y1 = union([left, right])
        lower, higher = sorted((_height(left), _height(right)))
        if right[0] - left[2] <= JOIN * line and lower < JOIN_HEIGHT * higher and x1 - x0 <= MAX_WIDTH * (y1 - y0):
            spans.append((bounds[k], bounds[k + 2]))
    return spans


def _crop(ink: Ink, pieces: list[Piece], box: Box) -> Preprocessed:
    """The candidate's own ink (its mask grown by the faint edges of its strokes, not into other ink),
    MNIST-style: the ink is clean already, so only the box, the size and the centring of `mnist_style`."""
    x0, y0, x1, y1 = box
    own = np.zeros((y1 - y0, x1 - x0), bool)
    for piece in pieces:
        own |= ink.comps.paint(piece.components, box, piece.columns)
    grown = own.copy()
    for _ in range(max(1, round(0.04 * ink.line))):  # 3×3 dilation steps
        grown[1:] |= grown[:-1]
        grown[:-1] |= grown[1:]
        grown[:, 1:] |= grown[:, :-1]
        grown[:, :-1] |= grown[:, 1:]
    pixels = np.where(own | (grown & ~ink.mask[y0:y1, x0:x1]), ink.clean[y0:y1, x0:x1], 0)
    return centred(pixels[bounding_box(pixels > 0)] if pixels.any() else pixels)  # no ink: the blank answer


def _best_partition(spans: list[tuple[int, int]], scores: np.ndarray) -> list[int]:
    """The spans (indices) covering every piece once with the highest total score."""
    count = max(j for _, j in spans)
    best, choice = [0.0] + [-math.inf] * count, [-1] * (count + 1)
    for k in sorted(range(len(spans)), key=lambda k: spans[k][1]):  # by end: best[i] is final when used
        i, j = spans[k]
        if best[i] + scores[k] > best[j]:
            best[j], choice[j] = best[i] + scores[k], k
    chosen, j = [], count
    while j > 0:
        chosen.append(choice[j])
        j = spans[choice[j]][0]
    return chosen[::-1]


def _digit(probabilities: np.ndarray, box: Box, item: Layout) -> dict[str, Any]:
    """A digit of the answer, its box in the given image's pixels."""
    (height, width), (left, top) = item.shape, item.origin
    x0, y0, x1, y1 = box
    given = [
        max(0, left + math.floor(x0 / item.scale)),
        max(0, top + math.floor(y0 / item.scale)),
        min(width, left + math.ceil(x1 / item.scale)),
        min(height, top + math.ceil(y1 / item.scale)),
    ]
    return {
        "digit": int(probabilities.argmax()),
        "confidence": float(probabilities.max()),
        "probabilities": probabilities.tolist(),
        "box": given,
    }


def _centre(boxes: np.ndarray) -> float:
    """Twice the horizontal centre of the boxes' union: reading order."""
    return float(boxes[:, 0].min() + boxes[:, 2].max())


def _height(box: Box) -> int:
    return box[3] - box[1]
