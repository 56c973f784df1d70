import itertools
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import REPO, run_train
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from digitrec.errors import ConfigError
from digitrec.training.callbacks import EMA
from digitrec.training.module import DigitClassifier
from digitrec.training.precision import choose_precision, cpu_has_bf16
from digitrec.training.trainer import build_trainer

CONF = REPO / "conf"


def groups(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml"))


def compose_train(overrides: list[str], tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"hydra.run.dir={tmp_path}"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)  # set by @hydra.main in a real run
    HydraConfig.instance().set_config(cfg)  # lets ${hydra:...} interpolations resolve
    return cfg


@pytest.mark.parametrize(
    "model, optimizer, scheduler",
    list(itertools.product(groups("model"), groups("optimizer"), groups("scheduler"))),
)
def test_every_combination_composes_and_builds(model, optimizer, scheduler, tmp_path: Path) -> None:
    cfg = compose_train([f"model={model}", f"optimizer={optimizer}", f"scheduler={scheduler}"], tmp_path)
    assert cfg.hydra.runtime.choices.model == model
    module = instantiate(cfg.module)
    assert module.model_name == model
    module.trainer = SimpleNamespace(estimated_stepping_batches=50)
    opt_cfg = module.configure_optimizers()
    scheduler_obj = opt_cfg["lr_scheduler"]["scheduler"]
    assert opt_cfg["lr_scheduler"]["interval"] == "step"
    assert type(opt_cfg["optimizer"]).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]
    assert getattr(scheduler_obj, "total_steps", getattr(scheduler_obj, "T_max", None)) == 50
    assert opt_cfg["optimizer"].defaults["fused"] is True  # one kernel per step where the optimizer has one


@pytest.mark.parametrize(
    "precision, optimizer_extra, fused",
    [
        ("32-true", {}, True),
        ("bf16-mixed", {}, None),  # Lightning's AMP plugin will not clip a fused optimizer's gradients
        ("16-mixed", {}, None),
        ("32-true", {"foreach": True}, None),  # the config's own choice wins
        ("32-true", {"fused": False}, False),
    ],
)
def test_optimizer_is_fused_unless_fp16_scaling_or_configured(precision, optimizer_extra, fused) -> None:
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, **optimizer_extra}
    module = DigitClassifier(net="mlp", optimizer=optimizer, scheduler=None)
    module.trainer = SimpleNamespace(estimated_stepping_batches=10, precision=precision)
    assert module.configure_optimizers()["optimizer"].defaults["fused"] is fused


@pytest.mark.parametrize("group", ["trainer", "callbacks", "logger", "debug", "data"])
def test_every_option_of_other_groups_composes(group: str, tmp_path: Path) -> None:
    for option in groups(group):
        cfg = compose_train([f"{group}={option}"], tmp_path)
        assert cfg.trainer is not None


def test_callbacks_and_loggers_instantiate(tmp_path: Path) -> None:
    cfg = compose_train(["logger=csv"], tmp_path)
    callbacks = {k: instantiate(v) for k, v in cfg.callbacks.items()}
    assert callbacks["model_checkpoint"].monitor == "val/acc"
    assert callbacks["model_checkpoint"].filename == "cnn-best"
    assert callbacks["early_stopping"].patience == 7
    assert [type(instantiate(v)).__name__ for v in cfg.logger.values()] == ["CSVLogger"]


def test_the_arguments_users_override_need_no_plus(tmp_path: Path) -> None:
    """Listed in their files, so that a plain override works: no `+`, no recipe needed first."""
    cfg = compose_train(
        [
            "data.corruption_p=0.3",
            "model.channels=[64,128]",
            "module.label_smoothing=0.1",
            "trainer.max_steps=10",
            "optimizer.weight_decay=0",
        ],
        tmp_path,
    )
    assert cfg.data.corruption_p == 0.3 and list(cfg.model.channels) == [64, 128]
    module = instantiate(cfg.module)
    assert module.hparams.label_smoothing == 0.1 and module.hparams.net["channels"] == [64, 128]


@pytest.mark.parametrize("bf16_units", [False, True])
def test_precision_choice(bf16_units: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("digitrec.training.precision.cpu_has_bf16", lambda: bf16_units)
    cpu = "bf16-mixed" if bf16_units else "32-true"
    assert choose_precision("auto", "cpu")[0] == cpu
    assert choose_precision("16-mixed", "cpu")[0] == cpu  # never Lightning's silent bf16 on a CPU without bf16 units
    assert choose_precision("bf16-mixed", "cpu")[0] == "bf16-mixed"  # asked for explicitly
    assert choose_precision("32-true", "cpu")[0] == "32-true"
    assert choose_precision("auto", "gpu")[0] == "16-mixed"
    assert choose_precision(None, "cuda")[0] == "16-mixed"
    assert choose_precision("32-true", "gpu")[0] == "32-true"


def test_bf16_units_are_read_from_cpu_flags() -> None:
    base = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f"
    assert not cpu_has_bf16(base + " avx512bw\n")
    assert cpu_has_bf16(base + " avx512_bf16 avx512bw\n")  # Zen 4, Cooper Lake
    assert cpu_has_bf16(base + " amx_bf16 amx_tile\n")  # Sapphire Rapids and later
    assert not cpu_has_bf16("processor\t: 0\nFeatures\t: fp asimd\n")  # no x86 flags line: not measured
    assert isinstance(cpu_has_bf16(), bool)  # this machine's /proc/cpuinfo, or False without one


BAD_VALUES = {  # a config option per bad value, so one sweep tries them all in one process
    "lr": ("optimizer:\n  lr: -0.1", "ConfigError: optimizer.lr must be a positive number"),
    "batch_size": ("data:\n  batch_size: 0", "ConfigError: data.batch_size must be a positive integer"),
    "val_fraction": ("data:\n  val_fraction: 1.5", r"ConfigError: data.val_fraction must be a number in \(0, 1\)"),
    "max_epochs": ("trainer:\n  max_epochs: abc", "ConfigError: trainer.max_epochs must be an integer or null"),
    "dropout": ("model:\n  dropout: 1.5", "ConfigError: Bad arguments for model 'cnn': dropout probability"),
    "ckpt_path": ("ckpt_path: /nonexistent/last.ckpt", "ConfigError: ckpt_path=/nonexistent/last.ckpt: no such"),
}


def test_bad_values_fail_before_any_data_is_read(tmp_path: Path) -> None:
    # No data where the runs look, and no download: an error about data would mean the data came first.
    options = tmp_path / "conf" / "bad"
    options.mkdir(parents=True)
    for name, (yaml, _) in BAD_VALUES.items():
        (options / f"{name}.yaml").write_text(f"# @package _global_\n{yaml}\n")
    run_train(
        "-m",
        f"--config-dir={tmp_path / 'conf'}",
        f"+bad={','.join(BAD_VALUES)}",
        "trainer.fast_dev_run=true",
        f"data.data_dir={tmp_path / 'no-data'}",
        "+data.download=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    for job, (name, (_, message)) in enumerate(BAD_VALUES.items()):
        summary = json.loads((tmp_path / "sweep" / f"{job}_cnn" / "summary.json").read_text())
        assert summary["status"] == "failed" and re.match(message, summary["error"]), (name, summary)


def test_a_bad_value_is_one_error_line_before_training(tmp_path: Path) -> None:
    proc = run_train(
        "optimizer._target_=torch.optim.NoSuchOptimizer",
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.data_dir={tmp_path / 'no-data'}",
        "+data.download=false",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    error_lines = [line for line in output.splitlines() if "ERROR" in line or line.startswith("error:")]
    assert len(error_lines) == 1, output[-2000:]
    assert "optimizer._target_='torch.optim.NoSuchOptimizer' cannot be imported" in error_lines[0]
    assert "[train][ERROR]" in error_lines[0]  # the entry point's one logger, as its other lines
    assert "Epoch 0" not in output


@pytest.mark.parametrize(
    "optimizer, scheduler, message",
    [
        ({"lrr": 0.1}, None, "Cannot build optimizer"),  # an argument the optimizer does not take
        ({"betas": "abc"}, None, "Cannot build optimizer"),
        (
            {},
            {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "eta_minn": 0},
            "Cannot build scheduler",
        ),
        ({}, {"_target_": "torch.optim.lr_scheduler.NoSuchLR", "_partial_": True}, "Cannot build scheduler"),
    ],
)
def test_optimizer_and_scheduler_are_checked_when_the_module_is_built(optimizer, scheduler, message) -> None:
    """train.py builds the module before any data is read, so these errors come first."""
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, **optimizer}
    with pytest.raises(ConfigError, match=message):
        DigitClassifier(net="mlp", optimizer=optimizer, scheduler=scheduler)


def test_gpu_ddp_recipe_on_cpus_drops_syncbatchnorm_or_points_at_ddp_cpu(tmp_path: Path) -> None:
    from lightning.pytorch.strategies import DDPStrategy

    trainer = build_trainer(compose_train(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"], tmp_path))
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
    assert trainer.strategy._layer_sync is None  # no SyncBatchNorm: it refuses CPU modules
    with pytest.raises(ConfigError, match=r"devices=-1 means every GPU.*trainer=ddp_cpu"):
        build_trainer(compose_train(["trainer=ddp", "trainer.accelerator=cpu"], tmp_path))


def test_a_mistyped_key_on_the_command_line_names_the_key_meant(tmp_path: Path) -> None:
    proc = run_train("trainer.max_epoch=3", f"hydra.run.dir={tmp_path}", check=False, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: trainer.max_epoch is not a key of the configuration; did you mean "
        "trainer.max_epochs? (To add a new key: +trainer.max_epoch=...)"
    )


def test_unknown_optimizer_group_lists_the_options(tmp_path: Path) -> None:
    proc = run_train("optimizer=adamax", f"hydra.run.dir={tmp_path}", check=False, timeout=60)
    assert proc.returncode == 1
    assert "Could not find 'optimizer/adamax'" in proc.stderr and "sgd" in proc.stderr


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        DigitClassifier(optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0})
    with pytest.raises(ConfigError, match="label_smoothing"):
        DigitClassifier(label_smoothing=1.5)


@pytest.mark.parametrize("experiment", groups("experiment"))
def test_every_experiment_composes_and_its_callbacks_build(experiment: str, tmp_path: Path) -> None:
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    callbacks = {k: instantiate(v) for k, v in cfg.callbacks.items() if v is not None}
    if experiment.endswith("_best"):
        assert isinstance(callbacks["ema"], EMA) and "early_stopping" not in callbacks


class _Line(L.LightningModule):
    """One linear layer trained by plain SGD: its weights after every step are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.history: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.history.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _ema_trainer(decay: float | None, tmp_path: Path) -> L.Trainer:
    """A bare Trainer for one epoch with only the EMA callback."""
    return L.Trainer(
        max_epochs=1,
        callbacks=[EMA(decay=decay)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_ema_warms_up_then_decays_at_the_configured_rate(tmp_path: Path) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 3)), batch_size=2)
    module, decay = _Line(), 0.6
    trainer = _ema_trainer(decay, tmp_path)
    trainer.fit(module, data)
    expected = module.history[0]  # the first update copies the weights
    for n, weights in enumerate(module.history[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))  # warm-up for the first updates, then the fixed decay
        expected = d * expected + (1 - d) * weights
    n = len(module.history) - 1
    assert (1 + n) / (10 + n) > decay  # the run is long enough to reach the fixed decay
    torch.testing.assert_close(module.layer.weight, expected)  # Lightning copies the average in at the end
    assert not torch.allclose(module.layer.weight, module.history[-1])


def test_ema_warns_when_the_run_is_too_short_to_reach_its_decay(tmp_path: Path, caplog) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 3)), batch_size=2)
    for decay in (0.6, 0.9):  # 20 updates: (1+n)/(10+n) passes 0.6 at n = 13, 0.9 only at n = 80
        trainer = _ema_trainer(decay, tmp_path)
        with caplog.at_level("WARNING", logger="digitrec.training.callbacks"):
            caplog.clear()
            trainer.fit(_Line(), data)
        warnings = [r.getMessage() for r in caplog.records if "EMA decay" in r.getMessage()]
        if decay == 0.6:
            assert warnings == []
        else:
            assert len(warnings) == 1
            assert "reached after 80 updates, but this run makes 20" in warnings[0]
            # 20 / 29: the decay of the last update
            assert "ends at 0.6897: any callbacks.ema.decay above that" in warnings[0]


def test_ema_without_a_cap_follows_the_warm_up_and_never_warns(tmp_path: Path, caplog) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 3)), batch_size=2)
    module = _Line()
    trainer = _ema_trainer(None, tmp_path)
    with caplog.at_level("WARNING", logger="digitrec.training.callbacks"):
        trainer.fit(module, data)
    assert not [r for r in caplog.records if "EMA decay" in r.getMessage()]
    expected = module.history[0]
    for n, weights in enumerate(module.history[1:], start=1):
        d = (1 + n) / (10 + n)
        expected = d * expected + (1 - d) * weights
    torch.testing.assert_close(module.layer.weight, expected)


@pytest.mark.parametrize("experiment", groups("experiment"))
def test_recipes_run_without_an_ema_warning(experiment: str, tmp_path: Path) -> None:
    """A recipe's own EMA decay is one its run reaches (or none): the warning is for what users change."""
    from digitrec.training.callbacks import _warmup_decay

    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    if cfg.callbacks.get("ema") is None:
        assert experiment == "speedrun"  # the only recipe without weight averaging
        return
    decay = cfg.callbacks.ema.get("decay", 0.999)
    steps_per_epoch = math.ceil(round(60_000 * (1 - cfg.data.val_fraction)) / cfg.data.batch_size)
    assert decay is None or _warmup_decay(cfg.trainer.max_epochs * steps_per_epoch - 1) >= decay


def test_ema_rejects_a_decay_outside_0_1() -> None:
    with pytest.raises(ConfigError, match=r"EMA decay must be a number in \(0, 1\)"):
        EMA(decay=1.0)


def test_each_entry_point_has_its_own_help() -> None:
    import subprocess
    import sys

    train = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert train.startswith("python train.py [group=option ...]") and "powered by Hydra" not in train
    assert "trainer.max_epochs=N" in train and "python train.py -m model=mlp,cnn,deep_cnn" in train
    assert re.search(r"^model: cnn, deep_cnn, mlp, resnet, speednet$", train, re.M)  # the groups, from conf/
    evaluate = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert evaluate.startswith("python evaluate.py [key=value ...]") and "ckpt_path=PATH" in evaluate
    assert "model:" not in evaluate and "experiment" not in evaluate  # not train's groups


def test_fast_dev_run_saves_no_checkpoint(tmp_path: Path) -> None:
    """Lightning suppresses checkpointing in fast_dev_run but would still write last.ckpt at the end."""
    trainer = build_trainer(compose_train(["trainer.fast_dev_run=true"], tmp_path))
    assert trainer.checkpoint_callback is None
    assert build_trainer(compose_train([], tmp_path)).checkpoint_callback is not None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.max_epochs=abc"], r"^trainer.max_epochs must be an integer or null, got 'abc'\.$"),
        (["model.dropout=abc"], r"^model.dropout must be a number, got 'abc'\.$"),
        (["data.augment=maybe"], r"^data.augment must be true or false, got 'maybe'\.$"),
        (["callbacks.early_stopping.patience=x"], r"^callbacks.early_stopping.patience must be an integer, got 'x'\.$"),
        (
            ["+trainer.max_epoch=3"],
            r"^trainer.max_epoch is not an argument of Trainer; did you mean trainer.max_epochs\?$",
        ),
        (["+optimizer.lrr=1"], r"^optimizer.lrr is not an argument of AdamW; did you mean optimizer.lr\?$"),
        (["+model.widht=3"], r"^model.widht is not an argument of CNN; it takes channels, hidden, dropout, "),
        (["scheduler=cosine", "+scheduler.eta_minn=0"], r"did you mean scheduler.eta_min\?"),
        (
            ["logger=csv", "+logger.csv.flush_logs_every_n_step=5"],
            r"did you mean logger.csv.flush_logs_every_n_steps\?",
        ),
        (["seed=abc"], r"^seed must be an integer, got 'abc'\.$"),
        (["module.label_smoothing=high"], r"^module.label_smoothing must be a number, got 'high'\.$"),
        (["test=maybe"], r"^test must be true or false, got 'maybe'\.$"),
        (["+seeed=1"], r"^seeed is not an argument of the training config \(conf/train.yaml\); did you mean seed\?$"),
    ],
)
def test_every_group_is_checked_against_its_class_signature(overrides, message, tmp_path: Path) -> None:
    from digitrec.training.config import check_config

    with pytest.raises(ConfigError, match=message):
        check_config(compose_train(overrides, tmp_path))


@pytest.mark.parametrize(
    "overrides",
    [[]]
    + [[f"experiment={e}"] for e in groups("experiment")]
    + [[f"trainer={t}"] for t in groups("trainer")]
    + [[f"debug={d}"] for d in groups("debug")]
    + [["optimizer=sgd", "scheduler=cosine", "logger=csv", "model=speednet"]],
)
def test_every_shipped_config_passes_the_check(overrides, tmp_path: Path) -> None:
    from digitrec.training.config import check_config

    check_config(compose_train(overrides, tmp_path))
