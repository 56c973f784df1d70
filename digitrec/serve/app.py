"""The HTTP app: `GET /` (the page), `POST /predict`, `POST /predict/batch`, `POST /read`, `GET /health`,
and `POST /feedback` with `GET /feedback/stats` when it has a feedback store (`feedback.py`).

Every error is JSON `{"error": "..."}` with a 4xx status: 400 for an unusable image, 413 for a
body over the limit (refused from its Content-Length, or as soon as more than the limit has
arrived: `BodyLimit`), 415 for a body that is not multipart/form-data, 422 for a form without a `file`.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digitrec.errors import DigitrecError
from digitrec.feedback.store import FeedbackStore
from digitrec.inference.images import decode_image
from digitrec.inference.predictor import DigitPredictor, failure
from digitrec.inference.pretrained import describe_bundled, is_bundled
from digitrec.models import count_parameters
from digitrec.serve.feedback import feedback_off_router, feedback_router

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_BATCH_FILES = 64
STATIC = Path(__file__).parent / "static"
_PROBABILITIES = [0.001, 0.002, 0.001, 0.003, 0.001, 0.001, 0.0, 0.984, 0.002, 0.005]


class Answer(BaseModel):
    digit: int | None = Field(description="the predicted digit; null for a blank image", examples=[7])
    confidence: float | None = Field(description="probability of that digit (calibrated)", examples=[0.984])
    probabilities: list[float] | None = Field(description="ten probabilities, for 0 to 9", examples=[_PROBABILITIES])
    is_digit: bool = Field(description="false for a blank image or a confidence below the threshold")
    reason: str | None = Field(None, description="why it is not a digit", examples=[None])
    seen: str | None = Field(None, description="the 28×28 image the network saw, as a PNG data URL")


class BatchItem(Answer):
    filename: str | None = Field(None, description="the uploaded file's name", examples=["seven.png"])
    error: str | None = Field(None, description="why this file could not be answered (the others still are)")


class DigitRead(BaseModel):
    digit: int = Field(examples=[2])
    confidence: float = Field(description="probability of that digit (calibrated)", examples=[0.991])
    probabilities: list[float] = Field(description="ten probabilities, for 0 to 9")
    box: list[int] = Field(
        description="x0, y0, x1, y1 in the image's pixels (x1, y1 exclusive)", examples=[[12, 8, 70, 96]]
    )
    seen: str = Field(description="the 28×28 image the network saw for this digit, as a PNG data URL")


class Reading(BaseModel):
    text: str = Field(description="the digits, left to right; empty when there are none", examples=["2047"])
    digits: list[DigitRead] = Field(description="each digit, in reading order")
    confidence: float | None = Field(
        description="of the whole reading: the product of the digits' confidences", examples=[0.972]
    )
    is_number: bool = Field(description="false when there is no digit or one is below the threshold")
    reason: str | None = Field(None, description="why it is not a number", examples=[None])


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    model: str = Field(examples=["cnn"])
    parameters: int = Field(examples=[871530])
    checkpoint: str = Field(description="the checkpoint, or an ensemble's first member")
    checkpoints: list[str] = Field(description="every checkpoint answering (one, or an ensemble's members)")
    tta: bool = Field(description="test-time augmentation: probabilities averaged over shifts and rotations")
    temperature: float = Field(description="softmax temperature from evaluate.py's calibration (1.0: none)")
    temperature_source: str
    feedback: bool = Field(description="POST /feedback stores users' labelled digits (false: it answers 404)")
    bundled: str | None = Field(None, description="the bundled model and its card, when it is the one answering")


class ErrorMessage(BaseModel):
    error: str = Field(examples=["upload 'x.png': not an image file Pillow can read (PNG, JPEG, ...)."])


_ERRORS = {
    400: {"model": ErrorMessage, "description": "not a usable image"},
    413: {"model": ErrorMessage, "description": f"body over {MAX_BODY_BYTES // 2**20} MB"},
    415: {"model": ErrorMessage, "description": "not multipart/form-data"},
    422: {"model": ErrorMessage, "description": "no `file` field"},
}


def create_app(
    predictor: DigitPredictor,
    max_body_bytes: int = MAX_BODY_BYTES,
    workers: int | None = None,
    feedback: FeedbackStore | None = None,
) -> FastAPI:
    """The app serving one loaded predictor (shared by all requests; it only reads its network).

    Predictions run in at most `workers` threads at once (default: one per CPU core); more requests
    wait their turn. On a CPU more threads only contend for the cores and grow the memory. Users'
    labelled digits go to `feedback`; without one, the feedback endpoints answer 404.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.workers = CapacityLimiter(workers or os.cpu_count() or 1)
        yield

    async def run(function: Callable[..., Any], *args: Any) -> Any:
        return await to_thread.run_sync(function, *args, limiter=app.state.workers)

    app = FastAPI(
        title="digitrec", summary="Handwritten-digit recognition: draw a digit, or POST an image.", lifespan=lifespan
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DigitrecError, _unusable_input)
    app.include_router(feedback_router(predictor, feedback) if feedback is not None else feedback_off_router())

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.post("/predict", response_model=Answer, responses=_ERRORS)
    async def predict(file: UploadFile = File(description="one image: PNG, JPEG, BMP, GIF, TIFF, WebP...")) -> dict:
        """Recognise the digit in one image (dark on light or light on dark, any size)."""
        return await run(_answer, predictor, file)

    @app.post("/predict/batch", response_model=list[BatchItem], responses=_ERRORS)
    async def predict_batch(file: list[UploadFile] = File(description=f"up to {MAX_BATCH_FILES} images")) -> list[dict]:
        """Several images in one request (repeat the `file` field); answers in order. A file that is not
        a usable image gets its own `error`, and the others are still answered."""
        if len(file) > MAX_BATCH_FILES:
            raise DigitrecError(f"{len(file)} files in one batch; send at most {MAX_BATCH_FILES}.")
        return await run(_answer_each, predictor, file)

    @app.post("/read", response_model=Reading, responses=_ERRORS)
    async def read(file: Annotated[UploadFile, File(description="one image of a number: digits in a row")]) -> dict:
        """Read a number written in one image: its digits left to right, each with its box."""
        return await run(_read, predictor, file)

    @app.get("/health", response_model=Health)
    def health() -> dict:
        """The loaded model and its calibration."""
        return {
            "status": "ok",
            "model": predictor.model_name,
            "parameters": count_parameters(predictor.net),
            "checkpoint": str(predictor.checkpoint),
            "checkpoints": [str(c) for c in predictor.checkpoints],
            "tta": predictor.tta,
            "temperature": predictor.temperature,
            "temperature_source": predictor.temperature_source,
            "feedback": feedback is not None,
            "bundled": describe_bundled(predictor.checkpoint) if is_bundled(predictor.checkpoint) else None,
        }

    return app


class BodyLimit:
    """413 for a request body over `max_bytes`: at once when its Content-Length says so (nothing is
    read), else as soon as more than that has arrived (the rest is never read)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"error": self.message}, status_code=413)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # raised inside the app: its HTTPException handler answers
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)

    @property
    def message(self) -> str:
        return f"The request body is over the limit of {self.max_bytes / 2**20:g} MB; send a smaller image."


def _answer(predictor: DigitPredictor, upload: UploadFile) -> dict:
    name = f"upload {upload.filename!r}" if upload.filename else "upload"
    item = predictor.prepare(decode_image(upload.file, name))
    answer = predictor.answer([item])[0]
    answer.pop("error")
    return {**answer, "seen": png_data_url(item.pixels)}


def _read(predictor: DigitPredictor, upload: UploadFile) -> dict:
    name = f"upload {upload.filename!r}" if upload.filename else "upload"
    reading = predictor.read(decode_image(upload.file, name), seen=True)
    reading.pop("error")
    for digit in reading["digits"]:
        digit["seen"] = png_data_url(digit["seen"])
    return reading


def _answer_each(predictor: DigitPredictor, uploads: list[UploadFile]) -> list[dict]:
    answers = []
    for upload in uploads:
        try:
            answers.append({"filename": upload.filename, **_answer(predictor, upload)})
        except DigitrecError as e:
            answers.append({"filename": upload.filename, **failure(str(e))})
    return answers


def png_data_url(pixels: np.ndarray) -> str:
    """A float image in [0, 1] as a grayscale PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return JSONResponse(
            {
                "error": f"Expected multipart/form-data with the image in a field named 'file', got "
                f"{content_type or 'no content type'}."
            },
            status_code=415,
        )
    return JSONResponse({"error": "The form has no image in a field named 'file'."}, status_code=422)


async def _unusable_input(request: Request, error: DigitrecError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=400)
