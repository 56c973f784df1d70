"""The feedback store on SQLite and PostgreSQL: roundtrip, dedup, stats, export, delete, schema, integrity; its CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from digitrec.data.mnist import read_idx
from digitrec.errors import ConfigError
from digitrec.feedback.cli import main as feedback_cli
from digitrec.feedback.database import database_url
from digitrec.feedback.export import IMAGES, LABELS, MANIFEST, export
from digitrec.feedback.store import (
    PIXELS,
    SCHEMA_VERSION,
    FeedbackStore,
    Item,
    StoreUnavailable,
    items,
    metadata,
    schema,
)

REPO = Path(__file__).resolve().parents[1]
MODEL = "ab" * 32


def make_item(i: int, label: int, predicted: int | None = None, model: str = MODEL, **extra) -> Item:
    """Item `i`: its own image bytes and pixels; the model answered `predicted` (default: `label`)."""
    predicted = label if predicted is None else predicted
    probabilities = [0.02] * 10
    probabilities[predicted] = 0.82
    return Item(
        image=f"image {i}".encode(),
        pixels=bytes((i + k) % 256 for k in range(PIXELS)),
        label=label,
        predicted=predicted,
        probabilities=probabilities,
        model_sha256=model,
        model_name="mlp",
        **extra,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    url = str(tmp_path / "feedback.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = FeedbackStore(url).open()
    yield store
    if not store.sqlite:  # the cluster lives for the session: leave it empty for the next test
        metadata.drop_all(store.engine)
    store.close()


def test_an_item_comes_back_as_it_went_in_and_nothing_about_the_sender(store: FeedbackStore) -> None:
    before = datetime.now(timezone.utc)
    saved = store.add(make_item(1, label=4, predicted=9, shown=9, strokes="[[[1, 2], [3, 4]]]"))
    assert saved.id >= 1 and saved.duplicate is False
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(items)).one()
    assert row.image == b"image 1" and row.image_sha256 == hashlib.sha256(b"image 1").hexdigest()
    assert row.pixels == make_item(1, 4).pixels and row.label == 4 and row.predicted == 9 and row.shown == 9
    assert row.probabilities == pytest.approx(make_item(1, 4, 9).probabilities)
    assert row.model_sha256 == MODEL and row.model_name == "mlp" and json.loads(row.strokes) == [[[1, 2], [3, 4]]]
    stored_at = row.created_at.replace(tzinfo=timezone.utc)
    assert before - timedelta(seconds=1) <= stored_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert set(row._fields) == {
        "id",
        "image_sha256",
        "label",
        "image",
        "pixels",
        "predicted",
        "probabilities",
        "shown",
        "strokes",
        "model_sha256",
        "model_name",
        "created_at",
    }  # no IP, cookie, agent


def test_the_same_image_with_the_same_label_is_stored_once(store: FeedbackStore) -> None:
    first = store.add(make_item(1, label=3))
    assert store.add(make_item(1, label=3, predicted=5)) == type(first)(first.id, True)
    other_label = store.add(make_item(1, label=8))
    assert other_label.duplicate is False and other_label.id != first.id
    assert store.stats()["items"] == 2


def test_racing_duplicates_get_one_row_and_one_id(store: FeedbackStore) -> None:
    start, results = threading.Barrier(8), []

    def post() -> None:
        start.wait()
        results.append(store.add(make_item(7, label=7)))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len({r.id for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * 7
    assert store.stats()["items"] == 1


def test_stats_count_labels_confirmations_corrections_and_each_models_accuracy(store: FeedbackStore) -> None:
    assert store.stats() == {
        "items": 0,
        "labels": {str(d): 0 for d in range(10)},
        "confirmed": 0,
        "corrected": 0,
        "first": None,
        "last": None,
        "models": [],
    }
    for i, (label, predicted, model) in enumerate(
        [(1, 1, "a" * 64), (1, 7, "a" * 64), (2, 2, "a" * 64), (3, 3, "b" * 64)]
    ):
        store.add(make_item(i, label, predicted, model=model))
    stats = store.stats()
    assert stats["items"] == 4 and stats["labels"] == {**{str(d): 0 for d in range(10)}, "1": 2, "2": 1, "3": 1}
    assert stats["confirmed"] == 3 and stats["corrected"] == 1
    assert stats["models"] == [
        {"sha256": "a" * 64, "name": "mlp", "items": 3, "accuracy": pytest.approx(2 / 3)},
        {"sha256": "b" * 64, "name": "mlp", "items": 1, "accuracy": 1.0},
    ]
    assert datetime.fromisoformat(stats["first"]) <= datetime.fromisoformat(stats["last"])


def test_export_is_mnist_idx_that_read_idx_reads_with_a_manifest_of_checksums(
    store: FeedbackStore, tmp_path: Path
) -> None:
    added = [
        make_item(i, label=i % 10, predicted=(i * 3) % 10, model="c" * 64 if i < 5 else "d" * 64) for i in range(12)
    ]
    ids = [store.add(item).id for item in added]
    manifest = export(store, tmp_path / "out")
    images, _ = read_idx(tmp_path / "out" / IMAGES)
    labels, _ = read_idx(tmp_path / "out" / LABELS)
    assert images.shape == (12, 28, 28) and labels.shape == (12,)
    assert [bytes(image.flatten().tolist()) for image in images] == [item.pixels for item in added]
    assert labels.tolist() == [item.label for item in added]
    on_disk = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert on_disk == manifest and manifest["items"] == 12 and manifest["ids"] == ids
    assert manifest["labels"] == {str(d): 2 if d < 2 else 1 for d in range(10)}
    for name in (IMAGES, LABELS):
        data = (tmp_path / "out" / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert manifest["models"] == [
        {"sha256": "c" * 64, "name": "mlp", "items": 5},
        {"sha256": "d" * 64, "name": "mlp", "items": 7},
    ]
    stats = store.stats()
    assert manifest["time_range"] == {"first": stats["first"], "last": stats["last"]}
    assert manifest["schema_version"] == SCHEMA_VERSION
    again = export(store, tmp_path / "again")  # the same digits: the same bytes (no time stamp in the gzip)
    assert again["files"] == manifest["files"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([IMAGES, LABELS, MANIFEST])


def test_an_empty_store_has_nothing_to_export(store: FeedbackStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to export"):
        export(store, tmp_path / "out")


def test_delete_by_id_and_by_date(store: FeedbackStore) -> None:
    ids = [store.add(make_item(i, label=i)).id for i in range(5)]
    assert store.delete(ids=[ids[1], ids[3], 10_000]) == [ids[1], ids[3]]
    assert store.stats()["items"] == 3
    assert store.delete(before=datetime.now(timezone.utc) - timedelta(days=1)) == []
    with store.engine.begin() as conn:  # the first item was stored a week ago
        conn.execute(sa.update(items).where(items.c.id == ids[0]).values(created_at=datetime(2020, 1, 1)))
    assert store.delete(before=datetime(2021, 1, 1, tzinfo=timezone.utc)) == [ids[0]]
    assert store.delete(before=datetime.now(timezone.utc) + timedelta(seconds=1)) == [ids[2], ids[4]]
    assert store.stats()["items"] == 0 and store.add(make_item(1, label=1)).duplicate is False  # deleted for good
    with pytest.raises(ConfigError, match="either by id or by date"):
        store.delete()


def test_the_schema_version_is_recorded_and_a_newer_one_refused(store: FeedbackStore) -> None:
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(schema.c.version)).scalars().all() == [SCHEMA_VERSION]
    assert FeedbackStore(store.url).open().stats()["items"] == 0  # opening again adds no second row
    with store.engine.begin() as conn:
        conn.execute(sa.update(schema).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        FeedbackStore(store.url).open()


def test_the_integrity_check_passes_a_good_store_and_names_each_problem(store: FeedbackStore) -> None:
    ids = [store.add(make_item(i, label=i)).id for i in range(4)]
    assert store.check() == []
    with store.engine.begin() as conn:
        conn.execute(sa.update(items).where(items.c.id == ids[0]).values(image=b"changed"))
        conn.execute(sa.update(items).where(items.c.id == ids[1]).values(pixels=b"\0" * 10))
        conn.execute(sa.update(items).where(items.c.id == ids[2]).values(probabilities=[0.5] * 10))
        conn.execute(sa.update(items).where(items.c.id == ids[3]).values(strokes="[[1, 2"))
        conn.execute(sa.insert(schema).values(version=SCHEMA_VERSION))
    problems = store.check()
    assert problems == [
        f"schema versions [{SCHEMA_VERSION}, {SCHEMA_VERSION}], expected [{SCHEMA_VERSION}]",
        f"item {ids[0]}: the image does not match its SHA-256",
        f"item {ids[1]}: 10 pixel bytes instead of {PIXELS}",
        (f"item {ids[2]}: the probabilities are not ten summing to 1 with the predicted digit's the largest"),
        f"item {ids[3]}: the strokes are not JSON",
    ]


def test_bad_items_are_refused_before_the_database(store: FeedbackStore) -> None:
    for item, message in [
        (replace(make_item(1, 1), label=10), "label"),
        (replace(make_item(1, 1), pixels=b"x"), "784 bytes"),
        (make_item(1, 1, shown=True), "shown"),
    ]:
        with pytest.raises(ConfigError, match=message):
            store.add(item)


def test_database_urls() -> None:
    assert database_url("outputs/x.db").render_as_string() == "sqlite:///outputs/x.db"
    assert database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    for bad, message in [("mysql://u@h/db", "not supported"), ("sqlite://", "in-memory"), ("::://", "neither")]:
        with pytest.raises(ConfigError, match=message):
            database_url(bad)


def test_a_read_only_or_full_sqlite_store_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    FeedbackStore(tmp_path / "feedback.db").open().add(make_item(1, label=1))
    read_only = FeedbackStore(f"sqlite:///file:{tmp_path / 'feedback.db'}?mode=ro&uri=true")
    assert read_only.stats()["items"] == 1 and read_only.check() == []
    with pytest.raises(StoreUnavailable, match="attempt to write a readonly database"):
        read_only.add(make_item(2, label=2))
    full = FeedbackStore(tmp_path / "feedback.db").open()
    sa.event.listen(full.engine, "connect", lambda conn, _: conn.execute("PRAGMA max_page_count = 1"))
    full.engine.dispose()  # new connections, each with the page limit
    with pytest.raises(StoreUnavailable, match="full"):
        full.add(replace(make_item(3, label=3), image=b"x" * 100_000))


def test_a_store_that_cannot_open_fails_fast_until_it_is_retried(monkeypatch) -> None:
    store = FeedbackStore("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreUnavailable, match="cannot be used") as first:
        store.open()
    with pytest.raises(StoreUnavailable) as again:  # within RETRY_S: the same error, no new connection attempt
        store.add(make_item(1, label=1))
    assert again.value is first.value
    monkeypatch.setattr("digitrec.feedback.store.RETRY_S", 0.0)
    with pytest.raises(StoreUnavailable) as later:
        store.open()
    assert later.value is not first.value


def test_cli_stats_export_delete_check(store: FeedbackStore, tmp_path: Path, capsys) -> None:
    url = store.url.render_as_string(hide_password=False)
    ids = [store.add(make_item(i, label=i % 3, predicted=0)).id for i in range(6)]
    assert feedback_cli(["stats", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "6 digits" in out and "confirmed (the model was right): 2; corrected: 4" in out
    assert "model mlp (abababababab): accuracy 33.3% on the 6 digits it answered" in out
    assert feedback_cli(["--db", url, "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["labels"]["0"] == 2
    assert feedback_cli(["export", str(tmp_path / "out"), "--db", url]) == 0
    assert "Exported 6 digits" in capsys.readouterr().out and (tmp_path / "out" / MANIFEST).is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([IMAGES, LABELS, MANIFEST])  # no leftovers
    assert (tmp_path / "out" / IMAGES).stat().st_mode & 0o777 == (tmp_path / "out" / MANIFEST).stat().st_mode & 0o777
    assert feedback_cli(["delete", "--id", str(ids[0]), str(ids[1]), "999999", "--db", url]) == 0
    assert capsys.readouterr().out == f"Deleted 2 digits (ids {ids[0]}, {ids[1]}).\nNot found: 999999.\n"
    assert feedback_cli(["delete", "--before", "2000-01-01", "--db", url]) == 0
    assert capsys.readouterr().out == "Deleted 0 digits.\n"
    assert feedback_cli(["delete", "--id", str(ids[2]), "--db", url]) == 0
    assert capsys.readouterr().out == f"Deleted 1 digit (id {ids[2]}).\n"
    assert feedback_cli(["check", "--db", url]) == 0 and "ok (3 digits)" in capsys.readouterr().out


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "digitrec.feedback.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    missing = cli("stats")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: no feedback store at outputs/feedback/feedback.db")
    bad_date = cli("delete", "--before", "yesterday", "--db", str(tmp_path / "x.db"))
    assert bad_date.returncode == 2 and "'yesterday' is not an ISO 8601 date" in bad_date.stderr
    neither = cli("delete", "--db", str(tmp_path / "x.db"))
    assert neither.returncode == 2 and "one of the arguments --id --before is required" in neither.stderr
    FeedbackStore(tmp_path / "t.db").open().add(make_item(1, label=1))
    with sa.create_engine(f"sqlite:///{tmp_path / 't.db'}").begin() as conn:
        conn.execute(sa.update(items).values(image=b"changed"))
    broken = cli("check", "--db", str(tmp_path / "t.db"))
    assert broken.returncode == 1 and "problem: item 1: the image does not match its SHA-256" in broken.stdout
    assert broken.stderr.strip().endswith("1 integrity problem.") and "Traceback" not in broken.stderr
    down = cli("stats", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert down.returncode == 1 and down.stderr.startswith("error: the feedback store postgresql+psycopg://nobody@")
    assert "Traceback" not in down.stderr
