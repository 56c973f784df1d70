"""What the benchmark compares `Trainer.fit` against: the original project's per-sample torchvision pipeline
and a plain PyTorch loop over the same in-memory tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from digitrec.bench.timeline import Timeline
from digitrec.data.augment import augment_batch
from digitrec.data.datamodule import MNISTDataModule
from digitrec.data.mnist import MNIST_MEAN, MNIST_STD, normalize, to_network_input, to_pixels
from digitrec.training.module import build_optimization


def per_sample_transforms(train: bool) -> v2.Compose:
    """The original project's per-image torchvision v2 pipeline (random warps for training only)."""
    warps = (
        [
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5),
            v2.RandomPerspective(distortion_scale=0.2, p=0.3),
        ]
        if train
        else []
    )
    return v2.Compose(
        [v2.ToImage(), *warps, v2.ToDtype(torch.float32, scale=True), v2.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )


class PerSampleMNIST(Dataset):
    """Like torchvision's MNIST: each item becomes a PIL image, then goes through `transform`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[Any], torch.Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i, 0].numpy())), int(self.labels[i])


def per_sample_loaders(datamodule: MNISTDataModule) -> dict[str, DataLoader]:
    """`Trainer.fit` arguments: the data module's splits through per-sample transforms (num_workers=0)."""
    train, val = datamodule.train_set, datamodule.val_set
    return {
        "train_dataloaders": DataLoader(
            PerSampleMNIST(train.images, train.labels, per_sample_transforms(True)),
            batch_size=datamodule.hparams.batch_size,
            shuffle=True,
        ),
        "val_dataloaders": DataLoader(
            PerSampleMNIST(val.images, val.labels, per_sample_transforms(False)),
            batch_size=datamodule.hparams.eval_batch_size,
        ),
    }


def plain_loop_timeline(
    module: nn.Module, cfg: DictConfig, datamodule: MNISTDataModule, steps: int, val_batches: int
) -> Timeline:
    """Train `module` for `steps` batches, then validate on `val_batches`, in a plain PyTorch loop.

    Same data (the data module's uint8 tensors, batched augmentation), optimizer, scheduler, label
    smoothing and gradient clipping as `Trainer.fit` with `cfg`; no metrics objects, no logging.
    """
    timeline = Timeline()
    batch, eval_batch = datamodule.hparams.batch_size, datamodule.hparams.eval_batch_size
    optimizer, scheduler = build_optimization(module.parameters(), cfg.optimizer, cfg.scheduler, steps, "32-true")
    images, labels = datamodule.train_set.images, datamodule.train_set.labels
    order = torch.randperm(len(labels))
    module.train()
    for i in range(steps):
        idx = order[i * batch : (i + 1) * batch]
        x, y = normalize(augment_batch(to_pixels(images[idx]))), labels[idx]
        timeline.step_started()
        loss = F.cross_entropy(module(x), y, label_smoothing=cfg.module.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.trainer.gradient_clip_val:
            nn.utils.clip_grad_norm_(module.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        timeline.step_ended()
    module.eval()
    val = datamodule.val_set
    total_loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)  # summed on device: no host sync
    timeline.val_started()
    with torch.inference_mode():
        for i in range(val_batches):
            x, y = val.images[i * eval_batch : (i + 1) * eval_batch], val.labels[i * eval_batch : (i + 1) * eval_batch]
            logits = module(to_network_input(x))
            total_loss += F.cross_entropy(logits, y, label_smoothing=cfg.module.label_smoothing, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            timeline.val_batch_ended(len(y))
    return timeline
