"""Report figures (matplotlib, no pyplot state) and the callback that logs them to TensorBoard."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from digitrec.evaluation.robustness import training_only

RIGHT, WRONG = "tab:green", "tab:red"


def save_figure(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=120, format="png")


def figure_to_array(fig: Figure) -> np.ndarray:
    """The rendered figure as an (H, W, 3) uint8 array, for `SummaryWriter.add_image`."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_figure(counts: torch.Tensor, title: str = "Confusion matrix") -> Figure:
    """Row-normalised heat-map (share of each true digit), every cell annotated with its count."""
    counts = counts.cpu().long()
    shares = counts.double() / counts.sum(1, keepdim=True).clamp(min=1)
    fig = Figure(figsize=(6.6, 5.6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true digit")
    for (row, col), count in np.ndenumerate(counts.numpy()):
        if count:
            ax.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shares[row, col] > 0.5 else "black",
            )
    ticks = range(counts.shape[0])
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted digit", ylabel="true digit", title=title)
    return fig


def digit_grid_figure(images: torch.Tensor, titles: Sequence[str], colors: Sequence[str], title: str) -> Figure:
    """A grid of 28×28 digits (uint8 or [0, 1] floats), each with its own title and colour."""
    n = len(images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(1.6 * cols + 0.4, 1.75 * rows + 0.6), layout="constrained")
    fig.suptitle(title)
    if n == 0:
        fig.add_subplot().axis("off")
        fig.text(0.5, 0.5, "nothing to show", ha="center", va="center")
        return fig
    for i, (image, text, color) in enumerate(zip(images, titles, colors)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(image.reshape(28, 28).cpu().float().numpy(), cmap="gray")
        ax.set_title(text, color=color, fontsize=8)
        ax.axis("off")
    return fig


def misclassified_figure(
    images: torch.Tensor,
    labels: torch.Tensor,
    preds: torch.Tensor,
    confidences: torch.Tensor,
    title: str = "Most confident errors",
) -> Figure:
    titles = [f"true {y} → {p}\n{c:.1%}" for y, p, c in zip(labels.tolist(), preds.tolist(), confidences.tolist())]
    return digit_grid_figure(images, titles, [WRONG] * len(titles), title)


def demo_figure(images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, confidences: torch.Tensor) -> Figure:
    """Predictions on test digits: green when right, red (with the true label) when wrong."""
    titles, colors = [], []
    for y, p, c in zip(labels.tolist(), preds.tolist(), confidences.tolist()):
        titles.append(f"pred {p} ({c:.0%})" + ("" if y == p else f"\ntrue {y}"))
        colors.append(RIGHT if y == p else WRONG)
    return digit_grid_figure(images, titles, colors, "Predictions on test digits")


def training_curves_figure(curves: Mapping[str, Sequence[tuple[float, float]]], x_label: str, source: str) -> Figure:
    """Loss, accuracy and learning rate against `x_label`; `curves` maps a tag to (x, value) points."""
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    fig.suptitle(f"Training curves ({source})")
    panels = (
        ("loss", ("train/loss_epoch", "val/loss")),
        ("accuracy", ("train/acc", "val/acc")),
        ("learning rate", tuple(t for t in curves if t.startswith("lr-"))),
    )
    for i, (name, tags) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for tag in tags:
            if curves.get(tag):
                x, y = zip(*curves[tag])
                ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=tag)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=name, xlabel=x_label)
        if name == "accuracy" and _zoom_past_first_point(ax, [curves[t] for t in tags if curves.get(t)]):
            ax.set_title("accuracy (zoomed past the first point)")
        ax.grid(alpha=0.3)
    return fig


def _zoom_past_first_point(ax, series: Sequence[Sequence[tuple[float, float]]]) -> bool:
    """Fit the y axis to every point but each series' first: the first epoch's low accuracy would
    squash the last epochs, where the differences are, into a flat line at the top."""
    later = [y for points in series for _, y in points[1:]]
    if not later:
        return False
    low, high = min(later), max(later)
    margin = max(0.1 * (high - low), 0.002)
    ax.set_ylim(low - margin, high + margin)
    return True


def reliability_figure(panels: Mapping[str, Mapping[str, Sequence[float] | float]]) -> Figure:
    """Per panel, a reliability diagram (accuracy per confidence bin against the diagonal, the red
    stroke being each bin's gap to its mean confidence) above the bins' digit counts.

    Each panel holds `bin_confidence`, `bin_accuracy`, `bin_count` (per bin) and its `ece`.
    """
    fig = Figure(figsize=(5 * len(panels), 6.2), layout="constrained")
    grid = fig.add_gridspec(2, len(panels), height_ratios=(3, 1))
    for i, (name, panel) in enumerate(panels.items()):
        ax, counts_ax = fig.add_subplot(grid[0, i]), fig.add_subplot(grid[1, i])
        n_bins = len(panel["bin_count"])
        edges = np.linspace(0, 1, n_bins + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        count = np.asarray(panel["bin_count"])
        filled = count > 0
        acc, conf = np.asarray(panel["bin_accuracy"])[filled], np.asarray(panel["bin_confidence"])[filled]
        ax.bar(
            edges[:-1][filled],
            acc,
            width=1 / n_bins,
            align="edge",
            edgecolor="black",
            color="tab:blue",
            label="accuracy",
        )
        ax.vlines(centers[filled], acc, conf, color="tab:red", linewidth=2)
        ax.plot(centers[filled], conf, "o", color="tab:red", markersize=4, label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{name}\nECE {panel['ece']:.4f}")
        ax.legend(loc="upper left", fontsize=8)
        counts_ax.bar(edges[:-1], np.maximum(count, 0), width=1 / n_bins, align="edge", color="tab:gray")
        counts_ax.set(xlim=(0, 1), yscale="log", xlabel="confidence (max softmax)", ylabel="digits")
    return fig


def comparison_figure(
    title: str, names: Sequence[str], test_errors: Sequence[float | None], fit_seconds: Sequence[float | None]
) -> Figure:
    """Bars per run: test error (%) and training time (s); a failed run's bars read n/a."""
    fig = Figure(figsize=(max(6.0, 1.1 * len(names) + 3), 4.4), layout="constrained")
    fig.suptitle(f"Sweep {title}")
    for i, (values, label) in enumerate(((test_errors, "test error (%)"), (fit_seconds, "training time (s)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(range(len(names)), heights, color="tab:blue" if i == 0 else "tab:gray")
        ax.bar_label(bars, labels=[f"{v:.2f}" if v is not None else "n/a" for v in values], fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set(ylabel=label, title=label)
    return fig


def robustness_figure(report: Mapping, examples: Mapping[str, torch.Tensor], clean: torch.Tensor, title: str) -> Figure:
    """Accuracy per corruption (bar: mean over severities, dots: each severity) beside clean accuracy,
    and one test digit under every corruption and severity (`examples[name]`: (severities, 28, 28))."""
    rows = report["corruptions"]
    names = list(rows)
    fig = Figure(figsize=(12, 0.42 * len(names) + 1.6), layout="constrained")
    fig.suptitle(title)
    bars_area, grid_area = fig.subfigures(1, 2, width_ratios=[1.5, 1])
    ax = bars_area.add_subplot()
    y = np.arange(len(names))
    colors = ["tab:orange" if rows[n]["trained_on"] else "tab:blue" for n in names]
    ax.barh(y, [100 * rows[n]["accuracy"] for n in names], color=colors, alpha=0.6)
    for s, marker in zip(report["severities"], "o^s"):
        ax.scatter(
            [100 * rows[n]["severity"][str(s)] for n in names],
            y,
            marker=marker,
            s=14,
            color="black",
            label=f"severity {s}",
            zorder=3,
        )
    ax.axvline(100 * report["clean"], color=RIGHT, linestyle="--", label=f"clean {report['clean']:.2%}")
    lowest = min(min(r["severity"].values()) for r in rows.values())
    ax.set(
        yticks=y,
        yticklabels=[n + (" *" if rows[n]["trained_on"] else "") for n in names],
        xlim=(max(0.0, 100 * lowest - 5), 100.5),
        xlabel="test accuracy (%)",
    )
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=4, fontsize=8)
    if report["trained_on"]:
        extra = training_only(report)
        ax.set_title(
            "* trained on (orange); the others are held out"
            + (f"\nalso trained on, not rows here: {', '.join(extra)}" if extra else ""),
            fontsize=9,
        )
    axes = grid_area.subplots(len(names), 1 + len(report["severities"]), squeeze=False)
    for r, name in enumerate(names):
        for c, image in enumerate([clean, *examples[name]]):
            axes[r, c].imshow(image.cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            if c == 0:
                axes[r, c].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
            if r == 0:
                axes[r, c].set_title("clean" if c == 0 else f"sev {c}", fontsize=8)
    return fig
