"""The store's tables, its schema version, and what a valid row holds (the integrity check's rules)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

SCHEMA_VERSION = 1  # a release that changes the tables raises it and migrates older stores in `_set_up`
SIDE = 28  # MNIST's frame (not imported from digitrec.data: that module brings in torch)
PIXELS = SIDE * SIDE

metadata = sa.MetaData()
items = sa.Table(
    "feedback_item",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("image_sha256", sa.String(64), nullable=False),
    sa.Column("label", sa.SmallInteger, sa.CheckConstraint("label BETWEEN 0 AND 9", name="ck_label"), nullable=False),
    sa.Column("image", sa.LargeBinary, nullable=False),
    sa.Column("pixels", sa.LargeBinary, nullable=False),
    sa.Column(
        "predicted",
        sa.SmallInteger,
        sa.CheckConstraint("predicted BETWEEN 0 AND 9", name="ck_predicted"),
        nullable=False,
    ),
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("shown", sa.SmallInteger, nullable=True),  # the digit the client says it showed, when it says
    sa.Column("strokes", sa.Text, nullable=True),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),  # naive UTC: SQLite keeps no time zone
    sa.UniqueConstraint("image_sha256", "label", name="uq_feedback_item_image_label"),
)
schema = sa.Table("feedback_schema", metadata, sa.Column("version", sa.Integer, nullable=False))


def stored_version(conn: Connection) -> int | None:
    if not sa.inspect(conn).has_table(schema.name):
        return None
    return conn.execute(sa.select(sa.func.max(schema.c.version))).scalar()


def item_problems(row: Row) -> Iterator[str]:
    if hashlib.sha256(row.image).hexdigest() != row.image_sha256:
        yield "the image does not match its SHA-256"
    if len(row.pixels) != PIXELS:
        yield f"{len(row.pixels)} pixel bytes instead of {PIXELS}"
    if not (0 <= row.label <= 9 and 0 <= row.predicted <= 9):
        yield f"label {row.label} or predicted digit {row.predicted} is not a digit"
        return
    probs = row.probabilities
    if not (
        isinstance(probs, list)
        and len(probs) == 10
        and abs(sum(probs) - 1) < 1e-3
        and probs[row.predicted] == max(probs)
    ):
        yield "the probabilities are not ten summing to 1 with the predicted digit's the largest"
    if row.strokes is not None:
        try:
            json.loads(row.strokes)
        except ValueError:
            yield "the strokes are not JSON"
