"""Train a digit classifier: `python train.py model=deep_cnn trainer.max_epochs=10` (see conf/train.yaml)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from digitrec.errors import exit_on_user_error
from digitrec.training.config import check_command_line, check_config
from digitrec.training.multirun import keep_sweep_going

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
@keep_sweep_going
def main(cfg: DictConfig) -> float:
    check_config(cfg)
    from digitrec.training.finetune import follow_network, load_initial_network, load_weights

    initial = load_initial_network(cfg.init_from, cfg.ckpt_path) if cfg.init_from else None
    if initial is not None:
        follow_network(cfg, initial)  # the network of the weights, whatever the model group says
    # Lightning takes seconds to import: only now, so that --help and a bad option answer at once
    import lightning as L

    from digitrec.training.module import DigitClassifier
    from digitrec.training.run import explain_interrupts, merge_results, report_run, resolve_resume_path
    from digitrec.training.trainer import build_trainer, lightning_config_errors

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.module)
    trainer = build_trainer(cfg)
    resume_from = resolve_resume_path(cfg.ckpt_path, module.model_name)
    log.info("Model %s: %s parameters", module.model_name, f"{module.num_parameters:,}")
    before = {}
    if initial is not None:
        load_weights(module.net, initial)
        log.info("Starting from the weights of %s, with a new optimizer and schedule.", cfg.init_from)
        if cfg.test:  # the scores to beat: the initial weights on the test sets
            with lightning_config_errors():
                before = merge_results(trainer.test(module, datamodule=datamodule))

    start = time.perf_counter()
    with explain_interrupts(trainer), lightning_config_errors():
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    fit_seconds = time.perf_counter() - start
    last_val_acc = trainer.callback_metrics.get("val/acc")  # before testing replaces the metrics

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    test = {}
    if cfg.test:  # the weights a user gets from the best checkpoint (EMA weights when averaging is on)
        tested = DigitClassifier.load_from_checkpoint(best, weights_only=True) if best else module
        with lightning_config_errors():
            test = merge_results(trainer.test(tested, datamodule=datamodule))
    summary = report_run(cfg, trainer, module, fit_seconds, test, last_val_acc, before)
    return summary["best_val_acc"] if summary["best_val_acc"] is not None else float("nan")


if __name__ == "__main__":
    exit_on_user_error(check_command_line)(Path(__file__).parent / "conf", "train", sys.argv[1:])
    main()
