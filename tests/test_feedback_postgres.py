"""The feedback store on a real PostgreSQL (a throwaway cluster: conftest's `postgres_url`), behind a real server.

The store's own tests run on PostgreSQL too (test_feedback_store.py is parametrised over both databases).
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import pytest
from test_feedback_api import digit_png, finish, form, load, start_server

from digitrec.bench.latency import untrained_checkpoint
from digitrec.feedback.store import FeedbackStore, metadata


@pytest.fixture
def store(postgres_url: str):
    store = FeedbackStore(postgres_url).open()
    yield store
    metadata.drop_all(store.engine)  # the cluster lives for the session: leave it empty
    store.close()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint("mlp", tmp_path_factory.mktemp("model") / "mlp.ckpt")


def test_a_server_under_load_stores_every_item_in_postgres(store: FeedbackStore, checkpoint: Path) -> None:
    proc, port = start_server(checkpoint, store.url.render_as_string(hide_password=False))
    try:
        acknowledged, errors, threads = load(port, 480, clients=16)
        finish(threads)
        results, lock, start = [], threading.Lock(), threading.Barrier(16)
        body, content_type = form(digit_png(1999), 9)

        def post_the_same() -> None:  # sixteen users send one image with one label at the same moment
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            start.wait()
            conn.request("POST", "/feedback", body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            with lock:
                results.append((response.status, json.loads(response.read())))

        racers = [threading.Thread(target=post_the_same) for _ in range(16)]
        for t in racers:
            t.start()
        finish(racers, timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert errors == [] and len(acknowledged) == 480
    assert sorted(status for status, _ in results) == [200] * 15 + [201]
    assert len({answer["id"] for _, answer in results}) == 1
    assert sorted(answer["duplicate"] for _, answer in results) == [False] + [True] * 15
    stats = store.stats()
    assert stats["items"] == 481 and stats["labels"] == {str(d): 48 + (d == 9) for d in range(10)}
    assert store.check() == []
