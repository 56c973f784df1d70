"""MNIST on disk (IDX files: reading, validation, download) and the `MNISTDataModule`."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, RandomSampler

from digitrec.augment import augment_batch
from digitrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28
NUM_CLASSES = 10
EVAL_BATCH_SIZE = 256  # on a CPU, larger evaluation batches fall out of cache (see the benchmark)
REPO_ROOT = Path(__file__).resolve().parents[1]

# File stem -> MD5 of the *uncompressed* canonical file (stable whatever the gzip level).
FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_IDX_MAGIC = {0x0801: 1, 0x0803: 3}  # unsigned-byte IDX: labels (1 dim), images (3 dims)


def default_data_dir() -> Path:
    """`$DIGITREC_DATA_DIR` when set, else `data/` in the repository."""
    return Path(os.environ.get("DIGITREC_DATA_DIR") or REPO_ROOT / "data").expanduser().resolve()


def raw_dir(data_dir: str | Path) -> Path:
    """Where the four IDX files live: `data_dir/MNIST/raw`, or `data_dir` itself if it holds them."""
    data_dir = Path(data_dir)
    if not (data_dir / "MNIST" / "raw").is_dir() and _find(data_dir, next(iter(FILES))):
        return data_dir
    return data_dir / "MNIST" / "raw"


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: str | Path) -> tuple[torch.Tensor, str]:
    """Parse one unsigned-byte IDX file (gzipped or plain); return (uint8 tensor, MD5 of the raw bytes)."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e}); delete it and download it again.") from None
    if len(data) < 4:
        raise DataError(f"{path}: truncated ({len(data)} bytes); delete it and download it again.")
    magic, ndim = int.from_bytes(data[:4], "big"), 0
    if magic not in _IDX_MAGIC:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic number {magic:#010x}).")
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header; delete it and download it again.")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(torch.tensor(shape).prod())
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {what}: header promises {shape} ({expected} bytes), file has {len(data)}; "
            "delete it and download it again."
        )
    tensor = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)
    return tensor, hashlib.md5(data).hexdigest()


@dataclass(frozen=True)
class MNISTSplit:
    images: torch.Tensor  # uint8, (N, 1, 28, 28)
    labels: torch.Tensor  # int64, (N,)
    checksums: dict[str, str]  # file stem -> MD5 of its uncompressed bytes


def load_split(folder: str | Path, train: bool) -> MNISTSplit:
    """Read and validate one official split (train: 60k, test: 10k) from a folder of IDX files."""
    folder = Path(folder)
    prefix = "train" if train else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find(folder, stem) for stem in stems]
    if None in paths:
        raise DataError(_missing_message(folder))
    (images, img_md5), (labels, lbl_md5) = (read_idx(p) for p in paths)
    if images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{paths[0]}: expected N×28×28 images, found shape {tuple(images.shape)}.")
    if labels.dim() != 1:
        raise DataError(f"{paths[1]}: expected a 1-D label file, found shape {tuple(labels.shape)}.")
    if len(images) != len(labels):
        raise DataError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels.")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{paths[1]}: label {int(labels.max())} is out of range 0-9.")
    checksums = {stems[0]: img_md5, stems[1]: lbl_md5}
    for stem, md5 in checksums.items():
        if md5 != FILES[stem]:
            log.warning("%s is not the canonical MNIST file (MD5 %s); using it as given.", stem, md5)
    return MNISTSplit(images.unsqueeze(1).contiguous(), labels.long(), checksums)


def _missing_message(folder: Path) -> str:
    missing = [s for s in FILES if _find(folder, s) is None]
    return (
        f"MNIST files missing in {folder}: {', '.join(s + '.gz' for s in missing)}. "
        f"Put the four files (gzipped or not) in {folder}, or set DIGITREC_DATA_DIR "
        "(or data.data_dir=...) to a folder that holds MNIST/raw/."
    )


def download_mnist(folder: Path) -> None:
    """Fetch missing files from torchvision's mirrors (MD5-checked); atomic per file."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    folder.mkdir(parents=True, exist_ok=True)
    for filename, md5 in MNIST.resources:
        if _find(folder, filename.removesuffix(".gz")):
            continue
        errors = []
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            for mirror in MNIST.mirrors:
                try:
                    download_url(mirror + filename, root=tmp, filename=filename, md5=md5)
                    os.replace(Path(tmp) / filename, folder / filename)
                    break
                except Exception as e:  # network errors come in many types; try the next mirror
                    errors.append(f"{mirror}: {e}")
            else:
                raise DataError(
                    f"Could not download {filename} ({'; '.join(errors)}). "
                    + _missing_message(folder)
                )


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
        download: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}.")
        if not 0 < val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction!r}.")
        if elastic_alpha < 0 or elastic_sigma <= 0:
            raise ConfigError(f"data.elastic_alpha must be >= 0 and data.elastic_sigma > 0, got {elastic_alpha}, {elastic_sigma}.")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers!r}.")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
        self.train_set = self.val_set = self.test_set = None
        self.checksums: dict[str, str] = {}

    @property
    def raw_dir(self) -> Path:
        return raw_dir(self.data_dir)

    def prepare_data(self) -> None:
        folder = self.raw_dir
        if all(_find(folder, stem) for stem in FILES):
            return
        if not self.hparams.download:
            raise DataError(_missing_message(folder))
        log.info("Downloading MNIST into %s", folder)
        download_mnist(folder)

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

    def _loader(self, dataset: _InMemory, batch_size: int, shuffle: bool) -> DataLoader:
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
            collate_fn=_as_batch,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        x = images.float().div_(255)
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            x = augment_batch(x, self.hparams.elastic_alpha, self.hparams.elastic_sigma)
        return normalize(x), labels


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the network's input scale."""
    return (x - MNIST_MEAN) / MNIST_STD
