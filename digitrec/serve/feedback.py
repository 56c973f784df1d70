"""`POST /feedback` and `GET /feedback/stats`: users give the right digit for an image; a `FeedbackStore` keeps it.

`POST /feedback` takes the form `/predict` takes plus `label` (the digit the image shows, 0-9) and,
optionally, `predicted` (the digit the page showed) and `strokes` (the pen's points as JSON, at most
64 KB). The server answers the image again itself, so that the store keeps the 28×28 the network saw,
the served model's digit and probabilities and its identity (SHA-256 of its weight files).

Answers: 201 `{"id": 12, "duplicate": false}` for a new item; 200 `{"id": 12, "duplicate": true}`
for the same image bytes with the same label again (nothing is stored twice); the errors of
`/predict`, and 400 for a label that is not one digit or an image with no digit in it; 503 while
the store cannot be written (read-only, full, unreachable), when `/predict` still answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, FastAPI, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from digitrec.errors import DigitrecError
from digitrec.feedback.database import CONNECTIONS
from digitrec.feedback.store import FeedbackStore, Item
from digitrec.inference.images import decode_image
from digitrec.inference.predictor import DigitPredictor

log = logging.getLogger("digitrec.serve")

MAX_STROKES_BYTES = 64 * 1024
OFF = "Feedback is off on this server (digitrec-serve --no-feedback)."


class Stored(BaseModel):
    id: int = Field(description="the item's id in the store (digitrec-feedback delete --id takes it)", examples=[12])
    duplicate: bool = Field(description="true: this image with this label was stored before, under this id")


class ModelStats(BaseModel):
    sha256: str = Field(description="SHA-256 of the model's weight files")
    name: str = Field(examples=["cnn"])
    items: int = Field(description="the items it answered")
    accuracy: float = Field(description="the share of them whose label is the digit it answered")


class FeedbackStats(BaseModel):
    items: int
    labels: dict[str, int] = Field(description="items per label, '0' to '9'")
    confirmed: int = Field(description="items whose label is the model's digit")
    corrected: int = Field(description="items whose label is another digit")
    first: str | None = Field(description="when the oldest item was stored (UTC)")
    last: str | None = Field(description="when the newest item was stored (UTC)")
    models: list[ModelStats] = Field(description="each model that answered, oldest first")
    served_model: ModelStats | None = Field(description="the model answering now, if it answered any item")


class FeedbackError(BaseModel):
    error: str = Field(examples=["'label' must be one digit, 0 to 9, got '12'."])


def weights_sha256(checkpoints: Sequence[Path]) -> str:
    """SHA-256 of the checkpoint file; for an ensemble, of its members' digests in order."""
    digests = []
    for path in checkpoints:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digests.append(digest.hexdigest())
    return digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()


def feedback_router(predictor: DigitPredictor, store: FeedbackStore) -> APIRouter:
    """The feedback endpoints, storing into `store` (opened when the app starts, closed when it stops)."""
    model = {
        "sha256": weights_sha256(predictor.checkpoints),
        "name": predictor.model_name + (" with TTA" if predictor.tta else ""),
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.feedback_db = CapacityLimiter(CONNECTIONS)
        try:
            await to_thread.run_sync(store.open)
        except DigitrecError as e:  # /predict serves anyway; feedback answers 503 until the store works
            log.warning("Feedback cannot be stored yet: %s", e)
        yield
        store.close()

    router = APIRouter(lifespan=lifespan, tags=["feedback"])
    responses = {
        code: {"model": FeedbackError, "description": description}
        for code, description in [
            (400, "not a usable image, or a label that is not one digit"),
            (413, "body over the limit, or strokes over 64 KB"),
            (415, "not multipart/form-data"),
            (422, "no `file` or `label` field"),
            (503, "the store cannot be written now (read-only, full, unreachable)"),
        ]
    }

    @router.post("/feedback", status_code=201, response_model=Stored, responses=responses)
    async def feedback(
        request: Request,
        response: Response,
        file: Annotated[UploadFile, File(description="the image, as sent to /predict")],
        label: Annotated[str | None, Form(description="the digit the image shows, 0-9")] = None,
        predicted: Annotated[str | None, Form(description="the digit the page showed, 0-9")] = None,
        strokes: Annotated[str | None, Form(description="the pen's points as JSON, ≤ 64 KB")] = None,
    ):
        """Store an image with its right digit. 201 for a new item; 200 with `duplicate: true` and the
        stored item's id for the same image bytes with the same label again."""
        if label is None:  # absent, or empty (FastAPI reads an empty field as absent)
            label = (await request.form()).get("label")
            if not isinstance(label, str):
                raise HTTPException(422, "The form has no 'label' field: the digit the image shows, 0 to 9.")
        digit, shown = _digit(label, "label"), _digit(predicted, "predicted") if predicted else None
        if strokes is not None:
            _check_strokes(strokes)
        item = await to_thread.run_sync(
            _item, predictor, file, digit, shown, strokes, model, limiter=request.app.state.workers
        )
        try:
            saved = await to_thread.run_sync(store.add, item, limiter=request.app.state.feedback_db)
        except DigitrecError as e:
            return _unavailable(e)
        if saved.duplicate:
            response.status_code = 200
        return {"id": saved.id, "duplicate": saved.duplicate}

    @router.get("/feedback/stats", response_model=FeedbackStats, responses={503: responses[503]})
    async def stats(request: Request):
        """Counts per label, confirmed and corrected, and each model's accuracy on the items it answered."""
        try:
            stats = await to_thread.run_sync(store.stats, limiter=request.app.state.feedback_db)
        except DigitrecError as e:
            return _unavailable(e)
        served = [m for m in stats["models"] if m["sha256"] == model["sha256"] and m["name"] == model["name"]]
        return {**stats, "served_model": served[0] if served else None}

    return router


def feedback_off_router() -> APIRouter:
    """404 with a reason, where the feedback endpoints would be."""
    router = APIRouter(include_in_schema=False)

    @router.api_route("/feedback", methods=["GET", "POST"])
    @router.api_route("/feedback/stats", methods=["GET"])
    def off() -> None:
        raise HTTPException(404, OFF)

    return router


def _digit(value: str, name: str) -> int:
    if len(value.strip()) != 1 or value.strip() not in "0123456789":
        raise DigitrecError(f"'{name}' must be one digit, 0 to 9, got {value[:20]!r}.")
    return int(value)


def _check_strokes(strokes: str) -> None:
    if len(strokes.encode()) > MAX_STROKES_BYTES:
        raise HTTPException(413, f"The strokes are over {MAX_STROKES_BYTES // 1024} KB; send fewer points.")
    try:
        points = json.loads(strokes)
    except ValueError:
        raise DigitrecError("'strokes' is not JSON; send the pen's points, e.g. [[[x, y], [x, y]], ...].") from None
    if not isinstance(points, list):
        raise DigitrecError("'strokes' must be a JSON list of strokes, each a list of [x, y] points.")


def _item(
    predictor: DigitPredictor,
    upload: UploadFile,
    label: int,
    shown: int | None,
    strokes: str | None,
    model: dict[str, str],
) -> Item:
    """The item to store: the file as sent, what the network saw of it and what it answered."""
    name = f"upload {upload.filename!r}" if upload.filename else "upload"
    data = upload.file.read()
    prepared = predictor.prepare(decode_image(data, name))
    if not prepared.has_ink:
        raise DigitrecError(f"{name}: no digit in it to learn from ({prepared.reason}).")
    answer = predictor.answer([prepared])[0]
    pixels = np.round(prepared.pixels * 255).astype(np.uint8).tobytes()  # as /predict's `seen` shows it
    return Item(
        image=data,
        pixels=pixels,
        label=label,
        predicted=answer["digit"],
        probabilities=answer["probabilities"],
        model_sha256=model["sha256"],
        model_name=model["name"],
        shown=shown,
        strokes=strokes,
    )


def _unavailable(error: DigitrecError) -> JSONResponse:
    log.warning("Feedback not stored: %s", error)
    return JSONResponse({"error": f"Feedback cannot be saved now: {error}"}, status_code=503)
