"""digitrec: handwritten-digit recognition on PyTorch Lightning + Hydra.

`from digitrec import DigitPredictor` imports the predictor (and torch) on first use only, so
`import digitrec` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from digitrec.inference.predictor import DigitPredictor

__all__ = ["DigitPredictor"]


def __getattr__(name: str) -> Any:
    if name == "DigitPredictor":
        from digitrec.inference.predictor import DigitPredictor

        return DigitPredictor
    raise AttributeError(f"module 'digitrec' has no attribute {name!r}")
