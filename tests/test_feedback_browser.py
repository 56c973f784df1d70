"""The page's feedback buttons in a real browser (Chromium through Playwright, as test_serve_browser.py):
"Right" and "Wrong, it is: d" after each answer, the status line, and no buttons when feedback is off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_feedback_api import start_server
from test_serve_browser import ONE, ZERO, answered, draw

from digitrec.bench.latency import untrained_checkpoint
from digitrec.feedback.store import items


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint("mlp", tmp_path_factory.mktemp("model") / "mlp.ckpt")


@contextmanager
def open_page(browser, checkpoint: Path, db: Path | None) -> Iterator:
    # threshold 0: the untrained network's every answer counts as a digit, so that "Right" is offered
    proc, port = start_server(checkpoint, db, "--threshold", "0")
    context = browser.new_context(viewport={"width": 900, "height": 800})
    page = context.new_page()
    try:
        page.goto(f"http://127.0.0.1:{port}")
        yield page
    finally:
        context.close()
        proc.terminate()
        proc.wait(timeout=10)


def saved(page) -> None:
    page.wait_for_function(
        "() => document.querySelector('[data-testid=feedback-status]').textContent.startsWith('Saved')"
    )


def test_right_and_wrong_buttons_save_the_drawing_with_its_digit(browser, checkpoint: Path, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    with open_page(browser, checkpoint, db) as page:
        assert page.get_by_test_id("feedback").is_hidden()  # nothing to say anything about yet
        draw(page, ONE)
        answered(page)
        page.get_by_test_id("feedback").wait_for(state="visible")
        shown = int(page.get_by_test_id("prediction").text_content())
        digits = page.get_by_test_id("correct").locator("[data-digit]")
        assert digits.count() == 10 and digits.nth(shown).is_disabled()  # not "wrong, it is" what it said
        wrong = (shown + 1) % 10
        digits.nth(wrong).click()
        status = page.get_by_test_id("feedback-status")
        saved(page)
        assert status.text_content() == f"Saved as {wrong}: thank you."
        assert page.get_by_test_id("confirm").is_disabled()  # one answer per drawing

        page.get_by_test_id("clear").click()
        assert page.get_by_test_id("feedback").is_hidden()
        draw(page, ZERO)
        answered(page, 2)
        assert status.text_content() == "" and page.get_by_test_id("confirm").is_enabled()
        zero = int(page.get_by_test_id("prediction").text_content())
        page.get_by_test_id("confirm").click()
        saved(page)
    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        rows = conn.execute(sa.select(items).order_by(items.c.id)).all()
    assert [(r.label, r.shown) for r in rows] == [(wrong, shown), (zero, zero)]
    assert all(r.image.startswith(b"\x89PNG") for r in rows)
    strokes = [json.loads(r.strokes) for r in rows]
    assert [len(s) for s in strokes] == [1, 1] and len(strokes[1][0]) > len(strokes[0][0]) > 2  # pen points


def test_no_buttons_when_feedback_is_off(browser, checkpoint: Path) -> None:
    with open_page(browser, checkpoint, None) as page:
        page.wait_for_function("() => performance.getEntriesByType('resource').some(e => e.name.endsWith('/health'))")
        draw(page, ONE)
        answered(page)
        assert page.get_by_test_id("prediction").text_content() != "?"
        assert page.get_by_test_id("feedback").is_hidden() and page.get_by_test_id("confirm").is_hidden()
