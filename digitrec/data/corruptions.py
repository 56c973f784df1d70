"""Batched image corruptions in the spirit of MNIST-C (Mu & Gilmer 2019), plus other pens and scanners.

Every corruption takes a float batch in [0, 1] of shape (n, 1, h, w), white digits on black as in
MNIST, a severity 1-3 and an optional `torch.Generator` (on the batch's device; None: the global
generator), and returns a new batch in [0, 1]. With a seeded generator the result is deterministic.
The names follow MNIST-C; the strengths are chosen so that a person still reads every digit at
severity 3. This set is the robustness report's fixed ground: change it only with a new name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from digitrec.data.augment import affine_matrix, gaussian_blur, warp

SEVERITIES = (1, 2, 3)


class Corruption(NamedTuple):
    apply: Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor]
    description: str
    group: str  # "mnist-c" or "pens and scanners"


def _rand(n: int, x: torch.Tensor, g: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=g, device=x.device)


def _sign(n: int, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.where(_rand(n, x, g) < 0.5, -1.0, 1.0)


def _segments_mask(
    x: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor, width: float, dash: float | None = None
) -> torch.Tensor:
    """(n, 1, h, w) 0/1 mask of segments p0→p1 ((n, 2) pixel coordinates), optionally dashed every `dash` px."""
    _, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij"
    )
    pix = torch.stack([xs, ys], -1).view(1, h * w, 2)
    d = (p1 - p0).unsqueeze(1)
    length2 = (d**2).sum(-1).clamp_min(1e-6)
    t = (((pix - p0.unsqueeze(1)) * d).sum(-1) / length2).clamp(0, 1)
    dist = (pix - (p0.unsqueeze(1) + t.unsqueeze(-1) * d)).norm(dim=-1)
    mask = dist <= width / 2
    if dash is not None:
        mask &= torch.remainder(t * length2.sqrt(), 2 * dash) < dash
    return mask.view(-1, 1, h, w).to(x.dtype)


def _border_points(n: int, x: torch.Tensor, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random points near opposite sides (left/right or top/bottom), in pixels."""
    size = x.shape[-1] - 1
    a = torch.stack([_rand(n, x, g) * 0.15, 0.1 + _rand(n, x, g) * 0.8], -1) * size
    b = torch.stack([0.85 + _rand(n, x, g) * 0.15, 0.1 + _rand(n, x, g) * 0.8], -1) * size
    swap = (_rand(n, x, g) < 0.5).unsqueeze(-1)
    return torch.where(swap, a.flip(-1), a), torch.where(swap, b.flip(-1), b)


def shot_noise(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    lam = (60.0, 25.0, 12.0)[s - 1]
    return (torch.poisson(x * lam, generator=g) / lam).clamp(0, 1)


def impulse_noise(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    amount = (0.04, 0.08, 0.14)[s - 1]
    u = torch.rand(x.shape, generator=g, device=x.device)
    salt = torch.rand(x.shape, generator=g, device=x.device) < 0.5
    return torch.where(u < amount, salt.to(x.dtype), x)


def glass_blur(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    sigma, reach = ((0.5, 1), (0.7, 1), (0.9, 2))[s - 1]
    n, c, h, w = x.shape
    x = gaussian_blur(x, sigma)
    dy = torch.randint(-reach, reach + 1, (n, 1, h, w), generator=g, device=x.device)
    dx = torch.randint(-reach, reach + 1, (n, 1, h, w), generator=g, device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, 1, h, 1) + dy).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, 1, w) + dx).clamp(0, w - 1)
    shuffled = x.flatten(2).gather(2, (rows * w + cols).flatten(2)).view(n, c, h, w)
    return gaussian_blur(shuffled, sigma).clamp(0, 1)


def motion_blur(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    length = (3, 5, 7)[s - 1]
    n, _, _, w = x.shape
    angle = _rand(n, x, g) * math.pi
    step = torch.stack([angle.cos(), angle.sin()], -1) * (2 / w)  # one pixel in normalised units
    eye = torch.ones(n, device=x.device)
    zero = torch.zeros(n, device=x.device)
    frames = [
        warp(x, affine_matrix(eye, zero, zero, eye, *(step * (k - (length - 1) / 2)).unbind(-1))) for k in range(length)
    ]
    return torch.stack(frames).mean(0).clamp(0, 1)


def shear(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    amount = (0.2, 0.35, 0.5)[s - 1] * _sign(len(x), x, g)
    one, zero = torch.ones_like(amount), torch.zeros_like(amount)
    vertical = _rand(len(x), x, g) < 0.5
    return warp(x, affine_matrix(one, torch.where(vertical, zero, amount), torch.where(vertical, amount, zero), one))


def scale(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    factor = (0.8, 0.65, 0.5)[s - 1] * torch.ones(len(x), device=x.device)
    zero = torch.zeros_like(factor)
    return warp(x, affine_matrix(factor, zero, zero, factor))


def rotate(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    angle = math.radians((15.0, 25.0, 35.0)[s - 1]) * _sign(len(x), x, g)
    cos, sin = angle.cos(), angle.sin()
    return warp(x, affine_matrix(cos, -sin, sin, cos))


def brightness(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    return (x + (0.2, 0.35, 0.5)[s - 1]).clamp(0, 1)


def translate(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    n, w = len(x), x.shape[-1]
    pixels = (3.0, 5.0, 7.0)[s - 1]
    angle = _rand(n, x, g) * 2 * math.pi
    one, zero = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
    return warp(x, affine_matrix(one, zero, zero, one, angle.cos() * pixels * 2 / w, angle.sin() * pixels * 2 / w))


def stripe(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    width = (2, 3, 5)[s - 1]
    n, _, _, w = x.shape
    start = (_rand(n, x, g) * (w * 0.6 - width) + w * 0.2).floor().view(n, 1, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    band = (cols >= start) & (cols < start + width)
    return torch.where(band, 1 - x, x)


def fog(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    strength = (0.25, 0.4, 0.55)[s - 1]
    n, _, h, w = x.shape
    haze = sum(
        F.interpolate(_rand(n, x, g, 1, k, k), size=(h, w), mode="bicubic", align_corners=False) / k for k in (3, 5, 9)
    )
    haze = haze - haze.amin((2, 3), keepdim=True)
    haze = haze / haze.amax((2, 3), keepdim=True).clamp_min(1e-6)
    return (x + strength * haze).clamp(0, 1)


def spatter(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    share = (0.04, 0.07, 0.11)[s - 1]
    n, _, h, w = x.shape
    blobs = gaussian_blur(_rand(n, x, g, 1, h, w), 1.2).flatten(1)
    threshold = blobs.quantile(1 - share, dim=1).view(n, 1, 1, 1)
    return torch.where(blobs.view(n, 1, h, w) > threshold, 1.0, x)


def dotted_line(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    out = x
    for _ in range(s):
        p0, p1 = _border_points(len(x), x, g)
        out = torch.maximum(out, _segments_mask(x, p0, p1, width=1.5, dash=1.5))
    return out


def zigzag(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    out = x
    for _ in range(s):
        p0, p1 = _border_points(len(x), x, g)
        corners = [p0 + (p1 - p0) * k / 4 + (_rand(len(x), x, g, 2) - 0.5) * 8 for k in range(1, 4)]
        points = [p0, *corners, p1]
        for a, b in zip(points, points[1:]):
            out = torch.maximum(out, _segments_mask(x, a, b, width=1.2))
    return out


def canny_edges(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    """The outer contour of each stroke from Sobel edges (Canny without hysteresis): hollow strokes."""
    keep = (0.4, 0.2, 0.0)[s - 1]  # how much of the original fill stays
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    blurred = gaussian_blur(x, 0.6)
    gx = F.conv2d(blurred, sobel.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(blurred, sobel.t().reshape(1, 1, 3, 3), padding=1)
    edges = (((gx**2 + gy**2).sqrt() > 0.8) & (blurred < 0.45)).to(x.dtype)
    return torch.maximum(edges, keep * x)


def _pen(x: torch.Tensor, kernel: int, thicker: bool) -> torch.Tensor:
    """Dilate (`thicker`) or erode the digit with a square of `kernel` pixels at 4× resolution."""
    h, w = x.shape[-2:]
    big = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    pool = big if thicker else -big
    pool = F.max_pool2d(pool, (1, kernel), stride=1, padding=(0, kernel // 2))  # a square is two strips
    pool = F.max_pool2d(pool, (kernel, 1), stride=1, padding=(kernel // 2, 0))
    return F.adaptive_avg_pool2d(pool if thicker else -pool, (h, w)).clamp(0, 1)


def thin_pen(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    return _pen(x, (3, 5, 7)[s - 1], thicker=False)


def thick_pen(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    return _pen(x, (5, 9, 13)[s - 1], thicker=True)


def low_resolution(x: torch.Tensor, s: int, g: torch.Generator | None = None) -> torch.Tensor:
    size = (16, 12, 8)[s - 1]
    small = F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)


_C, _P = "mnist-c", "pens and scanners"
CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": Corruption(shot_noise, "Poisson noise on the ink, λ = 60 / 25 / 12 photons at full white", _C),
    "impulse_noise": Corruption(impulse_noise, "salt and pepper: 4 / 8 / 14 % of pixels set to black or white", _C),
    "glass_blur": Corruption(
        glass_blur, "blur (σ 0.5 / 0.7 / 0.9 px), pixels swapped with neighbours up to 1 / 1 / 2 px away, blur", _C
    ),
    "motion_blur": Corruption(motion_blur, "mean of the digit shifted along a random direction over 3 / 5 / 7 px", _C),
    "shear": Corruption(shear, "horizontal or vertical shear by 0.2 / 0.35 / 0.5", _C),
    "scale": Corruption(scale, "shrunk about the centre to 80 / 65 / 50 %", _C),
    "rotate": Corruption(rotate, "rotated by ±15 / 25 / 35°", _C),
    "brightness": Corruption(brightness, "0.2 / 0.35 / 0.5 added to every pixel (grey background)", _C),
    "translate": Corruption(translate, "shifted 3 / 5 / 7 px in a random direction (parts may leave the frame)", _C),
    "stripe": Corruption(stripe, "a vertical band of 2 / 3 / 5 px inverted", _C),
    "fog": Corruption(fog, "smooth low-frequency haze up to 0.25 / 0.4 / 0.55 added", _C),
    "spatter": Corruption(spatter, "ink blots covering 4 / 7 / 11 % of the image", _C),
    "dotted_line": Corruption(dotted_line, "1 / 2 / 3 dotted lines across the image", _C),
    "zigzag": Corruption(zigzag, "1 / 2 / 3 zigzag lines across the image", _C),
    "canny_edges": Corruption(
        canny_edges, "the outer contour of the strokes (Sobel edges), 40 / 20 / 0 % of the fill kept", _C
    ),
    "thin_pen": Corruption(thin_pen, "strokes eroded by 0.25 / 0.5 / 0.75 px on each side", _P),
    "thick_pen": Corruption(thick_pen, "strokes dilated by 0.5 / 1 / 1.5 px on each side", _P),
    "low_resolution": Corruption(low_resolution, "scanned at 16 / 12 / 8 px square, scaled back up to 28", _P),
}
