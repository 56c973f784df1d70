"""Users' labelled digits for training, without Lightning: read from feedback stores (`digitrec.feedback`)
or their exports, and split into training, validation and test digits.

Each digit's part is decided by a seeded hash of its pixels alone, so a digit held out once stays held
out however many digits a store gains later, and the same image is never on both sides of the split."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from digitrec.data.mnist import IMAGE_SIZE, NUM_CLASSES, read_idx
from digitrec.errors import ConfigError, DataError, DigitrecError

log = logging.getLogger(__name__)

PIXELS = IMAGE_SIZE * IMAGE_SIZE
# the names `digitrec-feedback export` writes (feedback/export.py, which imports no torch: a test keeps both the same)
IMAGES = "feedback-images-idx3-ubyte.gz"
LABELS = "feedback-labels-idx1-ubyte.gz"
_WHAT = (
    "give a feedback store (its SQLite file, or a URL such as sqlite:///path/feedback.db or postgresql://...) "
    "or a folder written by `digitrec-feedback export`"
)


@dataclass(frozen=True)
class Digits:
    images: torch.Tensor  # uint8, (N, 1, 28, 28), light digit on dark as MNIST
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ExtraSplit:
    train: Digits
    val: Digits
    test: Digits


def check_sources(sources: Sequence[str]) -> None:
    """What can be checked without reading the digits: each path exists, a folder holds the export's files."""
    if not sources:
        raise ConfigError(f"data.extra is an empty list; {_WHAT}, or leave it null.")
    for source in sources:
        if not isinstance(source, str) or not source:
            raise ConfigError(f"data.extra: {source!r} is not a path or a database URL; {_WHAT}.")
        if "://" in source:
            continue
        path = Path(source).expanduser()
        if not path.exists():
            raise ConfigError(f"data.extra: {path} does not exist; {_WHAT}.")
        if path.is_dir() and not all((path / name).is_file() for name in (IMAGES, LABELS)):
            raise ConfigError(
                f"data.extra: the folder {path} holds no {IMAGES} and {LABELS}; give a folder written by "
                "`digitrec-feedback export --out FOLDER`, or the feedback store itself."
            )


def load_extra(sources: Sequence[str]) -> Digits:
    """Every source's digits, in order, each (pixels, label) pair once even when several sources hold it."""
    check_sources(sources)
    parts = [_load(source) for source in sources]
    images = torch.cat([p.images for p in parts])
    labels = torch.cat([p.labels for p in parts])
    seen: set[tuple[bytes, int]] = set()
    keep = []
    for i, (pixels, label) in enumerate(zip(images.reshape(len(images), -1).numpy(), labels.tolist())):
        key = (pixels.tobytes(), label)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    if len(keep) < len(labels):
        log.info("Users' digits: %d duplicates of a (pixels, label) pair left out.", len(labels) - len(keep))
    index = torch.as_tensor(keep, dtype=torch.long)
    return Digits(images[index], labels[index])


def _load(source: str) -> Digits:
    path = Path(source).expanduser()
    digits = _from_export(path) if "://" not in source and path.is_dir() else _from_store(source)
    if not len(digits):
        raise ConfigError(
            f"data.extra: {source} holds no digits; label some in digitrec-serve's page first, or {_WHAT}."
        )
    log.info("Users' digits: %d from %s", len(digits), source)
    return digits


def _from_store(source: str) -> Digits:
    try:
        from digitrec.feedback.store import FeedbackStore  # SQLAlchemy only for a run that reads a store
    except ImportError as e:
        raise ConfigError(
            f"data.extra: reading {source} needs SQLAlchemy ({e}): pip install 'digitrec[serve]'."
        ) from None
    store = None
    try:
        store = FeedbackStore(source if "://" in source else Path(source).expanduser(), create=False)
        rows = [(bytes(row.pixels), int(row.label)) for row in store.digits()]
    except DigitrecError as e:
        raise ConfigError(f"data.extra: cannot read {source} as a feedback store: {e} ({_WHAT}).") from None
    finally:
        if store is not None:
            store.close()
    bad = [i for i, (pixels, label) in enumerate(rows) if len(pixels) != PIXELS or not 0 <= label < NUM_CLASSES]
    if bad:
        raise ConfigError(
            f"data.extra: {source}: {len(bad)} rows are not a 28×28 digit with a label 0-9; "
            "run `digitrec-feedback check` on it."
        )
    data = bytearray(b"".join(p for p, _ in rows))
    pixels = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    return Digits(pixels.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE), torch.tensor([label for _, label in rows]).long())


def _from_export(folder: Path) -> Digits:
    try:
        (images, _), (labels, _) = read_idx(folder / IMAGES), read_idx(folder / LABELS)
    except DataError as e:
        raise ConfigError(f"data.extra: {e}; export the store again (digitrec-feedback export).") from None
    if images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE) or labels.dim() != 1:
        raise ConfigError(f"data.extra: {folder} holds {tuple(images.shape)} images, {tuple(labels.shape)} labels.")
    if len(images) != len(labels) or (len(labels) and int(labels.max()) >= NUM_CLASSES):
        raise ConfigError(f"data.extra: {folder}: {len(images)} images, {len(labels)} labels, not all 0-9.")
    return Digits(images.unsqueeze(1).contiguous(), labels.long())


def held_out_share(pixels: bytes, seed: int) -> float:
    """A number in [0, 1) fixed by the image and the seed: SHA-256 of the seed (8 bytes) and the pixels."""
    digest = hashlib.sha256(seed.to_bytes(8, "big", signed=True) + pixels).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_extra(digits: Digits, holdout: float, seed: int) -> ExtraSplit:
    """Digits whose `held_out_share` is below `holdout` are held out: the lower half for validation, the
    upper for test; the others train. Each part must hold at least one digit."""
    flat = digits.images.reshape(len(digits), -1).numpy()
    shares = torch.tensor([held_out_share(row.tobytes(), seed) for row in flat], dtype=torch.float64)
    parts = {
        "train": shares >= holdout,
        "val": shares < holdout / 2,
        "test": (shares >= holdout / 2) & (shares < holdout),
    }
    sizes = {name: int(mask.sum()) for name, mask in parts.items()}
    if min(sizes.values()) == 0:
        raise ConfigError(
            f"data.extra: {len(digits)} users' digits are too few to split with data.extra_holdout={holdout} "
            f"({', '.join(f'{n} {k}' for k, n in sizes.items())}); every part needs at least one digit: "
            "collect more digits, or change data.extra_holdout."
        )
    return ExtraSplit(*(Digits(digits.images[mask], digits.labels[mask]) for mask in parts.values()))
