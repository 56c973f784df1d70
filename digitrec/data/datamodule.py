"""`MNISTDataModule`: MNIST in memory as uint8, a seeded validation split, batches augmented on their device.

Training batches are warped (`digitrec.data.augment`) and, with `corruptions`, a share `corruption_p` of
them damaged by the named corruptions of `digitrec.data.corruptions` at a random severity, except in the
last `clean_epochs` epochs: there the end of the learning-rate schedule tunes the network on clean digits.

With `extra` (feedback stores or their exports, `digitrec.data.extra`), a share `extra_fraction` of every
training batch is users' digits, and a share `extra_holdout` of those digits is held out: validation and
test then have a second loader, of users' digits."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, RandomSampler

from digitrec.data.augment import augment_batch
from digitrec.data.extra import Digits, check_sources, load_extra, split_extra
from digitrec.data.mnist import default_data_dir, ensure_mnist, load_split, normalize, raw_dir, to_pixels
from digitrec.data.training_corruptions import check_names, corrupt_randomly
from digitrec.errors import ConfigError
from digitrec.validation import check_range, positive_int

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 256  # on a CPU, larger evaluation batches fall out of cache (see the benchmark)


class _InMemory(Dataset):
    """Indexable by a whole list of indices at once (`__getitems__`): one gather per batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx_t = torch.as_tensor(idx)
        return self.images[idx_t], self.labels[idx_t]


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


class _WithExtra:
    """A collate function: each batch of MNIST digits plus `count` users' digits drawn at random (with
    replacement, from the global torch RNG: seeded runs repeat)."""

    def __init__(self, extra: _InMemory, count: int) -> None:
        self.extra, self.count = extra, count

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        idx = torch.randint(len(self.extra), (self.count,))
        return torch.cat([images, self.extra.images[idx]]), torch.cat([labels, self.extra.labels[idx]])


def _in_memory(digits: Digits) -> _InMemory:
    return _InMemory(digits.images, digits.labels)


class MNISTDataModule(L.LightningDataModule):
    """MNIST as uint8 tensors in memory; batches are augmented and normalised on their device."""

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = EVAL_BATCH_SIZE,
        val_fraction: float = 0.1,
        split_seed: int = 42,
        augment: bool = True,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        corruptions: list[str] | None = None,
        corruption_p: float = 0.5,
        clean_epochs: int = 0,
        extra: list[str] | None = None,
        extra_fraction: float = 0.25,
        extra_holdout: float = 0.2,
        download: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        positive_int("data.batch_size", batch_size)
        positive_int("data.eval_batch_size", eval_batch_size)
        check_range("data.val_fraction", val_fraction, 0, 1, open_low=True, open_high=True)
        if elastic_alpha < 0 or elastic_sigma <= 0:
            raise ConfigError(
                f"data.elastic_alpha must be >= 0 and data.elastic_sigma > 0, got {elastic_alpha}, {elastic_sigma}."
            )
        check_range("data.corruption_p", corruption_p, 0, 1)
        check_range("data.clean_epochs", clean_epochs, 0, integer=True)
        try:  # a plain list, not Hydra's ListConfig: checkpoints hold only what weights_only=True loads
            corruptions = check_names(corruptions, "data.corruptions") if corruptions else None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers!r}.")
        check_range("data.extra_fraction", extra_fraction, 0, 1, open_low=True, open_high=True)
        check_range("data.extra_holdout", extra_holdout, 0, 1, open_low=True, open_high=True)
        self.extra_per_batch = 0  # users' digits in each training batch
        if extra is not None:
            extra = [str(source) for source in extra]  # a plain list, as `corruptions`
            check_sources(extra)
            self.extra_per_batch = round(batch_size * extra_fraction)
            if not 0 < self.extra_per_batch < batch_size:
                raise ConfigError(
                    f"data.extra_fraction={extra_fraction} of data.batch_size={batch_size} leaves "
                    f"{self.extra_per_batch} users' digits per batch; it must leave at least one of them and one MNIST digit."
                )
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
        self.train_set = self.val_set = self.test_set = None
        self.extra_train_set = self.extra_val_set = self.extra_test_set = None
        self.checksums: dict[str, str] = {}
        self._clean_announced = False

    @property
    def raw_dir(self) -> Path:
        return raw_dir(self.data_dir)

    def prepare_data(self) -> None:
        ensure_mnist(self.raw_dir, download=self.hparams.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = load_split(self.raw_dir, train=True)
        test = load_split(self.raw_dir, train=False)
        self.checksums = {**train.checksums, **test.checksums}
        n_val = round(len(train.labels) * self.hparams.val_fraction)
        if not 0 < n_val < len(train.labels):
            raise ConfigError(
                f"data.val_fraction={self.hparams.val_fraction} leaves an empty split "
                f"of {len(train.labels)} training images."
            )
        order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_idx, train_idx = order[:n_val], order[n_val:]
        self.train_set = _InMemory(train.images[train_idx], train.labels[train_idx])
        self.val_set = _InMemory(train.images[val_idx], train.labels[val_idx])
        self.test_set = _InMemory(test.images, test.labels)
        if self.hparams.extra:
            self._setup_extra()

    def _setup_extra(self) -> None:
        split = split_extra(load_extra(self.hparams.extra), self.hparams.extra_holdout, self.hparams.split_seed)
        self.extra_train_set, self.extra_val_set, self.extra_test_set = map(
            _in_memory, (split.train, split.val, split.test)
        )
        log.info(
            "Users' digits: %d to train on (%d of each training batch of %d), %d for validation, %d for test.",
            len(split.train),
            self.extra_per_batch,
            self.hparams.batch_size,
            len(split.val),
            len(split.test),
        )

    def _loader(self, dataset: _InMemory, batch_size: int, shuffle: bool, collate_fn=_as_batch) -> DataLoader:
        if shuffle:
            sampler = RandomSampler(dataset)  # Lightning swaps in a DistributedSampler under DDP
        elif dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)  # each image evaluated exactly once
        else:
            sampler = None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.extra_train_set is None:
            return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)
        mnist_per_batch = self.hparams.batch_size - self.extra_per_batch
        return self._loader(
            self.train_set, mnist_per_batch, True, _WithExtra(self.extra_train_set, self.extra_per_batch)
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """MNIST's validation digits; with `extra`, also the users' (dataloader_idx 1)."""
        return self._eval_loaders(self.val_set, self.extra_val_set)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """MNIST's test set; with `extra`, also the users' held-out test digits (dataloader_idx 1)."""
        return self._eval_loaders(self.test_set, self.extra_test_set)

    def _eval_loaders(self, mnist: _InMemory, extra: _InMemory | None) -> DataLoader | list[DataLoader]:
        loaders = [
            self._loader(d, self.hparams.eval_batch_size, shuffle=False) for d in (mnist, extra) if d is not None
        ]
        return loaders[0] if len(loaders) == 1 else loaders

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        x = to_pixels(images)
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            x = augment_batch(x, self.hparams.elastic_alpha, self.hparams.elastic_sigma)
            if self._corrupting():
                x = corrupt_randomly(x, self.hparams.corruptions, self.hparams.corruption_p)
        return normalize(x), labels

    def _corrupting(self) -> bool:
        """Whether this training epoch gets corruptions: all but the last `clean_epochs` do."""
        if not self.hparams.corruptions:
            return False
        clean = self.hparams.clean_epochs
        if clean == 0:
            return True
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs <= clean:
            raise ConfigError(
                f"data.clean_epochs={clean} needs trainer.max_epochs above it (got {max_epochs}): "
                "the clean epochs are the last ones of a run of known length."
            )
        corrupting = self.trainer.current_epoch < max_epochs - clean
        if not corrupting and not self._clean_announced:
            log.info(
                "Epoch %d: clean digits only from here to the end (data.clean_epochs=%d).",
                self.trainer.current_epoch,
                clean,
            )
            self._clean_announced = True
        return corrupting
