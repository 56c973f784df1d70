"""The robustness report: accuracy on a fixed, seeded subset of the test set under every corruption and severity."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from digitrec.data.corruptions import CORRUPTIONS, SEVERITIES
from digitrec.data.mnist import normalize, to_pixels
from digitrec.validation import check_range

Scores = Callable[[torch.Tensor], torch.Tensor]  # normalised (N, 1, 28, 28) batch -> (N, 10) scores


def subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """The indices of `size` test images, the same for every model given the seed."""
    return torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size]


def corrupted(images: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """uint8 or float (N, 1, 28, 28) images under one corruption, as floats in [0, 1]; deterministic in `seed`."""
    x = to_pixels(images)
    index = list(CORRUPTIONS).index(name)
    generator = torch.Generator().manual_seed(seed * 1_000 + index * 10 + severity)
    return CORRUPTIONS[name].apply(x, severity, generator)


def accuracy(scores: Scores, x: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Accuracy on float images in [0, 1]."""
    with torch.inference_mode():
        right = sum(
            int((scores(normalize(b)).argmax(1) == y).sum())
            for b, y in zip(x.split(batch_size), labels.split(batch_size))
        )
    return right / len(labels)


def robustness_report(
    scores: Scores,
    images: torch.Tensor,
    labels: torch.Tensor,
    size: int = 1_000,
    seed: int = 0,
    batch_size: int = 256,
    trained_on: Sequence[str] = (),
) -> dict[str, Any]:
    """Accuracy per corruption and severity on `size` test images; the mean, the worst, held-out and seen means.

    A corruption's accuracy is the mean over its severities; `trained_on` names the corruptions
    the model was trained with, so that the others can be reported as held out.
    """
    check_range("robustness_images", size, 1, len(labels), integer=True)
    idx = subset(labels, size, seed)
    images, labels = images[idx], labels[idx]
    rows: dict[str, Any] = {}
    for name, corruption in CORRUPTIONS.items():
        by_severity = {
            str(s): accuracy(scores, corrupted(images, name, s, seed), labels, batch_size) for s in SEVERITIES
        }
        rows[name] = {
            "accuracy": statistics.fmean(by_severity.values()),
            "severity": by_severity,
            "group": corruption.group,
            "trained_on": name in trained_on,
            "description": corruption.description,
        }
    means = {
        key: statistics.fmean(r["accuracy"] for r in rows.values() if keep(r))
        for key, keep in (
            ("mean", lambda r: True),
            ("held_out_mean", lambda r: not r["trained_on"]),
            ("trained_mean", lambda r: r["trained_on"]),
        )
        if any(keep(r) for r in rows.values())
    }
    worst = min(rows, key=lambda name: rows[name]["accuracy"])
    return {
        "clean": accuracy(scores, to_pixels(images), labels, batch_size),
        **means,
        "worst": {"corruption": worst, "accuracy": rows[worst]["accuracy"]},
        "low_resolution": rows["low_resolution"]["severity"],
        "corruptions": rows,
        "images": size,
        "seed": seed,
        "severities": list(SEVERITIES),
        "trained_on": list(trained_on),
    }


def training_only(report: dict[str, Any]) -> list[str]:
    """The corruptions the model was trained with that are not rows of the report."""
    return [name for name in report["trained_on"] if name not in report["corruptions"]]


def format_robustness(report: dict[str, Any]) -> str:
    """The report as an aligned text table, one row per corruption."""
    header = f"{'corruption':<16}{'mean':>8}" + "".join(f"{'sev ' + str(s):>8}" for s in report["severities"])
    lines = [header]
    for name, row in report["corruptions"].items():
        mark = "  (trained on)" if row["trained_on"] else ""
        lines.append(
            f"{name:<16}{row['accuracy']:>8.2%}" + "".join(f"{a:>8.2%}" for a in row["severity"].values()) + mark
        )
    lines.append(f"{'clean':<16}{report['clean']:>8.2%}")
    summary = [f"mean {report['mean']:.2%}", f"worst {report['worst']['corruption']} {report['worst']['accuracy']:.2%}"]
    if report["trained_on"]:
        summary += [f"held out {report['held_out_mean']:.2%}", f"trained on {report['trained_mean']:.2%}"]
    lines.append(", ".join(summary) + f" ({report['images']:,} test images, seed {report['seed']})")
    extra = training_only(report)
    if extra:
        lines.append(f"also trained on, not rows of this report: {', '.join(extra)}")
    return "\n".join(lines)
