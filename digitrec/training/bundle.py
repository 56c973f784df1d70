"""The bundled model, made from scratch: `python -m digitrec.training.bundle [--seeds 42 1 2] [--run RUN ...]`.

Trains `experiment=robust_best` once per seed (train.py), evaluates each run with `robustness=true`
(evaluate.py), keeps the run with the best validation accuracy (never chosen on the test set),
stores its network as float16 weights, measures those weights on the 10,000 MNIST test digits, and
writes them with their model card into `digitrec/inference/pretrained/`. `--run` uses finished
runs instead of training new ones.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from digitrec.bench.machine import cpu_model
from digitrec.data.mnist import REPO_ROOT, default_data_dir, load_split, raw_dir
from digitrec.errors import ConfigError, exit_on_user_error
from digitrec.evaluation.metrics import accuracy, predict_logits
from digitrec.inference.checkpoints import card_file, find_newest_checkpoint, load_network, save_weights
from digitrec.inference.pretrained import BUNDLED_NAME, PRETRAINED_DIR, sha256_file
from digitrec.training.run import source_commit

RECIPE = "robust_best"


def train(seed: int, runs_dir: Path) -> Path:
    run = runs_dir / f"{RECIPE}_seed{seed}"
    _run([sys.executable, str(REPO_ROOT / "train.py"), f"experiment={RECIPE}", f"seed={seed}", f"hydra.run.dir={run}"])
    return run


def evaluated(run: Path) -> dict[str, Any]:
    """The run's evaluation report with robustness (evaluate.py writes it, unless it already has)."""
    metrics = run / "eval" / "metrics.json"
    if not (run / "eval" / "robustness.json").is_file():
        _run(
            [
                sys.executable,
                str(REPO_ROOT / "evaluate.py"),
                f"ckpt_path={find_newest_checkpoint(run)}",
                "robustness=true",
            ]
        )
    return json.loads(metrics.read_text())


def _run(command: list[str]) -> None:
    print("$", " ".join(command), file=sys.stderr, flush=True)
    if subprocess.run(command, cwd=REPO_ROOT).returncode != 0:
        raise ConfigError(f"{' '.join(command[1:3])} failed; see its output above.")


def weights_accuracy(weights: Path) -> float:
    """Accuracy of the stored (float16) weights on the 10,000 MNIST test digits, computed in float32."""
    test = load_split(raw_dir(default_data_dir()), train=False)
    net = load_network(weights).net
    return accuracy(predict_logits(net, test.images, 256, torch.device("cpu")), test.labels)


def card(run: Path, report: dict[str, Any], candidates: dict[str, float], weights: Path) -> dict[str, Any]:
    summary = json.loads((run / "summary.json").read_text())
    overrides = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
    recipe = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    seed = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("seed=")), None)
    robust = report["robustness"]
    return {
        "recipe": recipe,
        "command": "python train.py " + " ".join(o for o in overrides if not o.startswith("hydra.")),
        "seed": seed,
        "selection": "the best validation accuracy among the runs below (held-out training digits, not the test set)",
        "candidates": candidates,
        "commit": summary.get("commit"),  # the code that trained it
        "bundled_at_commit": source_commit(),
        "cpu": cpu_model(),
        "trained_precision": summary.get("precision"),
        "model": report["model"],
        "parameters": report["parameters"],
        "mnist_test_accuracy": report["accuracy"],
        "robustness": {"mean": robust["mean"], "held_out_mean": robust.get("held_out_mean"), "worst": robust["worst"]},
        "temperature": report["temperature"],
        "checkpoint": weights.name,
        "dtype": "float16",
        "weights_mnist_test_accuracy": weights_accuracy(weights),
        "sha256": sha256_file(weights),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "regenerate": "python -m digitrec.training.bundle (make bundle)",
    }


def bundle(runs: Sequence[Path], out_dir: Path = PRETRAINED_DIR) -> Path:
    """Write the best of `runs` (by validation accuracy) as the bundled weights and card; returns the weights."""
    reports = {run: evaluated(run) for run in runs}
    candidates = {str(run): report["validation_accuracy"] for run, report in reports.items()}
    best = max(runs, key=lambda run: reports[run]["validation_accuracy"])
    content = torch.load(find_newest_checkpoint(best), map_location="cpu", weights_only=True)
    state = {k.removeprefix("net."): v for k, v in content["state_dict"].items() if k.startswith("net.")}
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{BUNDLED_NAME}.pt"
    save_weights(weights, content["hyper_parameters"]["net"], state)
    description = card(best, reports[best], candidates, weights)
    target = card_file(weights)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(description, indent=2) + "\n")
    os.replace(tmp, target)
    return weights


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digitrec.training.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2], help="seeds to train (default 42 1 2)")
    parser.add_argument("--run", type=Path, action="append", help="a finished run folder to use instead of training")
    parser.add_argument("--runs-dir", type=Path, default=REPO_ROOT / "outputs" / "bundle", help="where new runs go")
    parser.add_argument("--out", type=Path, default=PRETRAINED_DIR, help="where the weights and card go")
    args = parser.parse_args(argv)
    runs = args.run or [train(seed, args.runs_dir) for seed in args.seeds]
    weights = bundle(runs, args.out)
    print(json.dumps(json.loads(card_file(weights).read_text()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
