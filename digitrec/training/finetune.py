"""Starting a run from trained weights (`init_from`): the network of a checkpoint, a weights file or the
bundled model, trained on with a new optimizer and schedule (not a resume: `ckpt_path` is that)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from digitrec.errors import ConfigError
from digitrec.inference.checkpoints import TrainedNetwork, load_network
from digitrec.inference.pretrained import bundled_weights

log = logging.getLogger(__name__)

BUNDLED = "bundled"  # init_from=bundled: the model that ships with the package


def initial_weights_path(init_from: str, ckpt_path: str | None) -> Path:
    """The file `init_from` names; a `ConfigError` for a missing file or when resuming (`ckpt_path`) too."""
    if ckpt_path is not None:
        raise ConfigError(
            f"init_from={init_from} and ckpt_path={ckpt_path} exclude each other: ckpt_path resumes a run "
            "(its optimizer, schedule and epoch), init_from starts a new run from trained weights; give one."
        )
    if init_from == BUNDLED:
        return bundled_weights()
    path = Path(init_from).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"init_from={init_from}: no such file; give a .ckpt written by train.py "
            "(outputs/<run>/checkpoints/<model>-best.ckpt), a weights file, or init_from=bundled."
        )
    return path


def load_initial_network(init_from: str, ckpt_path: str | None = None) -> TrainedNetwork:
    """The network `init_from` names, loaded with `torch.load(weights_only=True)` (`load_network`)."""
    return load_network(initial_weights_path(init_from, ckpt_path))


def net_config(trained: TrainedNetwork) -> dict[str, Any]:
    """The registry config the weights were saved with: the run's network is built from it."""
    net = trained.hparams["net"]
    return {"name": net} if isinstance(net, str) else dict(net)


def follow_network(cfg: DictConfig, trained: TrainedNetwork) -> None:
    """Replace `cfg.model` by the network config saved with the weights, so that the shapes match."""
    with open_dict(cfg):
        cfg.model = net_config(trained)
    log.info("init_from=%s: the network is the one saved with the weights, %s.", cfg.init_from, net_config(trained))
    choice = HydraConfig.get().runtime.choices.get("model") if HydraConfig.initialized() else None
    if choice is not None and choice != trained.name:
        log.warning(
            "init_from=%s holds a %s, so the run trains a %s; its folder and checkpoint are still named after "
            "model=%s: give model=%s to name them after the network.",
            cfg.init_from,
            trained.name,
            trained.name,
            choice,
            trained.name,
        )


def load_weights(net: torch.nn.Module, trained: TrainedNetwork) -> None:
    """Copy the trained weights (and BatchNorm statistics) into `net`, which has the same architecture."""
    net.load_state_dict(trained.net.state_dict())
