"""MNIST itself, without Lightning: its constants, the IDX files on disk (reading, validation,
download) and the input normalisation. Inference imports this module, training too."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from digitrec.errors import DataError

log = logging.getLogger(__name__)

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28
NUM_CLASSES = 10
REPO_ROOT = Path(__file__).resolve().parents[2]

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


def ensure_mnist(folder: Path, download: bool = True) -> None:
    """Make sure `folder` holds the four files: download the missing ones, or say where to put them."""
    if all(_find(folder, stem) for stem in FILES):
        return
    if not download:
        raise DataError(_missing_message(folder))
    log.info("Downloading MNIST into %s", folder)
    download_mnist(folder)


def download_mnist(folder: Path) -> None:
    """Fetch missing files from torchvision's mirrors (MD5-checked), atomically per file.

    A failed download removes the folders it created, so nothing but complete files is left behind.
    """
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for filename, md5 in MNIST.resources:
            if not _find(folder, filename.removesuffix(".gz")):
                _download_one(folder, filename, md5, MNIST.mirrors, download_url)
    except BaseException:
        for path in created:  # innermost first; a folder that gained other files stays
            try:
                path.rmdir()
            except OSError:
                break
        raise


def _download_one(folder: Path, filename: str, md5: str, mirrors: list[str], download_url) -> None:
    errors = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for mirror in mirrors:
            try:
                download_url(mirror + filename, root=tmp, filename=filename, md5=md5)
                os.replace(Path(tmp) / filename, folder / filename)
                return
            except Exception as e:  # network errors come in many types; try the next mirror
                errors.append(f"{mirror}: {e}")
    raise DataError(f"Could not download {filename} ({'; '.join(errors)}). " + _missing_message(folder))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the network's input scale."""
    return (x - MNIST_MEAN) / MNIST_STD


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0-255) as float pixels in [0, 1]; float images (already pixels) as float32."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 1] float) images as the networks take them: float pixels, normalised."""
    return normalize(to_pixels(images))
