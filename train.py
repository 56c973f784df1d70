"""Train a digit classifier: `python train.py model=deep_cnn trainer.max_epochs=10` (see conf/train.yaml)."""

from __future__ import annotations

import logging
import time

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from digitrec.errors import exit_on_user_error
from digitrec.module import DigitClassifier
from digitrec.trainer import build_trainer, check_resume_path, report_run

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = DigitClassifier(net=cfg.model, optimizer=cfg.optimizer, scheduler=cfg.scheduler,
                             label_smoothing=cfg.label_smoothing, channels_last=cfg.channels_last)
    trainer = build_trainer(cfg)
    log.info("Model %s: %s parameters", module.model_name, f"{module.num_parameters:,}")

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=check_resume_path(cfg.ckpt_path), weights_only=True)
    fit_seconds = time.perf_counter() - start

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    test = {}
    if cfg.test:
        test = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)[0]
    summary = report_run(cfg, trainer, module, fit_seconds, test)
    return summary["best_val_acc"]


if __name__ == "__main__":
    main()
