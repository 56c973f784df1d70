"""`DigitPredictor`: a trained network answering for users' images (the command line is in `cli.py`).

from digitrec import DigitPredictor
predictor = DigitPredictor()  # the bundled model; or DigitPredictor("outputs/<run>/checkpoints/cnn-best.ckpt")
predictor.predict("my_digit.png")
# {"digit": 7, "confidence": 0.998, "probabilities": [...10 floats...], "is_digit": True,
#  "reason": None, "error": None}
predictor.read("my_number.png")  # several digits in a row, left to right
# {"text": "2024", "digits": [{"digit": 2, "confidence": 0.99, "probabilities": [...], "box": [x0, y0, x1, y1]},
#  ...], "confidence": 0.97, "is_number": True, "reason": None, "error": None}
ensemble = DigitPredictor([ckpt_a, ckpt_b, ckpt_c], tta=True)  # mean of calibrated probabilities
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from digitrec.errors import ConfigError, DigitrecError
from digitrec.inference.checkpoints import resolve_checkpoint, resolve_device
from digitrec.inference.ensemble import load_scorer, scorer_name
from digitrec.inference.images import ImageInput, describe, read_image
from digitrec.inference.numbers import read_numbers
from digitrec.inference.pictures import digit_figure
from digitrec.inference.preprocess import Preprocessed, as_is, mnist_style, to_grayscale
from digitrec.inference.pretrained import bundled_weights
from digitrec.inference.segments import load_segment_net, whole_digit_log_prob
from digitrec.models import model_name as registry_name
from digitrec.models.segments import SegmentNet
from digitrec.validation import check_range, positive_int

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")
Result = dict[str, Any]


class DigitPredictor:
    """A trained network plus the MNIST-style preprocessing, answering for users' images.

    Every answer is a dict: `digit` (int, or None for a blank image or an error), `confidence`
    (probability of that digit), `probabilities` (10 floats summing to 1), `is_digit` (False for
    a blank image or a confidence below `threshold`), `reason` (why it is not a digit) and
    `error` (a message, for an unusable input in `predict_batch`). Probabilities use the
    temperature `evaluate.py` calibrated for the checkpoint (kept beside it), else 1.0 with a warning:
    see `temperature_source`. Several checkpoints answer as an ensemble: the mean of their calibrated
    probabilities; `tta` also averages over 1-px shifts and ±8° rotations of each image. `segments` is
    the weights file of the network that tells whole digits in `read` (default: the bundled one; make
    your own with `python -m digitrec.training.segments --out FILE`).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        device: str | torch.device = "auto",
        model_name: str | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        preprocess: bool = True,
        batch_size: int = 256,
        tta: bool = False,
        segments: str | os.PathLike | None = None,
    ) -> None:
        if checkpoint is None:
            checkpoint = bundled_weights()
        given = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
        if not given:
            raise ConfigError("no checkpoint given; give one checkpoint, or a list of them for an ensemble.")
        self.checkpoints = [resolve_checkpoint(c, option="") for c in given]
        self.checkpoint = self.checkpoints[0]
        self.tta = bool(tta)
        self.device = resolve_device(device)
        self.threshold = _check_threshold(threshold)
        self.preprocess = bool(preprocess)
        self.batch_size = positive_int("batch_size", batch_size)
        self.net, self.temperature, names, sources = load_scorer(self.checkpoints, self.device, self.tta)
        for path, name in zip(self.checkpoints, names):
            if model_name is not None and registry_name({"name": model_name}) != name:
                raise ConfigError(
                    f"a {model_name!r} model was expected, but {path} holds a "
                    f"{name!r} model; give a checkpoint of a {model_name!r} model."
                )
        self.model_name = scorer_name(names)
        self.temperature_source = sources[0] if len(sources) == 1 else "; ".join(sources)
        for path, source in zip(self.checkpoints, sources):
            if source.startswith("uncalibrated"):
                log.warning(
                    "%s is not calibrated: confidences use temperature 1 (python evaluate.py ckpt_path=%s "
                    "fits one on the validation split).",
                    path,
                    path,
                )
        # The network that reads numbers: one given is loaded now, to fail here; the bundled one at the first reading.
        self._segments: SegmentNet | None = None if segments is None else load_segment_net(segments)

    def __repr__(self) -> str:
        given = str(self.checkpoint) if len(self.checkpoints) == 1 else [str(c) for c in self.checkpoints]
        return (
            f"DigitPredictor({self.model_name!r} from {given!r}, device={self.device}, "
            f"threshold={self.threshold}, preprocess={self.preprocess}, tta={self.tta}, "
            f"temperature={self.temperature:g} {self.temperature_source})"
        )

    def with_options(self, *, threshold: float | None = None, preprocess: bool | None = None) -> DigitPredictor:
        """A copy sharing this network, with another threshold or preprocessing setting."""
        other = copy.copy(self)
        if threshold is not None:
            other.threshold = _check_threshold(threshold)
        if preprocess is not None:
            other.preprocess = bool(preprocess)
        return other

    def predict(self, image: ImageInput) -> Result:
        """The answer for one image; an unusable image raises a `DigitrecError` naming it."""
        return self.answer([self.prepare(image)])[0]

    def predict_batch(self, images: Iterable[ImageInput]) -> list[Result]:
        """Answers in input order; the network runs on batches of `batch_size`. An unusable item gets
        `error` set (and `digit` None) instead of stopping the others. A numpy array or tensor is
        taken as a batch along its first axis."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            raise ConfigError(f"predict_batch takes a list of images, got one ({describe(images)}); use predict().")
        results: list[Result | None] = []
        prepared: list[tuple[int, Preprocessed]] = []
        for i, image in enumerate(images):
            try:
                prepared.append((i, self.prepare(image)))
                results.append(None)
            except DigitrecError as e:
                results.append(failure(str(e)))
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            for (i, _), answer in zip(chunk, self.answer([item for _, item in chunk])):
                results[i] = answer
        return results

    def read(self, image: ImageInput, seen: bool = False) -> Result:
        """The number written in one image: its digits left to right (see `digitrec.inference.numbers`).

        The answer: `text` (the digits, "" when none), `digits` (per digit: `digit`, `confidence`,
        `probabilities`, `box` = [x0, y0, x1, y1] in the image's pixels, x1 and y1 exclusive), `confidence`
        (of the whole reading: the product of the digits'), `is_number` (False when there is no digit or one
        is below `threshold`), `reason` and `error`. Each digit is preprocessed MNIST-style whatever
        `preprocess` says; with `seen`, each digit also has `seen`, the 28×28 image the network saw. An
        unusable image raises a `DigitrecError` naming it, as in `predict`.
        """
        return read_numbers([to_grayscale(read_image(image))], self._score, self.threshold, seen, self._judge)[0]

    def read_batch(self, images: Iterable[ImageInput]) -> list[Result]:
        """`read` for each image, in input order; an unusable item gets `error` set instead of stopping the others."""
        if isinstance(images, (str, os.PathLike, Image.Image)):
            raise ConfigError(f"read_batch takes a list of images, got one ({describe(images)}); use read().")
        grays: list[np.ndarray] = []
        results: list[Result | None] = []
        for image in images:
            try:
                grays.append(to_grayscale(read_image(image)))
                results.append(None)
            except DigitrecError as e:
                results.append(
                    {"text": "", "digits": [], "confidence": None, "is_number": False, "reason": None, "error": str(e)}
                )
        readings = iter(read_numbers(grays, self._score, self.threshold, judge=self._judge))
        return [next(readings) if result is None else result for result in results]

    def _score(self, items: Sequence[Preprocessed]) -> np.ndarray:
        """Probabilities for prepared images, in batches of `batch_size`."""
        chunks = (items[start : start + self.batch_size] for start in range(0, len(items), self.batch_size))
        return torch.cat(
            [self.probabilities(torch.stack([item.tensor() for item in chunk])) for chunk in chunks]
        ).numpy()

    def _judge(self, crops: Sequence[Preprocessed], shapes: np.ndarray) -> np.ndarray:
        """log P(one whole digit) of each candidate of a number (`digitrec.inference.segments`)."""
        if self._segments is None:
            self._segments = load_segment_net()
        return whole_digit_log_prob(self._segments, crops, shapes)

    def visualise(self, image: ImageInput, output_path: str | os.PathLike) -> Result:
        """Write a picture in the format the file name says (.png, .jpg, .pdf, .svg): the input as
        given, the 28×28 image the network saw, the ten probabilities."""
        output = Path(output_path)
        if output.suffix.lower() not in PICTURE_SUFFIXES:
            raise ConfigError(
                f"{output}: cannot tell the picture format from {output.suffix or 'no extension'!r}; "
                f"name the file with one of {', '.join(PICTURE_SUFFIXES)}."
            )
        given = read_image(image)
        item = self._prepare_array(given, describe(image))
        answer = self.answer([item])[0]
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            digit_figure(given, item.pixels, answer).savefig(output, dpi=100)  # the format comes from the suffix
        except OSError as e:
            raise ConfigError(f"{output}: cannot write the picture ({e.strerror or e}).") from None
        return answer

    def prepare(self, image: ImageInput) -> Preprocessed:
        """What the network will see for this image (MNIST-style preprocessing unless turned off)."""
        return self._prepare_array(read_image(image), describe(image))

    def _prepare_array(self, given: np.ndarray, name: str) -> Preprocessed:
        gray = to_grayscale(given)
        return mnist_style(gray) if self.preprocess else as_is(gray, name)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities (float64, on the CPU) for a normalised (N, 1, 28, 28) batch."""
        logits = self.net(batch.to(self.device, torch.float32))
        return torch.softmax(logits.double() / self.temperature, dim=1).cpu()

    def answer(self, items: Sequence[Preprocessed]) -> list[Result]:
        """Answers for images already prepared (see `prepare`), in one batch through the network."""
        inked = [item for item in items if item.has_ink]
        probs = iter(self.probabilities(torch.stack([item.tensor() for item in inked])) if inked else [])
        return [self._result(next(probs)) if item.has_ink else _blank(item.reason) for item in items]

    def _result(self, probs: torch.Tensor) -> Result:
        confidence, digit = (float(v) for v in probs.max(0))
        is_digit = confidence >= self.threshold
        reason = None if is_digit else f"low confidence: {confidence:.2f} < threshold {self.threshold:.2f}"
        return {
            "digit": int(digit),
            "confidence": confidence,
            "probabilities": probs.tolist(),
            "is_digit": is_digit,
            "reason": reason,
            "error": None,
        }


def _check_threshold(threshold: float) -> float:
    return float(check_range("threshold", threshold, 0, 1))


def _blank(reason: str | None) -> Result:
    """No ink, so no probabilities: the network is not asked (a uniform guess would be invented)."""
    return {
        "digit": None,
        "confidence": None,
        "probabilities": None,
        "is_digit": False,
        "reason": reason,
        "error": None,
    }


def failure(message: str) -> Result:
    """The answer for an input that could not be used: `error` says why."""
    return {
        "digit": None,
        "confidence": None,
        "probabilities": None,
        "is_digit": False,
        "reason": None,
        "error": message,
    }
