"""Damage for training only (hollow strokes, inverted patches, 1-bit scans), and training with damage:
`corrupt_randomly` gives a share of each batch one of the named corruptions, of the report or these."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from digitrec.data.corruptions import _P, CORRUPTIONS, SEVERITIES, Corruption, _pen, _rand, _sign


def outline(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    """Hollow strokes drawn by dilation: the ring a thicker pen adds around the digit."""
    keep = (0.4, 0.2, 0.0)[s - 1]
    kernel = (5, 7, 9)[int(torch.randint(3, (1,), generator=g, device=x.device))]
    ring = (_pen(x, kernel, thicker=True) - x).clamp_min(0)
    ring = (1.5 * ring / ring.amax((2, 3), keepdim=True).clamp_min(1e-6)).clamp(0, 1)
    return torch.maximum(ring, keep * x)


def inverted_patch(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    """A random rectangle, long and narrow or short and wide, inverted."""
    n, _, h, w = x.shape
    long_side = (0.3 + 0.7 * _rand(n, x, g)) * h
    short_side = 1 + _rand(n, x, g) * (2, 4, 6)[s - 1]
    tall = _rand(n, x, g) < 0.5
    height, width = torch.where(tall, long_side, short_side), torch.where(tall, short_side, long_side)
    top = (_rand(n, x, g) * (h - height)).floor()
    left = (_rand(n, x, g) * (w - width)).floor()
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + height).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + width).view(n, 1, 1))
    )
    return torch.where(inside.unsqueeze(1), 1 - x, x)


def binarize(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    """A 1-bit scan: every pixel ink or paper, at a threshold that thickens or thins the strokes."""
    offset = (0.0, 0.15, 0.3)[s - 1] * _sign(len(x), x, g).view(-1, 1, 1, 1)
    return (x > 0.5 + offset).to(x.dtype)


TRAINING_ONLY: dict[str, Corruption] = {
    "outline": Corruption(
        outline, "hollow strokes: a ring of 0.5-1 px around each stroke, 40 / 20 / 0 % of the fill kept", _P
    ),
    "inverted_patch": Corruption(
        inverted_patch, "a rectangle inverted, up to 3 / 5 / 7 px across and 30-100 % of the image long", _P
    ),
    "binarize": Corruption(
        binarize, "a 1-bit scan: pixels over 0.5 / 0.35 or 0.65 / 0.2 or 0.8 are ink, the rest paper", _P
    ),
}
"""Damage for training only, not rows of the robustness report. `outline` and `inverted_patch` are
cousins in kind of `canny_edges` and `stripe`, which a recipe training on them holds out by
implementation, not by kind. `binarize` (1-bit scans): without it, networks trained on the other
damage mistake hard-edged, full-intensity strokes for clutter."""
TRAINABLE: dict[str, Corruption] = {**CORRUPTIONS, **TRAINING_ONLY}


def check_names(names: Sequence[str], what: str) -> list[str]:
    unknown = [name for name in names if name not in TRAINABLE]
    if unknown:
        raise ValueError(f"{what}: unknown corruption(s) {', '.join(unknown)}; known: {', '.join(TRAINABLE)}.")
    return list(names)


def corrupt_randomly(x: torch.Tensor, names: Sequence[str], p: float) -> torch.Tensor:
    """Training augmentation: each image, with probability `p`, gets one of `names`.

    The severity is drawn per batch and corruption rather than per image: one call per corruption
    instead of one per corruption and severity, a third of the small calls.
    """
    n = len(x)
    choice = torch.randint(len(names), (n,), device=x.device)
    chosen = torch.rand(n, device=x.device) < p
    severities = torch.randint(1, len(SEVERITIES) + 1, (len(names),)).tolist()
    out = x.clone()
    for i, (name, severity) in enumerate(zip(names, severities)):
        idx = (chosen & (choice == i)).nonzero().flatten()
        if len(idx):
            out[idx] = TRAINABLE[name].apply(x[idx], severity, None)
    return out
