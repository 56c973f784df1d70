"""Batched random affine + perspective warps, on the batch's own device.

The distribution matches the seed's per-sample torchvision pipeline
(RandomAffine(10°, translate 10 %, scale 0.9-1.1, shear 5°) then RandomPerspective(0.2, p=0.3)),
but one `grid_sample` call warps the whole batch: each sample gets its own 3×3 homography.
Coordinates are normalised to [-1, 1] with the image centre at 0, as `grid_sample` expects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_affine(n: int, device: torch.device, degrees: float = 10.0, translate: float = 0.1,
                  scale: tuple[float, float] = (0.9, 1.1), shear: float = 5.0) -> torch.Tensor:
    """(n, 3, 3) forward affine maps: rotate, shear along x, scale, then translate."""
    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n, device=device).uniform_(lo, hi)

    angle = torch.deg2rad(uniform(-degrees, degrees))
    shear_x = torch.tan(torch.deg2rad(uniform(-shear, shear)))
    s = uniform(*scale)
    # translate is a fraction of the image size; the normalised image spans 2 units
    tx, ty = uniform(-2 * translate, 2 * translate), uniform(-2 * translate, 2 * translate)
    cos, sin = torch.cos(angle), torch.sin(angle)
    m = torch.zeros(n, 3, 3, device=device)
    m[:, 0, 0] = s * cos
    m[:, 0, 1] = s * (cos * shear_x - sin)
    m[:, 1, 0] = s * sin
    m[:, 1, 1] = s * (sin * shear_x + cos)
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


def warp(images: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Apply per-sample forward maps (n, 3, 3) to images (n, c, h, w); outside pixels become 0."""
    n, _, h, w = images.shape
    inverse = torch.linalg.inv(forward)  # grid_sample asks: for each output pixel, where to read
    ys = (torch.arange(h, device=images.device, dtype=images.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=images.device, dtype=images.dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, h * w, 3)
    src = points @ inverse.transpose(1, 2).to(images.dtype)
    grid = (src[..., :2] / src[..., 2:].clamp_min(1e-6)).view(n, h, w, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(images: torch.Tensor) -> torch.Tensor:
    """The seed's training augmentation for a float batch in [0, 1], shape (n, c, h, w)."""
    n = images.shape[0]
    forward = random_perspective(n, images.device) @ random_affine(n, images.device)
    return warp(images, forward).clamp_(0.0, 1.0)

