"""The feedback demonstration's parts: the hand it draws, and the form it posts as the page does."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from digitrec.bench.feedback import drawings, main
from digitrec.bench.latency import untrained_checkpoint
from digitrec.bench.load import multipart
from digitrec.feedback.store import FeedbackStore, items
from digitrec.inference.predictor import DigitPredictor
from digitrec.serve.app import create_app


def ink(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L")) < 128


def test_the_hand_is_seeded_alternates_ones_and_sevens_and_differs_by_seed() -> None:
    first, again, other = drawings(6, 0), drawings(6, 0), drawings(6, 1)
    assert [d for _, d in first] == [1, 7, 1, 7, 1, 7]
    assert [png for png, _ in first] == [png for png, _ in again]
    assert all(a != b for (a, _), (b, _) in zip(first, other))
    for png, _ in first:
        image = Image.open(io.BytesIO(png))
        assert image.size == (280, 280) and 0.03 < ink(png).mean() < 0.3  # a pen stroke's worth of ink


def test_a_continental_one_rises_to_an_upright_stem_and_a_crossed_seven_has_a_bar() -> None:
    (one, _), (seven, _) = drawings(2, 3)
    rows = ink(one)
    inked = np.flatnonzero(rows.any(1))
    stem = [np.flatnonzero(rows[y]).mean() for y in inked[len(inked) // 2 :]]
    assert np.ptp(stem) < 0.15 * len(inked)  # the lower half is one near-upright stroke
    top = np.flatnonzero(rows[inked[0] + 30])
    assert top[-1] - top[0] > 3 * (stem[-1] - np.flatnonzero(rows[inked[-1] - 5])[0])  # the flag reaches far left
    rows = ink(seven)
    inked = np.flatnonzero(rows.any(1))
    widths = [rows[y].sum() for y in range(inked[0] + 30, inked[-1] - 30)]  # below the top bar, above the foot
    assert max(widths) > 2 * np.median(widths)  # the bar across the stem


def test_the_form_is_what_the_feedback_endpoint_takes(tmp_path: Path) -> None:
    predictor = DigitPredictor(untrained_checkpoint("mlp", tmp_path / "mlp.ckpt"), device="cpu")
    store = FeedbackStore(tmp_path / "feedback.db")
    ((png, digit),) = drawings(1, 0)
    body, content_type = multipart(png, "drawing.png", label=str(digit), predicted="3")
    with TestClient(create_app(predictor, feedback=store)) as client:
        answer = client.post("/feedback", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 201, answer.text
    with store.engine.connect() as conn:
        (row,) = conn.execute(sa.select(items)).all()
    assert (row.label, row.shown, row.image) == (1, 3, png)  # "predicted" is what the page said it showed


def test_bad_arguments_are_refused_before_any_work(tmp_path: Path, caplog) -> None:
    with pytest.raises(SystemExit):
        main(["--corrections", "5"])
    assert "--corrections must be at least 10" in caplog.text
    (tmp_path / "feedback.db").write_bytes(b"")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])
    assert "already holds a store" in caplog.text
