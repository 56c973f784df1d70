"""What a benchmark run works on: how much it measures (`Plan`), the data, the training config and
the module, built as train.py builds them."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig

from digitrec.data.datamodule import MNISTDataModule
from digitrec.data.mnist import REPO_ROOT
from digitrec.errors import ConfigError, DataError
from digitrec.training.module import DigitClassifier

MATMUL_SIZE = 2048


@dataclass(frozen=True)
class Plan:
    """How much to measure: warm-up and measured steps, repeats for each median."""

    warmup_steps: int
    measured_steps: int
    segment: int  # steps per timed segment; rates are medians over segments
    val_batches: int = 0  # validation batches per fit, the first one a warm-up
    eval_repeats: int = 0  # 0: that measurement is not made
    matmul_repeats: int = 0
    augment_batches: int = 0
    per_sample_batches: int = 0
    rounds: int = 1  # Trainer.fit and the plain loop alternate this many times; medians are reported


# A table: one plan per pair of lines reads better than one argument per line.
# fmt: off
FULL = Plan(warmup_steps=5, measured_steps=50, segment=5, val_batches=4, eval_repeats=7,
            matmul_repeats=10, augment_batches=30, per_sample_batches=8, rounds=3)
QUICK = Plan(warmup_steps=2, measured_steps=6, segment=2, val_batches=2, eval_repeats=3,
             matmul_repeats=3, augment_batches=8, per_sample_batches=2)
# fmt: on


# ---- data ------------------------------------------------------------------------------------


def _write_idx(path: Path, tensor: torch.Tensor) -> None:
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in tensor.shape)
    path.write_bytes(header + tensor.numpy().tobytes())


def write_random_mnist(folder: Path) -> Path:
    """Random uint8 images and labels with MNIST's shapes, as IDX files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", torch.randint(0, 10, (n,), dtype=torch.uint8))
    return folder


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_data(tmp: Path) -> tuple[MNISTDataModule, str]:
    """The real MNIST when it is on disk (never downloaded here), else random data of the same shapes."""
    datamodule = MNISTDataModule(download=False)
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
        return datamodule, f"real MNIST from {datamodule.raw_dir}"
    except DataError:
        missing_in = datamodule.raw_dir
    datamodule = MNISTDataModule(data_dir=str(write_random_mnist(tmp / "random")), download=False)
    with quiet_logger("digitrec.data.mnist"):  # it warns that the files are not the canonical ones
        datamodule.setup("fit")
    return datamodule, f"RANDOM uint8 data with MNIST's shapes (no MNIST in {missing_in}; set DIGITREC_DATA_DIR)"


# ---- configuration and module -------------------------------------------------------------------


def compose_config(model: str, plan: Plan, root: Path, extra: Sequence[str] = ()) -> DictConfig:
    """The training config train.py would use, with logging, checkpoints and progress bar off.

    `extra` overrides (`key=value`) replace the benchmark's own for the same key.
    """
    conf_dir = REPO_ROOT / "conf"
    if not conf_dir.is_dir():
        raise ConfigError(f"No Hydra configs in {conf_dir}: run the benchmark from a clone of the repository.")
    settings = {
        "model": model,
        "~callbacks": None,
        "~logger": None,
        "trainer.accelerator": "cpu",
        "trainer.devices": 1,
        "trainer.precision": "32-true",
        "trainer.max_epochs": 1,
        "trainer.limit_train_batches": plan.warmup_steps + plan.measured_steps,
        "trainer.limit_val_batches": plan.val_batches,
        "trainer.num_sanity_val_steps": 0,
        "trainer.enable_checkpointing": "false",
        "trainer.enable_progress_bar": "false",
        "trainer.enable_model_summary": "false",
        "trainer.default_root_dir": root,
    }
    settings |= dict(override.split("=", 1) for override in extra)
    overrides = [key if value is None else f"{key}={value}" for key, value in settings.items()]
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir), job_name="bench"):
            return compose("train", overrides=overrides)
    except ConfigCompositionException as e:
        raise ConfigError(f"Cannot compose the training config for model {model!r} from {conf_dir}: {e}") from None


def build_module(cfg: DictConfig) -> DigitClassifier:
    return instantiate(cfg.module)


def silence_lightning() -> None:
    """Lightning's start-up notes and data-loader hints are not results; keep the output to the table."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\.")
    warnings.filterwarnings("ignore", message=r".*(does not have many workers|smaller than the logging interval).*")
