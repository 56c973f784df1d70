"""Reading users' images safely: file paths, PIL images, numpy arrays and torch tensors.

Every problem (missing, empty, truncated or non-image files, decompression bombs, images too
small, NaN pixels, wrong shapes or types...) raises an `ImageError` naming the input. Images
that are usable with a caveat (only the first frame of an animation) raise an `ImageWarning`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from digitrec.errors import DigitrecError

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray | torch.Tensor

MAX_PIXELS = 40_000_000  # refuse larger images before decoding them (decompression bombs)
MIN_SIDE = 8  # smaller images cannot hold a recognisable digit
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class ImageError(DigitrecError, ValueError):
    """An image that cannot be read or is not usable as a digit."""


class ImageWarning(UserWarning):
    """The image was used, with a caveat (e.g. only the first frame of an animation)."""


def describe(source: ImageInput) -> str:
    """How an input is named in messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"image file contents ({len(source):,} bytes)"
    if isinstance(source, Image.Image):
        return f"PIL image ({source.mode}, {source.width}×{source.height})"
    if isinstance(source, (np.ndarray, torch.Tensor)):
        kind = "array" if isinstance(source, np.ndarray) else "tensor"
        return f"{kind} of shape {tuple(source.shape)} ({str(source.dtype).removeprefix('torch.')})"
    return f"object of type {type(source).__name__}"


def read_image(source: ImageInput) -> np.ndarray:
    """The image as given, float32 in [0, 1]: H×W, or H×W×C with C = 2 (gray + alpha), 3 (RGB), 4 (RGBA).

    Accepts a file path, the bytes of an image file, a PIL image, a numpy array (H×W or H×W×C;
    uint8, uint16, bool, other integers in 0-255, or floats in [0, 1] or [0, 255]) or a torch
    tensor (C×H×W, 1×C×H×W or H×W). Raises `ImageError`, naming the input, for anything unusable.
    """
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
    if isinstance(source, bytes):
        return decode_image(source, name)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, name)
        try:
            source.load()  # a lazily opened image decodes now
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{name}: truncated or corrupt image ({e}).") from None
        return _pil_pixels(_first_frame(source, name), name)
    if isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        tensor = tensor.float() if tensor.is_floating_point() else tensor  # numpy has no bfloat16
        array = _channels_last(tensor.numpy(), name, torch_layout=True)
    elif isinstance(source, np.ndarray):
        array = _channels_last(source, name, torch_layout=False)
    else:
        raise ImageError(f"{name}: not an image; give a file path, a PIL image, a numpy array or a torch tensor.")
    _check_size(array.shape[1], array.shape[0], name)  # before converting (and copying) the pixels
    return _array_pixels(array, name)


def _read_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise ImageError(f"{path}: no such file.")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory; give the image files in it.")
    try:
        with path.open("rb") as f:
            return decode_image(f, str(path))
    except PermissionError as e:
        raise ImageError(f"{path}: cannot read it ({e.strerror}).") from None


def decode_image(data: bytes | BinaryIO, name: str) -> np.ndarray:
    """An image file's contents (bytes or an open binary file), decoded like `read_image` does a path.

    The size is checked from the header before any pixel is decoded (decompression bombs).
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    if stream.seek(0, io.SEEK_END) == 0:
        raise ImageError(f"{name}: empty file (0 bytes).")
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                _check_size(image.width, image.height, name)
                image = _first_frame(image, name)
                image.load()
                return _pil_pixels(image, name)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP...).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({e}).") from None
    except PermissionError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: truncated or corrupt image file ({e}).") from None


def _check_size(width: int, height: int, name: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: {width}×{height} pixels is over the limit of {MAX_PIXELS:,} "
            "(a guard against decompression bombs); downscale or crop it first."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name}: {width}×{height} pixels is too small; a digit needs at least {MIN_SIDE}×{MIN_SIDE}.")


def _first_frame(image: Image.Image, name: str) -> Image.Image:
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        warnings.warn(
            f"{name}: animated or multi-page image with {frames} frames; using the first frame only.",
            ImageWarning,
            stacklevel=2,
        )
        image.seek(0)
    return image


def _pil_pixels(image: Image.Image, name: str) -> np.ndarray:
    try:
        image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        pass  # unreadable EXIF: keep the pixels as stored
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        pixels = np.asarray(image).astype(np.float64)
        if pixels.min() < 0 or pixels.max() > 65535:
            raise ImageError(
                f"{name}: 32-bit integer pixels outside 0-65535 are not supported; save it as 8 or 16 bits."
            )
        return (pixels / 65535).astype(np.float32)
    if mode == "F":
        return _array_pixels(np.asarray(image), name)
    try:
        if mode in _ALPHA_MODES or "transparency" in image.info:
            image = image.convert("RGBA")
        elif mode not in ("L", "RGB"):  # 1-bit, palette, CMYK, YCbCr, LAB, HSV
            image = image.convert("L" if mode == "1" else "RGB")
    except ValueError as e:
        raise ImageError(f"{name}: cannot convert pixel mode {mode} ({e}).") from None
    return np.asarray(image, dtype=np.float32) / 255


def _channels_last(array: np.ndarray, name: str, torch_layout: bool) -> np.ndarray:
    """H×W or H×W×C. Tensors are read as C×H×W (or 1×C×H×W) first, arrays as H×W×C first; the
    other layout is accepted when the first does not fit."""
    if torch_layout and array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        first, last = array.shape[0] in (1, 2, 3, 4), array.shape[-1] in (1, 2, 3, 4)
        if first and (torch_layout or not last):
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] in (1, 2, 3, 4):
            return array[..., 0] if array.shape[-1] == 1 else array
    layout = "C×H×W, 1×C×H×W or H×W" if torch_layout else "H×W or H×W×C"
    raise ImageError(f"{name}: expected an image of shape {layout} with C = 1, 2, 3 or 4 channels.")


def _array_pixels(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImageError(f"{name}: integer pixels must be in 0-255, found {array.min()}..{array.max()}.")
        return array.astype(np.float32) / 255
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"{name}: unsupported pixel type {array.dtype}; use uint8, uint16 or float.")
    pixels = array.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise ImageError(f"{name}: contains NaN or infinite values.")
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise ImageError(f"{name}: float pixels must be in [0, 1] (or [0, 255]), found {low:g}..{high:g}.")
    return pixels / 255 if high > 1 else pixels
