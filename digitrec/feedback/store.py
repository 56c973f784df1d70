"""Users' labelled digits in a database through SQLAlchemy: a SQLite file by default, PostgreSQL by URL.

One row per (image, label), written in one transaction: the image file as sent, the 28×28 the
network saw (784 bytes, light digit on dark as in MNIST), the label, the served model's digit and
probabilities, the model's identity (SHA-256 of its weights), the pen strokes when sent, and the
time (UTC). Nothing about the sender is kept: no address, cookie or user agent.

    store = FeedbackStore("outputs/feedback/feedback.db")   # or "postgresql://user@host/db"
    saved = store.add(Item(...))                              # Saved(id=1, duplicate=False)
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Row
from sqlalchemy.exc import DBAPIError, IntegrityError

from digitrec.errors import ConfigError, DigitrecError
from digitrec.feedback.database import connect, database_url
from digitrec.feedback.schema import (
    PIXELS,
    SCHEMA_VERSION,
    SIDE,
    item_problems,
    items,
    metadata,
    schema,
    stored_version,
)

DEFAULT_DB = Path("outputs") / "feedback" / "feedback.db"
RETRY_S = 2.0  # a store that failed to open is tried again after this long


class StoreUnavailable(DigitrecError):
    """The database cannot be reached or written now (read-only, full, locked, down)."""


@dataclass(frozen=True)
class Item:
    """One labelled digit, as `FeedbackStore.add` takes it."""

    image: bytes  # the file as sent
    pixels: bytes  # the 28×28 uint8 image the network saw, row by row
    label: int
    predicted: int  # the served model's digit
    probabilities: Sequence[float]
    model_sha256: str
    model_name: str
    shown: int | None = None
    strokes: str | None = None  # JSON, as sent


@dataclass(frozen=True)
class Saved:
    id: int
    duplicate: bool  # the same image bytes with the same label were stored before: `id` is theirs


class FeedbackStore:
    """Users' labelled digits. Safe to share between threads; the tables are made on first use."""

    def __init__(self, url: str | os.PathLike | URL = DEFAULT_DB, create: bool = True) -> None:
        self.url = database_url(url)
        self.create = create
        self.sqlite = self.url.get_backend_name() == "sqlite"
        try:
            self.engine = connect(self.url)
        except ImportError as e:
            raise ConfigError(f"no database driver for {self.name} ({e}): pip install 'digitrec[serve]'.") from None
        self._ready = False
        self._failure: tuple[float, DigitrecError] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FeedbackStore({self.name})"

    @property
    def name(self) -> str:
        """The SQLite file, or the URL without its password."""
        return self.url.database if self.sqlite else self.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def open(self) -> FeedbackStore:
        """Make the tables (`create`) or check their schema version: once after a success; after a failure,
        again once `RETRY_S` have passed (until then the same error at once, not a wait on each request)."""
        with self._lock:
            if self._ready:
                return self
            failed_at, error = self._failure or (float("-inf"), None)
            if error is not None and time.monotonic() - failed_at < RETRY_S:
                raise error
            try:
                with self._errors():
                    self._set_up()
            except DigitrecError as e:
                self._failure = (time.monotonic(), e)
                raise
            self._ready = True
        return self

    def _set_up(self) -> None:
        if self.sqlite:
            self._check_file()
        with self.engine.connect() as conn:
            version = stored_version(conn)
        if version is None:
            if not self.create:
                raise ConfigError(f"{self.name} holds no feedback store; digitrec-serve makes one.")
            try:
                with self.engine.begin() as conn:
                    metadata.create_all(conn)
                    if conn.execute(sa.select(sa.func.count()).select_from(schema)).scalar_one() == 0:
                        conn.execute(sa.insert(schema).values(version=SCHEMA_VERSION))
            except DBAPIError:
                with self.engine.connect() as conn:  # another process made them at the same moment?
                    if stored_version(conn) is None:
                        raise
            return
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{self.name} has schema version {version}, newer than this digitrec's "
                f"{SCHEMA_VERSION}: upgrade digitrec."
            )

    def _check_file(self) -> None:
        path = Path(self.url.database.removeprefix("file:").split("?")[0])
        if not self.create and not path.is_file():
            raise ConfigError(f"no feedback store at {path}; digitrec-serve makes it, or give --db.")
        path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database failures as one-line `StoreUnavailable` errors naming the store."""
        try:
            yield
        except IntegrityError:
            raise
        except DBAPIError as e:
            reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
            raise StoreUnavailable(f"the feedback store {self.name} cannot be used: {reason}") from None
        except OSError as e:
            raise StoreUnavailable(f"the feedback store {self.name} cannot be used: {e.strerror or e}") from None

    def add(self, item: Item) -> Saved:
        """Store one item in its own transaction; the same image bytes and label again are not stored twice."""
        row = _row(item)
        self.open()
        with self._errors():
            for _ in range(3):
                try:
                    with self.engine.begin() as conn:
                        return Saved(conn.execute(sa.insert(items).values(row)).inserted_primary_key[0], False)
                except IntegrityError as e:  # stored already, perhaps by a request racing this one
                    error = e
                with self.engine.connect() as conn:
                    found = conn.execute(
                        sa.select(items.c.id).where(
                            items.c.image_sha256 == row["image_sha256"], items.c.label == row["label"]
                        )
                    ).scalar()
                if found is not None:
                    return Saved(found, True)
            raise error  # not a duplicate after all (deleted each time in between?): a bug to see

    def stats(self) -> dict[str, Any]:
        """Counts per label, confirmed (the model was right) and corrected, and each model's accuracy."""
        right = sa.func.sum(sa.case((items.c.label == items.c.predicted, 1), else_=0))
        with self._opened() as conn:
            labels = dict(conn.execute(sa.select(items.c.label, sa.func.count()).group_by(items.c.label)).all())
            models = conn.execute(
                sa.select(items.c.model_sha256, items.c.model_name, sa.func.count(), right)
                .group_by(items.c.model_sha256, items.c.model_name)
                .order_by(sa.func.min(items.c.id))
            ).all()
            times = sa.select(sa.func.min(items.c.created_at), sa.func.max(items.c.created_at))
            first, last = conn.execute(times).one()
        total, confirmed = sum(labels.values()), sum(int(m[3]) for m in models)
        return {
            "items": total,
            "labels": {str(d): labels.get(d, 0) for d in range(10)},
            "confirmed": confirmed,
            "corrected": total - confirmed,
            "first": _iso(first),
            "last": _iso(last),
            "models": [
                {"sha256": sha, "name": name, "items": n, "accuracy": int(ok) / n} for sha, name, n, ok in models
            ],
        }

    def digits(self) -> Iterator[Row]:
        """Every item's id, label, pixels, time and model, oldest first, streamed."""
        columns = (
            items.c.id,
            items.c.label,
            items.c.pixels,
            items.c.created_at,
            items.c.model_sha256,
            items.c.model_name,
        )
        with self._opened() as conn:
            yield from conn.execution_options(yield_per=1000).execute(sa.select(*columns).order_by(items.c.id))

    def delete(self, ids: Sequence[int] | None = None, before: datetime | None = None) -> list[int]:
        """Delete the items with these ids, or those stored before this time; returns the ids deleted."""
        if (ids is None) == (before is None):
            raise ConfigError("delete either by id or by date.")
        where = items.c.id.in_(list(ids)) if ids is not None else items.c.created_at < _naive_utc(before)
        self.open()
        with self._errors(), self.engine.begin() as conn:
            return sorted(conn.execute(sa.delete(items).where(where).returning(items.c.id)).scalars())

    def check(self) -> list[str]:
        """Integrity problems (none: an empty list): the database's own check, the schema version, and each
        item's checksum, pixels, label, probabilities and strokes."""
        self.open()
        problems: list[str] = []
        try:
            with self.engine.connect() as conn:
                if self.sqlite:
                    problems += [
                        f"SQLite: {r}" for r in conn.exec_driver_sql("PRAGMA integrity_check").scalars() if r != "ok"
                    ]
                versions = conn.execute(sa.select(schema.c.version)).scalars().all()
                if versions != [SCHEMA_VERSION]:
                    problems.append(f"schema versions {versions}, expected [{SCHEMA_VERSION}]")
                for row in conn.execution_options(yield_per=500).execute(sa.select(items)):
                    problems += [f"item {row.id}: {p}" for p in item_problems(row)]
        except (DBAPIError, ValueError) as e:  # ValueError: a column that no longer parses
            problems.append(f"cannot read the store: {str(getattr(e, 'orig', e)).strip().splitlines()[0]}")
        return problems

    @contextmanager
    def _opened(self) -> Iterator[Connection]:
        """A connection whose statements all see one snapshot (SQLite's transactions always do)."""
        self.open()
        with self._errors(), self.engine.connect() as conn:
            yield conn if self.sqlite else conn.execution_options(isolation_level="REPEATABLE READ")


def _row(item: Item) -> dict[str, Any]:
    for name in ("label", "predicted") + (("shown",) if item.shown is not None else ()):
        value = getattr(item, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
            raise ConfigError(f"{name} must be a digit 0-9, got {value!r}.")
    if len(item.pixels) != PIXELS:
        raise ConfigError(f"pixels must be {SIDE}×{SIDE} = {PIXELS} bytes, got {len(item.pixels)}.")
    if len(item.probabilities) != 10:
        raise ConfigError(f"ten probabilities expected, got {len(item.probabilities)}.")
    return {
        "image_sha256": hashlib.sha256(item.image).hexdigest(),
        "label": item.label,
        "image": bytes(item.image),
        "pixels": bytes(item.pixels),
        "predicted": item.predicted,
        "probabilities": [float(p) for p in item.probabilities],
        "shown": item.shown,
        "strokes": item.strokes,
        "model_sha256": item.model_sha256,
        "model_name": item.model_name,
        "created_at": _naive_utc(datetime.now(timezone.utc)),
    }


def _naive_utc(moment: datetime) -> datetime:
    """UTC without a zone, as stored; a naive `moment` is taken as UTC."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=timezone.utc).isoformat()
