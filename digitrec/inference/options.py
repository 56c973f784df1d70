"""The command-line options every inference command shares: which model answers (`--checkpoint`, `--tta`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_options(parser: argparse.ArgumentParser, required: bool, default: str = "") -> None:
    """`--checkpoint` (repeatable: an ensemble) and `--tta`, with one wording for every command.

    `default` says what answers when no `--checkpoint` is given (for a command where it is optional)."""
    parser.add_argument("--checkpoint", type=Path, action="append", required=required, default=None,
                        help="a .ckpt, or a run or sweep folder (its newest *-best.ckpt); repeat it for an ensemble "
                             "(the mean of the members' calibrated probabilities)" + (f"; default: {default}" if default else ""))
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: also average over 1-px shifts and ±8° rotations (7× the work)")
