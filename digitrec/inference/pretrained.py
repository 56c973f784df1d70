"""The model that ships inside the package, so that predicting and serving work before any training:
compact weights (`save_weights`) and their model card in `digitrec/inference/pretrained/`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from digitrec.errors import CheckpointError
from digitrec.inference.checkpoints import card_file

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
BUNDLED_NAME = "robust_best"


def bundled_weights() -> Path:
    """The bundled weights file; a `CheckpointError` that says what to do where it is missing."""
    path = PRETRAINED_DIR / f"{BUNDLED_NAME}.pt"
    if not path.is_file():
        raise CheckpointError(
            f"no bundled model at {path} (an installation without package data?); give a "
            "checkpoint with --checkpoint, or train one: python train.py experiment=robust_best."
        )
    return path


def is_bundled(path: str | os.PathLike) -> bool:
    return Path(path).resolve().parent == PRETRAINED_DIR.resolve()


def read_card(weights: str | os.PathLike) -> dict[str, Any]:
    """The model card beside a weights file, as a dict."""
    path = card_file(weights)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the model card ({e}).") from None


def describe_bundled(weights: Path) -> str:
    """One line for users: `bundled robust_best (99.67 % MNIST, card: .../robust_best.card.json)`."""
    card = read_card(weights)
    accuracy = card.get("mnist_test_accuracy")
    score = f"{100 * accuracy:.2f} % MNIST, " if isinstance(accuracy, (int, float)) else ""
    return f"bundled {card.get('recipe', weights.stem)} ({score}card: {card_file(weights)})"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
