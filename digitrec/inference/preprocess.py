"""MNIST-style preprocessing of users' images (read safely by `digitrec.inference.images.read_image`).

A user's digit (dark ink on white paper, off-centre, large, noisy, transparent, coloured...) is
turned into what the networks were trained on by `preprocess`:

1. grayscale: colour → luminance; transparent pixels are composited onto a background that
   contrasts with the opaque ones (so black-on-transparent and white-on-transparent both work);
2. images larger than `WORK_SIDE` are reduced by area averaging (this also averages out noise);
3. polarity: the background level is the median of the border pixels; if the ink deviates from it
   towards dark, the image is inverted, so the digit is light on dark as in MNIST;
4. the background level is subtracted, and pixels less than `NOISE_SIGMAS` noise standard
   deviations above it are set to 0 (the noise is estimated from differences between neighbours);
   an image with no ink standing out (`MIN_CONTRAST`) is blank;
5. crop to the ink's bounding box: found first on a box-blurred copy, with a threshold of
   `CROP_FRACTION` of the peak ink and `NOISE_SIGMAS` noise deviations, so that noise, specks and
   faint smudges do not stretch it; then fitted to the ink pixels, taking in the faint antialiased
   edges of the strokes;
6. resize the longer side to 20 px keeping the aspect ratio (antialiased), and stretch the
   contrast so the brightest ink is 1, as in MNIST;
7. paste it into a 28×28 frame with its centre of mass at pixel (14, 14), as in MNIST;
8. normalise with the training mean and standard deviation (`Preprocessed.tensor`).

An MNIST digit passes through unchanged (within 1/255, from the contrast stretch). With preprocessing
off (`preprocess(..., enabled=False)`) the image must already be 28×28, light digit on dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from digitrec.data.mnist import IMAGE_SIZE, normalize
from digitrec.inference.images import ImageError, ImageInput, describe, read_image

WORK_SIDE = 512  # larger images are reduced to this longer side before anything else
DIGIT_SIDE = 20  # MNIST: the digit's bounding box has a longer side of 20 px ...
CENTRE = 14.0  # ... and its centre of mass sits at pixel (14, 14) of the 28×28 frame
CROP_FRACTION = 0.1  # ink fainter than this fraction of the peak does not extend the crop
GROW = 2  # the crop takes in faint ink up to this many pixels outside the box found at the threshold
MIN_CONTRAST = 0.15  # peak ink contrast (0-1) below this: blank image
NOISE_SIGMAS = 5.0  # ink must stand this many noise standard deviations above the background
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's convert("L")


@dataclass(frozen=True)
class Preprocessed:
    pixels: np.ndarray  # (28, 28) float32 in [0, 1], light digit on dark: what the network sees
    has_ink: bool
    reason: str | None = None  # why there is no digit to classify, when `has_ink` is False

    def tensor(self) -> torch.Tensor:
        """The network's input for this image: normalised, shape (1, 28, 28)."""
        return normalize(torch.from_numpy(self.pixels)).unsqueeze(0)


def preprocess(source: ImageInput, enabled: bool = True) -> Preprocessed:
    """Read an image (`digitrec.inference.images.read_image`) and make it MNIST-like (or, with `enabled=False`,
    check it already is)."""
    gray = to_grayscale(read_image(source))
    return mnist_style(gray) if enabled else as_is(gray, describe(source))


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """H×W luminance in [0, 1]; transparent pixels composited onto a contrasting background."""
    if image.ndim == 2:
        return image
    has_alpha = image.shape[-1] in (2, 4)
    colour = image[..., :-1] if has_alpha else image
    gray = colour @ _LUMA if colour.shape[-1] == 3 else colour[..., 0]
    if not has_alpha:
        return gray.astype(np.float32)
    alpha = image[..., -1]
    opacity = float(alpha.sum())
    if opacity == 0:  # fully transparent: nothing to see
        return np.zeros_like(gray, dtype=np.float32)
    ink_is_light = float((gray * alpha).sum()) / opacity > 0.5
    background = 0.0 if ink_is_light else 1.0
    return (gray * alpha + background * (1 - alpha)).astype(np.float32)


def mnist_style(gray: np.ndarray) -> Preprocessed:
    """Steps 2-7 of the module docstring on an H×W grayscale image in [0, 1]."""
    gray = _reduce(gray, WORK_SIDE)
    blur = max(3, max(gray.shape) // 40)
    ink, ink_blurred, noise = ink_contrast(gray, blur)
    threshold = NOISE_SIGMAS * noise / blur  # averaging blur×blur pixels divides the noise by blur
    peak = float(ink_blurred.max())
    if peak < max(MIN_CONTRAST, threshold):
        return _blank(f"blank image: no ink stands out from the background (contrast {max(peak, 0):.2f})")
    ink = np.where(ink > NOISE_SIGMAS * noise, np.clip(ink, 0, 1), 0)
    return centred(ink[_digit_box(ink, ink_blurred > max(CROP_FRACTION * peak, threshold))])


def centred(digit: np.ndarray) -> Preprocessed:
    """Steps 6-7 on clean ink (light on 0) cut to the digit's box: the longer side resized to `DIGIT_SIDE`,
    brightest at 1, placed by its centre of mass."""
    digit = _resize_longer_side(digit, DIGIT_SIDE)
    brightest = float(digit.max())
    if brightest <= 0:
        return _blank("blank image: no ink left after removing the noise")
    return Preprocessed(_place_by_centre_of_mass(digit / brightest), has_ink=True)


def ink_contrast(gray: np.ndarray, blur: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Steps 3-4 up to the thresholds: the ink as contrast over the background (inverted first if the ink
    is dark on light), the same of a `blur`×`blur` box-blurred copy, and the pixel noise's standard deviation."""
    ink, ink_blurred = _ink_up(gray, _box_blur(gray, blur))
    return ink, ink_blurred, _noise_sigma(gray)


def as_is(gray: np.ndarray, name: str) -> Preprocessed:
    """Preprocessing off: the image must already be 28×28, light digit on dark."""
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise ImageError(
            f"{name}: with preprocessing off the image must be {IMAGE_SIZE}×{IMAGE_SIZE} "
            f"(got {gray.shape[1]}×{gray.shape[0]}); turn preprocessing on for other images."
        )
    if float(gray.max()) < MIN_CONTRAST:
        return _blank("blank image: no pixel brighter than the ink threshold")
    return Preprocessed(gray.astype(np.float32), has_ink=True)


def _blank(reason: str) -> Preprocessed:
    return Preprocessed(np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32), has_ink=False, reason=reason)


def _reduce(gray: np.ndarray, longest: int) -> np.ndarray:
    height, width = gray.shape
    scale = longest / max(height, width)
    if scale >= 1:
        return gray
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(gray.astype(np.float32)).resize(size, Image.Resampling.BOX))


def _box_blur(image: np.ndarray, k: int) -> np.ndarray:
    """Mean over a k×k window (edges repeated), via an integral image."""
    if k <= 1:
        return image
    before, after = k // 2, k - 1 - k // 2
    padded = np.pad(image.astype(np.float64), ((before + 1, after), (before + 1, after)), mode="edge")
    padded[0, :] = 0
    padded[:, 0] = 0
    total = padded.cumsum(0).cumsum(1)
    window = total[k:, k:] - total[:-k, k:] - total[k:, :-k] + total[:-k, :-k]
    return (window / (k * k)).astype(np.float32)


def _ink_up(gray: np.ndarray, blurred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image and its blurred copy as ink contrast over the background (border median), inverted
    first if the ink is darker than the background."""
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    background = float(np.median(border))
    if background - blurred.min() > blurred.max() - background:  # dark ink on a light background
        gray, blurred, background = 1 - gray, 1 - blurred, 1 - background
    return gray - background, blurred - background


def _digit_box(ink: np.ndarray, coarse_mask: np.ndarray) -> tuple[slice, slice]:
    """The box of `coarse_mask` (found on a strong blur), tightened on a 3×3 blur of the ink
    (one pixel of spread, noise still divided by 3), then fitted to the ink pixels around it."""
    coarse = bounding_box(coarse_mask)
    fine = _box_blur(ink[coarse], 3)
    if not fine.any():  # all of it was under the noise floor
        return coarse
    box = _offset(bounding_box(fine > CROP_FRACTION * fine.max()), coarse)
    return _refine(box, ink > 0, GROW)


def bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The smallest box holding every True pixel of a mask that has one."""
    rows, cols = np.nonzero(mask)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def _offset(box: tuple[slice, slice], within: tuple[slice, slice]) -> tuple[slice, slice]:
    """A box found in the window `within`, in the coordinates of the whole image."""
    return tuple(slice(w.start + b.start, w.start + b.stop) for b, w in zip(box, within))


def _refine(box: tuple[slice, slice], mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of `mask` within `margin` pixels around `box` (`box` itself if there is none)."""
    rows, cols = box
    top, left = max(rows.start - margin, 0), max(cols.start - margin, 0)
    window = (slice(top, rows.stop + margin), slice(left, cols.stop + margin))
    return _offset(bounding_box(mask[window]), window) if mask[window].any() else box


def _noise_sigma(image: np.ndarray) -> float:
    """Robust estimate of the pixel noise's standard deviation: median absolute difference between
    horizontal neighbours (0 for clean images; strokes' edges are a minority; unlike the spread of
    pixel values it still sees, if underestimated, noise on paper clipped at white)."""
    differences = np.abs(np.diff(image, axis=1))
    return 1.4826 * float(np.median(differences)) / np.sqrt(2)


def _resize_longer_side(digit: np.ndarray, side: int) -> np.ndarray:
    height, width = digit.shape
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return digit
    resized = Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized), 0, 1)


def _place_by_centre_of_mass(digit: np.ndarray) -> np.ndarray:
    height, width = digit.shape
    total = float(digit.sum())
    centre_y = float((digit.sum(1) * np.arange(height)).sum()) / total
    centre_x = float((digit.sum(0) * np.arange(width)).sum()) / total
    top = int(np.clip(np.floor(CENTRE - centre_y + 0.5), 0, IMAGE_SIZE - height))
    left = int(np.clip(np.floor(CENTRE - centre_x + 0.5), 0, IMAGE_SIZE - width))
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    frame[top : top + height, left : left + width] = digit
    return frame
