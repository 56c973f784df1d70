"""Comparing the jobs of a Hydra multirun (`python train.py -m ...`): one table and one bar chart."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

from digitrec.errors import CheckpointError, ConfigError
from digitrec.evaluation.figures import comparison_figure, save_figure
from digitrec.evaluation.report import EvalOptions, evaluate_checkpoint
from digitrec.evaluation.report_files import publish
from digitrec.models import model_name

log = logging.getLogger(__name__)

COLUMNS = (
    "job",
    "overrides",
    "model",
    "parameters",
    "test_acc",
    "test_acc_extra",
    "macro_f1",
    "ece",
    "ece_scaled",
    "fit_seconds",
    "epochs",
    "status",
)
_HEADERS = (
    "job",
    "overrides",
    "model",
    "params",
    "test acc",
    "users' test acc",
    "macro F1",
    "ECE",
    "ECE (T-scaled)",
    "train time (s)",
    "epochs",
    "status",
)


def is_multirun_dir(path: Path) -> bool:
    """A folder Hydra's multirun wrote (it holds `multirun.yaml`)."""
    return (path / "multirun.yaml").is_file()


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders (each has a `.hydra/`), in job-number order."""

    def order(job: Path) -> tuple[int, str]:
        number = job.name.split("_", 1)[0]
        return (int(number) if number.isdigit() else 1 << 30, job.name)

    return sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=order)


def _job_overrides(job: Path) -> str:
    try:
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
    except Exception:  # missing or unparsable: the row just has no overrides column
        return ""
    return " ".join(str(o) for o in overrides) if isinstance(overrides, ListConfig) else ""


def _job_model(job: Path) -> str | None:
    """The registry name of the job's model, from its saved config (for jobs that wrote no summary)."""
    try:
        return model_name(OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml").model))
    except Exception:  # missing, unparsable or unknown: the row says n/a
        return None


def _job_summary(job: Path) -> dict[str, Any] | None:
    """The job's summary.json, or None when it is missing or unreadable (the job did not finish)."""
    try:
        return json.loads((job / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _job_checkpoint(job: Path, summary: dict[str, Any]) -> Path | None:
    """The summary's best checkpoint, or the job's own `checkpoints/*-best.ckpt` if the folder was moved."""
    named = summary.get("best_checkpoint")
    if named and Path(named).is_file():
        return Path(named)
    found = sorted((job / "checkpoints").glob("*-best.ckpt"))
    return found[-1] if found else None


def evaluate_job(job: Path, options: EvalOptions = EvalOptions()) -> dict[str, Any]:
    """One comparison row; a job that did not finish or whose checkpoint is unusable is a `failed` row."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(job=job.name, overrides=_job_overrides(job), model=_job_model(job), status="ok")
    summary = _job_summary(job)
    if summary is None:
        reason = f"no readable summary.json (training did not finish; see {job.name}/train.log)"
        return {**row, "status": f"failed: {reason}"}
    if summary.get("status") == "failed":  # train.py's own record of a job that failed in a multirun
        return {**row, "status": f"failed: {summary.get('error', 'see train.log')}"}
    row.update(
        {k: summary.get(k, row.get(k)) for k in ("model", "parameters", "test_acc_extra", "fit_seconds", "epochs")}
    )
    ckpt = _job_checkpoint(job, summary)
    if ckpt is None:
        return {**row, "status": "failed: no best checkpoint (was checkpointing off, e.g. fast_dev_run?)"}
    try:
        metrics = evaluate_checkpoint(ckpt, options=options)
    except CheckpointError as e:
        return {**row, "status": f"failed: {e}"}
    calibration = metrics["calibration"]["test"]
    return {
        **row,
        "model": metrics["model"],
        "parameters": metrics["parameters"],
        "test_acc": metrics["accuracy"],
        "macro_f1": metrics["macro"]["f1"],
        "ece": calibration["before"]["ece"],
        "ece_scaled": calibration["after"]["ece"],
    }


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if column == "parameters":
        return f"{value:,}"
    if column in ("test_acc", "test_acc_extra", "macro_f1", "ece", "ece_scaled"):
        return f"{value:.4f}"
    if column == "fit_seconds":
        return f"{value:.1f}"
    return str(value).replace("|", "\\|")


def comparison_markdown(sweep_dir: Path, rows: list[dict[str, Any]]) -> str:
    """The table; its overrides column keeps only what differs between jobs (the rest is listed once below)."""
    per_job = [row["overrides"].split() for row in rows]
    shared = [o for o in per_job[0] if all(o in job for job in per_job)] if per_job else []
    # users' digits (data.extra) are scored only in sweeps that train on them
    shown = [k for k, c in enumerate(COLUMNS) if c != "test_acc_extra" or any(row[c] is not None for row in rows)]
    lines = [
        f"# Sweep comparison: {sweep_dir}",
        "",
        "| " + " | ".join(_HEADERS[k] for k in shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    for row, overrides in zip(rows, per_job):
        varying = " ".join(o for o in overrides if o not in shared)
        cells = (_cell(COLUMNS[k], varying if COLUMNS[k] == "overrides" else row[COLUMNS[k]]) for k in shown)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if shared:
        lines.append(f"Overrides shared by every job: `{' '.join(shared)}`")
    done = [row for row in rows if row["test_acc"] is not None]
    if done:
        best = max(done, key=lambda row: row["test_acc"])
        lines.append(f"Best: {best['job']} ({best['model']}), test accuracy {best['test_acc']:.4f}.")
    failed = len(rows) - len(done)
    lines.append(f"{len(done)} of {len(rows)} jobs evaluated" + (f", {failed} failed." if failed else "."))
    return "\n".join(lines) + "\n"


def compare_sweep(
    sweep_dir: str | Path, output_dir: str | Path | None = None, options: EvalOptions = EvalOptions()
) -> list[dict[str, Any]]:
    """Evaluate every job's best checkpoint (reports in each `<job>/eval/`) and write `comparison.md`,
    `comparison.csv` and `comparison.png` into `output_dir` (default: the sweep folder)."""
    sweep_dir = Path(sweep_dir).expanduser().absolute()
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir={sweep_dir}: no such folder.")
    jobs = sweep_jobs(sweep_dir)
    if not jobs:
        raise ConfigError(
            f"sweep_dir={sweep_dir}: no job folders (with .hydra/ inside) in it; give the folder of a "
            "`python train.py -m ...` run, e.g. outputs/multirun/<date>/<time>."
        )
    rows = [evaluate_job(job, options) for job in jobs]
    out = Path(output_dir).expanduser().absolute() if output_dir else sweep_dir

    def write(folder: Path) -> None:
        (folder / "comparison.md").write_text(comparison_markdown(sweep_dir, rows))
        with (folder / "comparison.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        errors = [None if row["test_acc"] is None else 100 * (1 - row["test_acc"]) for row in rows]
        save_figure(
            comparison_figure(
                sweep_dir.name, [row["job"] for row in rows], errors, [row["fit_seconds"] for row in rows]
            ),
            folder / "comparison.png",
        )

    publish(out, write)
    log.info(
        "%s\nComparison written to %s (comparison.md, comparison.csv, comparison.png).",
        comparison_markdown(sweep_dir, rows).rstrip(),
        out,
    )
    return rows


def sweep_checkpoints(sweep_dir: str | Path) -> list[Path]:
    """The best checkpoint of every job of a sweep that finished; the others are named in a warning."""
    sweep_dir = Path(sweep_dir).expanduser().absolute()
    found, missing = [], []
    for job in sweep_jobs(sweep_dir) if sweep_dir.is_dir() else []:
        ckpt = _job_checkpoint(job, _job_summary(job) or {})
        (found if ckpt else missing).append(ckpt or job.name)
    if missing:
        log.warning("Left out of the ensemble (no best checkpoint): %s.", ", ".join(map(str, missing)))
    if not found:
        raise ConfigError(
            f"sweep_dir={sweep_dir}: no job with a best checkpoint to make an ensemble of; give the "
            "folder of a finished `python train.py -m ...` run."
        )
    return found
