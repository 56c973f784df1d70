"""The store's digits as MNIST files: gzipped IDX images and labels, plus `manifest.json`.

The images are the 28×28 the network saw (light digit on dark, as MNIST), in the order of the
store's ids (`manifest.json` lists them); `digitrec.data.mnist.read_idx` reads both files back.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from digitrec.errors import ConfigError
from digitrec.feedback.store import SCHEMA_VERSION, SIDE, FeedbackStore

IMAGES = "feedback-images-idx3-ubyte.gz"
LABELS = "feedback-labels-idx1-ubyte.gz"
MANIFEST = "manifest.json"


def export(store: FeedbackStore, out: Path) -> dict[str, Any]:
    """Write the IDX files and `manifest.json` into `out` (each file whole or not at all); returns the manifest."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as pixels:  # the IDX header needs the count, known at the end
            labels, ids, models, first, last = bytearray(), [], Counter(), None, None
            for row in store.digits():
                pixels.write(row.pixels)
                labels.append(row.label)
                ids.append(row.id)
                models[(row.model_sha256, row.model_name)] += 1
                first, last = first or row.created_at, row.created_at
            if not ids:
                raise ConfigError(f"{store.name} holds no digits: nothing to export.")
            pixels.seek(0)
            _write_idx(out / IMAGES, (len(ids), SIDE, SIDE), pixels)
        _write_idx(out / LABELS, (len(ids),), labels)
        counts = Counter(labels)
        manifest = {
            "format": "MNIST IDX (unsigned bytes), gzipped; images are the 28×28 the network saw, light digit on dark",
            "items": len(ids),
            "labels": {str(d): counts.get(d, 0) for d in range(10)},
            "files": {
                name: {"sha256": _sha256(out / name), "bytes": (out / name).stat().st_size} for name in (IMAGES, LABELS)
            },
            "time_range": {"first": _iso(first), "last": _iso(last)},
            "models": [{"sha256": sha, "name": name, "items": n} for (sha, name), n in models.items()],
            "ids": ids,
            "schema_version": SCHEMA_VERSION,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _replace(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    except OSError as e:
        raise ConfigError(f"cannot write the export to {out}: {e.strerror or e}.") from None
    return manifest


def _write_idx(path: Path, shape: tuple[int, ...], data: Any) -> None:
    """An IDX file of unsigned bytes (magic 0x08, then the number of dimensions), gzipped with no
    time stamp so that the same digits give the same checksum; `data` is bytes or a binary file."""
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
                f.write(header)
                if isinstance(data, (bytes, bytearray)):
                    f.write(data)
                else:
                    while chunk := data.read(1 << 20):
                        f.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _replace(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=timezone.utc).isoformat()
