"""The network that tells a whole digit from a part of one or from several digits in one crop, for the
reading of numbers (`digitrec.inference.segments`).

A digit classifier has only ever seen single digits, so it reads half a 0 as a confident 1 and two
overlapping digits as one; this network sees what it does not: the candidate's shape on the line (its
`GEOMETRY`) beside its 28×28 crop.
"""

from __future__ import annotations

import torch
from torch import nn

# What the network knows of a candidate besides its crop; lengths are in line heights.
GEOMETRY = (
    "width",
    "height",
    "width / height",
    "height / its unit's height",
    "part of a cut unit",
    "strokes cut on the left",
    "strokes cut on the right",
    "ink cut on the left",
    "ink cut on the right",
    "middle below its unit's middle",
    "pieces",
)


class SegmentNet(nn.Module):
    """Logit of "one whole digit" for a candidate: a small CNN on the crop, an MLP on its geometry."""

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 64) -> None:
        super().__init__()
        first, second = channels
        self.crop = nn.Sequential(
            nn.Conv2d(1, first, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(second * 7 * 7, hidden),
            nn.ReLU(),
        )
        self.geometry = nn.Sequential(nn.Linear(len(GEOMETRY), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        # Features arrive in their own units; the scaling learnt from the training set travels with the weights.
        self.register_buffer("mean", torch.zeros(len(GEOMETRY)))
        self.register_buffer("std", torch.ones(len(GEOMETRY)))
        self.head = nn.Linear(2 * hidden, 1)

    def forward(self, crops: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        """crops (N, 1, 28, 28) in [0, 1], light on dark; geometry (N, len(GEOMETRY)) → (N,) logits."""
        features = (geometry - self.mean) / self.std
        return self.head(torch.cat([self.crop(crops), self.geometry(features)], 1)).squeeze(1)
