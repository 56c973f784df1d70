"""The networks: input normalised (N, 1, 28, 28) images, output 10 logits."""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    """`nn.Dropout` with a faster mask on CPU; unchanged on other devices and in eval mode.

    torch's CPU dropout draws one Bernoulli sample per element (about a tenth of a cnn training
    step on a 2-core CPU); here one 64-bit random draw gives four 16-bit lanes, so each element is
    kept with probability 1 - p rounded to a multiple of 1/65536, scaled by 1 / (1 - p).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.inplace or x.device.type != "cpu" or not 0 < self.p < 1:
            return super().forward(x)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        keep = bits.view(torch.int16)[:n] >= round(self.p * 65536) - 32768
        # The mask laid out in x's own memory order: elementwise math then runs over dense memory.
        return x.mul(keep.as_strided(x.shape, x.stride())).mul_(1 / (1 - self.p))


def _dense(n_in: int, n_out: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True), Dropout(dropout)]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class MLP(nn.Module):
    """784 → 512 → 256 → 128 → 10, each hidden layer Linear → BatchNorm → ReLU → Dropout."""

    def __init__(self, hidden: tuple[int, ...] = (512, 256, 128), dropout: float = 0.2, num_classes: int = 10) -> None:
        super().__init__()
        widths = [28 * 28, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(widths, widths[1:]):
            layers += _dense(n_in, n_out, dropout)
        self.layers = nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN(nn.Module):
    """Two blocks of [conv3×3-BN-ReLU ×2 → max-pool → dropout] (32, 64 channels), then FC 3136 → 256 → 10."""

    def __init__(
        self,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 256,
        dropout: float = 0.25,
        head_dropout: float = 0.5,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            *_conv_bn_relu(1, c1),
            *_conv_bn_relu(c1, c1),
            nn.MaxPool2d(2),
            Dropout(dropout),
            *_conv_bn_relu(c1, c2),
            *_conv_bn_relu(c2, c2),
            nn.MaxPool2d(2),
            Dropout(dropout),
        )
        self.head = nn.Sequential(
            nn.Flatten(), *_dense(c2 * 7 * 7, hidden, head_dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a 1×1 projection shortcut, ReLU, then 2× max-pool and dropout."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(c_in, c_out), nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out)
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out))
        self.out = nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(2), Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class DeepCNN(nn.Module):
    """Three residual blocks (32 → 64 → 128 channels), adaptive average pool to 4×4, FC 2048 → 512 → 256 → 10."""

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 128),
        hidden: tuple[int, int] = (512, 256),
        dropout: float = 0.25,
        head_dropout: float = 0.5,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        widths = [1, *channels]
        self.features = nn.Sequential(
            *(ResidualBlock(a, b, dropout) for a, b in zip(widths, widths[1:])), nn.AdaptiveAvgPool2d(4)
        )
        h1, h2 = hidden
        self.head = nn.Sequential(
            nn.Flatten(),
            *_dense(channels[-1] * 16, h1, head_dropout),
            *_dense(h1, h2, head_dropout),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Residual(nn.Module):
    """x + ReLU(BN(conv3×3(x))): one convolution with an identity shortcut, channels and size unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet(nn.Module):
    """A wide residual net: conv5×5 stem, then residual stages at 28, 14, 7 and 4 pixels joined by
    max-pools and widening convs (128 → 256 → 512 channels), global average pool, one linear layer.
    """

    def __init__(self, channels: tuple[int, int, int] = (128, 256, 512), num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            *_conv_bn_relu(1, c1, kernel=5),
            Residual(c1),
            nn.MaxPool2d(2),
            Residual(c1),
            *_conv_bn_relu(c1, c2),
            nn.MaxPool2d(2),
            Residual(c2),
            *_conv_bn_relu(c2, c3),
            nn.MaxPool2d(2, ceil_mode=True),
            Residual(c3),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c3, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SpeedNet(nn.Module):
    """A small, fast CNN for the speed run: three [conv3×3-BN-ReLU → max-pool] blocks, then one linear layer."""

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        widths = [1, *channels]
        blocks = [m for a, b in zip(widths, widths[1:]) for m in (*_conv_bn_relu(a, b), nn.MaxPool2d(2))]
        self.layers = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(channels[-1] * 3 * 3, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
