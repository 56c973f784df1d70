"""How likely each candidate of a number's layout is one whole digit: the bundled `SegmentNet`, its inputs
and its file (`pretrained/segments.pt`, made by `python -m digitrec.training.segments`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from digitrec.errors import CheckpointError
from digitrec.inference.checkpoints import load_safely
from digitrec.inference.components import Box, Piece, union
from digitrec.inference.preprocess import Preprocessed
from digitrec.models.segments import GEOMETRY, SegmentNet

SEGMENTS_FILE = Path(__file__).parent / "pretrained" / "segments.pt"


def geometry(
    pieces: Sequence[Piece], spans: Sequence[tuple[int, int]], boxes: Sequence[Box], line: float
) -> np.ndarray:
    """(len(spans), len(GEOMETRY)) float32: each candidate's shape on the line, as `GEOMETRY` names it."""
    units: dict[int, list[Box]] = {}
    for piece in pieces:
        units.setdefault(piece.unit, []).append(piece.box)
    unit_boxes = {unit: union(members) for unit, members in units.items()}
    rows = []
    for (i, j), (x0, y0, x1, y1) in zip(spans, boxes):
        unit = unit_boxes[pieces[i].unit]
        first = i == 0 or pieces[i - 1].unit != pieces[i].unit
        last = j == len(pieces) or pieces[j].unit != pieces[j - 1].unit
        left = (0, 0) if first else (pieces[i].crossed, pieces[i].cut_ink)
        right = (0, 0) if last else (pieces[j].crossed, pieces[j].cut_ink)
        width, height = x1 - x0, y1 - y0
        rows.append(
            [
                width / line,
                height / line,
                width / height,
                height / (unit[3] - unit[1]),
                float(not (first and last)),
                left[0],
                right[0],
                left[1] / line,
                right[1] / line,
                (y0 + y1 - unit[1] - unit[3]) / (2 * line),
                j - i,
            ]
        )
    return np.array(rows, np.float32).reshape(-1, len(GEOMETRY))


def load_segment_net(path: str | os.PathLike = SEGMENTS_FILE) -> SegmentNet:
    """The network in a weights file (a state dict, loaded with `weights_only=True`), in float32, for inference."""
    if not Path(path).is_file():
        raise CheckpointError(
            f"{path}: no such file for the network that reads numbers; give the .pt file that "
            f"python -m digitrec.training.segments --out FILE wrote (default {SEGMENTS_FILE})."
        )
    try:
        state = load_safely(Path(path), "cpu")
        net = SegmentNet()
        net.load_state_dict({name: value.float() for name, value in state.items()})
    except (CheckpointError, RuntimeError, AttributeError) as e:
        raise CheckpointError(
            f"cannot load the network that reads numbers: {e} Make it anew: python -m digitrec.training.segments."
        ) from None
    return net.eval()


def whole_digit_log_prob(net: SegmentNet, crops: Sequence[Preprocessed], shapes: np.ndarray) -> np.ndarray:
    """log P(one whole digit) of each candidate, from its crop and its row of `geometry`."""
    if not len(crops):
        return np.zeros(0)
    pixels = torch.from_numpy(np.stack([crop.pixels for crop in crops])).unsqueeze(1)
    with torch.inference_mode():
        logits = net(pixels, torch.from_numpy(shapes))
    return torch.nn.functional.logsigmoid(logits).double().numpy()
