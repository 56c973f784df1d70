"""The draw-a-digit page in a real browser: Debian's Chromium driven by Playwright, against
`digitrec-serve` started on a free port. Where Chromium or Playwright is missing the test is
skipped with that reason, except in CI (`CI` set), where it must run."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.bench.load import start_server
from digitrec.data.mnist import load_split, raw_dir


@pytest.fixture(scope="module")
def server(trained_run: Path) -> Iterator[str]:
    """`python -m digitrec.serve` in its own process, as users run it (the load command starts it the same way)."""
    proc, port = start_server(trained_run / "checkpoints" / "mlp-best.ckpt", threads=1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def page(browser, server: str):
    context = browser.new_context(viewport={"width": 900, "height": 700})
    page = context.new_page()
    page.predictions = []  # every POST /predict the page sends
    page.on("request", lambda r: page.predictions.append(r) if r.url.endswith("/predict") else None)
    page.goto(server)
    yield page
    context.close()


def draw(page, *strokes: list[tuple[float, float]]) -> None:
    """Mouse strokes; points are fractions of the canvas's width and height."""
    box = page.get_by_test_id("canvas").bounding_box()
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0] * box["width"], box["y"] + stroke[0][1] * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=4)
        page.mouse.up()


def answered(page, count: int = 1, endpoint: str = "/predict") -> None:
    """Wait until at least `count` answers from `endpoint` came back and the page shows the one for its ink
    as it is now: the page is busy (aria-busy) from the first change of the ink until that answer arrives,
    so an answer to half a stroke (sent when a busy machine pauses mid-stroke) does not count."""
    page.wait_for_function(
        """([n, endpoint]) => !document.querySelector('.result').hasAttribute('aria-busy')
            && performance.getEntriesByType('resource').filter(e => e.name.endsWith(endpoint)).length >= n""",
        arg=[count, endpoint],
        polling=50,
    )


def ink(page) -> int:
    """How many of the canvas's pixels are dark."""
    return page.evaluate("""() => {
        const c = document.getElementById('canvas');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let dark = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] < 128) dark++;
        return dark;
    }""")


ONE = [(0.5, 0.15), (0.5, 0.85)]
SEVEN = ([(0.25, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.45, 0.85)])
ZERO = [(0.5 + 0.22 * math.sin(t / 24 * 2 * math.pi), 0.5 - 0.32 * math.cos(t / 24 * 2 * math.pi)) for t in range(25)]


@pytest.mark.parametrize("strokes, digit", [([ONE], "1"), (list(SEVEN), "7"), ([ZERO], "0")])
def test_drawn_digit_is_recognised_with_bars_and_preview(page, strokes, digit: str) -> None:
    assert page.get_by_test_id("prediction").text_content() == "?"
    draw(page, *strokes)
    answered(page, 1)
    assert page.get_by_test_id("prediction").text_content() == digit
    assert "% confident" in page.get_by_test_id("confidence").text_content()
    bars = page.get_by_test_id("probabilities").locator("[data-digit]")
    assert bars.count() == 10
    assert page.locator('[data-testid="probabilities"] .winner').get_attribute("data-digit") == digit
    widths = [float(bars.nth(d).locator(".fill").evaluate("e => e.style.width").rstrip("%")) for d in range(10)]
    assert abs(sum(widths) - 100) < 1 and widths[int(digit)] == max(widths)
    winner = bars.nth(int(digit))
    drawn = winner.locator(".fill").bounding_box()["width"] / winner.locator(".track").bounding_box()["width"]
    assert drawn == pytest.approx(widths[int(digit)] / 100, abs=0.02)  # the bar is on screen, not just in the style
    assert page.get_by_test_id("preview").get_attribute("src").startswith("data:image/png;base64,")
    assert page.get_by_test_id("error").is_hidden()


def test_undo_and_clear_and_no_request_for_an_empty_canvas(page) -> None:
    draw(page, *SEVEN)
    answered(page, 1)
    both = ink(page)
    page.get_by_test_id("undo").click()
    answered(page, 2)  # the top bar alone is asked about again
    assert 0 < ink(page) < both
    page.get_by_test_id("undo").click()
    assert ink(page) == 0 and page.get_by_test_id("prediction").text_content() == "?"
    draw(page, ONE)
    answered(page, 3)
    sent = len(page.predictions)
    page.get_by_test_id("clear").click()
    page.wait_for_timeout(400)  # longer than the debounce: nothing more may be sent
    assert ink(page) == 0 and page.get_by_test_id("prediction").text_content() == "?"
    assert page.get_by_test_id("preview").get_attribute("src") is None
    assert len(page.predictions) == sent >= 3


def test_upload_by_file_picker_and_the_servers_errors_are_shown(page, mnist_dir: Path, tmp_path: Path) -> None:
    split = load_split(raw_dir(mnist_dir), train=False)
    image, label = split.images[3, 0].numpy(), int(split.labels[3])
    path = tmp_path / "scan.png"
    Image.fromarray(255 - image).resize((140, 140)).save(path)
    page.get_by_test_id("upload").set_input_files(str(path))
    answered(page, 1)
    assert page.get_by_test_id("prediction").text_content() == str(label)

    (tmp_path / "notes.png").write_bytes(b"this is text, not a picture")
    page.get_by_test_id("upload").set_input_files(str(tmp_path / "notes.png"))
    answered(page, 2)
    error = page.get_by_test_id("error")
    assert error.is_visible() and "notes.png" in error.text_content() and "not an image" in error.text_content()
    assert page.get_by_test_id("prediction").text_content() == "?"

    big = tmp_path / "huge.png"
    big.write_bytes(np.random.default_rng(0).bytes(6 * 2**20))
    page.get_by_test_id("upload").set_input_files(str(big))
    answered(page, 3)
    assert "over the limit of 5 MB" in page.get_by_test_id("error").text_content()


def test_drop_an_image_on_the_canvas(page, mnist_dir: Path) -> None:
    split = load_split(raw_dir(mnist_dir), train=False)
    buffer = io.BytesIO()
    Image.fromarray(255 - split.images[0, 0].numpy()).resize((112, 112)).save(buffer, format="PNG")
    page.evaluate(
        """async ([bytes, name]) => {
        const file = new File([new Uint8Array(bytes)], name, { type: 'image/png' });
        const data = new DataTransfer();
        data.items.add(file);
        document.querySelector('.pad').dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true }));
    }""",
        [list(buffer.getvalue()), "dropped.png"],
    )
    answered(page, 1)
    assert page.get_by_test_id("prediction").text_content() == str(int(split.labels[0]))
