"""Evaluate a checkpoint, an ensemble or a whole sweep: `python evaluate.py [ckpt_path=...|sweep_dir=...]` (see conf/eval.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from digitrec.errors import exit_on_user_error

log = logging.getLogger("evaluate")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    # Lightning, torchmetrics and matplotlib take seconds to import: only now, so that --help answers at once
    from digitrec.evaluation.report import EvalOptions, evaluate_checkpoint
    from digitrec.evaluation.sweep import compare_sweep, is_multirun_dir, sweep_checkpoints
    from digitrec.inference.checkpoints import find_newest_checkpoint

    options = EvalOptions.from_config(cfg)
    if isinstance(cfg.ckpt_path, ListConfig):  # an ensemble: ckpt_path=[a.ckpt,b.ckpt,c.ckpt]
        evaluate_checkpoint([Path(p) for p in cfg.ckpt_path], cfg.output_dir, options)
        return
    target = Path(cfg.sweep_dir or cfg.ckpt_path or cfg.search_dir).expanduser()
    if cfg.sweep_dir or is_multirun_dir(target):
        if cfg.ensemble:
            out = cfg.output_dir or target / "ensemble"
            evaluate_checkpoint(sweep_checkpoints(target), out, options)
        else:
            compare_sweep(target, cfg.output_dir, options)
        return
    if cfg.ckpt_path is None or target.is_dir():
        target = find_newest_checkpoint(target).absolute()
        log.info("Evaluating the newest best checkpoint under %s: %s", cfg.ckpt_path or cfg.search_dir, target)
    evaluate_checkpoint(target, cfg.output_dir, options)


if __name__ == "__main__":
    main()
