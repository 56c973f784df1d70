"""Learning a hand MNIST lacks: `python -m digitrec.bench.feedback [--corrections 200] [--held-out 1000] [--seed 0]`.

A small generator draws digits of a hand that MNIST has few of, continental 1s (a long, shallow
up-stroke to the top of the stem) and crossed 7s, as pen strokes on the page's 280×280 canvas. The command starts
`digitrec-serve` (the bundled model) with a new feedback store, asks `/predict` about each of
`--corrections` such drawings and posts each with its right digit to `/feedback`, as users answering
the page would; then fine-tunes the bundled model on that store (`train.py experiment=finetune`), and
reads `--held-out` other drawings of the same hand (another seed) with the model before and after.
It prints the accuracy on those, on the 10,000 MNIST test digits (from the run's summary.json) and
the fine-tuning time.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from digitrec.errors import ConfigError, exit_on_user_error

CANVAS = 280  # the page's canvas, and its pen (280 / 12 pixels wide)
PEN = CANVAS / 12
Stroke = list[tuple[float, float]]


def continental_one(rng: np.random.Generator) -> list[Stroke]:
    """A 1 as much of Europe writes it: a long, shallow up-stroke to the top of the stem (which is why
    the same hands cross their 7s); networks trained on MNIST's 1s take many for 7s. One stroke in a
    unit box."""
    flag = (rng.uniform(0.0, 0.15), rng.uniform(0.15, 0.35))
    return [[flag, (0.6, 0.0), (0.6 + rng.uniform(-0.04, 0.04), 1.0)]]


def crossed_seven(rng: np.random.Generator) -> list[Stroke]:
    """A 7 with a bar across its stem: two strokes in a unit box."""
    foot = rng.uniform(0.25, 0.45)
    at = rng.uniform(0.45, 0.6)  # height of the bar, and where it crosses the stem
    crossing = 1.0 + (foot - 1.0) * at
    half = rng.uniform(0.2, 0.3)
    return [[(0.05, 0.0), (1.0, 0.0), (foot, 1.0)], [(crossing - half, at), (crossing + half, at)]]


HAND = {1: continental_one, 7: crossed_seven}


def drawing(digit: int, rng: np.random.Generator) -> bytes:
    """A PNG of the canvas as the page sends it: the digit's strokes, slanted, sized and placed at random,
    dark ink on white."""
    tall = rng.uniform(0.55, 0.8) * CANVAS
    wide = tall * rng.uniform(0.55, 0.85)
    left, top = rng.uniform(0.1, 0.9 - wide / CANVAS) * CANVAS, rng.uniform(0.08, 0.92 - tall / CANVAS) * CANVAS
    slant = math.tan(math.radians(rng.uniform(-12, 12)))
    width = round(PEN * rng.uniform(0.8, 1.2))
    image = Image.new("L", (CANVAS, CANVAS), 255)
    pen = ImageDraw.Draw(image)
    for stroke in HAND[digit](rng):
        points = [(left + wide * x + slant * tall * (1 - y), top + tall * y) for x, y in stroke]
        pen.line(points, fill=17, width=width, joint="curve")
        for x, y in (points[0], points[-1]):
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=17)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def drawings(count: int, seed: int) -> list[tuple[bytes, int]]:
    """`count` drawings of the hand, 1s and 7s in turn."""
    rng = np.random.default_rng(seed)
    digits = [list(HAND)[k % len(HAND)] for k in range(count)]
    return [(drawing(digit, rng), digit) for digit in digits]


def post(port: int, path: str, image: bytes, **fields: str) -> dict:
    from digitrec.bench.load import multipart

    body, content_type = multipart(image, "drawing.png", **fields)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", path, body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status not in (200, 201):
        raise ConfigError(f"POST {path} answered {response.status}: {answer.get('error', answer)}")
    return answer


def correct_on_the_page(store: Path, examples: list[tuple[bytes, int]]) -> int:
    """Each drawing asked about, then posted with its right digit, through a real `digitrec-serve`;
    returns how many the bundled model had read wrong."""
    from digitrec.bench.load import start_server

    proc, port = start_server(None, threads=2, feedback_db=store, cwd=Path(tempfile.gettempdir()))
    try:
        wrong = 0
        for image, digit in examples:
            shown = post(port, "/predict", image)["digit"]
            wrong += shown != digit
            post(port, "/feedback", image, label=str(digit), predicted=str(shown))
        return wrong
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def fine_tune(store: Path, run: Path, seed: int) -> tuple[dict, float]:
    """`train.py experiment=finetune` on the store; its summary.json and the whole command's seconds."""
    from digitrec.data.mnist import REPO_ROOT

    command = [
        sys.executable,
        str(REPO_ROOT / "train.py"),
        "experiment=finetune",
        f"data.extra=[{store}]",
        f"seed={seed}",
        f"hydra.run.dir={run}",
        "trainer.enable_progress_bar=false",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise ConfigError(f"fine-tuning failed:\n{done.stderr[-3000:]}")
    return json.loads((run / "summary.json").read_text()), seconds


def accuracy(checkpoint: Path | None, examples: list[tuple[bytes, int]]) -> float:
    """How many of the drawings `DigitPredictor` reads as their digit (None: the bundled model)."""
    from digitrec.inference.predictor import DigitPredictor

    predictor = DigitPredictor(checkpoint, device="cpu")
    answers = predictor.predict_batch([image for image, _ in examples])
    return float(np.mean([answer["digit"] == digit for answer, (_, digit) in zip(answers, examples)]))


def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| measure | before | after |", "|---|---:|---:|"]
    return "\n".join(lines + [f"| {name} | {before} | {after} |" for name, before, after in rows])


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    from digitrec.bench.machine import cpu_model
    from digitrec.inference.checkpoints import find_newest_checkpoint

    parser = argparse.ArgumentParser(prog="python -m digitrec.bench.feedback", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corrections", type=int, default=200, help="drawings posted to /feedback (default 200)")
    parser.add_argument("--held-out", type=int, default=1000, help="other drawings of the hand to test on")
    parser.add_argument("--seed", type=int, default=0, help="the corrections' seed (the held-out use seed + 1)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where the store and the run go (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    if args.corrections < 10 or args.held_out < 1:
        raise ConfigError("--corrections must be at least 10 and --held-out positive.")
    out = args.out or Path(tempfile.mkdtemp(prefix="digitrec-feedback-"))
    store, run = out / "feedback.db", out / "finetune"
    if store.exists() or run.exists():
        raise ConfigError(f"{out} already holds a store or a run: give an empty --out.")
    out.mkdir(parents=True, exist_ok=True)
    corrections, held_out = drawings(args.corrections, args.seed), drawings(args.held_out, args.seed + 1)

    wrong = correct_on_the_page(store, corrections)
    summary, seconds = fine_tune(store, run, args.seed)
    before, after = accuracy(None, held_out), accuracy(find_newest_checkpoint(run), held_out)
    mnist_before, mnist_after = summary["before"]["test_acc"], summary["test_acc"]
    print(
        f"CPU: {cpu_model()}; {args.corrections} drawings posted to /feedback ({wrong} read wrong before), "
        f"seed {args.seed}; {args.held_out} held-out drawings, seed {args.seed + 1}; store and run in {out}\n"
    )
    print(
        table(
            [
                ("held-out continental 1s and crossed 7s", f"{100 * before:.1f} %", f"{100 * after:.1f} %"),
                ("MNIST test (10,000 digits)", f"{100 * mnist_before:.2f} %", f"{100 * mnist_after:.2f} %"),
                (
                    "users' held-out digits in the store",
                    _percent(summary["before"].get("test_acc_extra")),
                    _percent(summary.get("test_acc_extra")),
                ),
            ]
        )
    )
    print(
        f"\nFine-tuning: {summary['fit_seconds']:.1f} s of training ({seconds:.1f} s for the whole train.py "
        f"command: start-up, the tests before and after, checkpoints); MNIST change "
        f"{100 * (mnist_after - mnist_before):+.2f} points"
    )
    return 0


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


if __name__ == "__main__":
    raise SystemExit(main())
