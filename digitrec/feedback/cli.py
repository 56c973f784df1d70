"""`digitrec-feedback`: the users' digits that `digitrec-serve` stored: stats, export, delete, check."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from digitrec.errors import ConfigError, exit_on_user_error
from digitrec.feedback.store import DEFAULT_DB, FeedbackStore


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"the store: a SQLite file or a database URL (sqlite:///path, "
        f"postgresql://user@host/db); default {DEFAULT_DB}",
    )
    parser = argparse.ArgumentParser(
        prog="digitrec-feedback", description=__doc__.split(":", 1)[1].strip(), parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="counts per label, confirmed and corrected, each model's accuracy on the items it answered",
    )
    stats.add_argument("--json", action="store_true", help="print them as JSON")
    export = commands.add_parser("export", parents=[common], help="MNIST-format IDX files (gzipped) and manifest.json")
    export.add_argument("out", type=Path, help="folder to write them into")
    delete = commands.add_parser("delete", parents=[common], help="delete items by id or by date")
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, nargs="+", dest="ids", metavar="N", help="the items' ids")
    which.add_argument(
        "--before",
        type=_moment,
        metavar="DATE",
        help="every item stored before this date or time (ISO 8601, UTC unless it says)",
    )
    commands.add_parser("check", parents=[common], help="the integrity check: exit status 1 when it finds a problem")
    return parser


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time, e.g. 2026-01-31 or 2026-01-31T12:00+01:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    store = FeedbackStore(getattr(args, "db", DEFAULT_DB), create=False)
    try:
        return _COMMANDS[args.command](store, args)
    finally:
        store.close()


def _stats(store: FeedbackStore, args: argparse.Namespace) -> int:
    stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{store.name}: {stats['items']} digits", end="")
    if stats["items"]:
        print(f", stored {stats['first']} to {stats['last']}", end="")
    print(f"\n  confirmed (the model was right): {stats['confirmed']}; corrected: {stats['corrected']}")
    print("  per label: " + "  ".join(f"{d}: {n}" for d, n in stats["labels"].items()))
    for model in stats["models"]:
        print(
            f"  model {model['name']} ({model['sha256'][:12]}): accuracy {model['accuracy']:.1%} "
            f"on the {model['items']} digits it answered"
        )
    return 0


def _export(store: FeedbackStore, args: argparse.Namespace) -> int:
    from digitrec.feedback.export import export

    manifest = export(store, args.out)
    print(f"Exported {manifest['items']} digits to {args.out}: {', '.join(manifest['files'])}, manifest.json")
    return 0


def _delete(store: FeedbackStore, args: argparse.Namespace) -> int:
    deleted = store.delete(ids=args.ids, before=args.before)
    one = len(deleted) == 1
    listed = f" ({'id' if one else 'ids'} {', '.join(map(str, deleted))})" if 0 < len(deleted) <= 20 else ""
    print(f"Deleted {len(deleted)} digit{'' if one else 's'}{listed}.")
    missing = sorted(set(args.ids or ()) - set(deleted))
    if missing:
        print(f"Not found: {', '.join(map(str, missing))}.")
    return 0


def _check(store: FeedbackStore, args: argparse.Namespace) -> int:
    problems = store.check()
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        raise ConfigError(f"{store.name}: {len(problems)} integrity problem{'s' if len(problems) > 1 else ''}.")
    print(f"{store.name}: ok ({store.stats()['items']} digits).")
    return 0


_COMMANDS = {"stats": _stats, "export": _export, "delete": _delete, "check": _check}


if __name__ == "__main__":
    raise SystemExit(main())
