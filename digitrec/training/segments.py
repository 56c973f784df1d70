"""The network that judges candidate digits whole or not, made from scratch:
`python -m digitrec.training.segments [--numbers 3000] [--epochs 5] [--seed 0]`.

Numbers are written with MNIST training digits (`digitrec.data.numbers`): the last `VALIDATION_DIGITS` of
them make the validation numbers, the others the training numbers; the test digits are never seen. Each
number is laid out exactly as `DigitPredictor.read` lays it out; a candidate is a whole digit when its box
matches one true digit's (horizontal overlap over union of at least `MATCH`). `SegmentNet` learns that
from the crop and the candidate's geometry (a plain PyTorch loop: a few minutes on a CPU), and is written
as float16 weights with its card into `digitrec/inference/pretrained/`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from digitrec.bench.machine import cpu_model
from digitrec.data.mnist import default_data_dir, load_split, raw_dir
from digitrec.data.numbers import VALIDATION_DIGITS, Number, make_numbers
from digitrec.errors import ConfigError, exit_on_user_error
from digitrec.inference.checkpoints import card_file
from digitrec.inference.numbers import Layout, layout
from digitrec.inference.pretrained import sha256_file
from digitrec.inference.segments import SEGMENTS_FILE
from digitrec.models.segments import SegmentNet
from digitrec.training.run import source_commit
from digitrec.validation import positive_int

MATCH = 0.75  # horizontal intersection over union with a true digit's box: the candidate is that digit, whole
BATCH_SIZE = 512
LEARNING_RATE = 2e-3


@dataclass
class Examples:
    crops: torch.Tensor  # (N, 1, 28, 28) float32
    shapes: torch.Tensor  # (N, len(GEOMETRY)) float32
    whole: torch.Tensor  # (N,) float32, 1 for a whole digit

    def __len__(self) -> int:
        return len(self.whole)


def is_whole(item: Layout, number: Number) -> np.ndarray:
    """Per candidate of the layout: does its box match one of the number's true digit boxes?"""
    (left, _), scale = item.origin, item.scale
    found = np.array([[left + b[0] / scale, left + b[2] / scale] for b in item.boxes]).reshape(-1, 2)
    truth = np.array([[b[0], b[2]] for b in number.boxes], np.float64)
    inter = np.minimum(found[:, None, 1], truth[None, :, 1]) - np.maximum(found[:, None, 0], truth[None, :, 0])
    union = np.maximum(found[:, None, 1], truth[None, :, 1]) - np.minimum(found[:, None, 0], truth[None, :, 0])
    return (np.maximum(inter, 0) / union >= MATCH).any(1)


def examples(numbers: Sequence[Number]) -> Examples:
    """Every inked candidate of every number, as the reader lays them out."""
    crops, shapes, whole = [], [], []
    for number in numbers:
        item = layout(number.image.astype(np.float32) / 255)
        if item.reason is not None:
            continue
        inked = [k for k, crop in enumerate(item.crops) if crop.has_ink]
        crops.append(np.stack([item.crops[k].pixels for k in inked]))
        shapes.append(item.shapes[inked])
        whole.append(is_whole(item, number)[inked])
    return Examples(
        torch.from_numpy(np.concatenate(crops)).unsqueeze(1),
        torch.from_numpy(np.concatenate(shapes)),
        torch.from_numpy(np.concatenate(whole).astype(np.float32)),
    )


def fit(net: SegmentNet, data: Examples, epochs: int, generator: torch.Generator) -> list[float]:
    """AdamW with a one-cycle schedule; the mean training loss of each epoch."""
    net.mean.copy_(data.shapes.mean(0))
    net.std.copy_(data.shapes.std(0).clamp_min(1e-3))
    optimizer = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    steps = (len(data) + BATCH_SIZE - 1) // BATCH_SIZE
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, LEARNING_RATE, total_steps=epochs * steps)
    losses = []
    net.train()
    for _ in range(epochs):
        order, total = torch.randperm(len(data), generator=generator), 0.0
        for start in range(0, len(data), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            loss = binary_cross_entropy_with_logits(net(data.crops[batch], data.shapes[batch]), data.whole[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        losses.append(total / len(data))
    return losses


@torch.inference_mode()
def judged(net: SegmentNet, data: Examples) -> dict[str, float]:
    """Loss and accuracy of the whole/not-whole answers on `data`."""
    net.eval()
    logits = torch.cat([net(data.crops[s : s + 4096], data.shapes[s : s + 4096]) for s in range(0, len(data), 4096)])
    return {
        "loss": binary_cross_entropy_with_logits(logits, data.whole).item(),
        "accuracy": ((logits > 0).float() == data.whole).float().mean().item(),
        "candidates": len(data),
        "whole": int(data.whole.sum()),
    }


def save(net: SegmentNet, path: Path, card: dict[str, Any]) -> None:
    """float16 weights and their card, each written atomically (a failure leaves the old pair)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({name: value.half() for name, value in net.state_dict().items()}, tmp)
    os.replace(tmp, path)
    card = {**card, "sha256": sha256_file(path)}
    target = card_file(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, target)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digitrec.training.segments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=3000, help="training numbers (default 3000)")
    parser.add_argument("--val-numbers", type=int, default=500, help="validation numbers (default 500)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $DIGITREC_DATA_DIR or data/")
    parser.add_argument("--out", type=Path, default=SEGMENTS_FILE, help=f"the weights file (default {SEGMENTS_FILE})")
    args = parser.parse_args(argv)
    for name in ("numbers", "val_numbers", "epochs"):
        positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.out.suffix != ".pt":
        raise ConfigError(f"--out {args.out}: name the weights file with .pt (its card goes beside it).")
    torch.manual_seed(args.seed)
    split = load_split(raw_dir(args.data_dir or default_data_dir()), train=True)
    digits, labels = split.images[:, 0].numpy(), split.labels.numpy()
    start = time.perf_counter()
    train = examples(make_numbers(digits[:-VALIDATION_DIGITS], labels[:-VALIDATION_DIGITS], args.numbers, args.seed))
    val = examples(
        make_numbers(digits[-VALIDATION_DIGITS:], labels[-VALIDATION_DIGITS:], args.val_numbers, args.seed + 1)
    )
    made = time.perf_counter()
    net = SegmentNet()
    losses = fit(net, train, args.epochs, torch.Generator().manual_seed(args.seed))
    trained = time.perf_counter()
    card = {
        "what": "log P(one whole digit) of a number's candidate digits, for DigitPredictor.read",
        "command": " ".join(["python -m digitrec.training.segments", *(argv if argv is not None else sys.argv[1:])]),
        "data": f"{args.numbers} numbers of MNIST training digits 1-{len(digits) - VALIDATION_DIGITS} (seed {args.seed}); "
        f"validation: {args.val_numbers} numbers of the last {VALIDATION_DIGITS} (seed {args.seed + 1})",
        "epochs": args.epochs,
        "train_loss": [round(loss, 4) for loss in losses],
        "train": judged(net, train),
        "validation": judged(net, val),
        "parameters": sum(p.numel() for p in net.parameters()),
        "seconds": {"examples": round(made - start, 1), "training": round(trained - made, 1)},
        "commit": source_commit(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "dtype": "float16",
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    save(net, args.out, card)
    print(json.dumps({**card, "sha256": sha256_file(args.out)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
