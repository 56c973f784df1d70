"""MNIST-style preprocessing and safe image reading, on real MNIST digits and images built here."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from digitrec.bench.rerender import rerender
from digitrec.data.mnist import load_split, raw_dir
from digitrec.inference.images import MAX_PIXELS, ImageError, ImageWarning, read_image
from digitrec.inference.preprocess import DIGIT_SIDE, Preprocessed, mnist_style, preprocess, to_grayscale


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> np.ndarray:
    """The first 1000 official MNIST test digits, uint8 (N, 28, 28)."""
    return load_split(raw_dir(mnist_dir), train=False).images[:1000, 0].numpy()


def ink_box(pixels: np.ndarray, level: float = 0.0) -> tuple[int, int]:
    rows, cols = np.nonzero(pixels > level)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    total = pixels.sum()
    return (pixels.sum(1) * np.arange(28)).sum() / total, (pixels.sum(0) * np.arange(28)).sum() / total


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


def drawn_one(size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A tall thin '1' in black ink, off-centre on white paper."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(90, 40), (100, 260)], fill=0, width=12)
    return image


# --- what the preprocessing does ------------------------------------------------------------------


def test_mnist_digits_pass_through_almost_unchanged(digits: np.ndarray) -> None:
    original = digits.astype(np.float32) / 255
    changes = np.array([np.abs(mnist_style(d).pixels - d).max() for d in original])
    assert (changes < 0.01).mean() >= 0.99, np.sort(changes)[-20:]


def test_rerendered_digits_come_back_mnist_shaped(digits: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    correlations = []
    for i, digit in enumerate(digits[:60]):
        image = rerender(digit, rng, transparent=bool(i % 2))
        assert image.shape[0] > 3 * 28 and image.shape[2] == (4 if i % 2 else 3)
        pixels = preprocess(image).pixels
        assert max(ink_box(pixels, 0.05)) in (DIGIT_SIDE - 1, DIGIT_SIDE)
        assert np.allclose(centre_of_mass(pixels), 14.0, atol=0.6)
        correlations.append(np.corrcoef(pixels.ravel(), digit.ravel())[0, 1])
    assert np.median(correlations) > 0.85, sorted(correlations)[:10]


def test_drawn_digit_is_cropped_scaled_and_centred() -> None:
    result = preprocess(drawn_one())
    assert result.has_ink and result.reason is None
    height, width = ink_box(result.pixels, 0.05)
    assert height == DIGIT_SIDE and 1 <= width <= 4  # aspect ratio kept: a thin stroke stays thin
    assert np.allclose(centre_of_mass(result.pixels), 14.0, atol=0.6)
    assert result.pixels.max() == pytest.approx(1.0) and result.pixels.min() == 0.0
    tensor = result.tensor()
    assert tensor.shape == (1, 28, 28) and tensor.dtype == torch.float32
    assert tensor.min() == pytest.approx((0 - 0.1307) / 0.3081, abs=1e-5)


def drawn_zero(size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A '0' in black ink, off-centre on white paper."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).ellipse([(60, 30), (200, 250)], outline=0, width=25)
    return image


def test_noise_and_a_faint_smudge_do_not_move_the_crop() -> None:
    clean = np.asarray(drawn_zero(), np.float32) / 255
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0, 0.05, clean.shape)
    noisy[250:290, 250:290] -= 0.06  # a faint smudge far from the digit
    noisy = np.clip(noisy, 0, 1)
    a, b = preprocess(clean).pixels, preprocess(noisy).pixels
    (height_a, width_a), (height_b, width_b) = ink_box(a, 0.2), ink_box(b, 0.2)
    assert height_a == height_b == DIGIT_SIDE and abs(width_a - width_b) <= 1
    assert np.allclose(centre_of_mass(b), 14.0, atol=0.6)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_every_representation_of_a_digit_gives_the_same_input(digits: np.ndarray, tmp_path: Path) -> None:
    digit = digits[0]
    white_on_black = digit.astype(np.float32) / 255
    ink = 255 - digit  # black on white, as users draw
    zeros = np.zeros_like(digit)
    variants = {
        "float [0, 1]": white_on_black,
        "float [0, 255]": digit.astype(np.float64),
        "int64": digit.astype(np.int64),
        "H×W×1": digit[..., None],
        "black on white": ink,
        "RGB": np.stack([ink] * 3, axis=-1),
        "RGBA black ink on transparent": np.stack([zeros, zeros, zeros, digit], axis=-1),
        "RGBA white ink on transparent": np.stack([digit * 0 + 255] * 3 + [digit], axis=-1),
        "gray + alpha": np.stack([zeros, digit], axis=-1),
        "torch C×H×W": torch.from_numpy(digit)[None],
        "torch 1×C×H×W float": torch.from_numpy(white_on_black)[None, None],
        "torch bfloat16": torch.from_numpy(white_on_black).bfloat16(),
        "PIL L": Image.fromarray(digit),
        "PIL RGB": Image.fromarray(np.stack([ink] * 3, axis=-1)),
    }
    expected = preprocess(digit).pixels
    for name, variant in variants.items():
        assert np.abs(preprocess(variant).pixels - expected).max() < 0.02, name
    path = tmp_path / "digit.png"
    Image.fromarray(ink).save(path)
    assert np.abs(preprocess(path).pixels - expected).max() < 0.02
    assert np.abs(preprocess(str(path)).pixels - expected).max() < 0.02


def test_image_modes_are_read_as_their_pixels(digits: np.ndarray, tmp_path: Path) -> None:
    digit = digits[1]
    expected = preprocess(digit).pixels
    sixteen = tmp_path / "16bit.png"
    Image.fromarray(digit.astype(np.uint16) * 257).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    palette = Image.new("P", (28, 28))
    palette.putpalette([v for g in range(256) for v in (g, g, g)])
    palette.putdata(digit.ravel().tolist())
    cmyk = Image.merge("CMYK", [Image.new("L", (28, 28), 0)] * 3 + [Image.fromarray(digit)])  # ink in K
    transparent_palette = palette.copy()
    transparent_palette.info["transparency"] = 0  # palette entry 0 (the background) is transparent
    for name, image in {
        "16-bit": sixteen,
        "palette": palette,
        "CMYK": cmyk,
        "palette + transparency": transparent_palette,
    }.items():
        assert np.abs(preprocess(image).pixels - expected).max() < 0.02, name


def test_animated_gif_uses_its_first_frame_and_says_so(digits: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    first, second = (Image.fromarray(d) for d in digits[2:4])
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    with pytest.warns(ImageWarning, match=r"anim\.gif.*2 frames.*first frame"):
        result = preprocess(path)
    assert np.abs(result.pixels - preprocess(digits[2]).pixels).max() < 0.02
    assert np.abs(result.pixels - preprocess(digits[3]).pixels).max() > 0.5


@pytest.mark.parametrize(
    "image",
    [
        np.full((60, 80), 255, np.uint8),  # white paper
        np.zeros((60, 80), np.uint8),  # black
        np.clip(np.random.default_rng(0).normal(200, 8, (300, 300)), 0, 255).astype(np.uint8),  # noisy gray paper
        np.zeros((40, 40, 4), np.uint8),  # fully transparent
        np.full((40, 40, 3), 128, np.uint8),  # flat colour
    ],
    ids=["white", "black", "noisy-paper", "transparent", "flat-gray"],
)
def test_blank_images_have_no_ink(image: np.ndarray) -> None:
    result = preprocess(image)
    assert not result.has_ink and "blank" in result.reason
    assert result.pixels.shape == (28, 28) and not result.pixels.any()


def test_preprocessing_off_takes_28x28_as_is(digits: np.ndarray) -> None:
    result = preprocess(digits[4], enabled=False)
    assert isinstance(result, Preprocessed) and result.has_ink
    assert np.array_equal(result.pixels, digits[4] / np.float32(255))
    assert not preprocess(np.zeros((28, 28)), enabled=False).has_ink
    with pytest.raises(ImageError, match=r"28×28.*got 40×30"):
        preprocess(np.zeros((30, 40)), enabled=False)


def test_grayscale_composites_transparency_onto_a_contrasting_background() -> None:
    black_ink = np.zeros((10, 10, 4), np.float32)
    black_ink[2:8, 4:6, 3] = 1
    gray = to_grayscale(black_ink)
    assert gray[0, 0] == 1 and gray[4, 4] == 0  # black on (white) paper
    white_ink = black_ink.copy()
    white_ink[..., :3] = 1
    gray = to_grayscale(white_ink)
    assert gray[0, 0] == 0 and gray[4, 4] == 1


# --- bad input -------------------------------------------------------------------------------------


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels but holds almost nothing (a decompression bomb)."""
    data = bytearray(png_bytes(Image.new("L", (8, 8))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def noise_image(size: int = 96) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


BAD_FILES = {
    "missing.png": (None, "no such file"),
    "empty.png": (b"", "empty file"),
    "text.png": (b"this is not an image\n", "not an image file"),
    "truncated.png": (png_bytes(noise_image())[:3000], "truncated or corrupt"),
    "truncated.jpg": (png_bytes(noise_image(), format="JPEG")[:2000], "truncated or corrupt"),
    "tiny.png": (png_bytes(Image.new("L", (1, 1))), "1×1 pixels is too small"),
    "bomb.png": (crafted_png(8000, 6000), "decompression bombs"),
    "huge-bomb.png": (crafted_png(50_000, 50_000), "decompression bomb"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_raise_one_clear_error(tmp_path: Path, name: str) -> None:
    content, message = BAD_FILES[name]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_a_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_pixel_limit_applies_to_images_in_memory_too() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(ImageError, match="over the limit"):
        read_image(Image.new("1", (side, side)))  # 1 bit per pixel: cheap to build
    with pytest.raises(ImageError, match="over the limit"):
        read_image(np.broadcast_to(np.zeros(1, np.uint8), (side, side)))  # a view: no memory at all


nan_image = np.zeros((28, 28), np.float32)
nan_image[3, 3] = np.nan
inf_image = np.zeros((28, 28), np.float32)
inf_image[3, 3] = np.inf

BAD_ARRAYS = {
    "nan": (nan_image, "NaN or infinite"),
    "inf": (inf_image, "NaN or infinite"),
    "1-d": (np.zeros(784, np.uint8), "expected an image of shape H×W or H×W×C"),
    "4-d": (np.zeros((1, 28, 28, 1), np.uint8), "expected an image of shape"),
    "5 channels": (np.zeros((28, 28, 5), np.uint8), "C = 1, 2, 3 or 4"),
    "tensor 5-d": (torch.zeros(1, 1, 1, 28, 28), "C×H×W, 1×C×H×W or H×W"),
    "tensor batch": (torch.zeros(2, 1, 28, 28), "C×H×W, 1×C×H×W or H×W"),
    "negative": (np.full((28, 28), -0.5, np.float32), r"must be in \[0, 1\]"),
    "too bright": (np.full((28, 28), 300.0), r"must be in \[0, 1\]"),
    "int over 255": (np.full((28, 28), 256, np.int32), "0-255"),
    "complex": (np.zeros((28, 28), np.complex64), "unsupported pixel type"),
    "strings": (np.full((28, 28), "a"), "unsupported pixel type"),
    "empty": (np.zeros((0, 0), np.uint8), "too small"),
    "1×1": (np.zeros((1, 1), np.uint8), "too small"),
    "list": ([[0, 1], [1, 0]], "not an image"),
}


@pytest.mark.parametrize("name", BAD_ARRAYS)
def test_bad_arrays_raise_one_clear_error(name: str) -> None:
    array, message = BAD_ARRAYS[name]
    with pytest.raises(ImageError, match=message) as error:
        read_image(array)
    assert ("array" in str(error.value)) or ("tensor" in str(error.value)) or ("list" in str(error.value))
