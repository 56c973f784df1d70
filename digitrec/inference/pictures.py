"""Pictures of answers for `--visualise`: a digit (the input, what the network saw, the ten probabilities)
and a number (the input with a box and a label per digit). matplotlib is imported only when one is drawn."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from digitrec.data.mnist import NUM_CLASSES


def digit_figure(given: np.ndarray, seen: np.ndarray, answer: dict[str, Any]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only when a picture is asked for
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4))
    FigureCanvasAgg(fig)
    ax_given, ax_seen, ax_probs = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.6]})
    if given.ndim == 3 and given.shape[-1] == 2:  # gray + alpha: matplotlib wants RGBA
        given = np.concatenate([given[..., :1].repeat(3, -1), given[..., 1:]], axis=-1)
    ax_given.imshow(given, cmap="gray", vmin=0, vmax=1)
    ax_given.set_title(f"input ({given.shape[1]}×{given.shape[0]})")
    ax_seen.imshow(seen, cmap="gray", vmin=0, vmax=1)
    ax_seen.set_title("what the network saw (28×28)")
    for ax in (ax_given, ax_seen):
        ax.set_xticks([])
        ax.set_yticks([])
    probs = answer["probabilities"]
    if probs is None:  # a blank image: nothing was asked of the network
        probs = [0.0] * NUM_CLASSES
        ax_probs.text(4.5, 0.5, "not a digit:\nno probabilities", ha="center", va="center", color="tab:gray")
    colours = ["tab:blue" if answer["is_digit"] and d == answer["digit"] else "tab:gray" for d in range(NUM_CLASSES)]
    ax_probs.bar(range(NUM_CLASSES), probs, color=colours)
    ax_probs.set_xticks(range(NUM_CLASSES))
    ax_probs.set_ylim(0, 1)
    ax_probs.set_xlabel("digit")
    ax_probs.set_ylabel("probability")
    verdict = (
        f"{answer['digit']} (confidence {answer['confidence']:.3f})"
        if answer["is_digit"]
        else f"not a digit: {answer['reason']}"
    )
    ax_probs.set_title(textwrap.fill(verdict, 48), fontsize=9)  # a long reason wraps instead of being clipped
    fig.tight_layout()
    return fig


def number_figure(given: np.ndarray, answer: dict[str, Any], threshold: float):
    """A matplotlib figure of the image as given with each digit's box, the digit and its confidence over it
    (orange when below `threshold`), and the reading as the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only when a picture is asked for
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    height, width = given.shape[:2]
    fig = Figure(figsize=(min(12.0, max(4.0, 4 * width / height)), 4.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if given.ndim == 3 and given.shape[-1] == 2:  # gray + alpha: matplotlib wants RGBA
        given = np.concatenate([given[..., :1].repeat(3, -1), given[..., 1:]], axis=-1)
    ax.imshow(given, cmap="gray", vmin=0, vmax=1)
    for digit in answer["digits"]:
        x0, y0, x1, y1 = digit["box"]
        colour = "tab:green" if digit["confidence"] >= threshold else "tab:orange"
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2))
        ax.text(
            x0,
            y0 - 2,
            f"{digit['digit']} {digit['confidence']:.2f}",
            color="white",
            fontsize=10,
            va="bottom",
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5},
        )
    ax.set_xticks([])
    ax.set_yticks([])
    verdict = (
        f"{answer['text']} (confidence {answer['confidence']:.3f})"
        if answer["is_number"]
        else f"not a number: {answer['reason']}" + (f" (best guess {answer['text']})" if answer["text"] else "")
    )
    ax.set_title(verdict, fontsize=10, wrap=True)
    fig.tight_layout()
    return fig
