"""The HTTP app through FastAPI's TestClient: every endpoint and every error status."""

from __future__ import annotations

import base64
import io
import json
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digitrec.data.mnist import load_split, raw_dir
from digitrec.inference.predictor import DigitPredictor
from digitrec.serve.app import MAX_BATCH_FILES, create_app


@pytest.fixture(scope="module")
def predictor(trained_run: Path) -> DigitPredictor:
    return DigitPredictor(trained_run / "checkpoints" / "mlp-best.ckpt", device="cpu")


@pytest.fixture(scope="module")
def client(predictor: DigitPredictor):
    with TestClient(create_app(predictor, max_body_bytes=1_000_000)) as client:
        yield client


@pytest.fixture(scope="module")
def digits(mnist_dir: Path) -> list[tuple[bytes, int]]:
    """Eight MNIST test digits as users send them: PNG files, dark ink on white, 4× larger."""
    split = load_split(raw_dir(mnist_dir), train=False)
    files = []
    for image, label in zip(split.images[:8, 0].numpy(), split.labels[:8].tolist()):
        buffer = io.BytesIO()
        Image.fromarray(255 - image).resize((112, 112), Image.Resampling.BILINEAR).save(buffer, format="PNG")
        files.append((buffer.getvalue(), label))
    return files


def png_bytes(array: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_predict_answers_like_the_predictor_plus_what_it_saw(client, predictor, digits) -> None:
    data, label = digits[0]
    response = client.post("/predict", files={"file": ("seven.png", data, "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = predictor.predict(data)
    assert answer["digit"] == expected["digit"] == label and answer["is_digit"] is True
    assert answer["confidence"] == pytest.approx(expected["confidence"])
    assert answer["probabilities"] == pytest.approx(expected["probabilities"]) and len(answer["probabilities"]) == 10
    assert answer["seen"].startswith("data:image/png;base64,")
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["seen"].split(",", 1)[1]))))
    assert seen.shape == (28, 28) and seen.dtype == np.uint8
    assert np.abs(seen / 255 - predictor.prepare(data).pixels).max() <= 1 / 255  # the pixels the network saw


def test_many_formats_are_read(client, digits) -> None:
    data, label = digits[1]
    image = Image.open(io.BytesIO(data))
    for fmt in ("JPEG", "BMP", "GIF", "TIFF", "WEBP"):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        response = client.post("/predict", files={"file": (f"d.{fmt.lower()}", buffer.getvalue())})
        assert response.status_code == 200 and response.json()["digit"] == label, (fmt, response.text)


def test_a_blank_image_is_not_a_digit(client) -> None:
    response = client.post("/predict", files={"file": ("blank.png", png_bytes(np.full((64, 64), 255, np.uint8)))})
    answer = response.json()
    assert response.status_code == 200 and answer["is_digit"] is False and answer["digit"] is None
    assert answer["reason"] and answer["seen"].startswith("data:image/png")


def test_batch_answers_in_order_and_a_bad_file_gets_its_own_error(client, digits) -> None:
    files = [("file", (f"{i}.png", data, "image/png")) for i, (data, _) in enumerate(digits[:3])]
    files.insert(1, ("file", ("notes.txt", b"not an image at all", "text/plain")))
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["filename"] for a in answers] == ["0.png", "notes.txt", "1.png", "2.png"]
    assert [a["digit"] for a in answers] == [digits[0][1], None, digits[1][1], digits[2][1]]
    assert "notes.txt" in answers[1]["error"] and "not an image" in answers[1]["error"]
    assert all(a["error"] is None for a in answers if a["filename"] != "notes.txt")


def test_batch_size_is_bounded(client) -> None:
    tiny = png_bytes(np.zeros((8, 8), np.uint8))
    response = client.post("/predict/batch", files=[("file", (f"{i}.png", tiny)) for i in range(MAX_BATCH_FILES + 1)])
    assert response.status_code == 400 and f"at most {MAX_BATCH_FILES}" in response.json()["error"]


def test_health_names_the_model_and_its_calibration(client, predictor) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "mlp" and health["parameters"] == 569_226
    assert health["checkpoint"] == str(predictor.checkpoint)
    assert health["temperature"] == predictor.temperature and health["temperature_source"]


def test_the_page_and_its_assets_are_served_by_the_app(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text and client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere: works offline
    for testid in (
        "canvas",
        "clear",
        "undo",
        "prediction",
        "confidence",
        "probabilities",
        "preview",
        "upload",
        "error",
    ):
        assert f'data-testid="{testid}"' in page.text


def test_openapi_docs_list_every_endpoint_with_examples(client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health"} <= set(schema["paths"])
    assert {"400", "413", "415", "422"} <= set(schema["paths"]["/predict"]["post"]["responses"])
    assert schema["components"]["schemas"]["Answer"]["properties"]["digit"]["examples"] == [7]
    assert client.get("/docs").status_code == 200


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header promises width×height pixels: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("notes.txt", b"hello, not an image", "not an image file"),
        ("empty.png", b"", "empty file"),
        ("cut.png", png_bytes(np.zeros((64, 64), np.uint8))[:60], "truncated or corrupt"),
        ("bomb.png", _png_header_only(8_000, 8_000), "over the limit of 40,000,000"),
        ("huge-bomb.png", _png_header_only(20_000, 20_000), "decompression bomb"),  # Pillow's own guard
        ("nan.tiff", png_bytes(np.full((32, 32), np.nan, np.float32), mode="F", fmt="TIFF"), "NaN"),
        ("tiny.png", png_bytes(np.zeros((4, 4), np.uint8)), "too small"),
    ],
)
def test_unusable_images_are_400_with_the_reason(client, name, data, message) -> None:
    response = client.post("/predict", files={"file": (name, data)})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error and name in error
    assert client.get("/health").status_code == 200  # and the server goes on


def test_a_body_over_the_limit_is_413_before_it_is_read(client) -> None:
    """Refused from the Content-Length header: the body is never consumed."""
    read = []

    def body():
        for _ in range(10):  # 2 MB in 10 chunks; the limit is 1 MB
            read.append(1)
            yield b"\0" * 200_000

    headers = {"content-type": "multipart/form-data; boundary=x", "content-length": "2000000"}
    response = client.post("/predict", content=body(), headers=headers)
    assert response.status_code == 413 and "over the limit of" in response.json()["error"]
    assert len(read) < 10


def test_a_streamed_body_over_the_limit_is_413_too(client) -> None:
    """Without a Content-Length, reading stops once the limit is passed."""
    read = []

    def body():
        for _ in range(30):
            read.append(1)
            yield b"\0" * 100_000

    response = client.post("/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "send a smaller image" in response.json()["error"]


def test_a_body_that_is_not_a_form_is_415_and_a_form_without_file_422(client) -> None:
    response = client.post(
        "/predict", content=json.dumps({"image": "..."}), headers={"content-type": "application/json"}
    )
    assert response.status_code == 415 and "multipart/form-data" in response.json()["error"]
    response = client.post("/predict", data={"picture": "x"}, files={"other": ("a.png", b"x")})
    assert response.status_code == 422 and "'file'" in response.json()["error"]


def test_without_a_checkpoint_the_server_answers_with_the_bundled_model_and_health_names_it(tmp_path: Path) -> None:
    from digitrec.bench.load import start_server

    proc, port = start_server(None, threads=1, cwd=tmp_path)  # a folder without outputs/, as after an install
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as response:
            health = json.load(response)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert health["bundled"].startswith("bundled robust_best (") and health["checkpoint"].endswith("robust_best.pt")
    assert health["temperature_source"].startswith("calibrated (")


def test_load_command_prints_every_level_without_errors(trained_run: Path, capsys) -> None:
    from digitrec.bench.load import LEVELS, main

    assert main(["--requests", "100", "--checkpoint", str(trained_run / "checkpoints" / "mlp-best.ckpt")]) == 0
    out = capsys.readouterr().out
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "clients" not in line]
    assert [int(r[0]) for r in rows] == list(LEVELS)
    assert all(int(r[5]) == 0 and float(r[2].replace(",", "")) > 0 for r in rows), out
    assert "Server resident memory:" in out and "In-process DigitPredictor.predict" in out
