"""What every inference command shares: its model options (`--checkpoint`, `--tta`) and which model
answers when none is given."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from digitrec.errors import CheckpointError
from digitrec.inference.checkpoints import find_newest_checkpoint, resolve_checkpoint
from digitrec.inference.pretrained import bundled_weights, describe_bundled

DEFAULT_MODEL = "the newest *-best.ckpt under outputs/, else the bundled model"


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """`--checkpoint` (repeatable: an ensemble) and `--tta`, with one wording for every command."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=None,
        help="a .ckpt, or a run or sweep folder (its newest *-best.ckpt); repeat it for an ensemble "
        f"(the mean of the members' calibrated probabilities); default: {DEFAULT_MODEL}",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: also average over 1-px shifts and ±8° rotations (7× the work)",
    )


def choose_model(given: Sequence[Path] | None, search_dir: Path = Path("outputs")) -> tuple[list[Path], str]:
    """The checkpoints that answer, and a line saying which: those given (a folder: its newest
    `*-best.ckpt`); else the newest under `search_dir`; else the bundled model."""
    if given:
        paths = [resolve_checkpoint(p) for p in given]
        return paths, "model: " + ", ".join(str(p) for p in paths)
    try:
        newest = find_newest_checkpoint(search_dir)
    except CheckpointError:  # none trained here: the bundled model
        weights = bundled_weights()
        return [weights], f"model: {describe_bundled(weights)}"
    return [newest], f"model: {newest} (the newest under {search_dir}/; --checkpoint chooses another)"
