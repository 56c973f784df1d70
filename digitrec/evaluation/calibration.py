"""Confidence calibration: temperature scaling, expected calibration error, reliability bins."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from digitrec.data.mnist import NUM_CLASSES

ECE_BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (Guo et al., 2017), by L-BFGS on log T."""
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty split")
    logits, labels = logits.detach().double(), labels.detach()
    with torch.inference_mode(False), torch.enable_grad():
        logits = logits.clone()  # a normal tensor even if the caller's came from inference mode
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
    return float(log_t.detach().exp())


def calibration_errors(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, float]:
    """Expected calibration error (top-label, L1, `n_bins` equal-width bins) and negative log-likelihood."""
    probs = logits.float().softmax(1)
    ece = MulticlassCalibrationError(NUM_CLASSES, n_bins=n_bins, norm="l1")(probs, labels)
    return {"ece": float(ece), "nll": float(F.cross_entropy(logits.double(), labels))}


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per confidence bin (equal width over [0, 1]): mean confidence, accuracy and count, for a reliability diagram."""
    confidence, pred = logits.float().softmax(1).max(1)
    correct = (pred == labels).double()
    index = (confidence.double() * n_bins).long().clamp(max=n_bins - 1)
    count = torch.bincount(index, minlength=n_bins)
    sums = {
        name: torch.bincount(index, weights=values, minlength=n_bins)
        for name, values in (("bin_confidence", confidence.double()), ("bin_accuracy", correct))
    }
    return {**{name: (s / count.clamp(min=1)).tolist() for name, s in sums.items()}, "bin_count": count.tolist()}
