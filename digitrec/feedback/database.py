"""Which database a feedback store is in, and its connections: a SQLite file, or PostgreSQL through psycopg 3."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from digitrec.errors import ConfigError

CONNECTIONS = 8  # pooled connections; callers run at most this many store calls at once
BUSY_TIMEOUT_S = 15  # how long a SQLite writer waits for another one before the store is "locked"


def database_url(value: str | os.PathLike | URL) -> URL:
    """A database URL from a URL or a SQLite file path; `postgresql://` means the psycopg (3) driver."""
    text = value.render_as_string(hide_password=False) if isinstance(value, URL) else os.fspath(value)
    if "://" not in text:
        return URL.create("sqlite", database=text)
    try:
        url = make_url(text)
    except ArgumentError:
        raise ConfigError(
            f"{text!r} is neither a database URL (sqlite:///path, postgresql://user@host/db) nor a file path."
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"{url.drivername!r} databases are not supported; use sqlite:///path or postgresql://...")
    if url.get_backend_name() == "sqlite" and not url.database:
        raise ConfigError("an in-memory SQLite store would forget everything; give a file: sqlite:///path/feedback.db")
    return url


def connect(url: URL) -> Engine:
    """An engine with a pool of `CONNECTIONS`; SQLite in WAL mode, waiting `BUSY_TIMEOUT_S` for a writer."""
    if url.get_backend_name() == "postgresql":
        return sa.create_engine(
            url, pool_size=CONNECTIONS, max_overflow=0, pool_pre_ping=True, connect_args={"connect_timeout": 10}
        )
    engine = sa.create_engine(
        url, pool_size=CONNECTIONS, max_overflow=0, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    )

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        # SQLAlchemy emits BEGIN (below), so that a transaction also holds its reads and its DDL
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers and the writer do not block each other
        cursor.execute("PRAGMA synchronous = FULL")  # a commit is on disk before the item is acknowledged
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine
