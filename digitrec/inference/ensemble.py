"""Several networks and test-time augmentation (TTA) answering as one: the mean of calibrated probabilities."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from digitrec.data.mnist import IMAGE_SIZE, MNIST_MEAN, MNIST_STD
from digitrec.inference.checkpoints import load_network, load_temperature

# TTA views: the image itself, shifted one pixel each way, rotated ±8°: (dx px, dy px, degrees)
TTA_VIEWS = ((0, 0, 0.0), (1, 0, 0.0), (-1, 0, 0.0), (0, 1, 0.0), (0, -1, 0.0), (0, 0, 8.0), (0, 0, -8.0))


def _view_grids(size: int = IMAGE_SIZE) -> torch.Tensor:
    """(views, size, size, 2) `grid_sample` grids, one per TTA view, fixed so that ONNX export sees constants."""
    ys = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    gy, gx = torch.meshgrid(ys, ys, indexing="ij")
    grids = []
    for dx, dy, degrees in TTA_VIEWS:
        a = math.radians(degrees)
        # where each output pixel reads from: the inverse of rotate-then-shift
        x, y = gx - dx * 2 / size, gy - dy * 2 / size
        grids.append(torch.stack([math.cos(a) * x + math.sin(a) * y, -math.sin(a) * x + math.cos(a) * y], -1))
    return torch.stack(grids)


class Ensemble(nn.Module):
    """Log of the mean probability over members (each at its own temperature) and, with `tta`, over TTA views.

    Takes normalised (N, 1, 28, 28) batches like every network here and returns (N, 10) log-probabilities,
    so its output can be calibrated, arg-maxed and exported like a network's logits.
    """

    def __init__(self, members: Sequence[nn.Module], temperatures: Sequence[float], tta: bool = False) -> None:
        super().__init__()
        if not members or len(members) != len(temperatures):
            raise ValueError(
                f"an ensemble needs one temperature per member, got {len(members)} members "
                f"and {len(temperatures)} temperatures."
            )
        self.members = nn.ModuleList(members)
        self.temperatures = [float(t) for t in temperatures]  # constants, also to a tracer
        self.tta = bool(tta)
        self.register_buffer("grids", _view_grids() if tta else torch.empty(0))

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.tta:
            return [x]
        background = -MNIST_MEAN / MNIST_STD  # what "black" is after normalisation: the padding of a shifted view
        # the batch as channels of one image: one grid serves every image, whatever the batch size (traceable)
        stacked = (x - background).transpose(0, 1)
        return [
            F.grid_sample(
                stacked, grid.unsqueeze(0).to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
            ).transpose(0, 1)
            + background
            for grid in self.grids.unbind(0)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = self.views(x)
        probs = [
            torch.softmax(member(v).float() / t, dim=1)
            for member, t in zip(self.members, self.temperatures)
            for v in views
        ]
        return torch.stack(probs).mean(0).clamp_min(1e-12).log()


def members_key(checkpoints: Sequence[Path]) -> str:
    """`<n>-<8 hex digits>`, the same for the same set of checkpoint files in any order."""
    digest = hashlib.sha1("\n".join(sorted(str(Path(c).absolute()) for c in checkpoints)).encode()).hexdigest()
    return f"{len(checkpoints)}-{digest[:8]}"


def combine(nets: Sequence[nn.Module], temperatures: Sequence[float], tta: bool = False) -> tuple[nn.Module, float]:
    """What answers for these networks, and the temperature for its outputs: one network without TTA
    answers alone at its own temperature; otherwise an `Ensemble`, calibrated already (temperature 1)."""
    if len(nets) == 1 and not tta:
        return nets[0], float(temperatures[0])
    return Ensemble(nets, temperatures, tta=tta).eval(), 1.0


def scorer_name(names: Sequence[str]) -> str:
    """`cnn` for one network; `ensemble of 3 (cnn, mlp)` for several."""
    return names[0] if len(names) == 1 else f"ensemble of {len(names)} ({', '.join(sorted(set(names)))})"


def load_scorer(
    checkpoints: Sequence[Path], device: torch.device | str = "cpu", tta: bool = False
) -> tuple[nn.Module, float, list[str], list[str]]:
    """What answers for these checkpoints (see `combine`): (network, temperature for its outputs,
    model names, temperature sources)."""
    loaded = [load_network(c, device) for c in checkpoints]
    calibrations = [load_temperature(c) for c in checkpoints]
    scorer, temperature = combine([m.net for m in loaded], [t for t, _ in calibrations], tta)
    return scorer.to(device), temperature, [m.name for m in loaded], [source for _, source in calibrations]
