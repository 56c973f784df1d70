"""POST /feedback and GET /feedback/stats: through TestClient, then under load and SIGKILL against a real server."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from digitrec.bench.latency import untrained_checkpoint
from digitrec.bench.load import start_server as serve
from digitrec.feedback.store import FeedbackStore, items
from digitrec.inference.predictor import DigitPredictor
from digitrec.serve.app import create_app

REPO = Path(__file__).resolve().parents[1]


def digit_png(i: int) -> bytes:
    """Image `i` of 2,000 distinct ones: a dark bar on white, its place, length and darkness from `i`."""
    image = np.full((40, 40), 255, np.uint8)
    column, length, darkness = 8 + i % 20, 12 + (i // 20) % 20, 10 * (i // 400)
    image[4 : 4 + length, column : column + 4] = darkness
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint("mlp", tmp_path_factory.mktemp("model") / "mlp.ckpt")


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> DigitPredictor:
    return DigitPredictor(checkpoint, device="cpu")


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(tmp_path / "feedback" / "feedback.db")


@pytest.fixture
def client(predictor: DigitPredictor, store: FeedbackStore):
    with TestClient(create_app(predictor, max_body_bytes=1_000_000, feedback=store)) as client:
        yield client


def post(client: TestClient, data: bytes, name: str = "digit.png", **fields: str):
    return client.post("/feedback", files={"file": (name, data, "image/png")}, data=fields)


def test_feedback_stores_the_image_what_the_network_saw_and_what_it_answered(
    client, store, predictor, checkpoint: Path
) -> None:
    data = digit_png(1)
    response = post(client, data, label="1", predicted="4", strokes="[[[10, 20], [11, 40]]]")
    assert response.status_code == 201 and response.json() == {"id": 1, "duplicate": False}
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(items)).one()
    answer = predictor.predict(data)
    assert row.image == data and row.label == 1 and row.shown == 4 and row.strokes == "[[[10, 20], [11, 40]]]"
    assert row.pixels == np.round(predictor.prepare(data).pixels * 255).astype(np.uint8).tobytes()
    assert row.predicted == answer["digit"] and row.probabilities == pytest.approx(answer["probabilities"])
    assert row.model_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest() and row.model_name == "mlp"


def test_the_same_image_and_label_again_is_a_duplicate_with_the_same_id(client) -> None:
    first = post(client, digit_png(2), label="3").json()
    again = post(client, digit_png(2), label="3", predicted="3")
    assert again.status_code == 200 and again.json() == {"id": first["id"], "duplicate": True}
    other = post(client, digit_png(2), label="5")
    assert other.status_code == 201 and other.json()["id"] != first["id"]


@pytest.mark.parametrize(
    "fields, status, message",
    [
        ({"label": "12"}, 400, "'label' must be one digit, 0 to 9, got '12'"),
        ({"label": "x"}, 400, "'label' must be one digit"),
        ({"label": ""}, 400, "'label' must be one digit"),
        ({"label": "-1"}, 400, "'label' must be one digit"),
        ({}, 422, "no 'label' field"),
        ({"label": "1", "predicted": "ten"}, 400, "'predicted' must be one digit"),
        ({"label": "1", "strokes": "[[1, 2"}, 400, "'strokes' is not JSON"),
        ({"label": "1", "strokes": '{"x": 1}'}, 400, "a JSON list of strokes"),
        ({"label": "1", "strokes": json.dumps([[[i, i] for i in range(9000)]])}, 413, "over 64 KB"),
    ],
)
def test_bad_fields_are_refused_with_the_reason(client, fields: dict, status: int, message: str) -> None:
    response = post(client, digit_png(3), **fields)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert client.get("/feedback/stats").json()["items"] == 0


def test_bad_images_and_bodies_are_refused_as_for_predict(client) -> None:
    blank = io.BytesIO()
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(blank, format="PNG")
    for data, message in [(b"not an image", "not an image file"), (blank.getvalue(), "no digit in it")]:
        response = post(client, data, name="x.png", label="1")
        assert response.status_code == 400 and "'x.png'" in response.json()["error"] and message in response.text
    too_big = post(client, b"\0" * 1_100_000, label="1")
    assert too_big.status_code == 413 and "over the limit" in too_big.json()["error"]
    no_file = client.post("/feedback", data={"label": "1"}, files={"other": ("a.png", b"x")})
    assert no_file.status_code == 422 and "'file'" in no_file.json()["error"]
    not_a_form = client.post("/feedback", json={"label": 1})
    assert not_a_form.status_code == 415 and "multipart/form-data" in not_a_form.json()["error"]
    assert client.get("/feedback/stats").json()["items"] == 0


def test_stats_count_what_users_said_and_the_served_models_accuracy(client, predictor) -> None:
    guesses = [predictor.predict(digit_png(i))["digit"] for i in range(4)]
    for i, guess in enumerate(guesses):  # right twice, then corrected twice
        post(client, digit_png(i), label=str(guess if i < 2 else (guess + 1) % 10))
    stats = client.get("/feedback/stats").json()
    assert stats["items"] == 4 and stats["confirmed"] == 2 and stats["corrected"] == 2
    assert sum(stats["labels"].values()) == 4 and stats["first"] <= stats["last"]
    assert stats["served_model"]["accuracy"] == 0.5 and stats["models"] == [stats["served_model"]]


def test_without_a_store_feedback_is_404_and_health_says_it_is_off(predictor, client) -> None:
    assert client.get("/health").json()["feedback"] is True
    with TestClient(create_app(predictor)) as off:
        assert off.get("/health").json()["feedback"] is False
        for response in (post(off, digit_png(1), label="1"), off.get("/feedback/stats")):
            assert response.status_code == 404 and "Feedback is off" in response.json()["error"]
        assert "/feedback" not in off.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("url", ["sqlite:///file:{db}?mode=ro&uri=true", "postgresql://nobody@127.0.0.1:1/none"])
def test_a_store_that_cannot_be_written_is_503_and_predictions_go_on(predictor, tmp_path: Path, url: str) -> None:
    db = tmp_path / "feedback.db"
    FeedbackStore(db).open()
    with TestClient(create_app(predictor, feedback=FeedbackStore(url.format(db=db)))) as client:
        response = post(client, digit_png(1), label="1")
        assert response.status_code == 503 and response.json()["error"].startswith("Feedback cannot be saved now")
        assert "readonly" in response.text or "connection" in response.text.lower()
        assert client.post("/predict", files={"file": ("d.png", digit_png(1))}).status_code == 200
        assert client.get("/health").status_code == 200


def test_openapi_documents_the_feedback_endpoints(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"201", "400", "413", "415", "422", "503"} <= set(paths["/feedback"]["post"]["responses"])
    assert "/feedback/stats" in paths


# --- a real server: uvicorn in its own process --------------------------------------------------


def form(data: bytes, label: int) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="label"\r\n\r\n{label}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def start_server(checkpoint: Path, db: Path | str | None, *options: str) -> tuple[subprocess.Popen, int]:
    """`python -m digitrec.serve` storing feedback into `db` (a SQLite file or a URL; None: off), on a free port."""
    return serve(checkpoint, threads=1, feedback_db=db, cwd=REPO, options=options)


def send_all(port: int, work: list[int], acknowledged: dict[int, int], errors: list[str], lock: threading.Lock) -> None:
    """POST /feedback for each image number in `work` over one keep-alive connection; stops at a dead server."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in work:
        body, content_type = form(digit_png(i), i % 10)
        try:
            conn.request("POST", "/feedback", body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as e:
            with lock:
                errors.append(f"{i}: {type(e).__name__}")
            return
        with lock:
            if response.status == 201:
                acknowledged[i] = json.loads(answer)["id"]
            else:
                errors.append(f"{i}: {response.status} {answer[:200]!r}")


def load(port: int, n: int, clients: int) -> tuple[dict[int, int], list[str], list[threading.Thread]]:
    acknowledged: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    threads = [
        threading.Thread(target=send_all, args=(port, list(range(c, n, clients)), acknowledged, errors, lock))
        for c in range(clients)
    ]
    for t in threads:
        t.start()
    return acknowledged, errors, threads


def finish(threads: list[threading.Thread], timeout: float = 120) -> None:
    for t in threads:
        t.join(timeout=timeout)


def stored(db: Path) -> dict[int, tuple[int, str]]:
    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        return {
            r.id: (r.label, r.image_sha256)
            for r in conn.execute(sa.select(items.c.id, items.c.label, items.c.image_sha256))
        }


@pytest.mark.slow
def test_sixteen_clients_store_two_thousand_items_without_an_error(checkpoint: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    proc, port = start_server(checkpoint, db)
    try:
        acknowledged, errors, threads = load(port, 2000, clients=16)
        finish(threads)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert errors == [] and len(acknowledged) == 2000
    rows = stored(db)
    assert len(rows) == 2000 and sorted(acknowledged.values()) == sorted(rows)
    assert all(rows[id_] == (i % 10, hashlib.sha256(digit_png(i)).hexdigest()) for i, id_ in acknowledged.items())
    assert FeedbackStore(db, create=False).check() == []


def test_a_server_killed_under_load_keeps_every_item_it_acknowledged(checkpoint: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    proc, port = start_server(checkpoint, db)
    try:
        acknowledged, errors, threads = load(port, 2000, clients=16)
        deadline = time.monotonic() + 60
        while len(acknowledged) < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-request for most clients: nothing gets to close cleanly
        finish(threads, timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert 400 <= len(acknowledged) < 2000 and errors, "the kill should have cut the load short"
    assert FeedbackStore(db, create=False).check() == []
    rows = stored(db)
    assert all(rows.get(id_) == (i % 10, hashlib.sha256(digit_png(i)).hexdigest()) for i, id_ in acknowledged.items())
    assert len(rows) <= len(acknowledged) + 16  # beyond those: at most the ones in flight when it died
