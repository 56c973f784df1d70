"""Batched random affine + perspective warps, on the batch's own device.

The distribution matches the original project's per-sample torchvision pipeline
(RandomAffine(10°, translate 10 %, scale 0.9-1.1, shear 5°) then RandomPerspective(0.2, p=0.3)),
but one `grid_sample` call warps the whole batch: each sample gets its own 3×3 homography.
Coordinates are normalised to [-1, 1] with the image centre at 0, as `grid_sample` expects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    n: int,
    device: torch.device,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    shear: float = 5.0,
) -> torch.Tensor:
    """(n, 3, 3) forward affine maps: rotate, shear along x, scale, then translate."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n, device=device).uniform_(lo, hi)

    angle = torch.deg2rad(uniform(-degrees, degrees))
    shear_x = torch.tan(torch.deg2rad(uniform(-shear, shear)))
    s = uniform(*scale)
    # translate is a fraction of the image size; the normalised image spans 2 units
    tx, ty = uniform(-2 * translate, 2 * translate), uniform(-2 * translate, 2 * translate)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return affine_matrix(s * cos, s * (cos * shear_x - sin), s * sin, s * (sin * shear_x + cos), tx, ty)


def affine_matrix(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    d: torch.Tensor,
    tx: torch.Tensor | float = 0.0,
    ty: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """(n, 3, 3) maps [[a, b, tx], [c, d, ty], [0, 0, 1]] in grid_sample's normalised coordinates."""
    m = torch.zeros(len(a), 3, 3, device=a.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, b, c, d
    m[:, 0, 2], m[:, 1, 2], m[:, 2, 2] = tx, ty, 1.0
    return m


def random_perspective(n: int, device: torch.device, distortion: float = 0.2, p: float = 0.3) -> torch.Tensor:
    """(n, 3, 3) homographies moving each corner inward by up to `distortion`/2 of the size; identity with prob 1-p."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
    inward = -corners.sign()  # direction towards the centre for each corner
    shift = torch.rand(n, 4, 2, device=device) * distortion * inward
    shift = shift * (torch.rand(n, 1, 1, device=device) < p)
    return homography(corners.expand(n, 4, 2), corners + shift)


def homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Solve for the (n, 3, 3) maps taking the 4 points `src` (n, 4, 2) onto `dst`."""
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)
    b = torch.cat([u, v], dim=1).unsqueeze(-1)
    h = torch.linalg.solve(a, b).squeeze(-1)
    return torch.cat([h, torch.ones(n, 1, device=src.device)], dim=1).view(n, 3, 3)


def elastic_field(n: int, h: int, w: int, alpha: float, sigma: float, device: torch.device) -> torch.Tensor:
    """(n, h, w, 2) smooth random displacements (Simard et al. 2003) in normalised units.

    Uniform noise in [-1, 1] per pixel, Gaussian-blurred with `sigma` pixels, scaled to `alpha` pixels.
    """
    field = torch.empty(n * 2, 1, h, w, device=device).uniform_(-1, 1)
    field = gaussian_blur(field, sigma, padding="constant")
    scale = torch.tensor([2 * alpha / w, 2 * alpha / h], device=device)  # pixels -> normalised units
    return field.view(n, 2, h, w).permute(0, 2, 3, 1) * scale


def gaussian_blur(x: torch.Tensor, sigma: float, padding: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of (n, 1, h, w) images over 3 sigma each side; `padding` as in `F.pad`."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=padding), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode=padding), k.view(1, 1, -1, 1))


def warp(images: torch.Tensor, forward: torch.Tensor, displacement: torch.Tensor | None = None) -> torch.Tensor:
    """Apply per-sample forward maps (n, 3, 3), then optional displacements (n, h, w, 2); outside pixels become 0."""
    n, _, h, w = images.shape
    inverse = torch.linalg.inv(forward)  # grid_sample asks: for each output pixel, where to read
    ys = (torch.arange(h, device=images.device, dtype=images.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=images.device, dtype=images.dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, h * w, 3)
    src = points @ inverse.transpose(1, 2).to(images.dtype)
    grid = (src[..., :2] / src[..., 2:].clamp_min(1e-6)).view(n, h, w, 2)
    if displacement is not None:
        grid = grid + displacement
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(images: torch.Tensor, elastic_alpha: float = 0.0, elastic_sigma: float = 4.0) -> torch.Tensor:
    """The original project's training augmentation for a float batch in [0, 1], shape (n, c, h, w).

    `elastic_alpha` > 0 adds an elastic distortion of that many pixels (smoothness `elastic_sigma`).
    """
    n, _, h, w = images.shape
    forward = random_perspective(n, images.device) @ random_affine(n, images.device)
    field = elastic_field(n, h, w, elastic_alpha, elastic_sigma, images.device) if elastic_alpha > 0 else None
    return warp(images, forward, field).clamp_(0.0, 1.0)
