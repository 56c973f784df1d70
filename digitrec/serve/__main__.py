"""`digitrec-serve` (or `python -m digitrec.serve`): the draw-a-digit page and the JSON API for a checkpoint or an ensemble."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import torch

from digitrec.errors import ConfigError, exit_on_user_error
from digitrec.inference.options import add_model_options, choose_model
from digitrec.inference.predictor import DEFAULT_THRESHOLD, DigitPredictor

log = logging.getLogger("digitrec.serve")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec-serve",
        description=__doc__.split(":", 1)[1].strip(),
        epilog="Endpoints: GET / (the page), POST /predict, POST /predict/batch, GET /health, GET /docs; "
        "POST /feedback and GET /feedback/stats unless --no-feedback.",
    )
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="predictions run at once (default: one per CPU core); more requests wait their turn",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per prediction (default 1: predictions run side by side instead)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"confidence below which an answer is 'not a digit' (default {DEFAULT_THRESHOLD})",
    )
    feedback = parser.add_mutually_exclusive_group()
    feedback.add_argument(
        "--feedback-db",
        default=None,
        metavar="URL",
        help="where POST /feedback stores users' labelled digits: a SQLite file or a database URL "
        "(sqlite:///path, postgresql://user@host/db); default outputs/feedback/feedback.db, "
        "made on demand",
    )
    feedback.add_argument(
        "--no-feedback",
        action="store_true",
        help="store nothing: the feedback endpoints answer 404 and the page hides its buttons",
    )
    return parser


def load_predictor(args: argparse.Namespace) -> tuple[DigitPredictor, str]:
    """The checkpoints the command line names (several: an ensemble), on the CPU, and a line saying which."""
    checkpoints, which = choose_model(args.checkpoint)
    return DigitPredictor(checkpoints, device="cpu", threshold=args.threshold, tta=args.tta), which


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads < 1 or (args.workers is not None and args.workers < 1) or not 0 < args.port < 65536:
        raise ConfigError("--threads and --workers must be positive and --port in 1-65535.")
    try:
        import uvicorn

        from digitrec.feedback.store import DEFAULT_DB, FeedbackStore
        from digitrec.serve.app import create_app
    except ImportError as e:
        raise ConfigError(f"digitrec-serve needs FastAPI and uvicorn ({e}): pip install 'digitrec[serve]'.") from None
    torch.set_num_threads(args.threads)
    feedback = None if args.no_feedback else FeedbackStore(args.feedback_db or DEFAULT_DB)
    predictor, which = load_predictor(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    log.info(which)
    log.info("Serving %s", predictor)
    log.info("Feedback: %s", "off" if feedback is None else f"stored in {feedback.name}")
    log.info("Open http://%s:%d/ to draw a digit (API docs: /docs)", args.host, args.port)
    app = create_app(predictor, workers=args.workers, feedback=feedback)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
