"""`digitrec-predict`: the digits in image files (or folders of them), one line or one JSON item each;
with `--number`, the numbers: several digits in a row in each image."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from digitrec.errors import ConfigError, exit_on_user_error
from digitrec.inference.images import ImageWarning, read_image
from digitrec.inference.options import add_model_options, choose_model
from digitrec.inference.pictures import number_figure
from digitrec.inference.predictor import DEFAULT_THRESHOLD, PICTURE_SUFFIXES, DigitPredictor, Result

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec-predict",
        description="Recognise handwritten digits in image files with a trained checkpoint.",
        epilog="Exit status: 0 if every image was answered (digit or not), 1 if any could not be read.",
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files, or folders of images")
    add_model_options(parser)
    parser.add_argument(
        "--number",
        action="store_true",
        help="read each image as a number, several digits in a row: prints the digits and each "
        "one's confidence; --visualise draws a box and a label per digit over the image",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of one line per image")
    parser.add_argument(
        "--visualise",
        type=Path,
        metavar="OUT.png",
        help="also write a picture per image, in the format its extension names (.png, .jpg, "
        ".pdf, .svg); several images: OUT-<n>-<image name>.<ext>",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"confidence below which an answer is 'not a digit' (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1...")
    parser.add_argument("--model", default=None, help="expected model name; an error if the checkpoint holds another")
    parser.add_argument("--no-preprocess", action="store_true", help="images are already 28×28 MNIST-style")
    return parser


def expand_folders(paths: Iterable[Path]) -> tuple[list[Path], list[str], list[str]]:
    """Each folder replaced by the image files in it (sorted, not recursive); files kept as given.
    Also returns notes on what a folder held besides images, and an error per folder without any."""
    expanded: list[Path] = []
    notes: list[str] = []
    errors: list[str] = []
    for path in paths:
        if not path.is_dir():
            expanded.append(path)
            continue
        entries = sorted(path.iterdir())
        images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        skipped = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in images]
        if not images:
            errors.append(
                f"{path}: no image files in this folder ({', '.join(sorted(s.lstrip('.') for s in IMAGE_SUFFIXES))})."
            )
        elif skipped:
            notes.append(
                f"{path}: skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} that "
                f"{'is' if len(skipped) == 1 else 'are'} not image files (subfolders are not searched): "
                + ", ".join(skipped[:5])
                + (", ..." if len(skipped) > 5 else "")
            )
        expanded.extend(images)
    return expanded, notes, errors


def _line(path: Path, answer: Result) -> str:
    if answer["is_digit"]:
        return f"{path}: {answer['digit']} (confidence {answer['confidence']:.3f})"
    guess = f" (best guess {answer['digit']})" if answer["digit"] is not None else ""
    return f"{path}: not a digit: {answer['reason']}{guess}"


def _number_line(path: Path, answer: Result) -> str:
    digits = ", ".join(f"{d['digit']} {d['confidence']:.3f}" for d in answer["digits"])
    if answer["is_number"]:
        return f"{path}: {answer['text']} (confidence {answer['confidence']:.3f}; digits {digits})"
    guess = f" (best guess {answer['text']}: {digits})" if answer["text"] else ""
    return f"{path}: not a number: {answer['reason']}{guess}"


def _number_picture(predictor: DigitPredictor, path: Path, answer: Result, picture: Path) -> None:
    if picture.suffix.lower() not in PICTURE_SUFFIXES:
        raise ConfigError(
            f"{picture}: cannot tell the picture format from {picture.suffix or 'no extension'!r}; "
            f"name the file with one of {', '.join(PICTURE_SUFFIXES)}."
        )
    try:
        picture.parent.mkdir(parents=True, exist_ok=True)
        number_figure(read_image(path), answer, predictor.threshold).savefig(picture, dpi=100)
    except OSError as e:
        raise ConfigError(f"{picture}: cannot write the picture ({e.strerror or e}).") from None


def _picture_path(out: Path, image: Path, index: int, many: bool) -> Path:
    return out.with_name(f"{out.stem}-{index:03d}-{image.stem}{out.suffix}") if many else out


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    checkpoints, which = choose_model(args.checkpoint)
    predictor = DigitPredictor(
        checkpoints,
        device=args.device,
        model_name=args.model,
        threshold=args.threshold,
        preprocess=not args.no_preprocess,
        tta=args.tta,
    )
    print(which, file=sys.stderr)
    paths, notes, folder_errors = expand_folders(args.images)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageWarning)
        answers = predictor.read_batch(paths) if args.number else predictor.predict_batch(paths)
        if args.visualise:
            readable = [(path, answer) for path, answer in zip(paths, answers) if answer["error"] is None]
            for i, (path, answer) in enumerate(readable):  # numbered without gaps for the images that could not be read
                picture = _picture_path(args.visualise, path, i, len(readable) > 1)
                if args.number:
                    _number_picture(predictor, path, answer, picture)
                else:
                    predictor.visualise(path, picture)
                print(f"picture: {picture}", file=sys.stderr)
    for w in caught:
        if issubclass(w.category, ImageWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if args.json:
        print(json.dumps([{"image": str(p), **a} for p, a in zip(paths, answers)], indent=2))
    for path, answer in zip(paths, answers):
        if answer["error"] is not None:
            print(f"error: {answer['error']}", file=sys.stderr)
        elif not args.json:
            print(_number_line(path, answer) if args.number else _line(path, answer))
    for error in folder_errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if folder_errors or any(a["error"] is not None for a in answers) else 0


if __name__ == "__main__":
    sys.exit(main())
