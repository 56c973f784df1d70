"""Connected components of an ink mask (8-connected, in numpy: no scipy), and the digits they make.

`label`: the mask is taken apart into runs (horizontal stretches of ink in one row); runs in neighbouring
rows that touch are joined, and the components are the classes of that relation. Everything is
vectorised over runs, so a 1000×300 mask takes about a millisecond.

`group`: components make units, each one digit or several touching ones (see `digitrec.inference.numbers`);
`cut`: a unit wide enough for several digits is cut into pieces along the cheapest paths through its ink,
and straight down every `STRAIGHT` line heights between them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPECK = 0.2  # line heights: components smaller both ways are specks
FRAGMENT = 0.45  # line heights: components lower than this are parts of a digit, not digits
ATTACH = 0.25  # line heights: how far a fragment may be from the component it joins
OVERLAP = 0.6  # of the narrower width: components overlapping more horizontally are one digit
SPLIT = 0.75  # of its height: a unit wider than this may be several touching digits
CUT_SPACING = 0.4  # of its height: a unit gets a candidate cut per this much width beyond the first ...
MAX_CUTS = 6  # ... up to this many
MIN_PIECE = 0.1  # of the unit's height: no cut nearer than this to its side or to another cut
STRAIGHT = 0.12  # line heights: besides those, a straight cut per this much width (overlapping digits share ink
STRAIGHT_GAP = 0.08  # that no cheap path avoids), none nearer than this to another cut, in a unit ...
STRAIGHT_UNIT = 10.0  # ... up to this many line heights wide (a longer one is a rule or a scribble, not digits)
MAX_MARKS = 100  # components besides the specks: more are not one number
DRIFT = 0.05  # ink pixels: what a sideways step of a cut path costs (cuts go straight where they can)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1; x1 and y1 exclusive


@dataclass(frozen=True)
class Components:
    rows: np.ndarray  # per run: its row ...
    starts: np.ndarray  # ... first column ...
    ends: np.ndarray  # ... and the column after its last
    labels: np.ndarray  # ... and its component, 0 to count - 1 (numbered by their first run in raster order)
    boxes: np.ndarray  # (count, 4) int: x0, y0, x1, y1 of each component, x1 and y1 exclusive
    areas: np.ndarray  # (count,) pixels in each component

    @property
    def count(self) -> int:
        return len(self.areas)

    def paint(
        self,
        which: np.ndarray,
        box: tuple[int, int, int, int],
        columns: tuple[int, np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The mask, within `box` (x0, y0, x1, y1), of the components where `which` (a bool per component)
        is true; given `columns` (first row, starts, stops: a column range per row from the first row on),
        only of their pixels in those columns."""
        x0, y0, x1, y1 = box
        keep = which[self.labels] & (self.rows >= y0) & (self.rows < y1)
        lo, hi = x0, x1
        if columns is not None:
            top, left, right = columns
            keep &= (self.rows >= top) & (self.rows < top + len(left))
            row = self.rows[keep] - top
            lo, hi = np.maximum(x0, left[row]), np.minimum(x1, right[row])
        starts, ends = np.maximum(self.starts[keep], lo), np.minimum(self.ends[keep], hi)
        rows = self.rows[keep] - y0
        inside = starts < ends
        steps = np.zeros((y1 - y0, x1 - x0 + 1), np.int32)  # +1 at a run's start, -1 after its end
        np.add.at(steps, (rows[inside], starts[inside] - x0), 1)
        np.add.at(steps, (rows[inside], ends[inside] - x0), -1)
        return steps.cumsum(1)[:, :-1] > 0


def label(mask: np.ndarray) -> Components:
    """The 8-connected components of a 2-D bool mask."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = mask
    rows, starts = np.nonzero(np.diff(padded, axis=1) == 1)
    _, ends = np.nonzero(np.diff(padded, axis=1) == -1)  # same order: both raster order, one end per start
    if len(rows) == 0:
        empty = np.zeros(0, np.int64)
        return Components(empty, empty, empty, empty, np.zeros((0, 4), np.int64), empty)
    stride = width + 2  # sort keys: row-major positions, a run's columns never reach the next row's keys
    start_keys, end_keys = rows * stride + starts, rows * stride + ends
    # A run touches the runs of the next row that start at or before its end and end at or after its start
    # (8-connectivity: `ends` is exclusive); in that row they are consecutive.
    first = np.searchsorted(end_keys, (rows + 1) * stride + starts, side="left")
    stop = np.searchsorted(start_keys, (rows + 1) * stride + ends, side="right")
    counts = np.maximum(stop - first, 0)
    a = np.repeat(np.arange(len(rows)), counts)
    b = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    labels = _classes(len(rows), a, b)
    _, labels = np.unique(labels, return_inverse=True)
    count = int(labels.max()) + 1
    boxes = np.stack(
        [
            _reduce(np.minimum, starts, labels, count, width),
            _reduce(np.minimum, rows, labels, count, height),
            _reduce(np.maximum, ends, labels, count, 0),
            _reduce(np.maximum, rows + 1, labels, count, 0),
        ],
        1,
    )
    areas = np.bincount(labels, weights=ends - starts, minlength=count).astype(np.int64)
    return Components(rows, starts, ends, labels, boxes, areas)


def _classes(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of n items, the smallest item it is linked to through the pairs (a, b): each round every
    link pulls both ends down to the smaller label, then labels follow their pointers to the root."""
    labels = np.arange(n)
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, labels[a], low)  # roots take the smaller label too: whole trees join at once
        np.minimum.at(labels, labels[b], low)
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # pointer jumping, to the roots
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


def _reduce(op: np.ufunc, values: np.ndarray, labels: np.ndarray, count: int, initial: int) -> np.ndarray:
    out = np.full(count, initial, np.int64)
    op.at(out, labels, values)
    return out


@dataclass(frozen=True)
class Piece:
    """Part of a unit: the ink of its components between two cut paths."""

    components: np.ndarray  # bool per component
    columns: tuple[int, np.ndarray, np.ndarray]  # first row, and per row from it: first column, column after last
    box: Box
    unit: int
    crossed: int = 0  # strokes the cut on its left goes through (0: the unit's first piece) ...
    cut_ink: int = 0  # ... and its pixels of ink


def group(comps: Components, tiny: float) -> tuple[np.ndarray, float]:
    """Each component's unit (-1: dropped) and the line height; components smaller than `tiny` pixels
    both ways are specks, whatever the line. More than `MAX_MARKS` components besides the specks are not
    a number: then every unit is -1 and the line height is negative."""
    x0, y0, x1, y1 = comps.boxes.T
    heights, sides = y1 - y0, np.maximum(y1 - y0, x1 - x0)
    candidates = np.flatnonzero(sides >= tiny)
    if candidates.size == 0:
        return np.full(comps.count, -1), 0.0
    order = candidates[np.argsort(heights[candidates])]
    weights = np.cumsum(comps.areas[order])
    line = float(heights[order][np.searchsorted(weights, weights[-1] / 2)])
    kept = np.flatnonzero(sides >= max(SPECK * line, tiny))
    if kept.size > MAX_MARKS:  # a page, a texture: grouping would cost quadratic time for nothing
        return np.full(comps.count, -1), -1.0
    parent = {int(i): int(i) for i in kept}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for f in kept[heights[kept] < FRAGMENT * line]:  # fragments join the nearest component (ties: most overlap)
        others = kept[kept != f]
        dx = np.maximum(0, np.maximum(x0[others] - x1[f], x0[f] - x1[others]))
        dy = np.maximum(0, np.maximum(y0[others] - y1[f], y0[f] - y1[others]))
        distance = np.hypot(dx, dy) - 1e-3 * _overlap(comps.boxes[f], comps.boxes[others])
        if others.size and distance.min() <= ATTACH * line:
            parent[root(int(f))] = root(int(others[distance.argmin()]))
    while True:  # units overlapping over most of the narrower one's width, and near, are one
        groups: dict[int, list[int]] = {}
        for i in kept:
            groups.setdefault(root(int(i)), []).append(int(i))
        roots = list(groups)
        boxes = np.array([union(comps.boxes[members]) for members in groups.values()]).reshape(-1, 4)
        widths = boxes[:, 2] - boxes[:, 0]
        overlaps = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0])
        apart = np.maximum(boxes[:, None, 1], boxes[None, :, 1]) - np.minimum(boxes[:, None, 3], boxes[None, :, 3])
        joined = np.triu(
            (overlaps >= OVERLAP * np.minimum(widths[:, None], widths[None, :])) & (apart <= ATTACH * line), 1
        )  # one above the other, but not far: not another line
        if not joined.any():
            break
        for a, b in zip(*np.nonzero(joined)):
            parent[root(roots[b])] = root(roots[a])
    units = np.full(comps.count, -1)
    for number, members in enumerate(groups.values()):
        if y1[members].max() - y0[members].min() >= FRAGMENT * line:  # else only fragments: a stray mark
            units[members] = number
    _, units[units >= 0] = np.unique(units[units >= 0], return_inverse=True)
    return units, line


def cut(comps: Components, members: np.ndarray, unit: int, line: float) -> list[Piece]:
    """The unit, cut along the cheapest paths through its ink when it is wide enough for two digits, and
    straight down between them."""
    box = union(comps.boxes[members])
    x0, y0, x1, y1 = box
    height, width = y1 - y0, x1 - x0
    margin = max(1, round(MIN_PIECE * height))
    if width <= SPLIT * height or width <= 2 * margin + 1:
        return [Piece(members, (y0, np.full(height, x0), np.full(height, x1)), box, unit)]
    mask = comps.paint(members, box)
    costs, paths = _cut_paths(mask, margin)
    ends = np.flatnonzero(np.isfinite(costs) & (costs <= np.roll(costs, 1)) & (costs < np.roll(costs, -1)))
    wanted = min(MAX_CUTS, max(1, math.ceil(width / (CUT_SPACING * height)) - 1))
    cuts: list[np.ndarray] = []
    for end in ends[np.argsort(costs[ends], kind="stable")]:  # the cheapest, not too near each other
        if len(cuts) < wanted and all(abs(paths[:, end].mean() - c.mean()) >= margin for c in cuts):
            cuts.append(paths[:, end])
    straight = np.arange(margin + STRAIGHT * line / 2, width - margin, STRAIGHT * line).astype(int)
    for column in straight if width <= STRAIGHT_UNIT * line else ():
        if all(abs(column - c.mean()) >= STRAIGHT_GAP * line for c in cuts):
            cuts.append(np.full(height, column))
    edges = [np.zeros(height, np.int64), *sorted(cuts, key=np.mean), np.full(height, width)]
    for k in range(1, len(edges)):  # cut paths never cross
        edges[k] = np.maximum(edges[k], edges[k - 1])
    pieces = []
    for left, right in itertools.pairwise(edges):
        columns = (y0, x0 + left, x0 + right)
        crossed, ink = _strokes_crossed(mask, left) if left.any() else (0, 0)
        part = comps.paint(members, box, columns)
        rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
        if rows.size:
            pieces.append(
                Piece(
                    members,
                    columns,
                    (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1),
                    unit,
                    crossed,
                    ink,
                )
            )
    return pieces


def _strokes_crossed(mask: np.ndarray, path: np.ndarray) -> tuple[int, int]:
    """How many separate runs of ink a cut path goes through, top to bottom, and how many ink pixels."""
    on = mask[np.arange(len(path)), np.minimum(path, mask.shape[1] - 1)]
    return int(on[0]) + int((on[1:] & ~on[:-1]).sum()), int(on.sum())


def _cut_paths(mask: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """For each bottom column, the cheapest path down to it from the top row, moving at most one column a
    row and staying `margin` columns inside the sides: its cost (ink pixels crossed, plus `DRIFT` per
    sideways step; infinite at the sides) and its column in each row."""
    height, width = mask.shape
    cost = mask.astype(np.float64)
    cost[:, :margin] = np.inf
    cost[:, width - margin :] = np.inf
    total = np.full(width + 2, np.inf)  # the cheapest path to each column of the row so far; infinite beyond
    total[1:-1] = cost[0]
    moves = np.zeros((height, width), np.int64)  # the step each path took from the row above: -1, 0 or +1
    for y in range(1, height):
        best, move = total[1:-1].copy(), moves[y]
        for step, came in ((-1, total[:-2] + DRIFT), (1, total[2:] + DRIFT)):
            better = came < best
            best[better], move[better] = came[better], step
        total[1:-1] = best + cost[y]
    paths = np.empty((height, width), np.int64)
    paths[-1] = np.arange(width)
    for y in range(height - 1, 0, -1):
        paths[y - 1] = paths[y] + moves[y, paths[y]]
    return total[1:-1], paths


def _overlap(box: Sequence[int], boxes: np.ndarray) -> np.ndarray:
    """Horizontal overlap (pixels) of one box with each of several."""
    return np.maximum(0, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))


def union(boxes: Sequence[Sequence[int]] | np.ndarray) -> Box:
    """The box around boxes (x0, y0, x1, y1 each)."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    return int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max())
