"""Training on users' labelled digits (`data.extra`): loading stores and exports, the seeded split, the share
of each batch, the `_extra` metrics through train.py and evaluate.py, and starting from trained weights (`init_from`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_fake_mnist, once_per_session, run_train
from omegaconf import OmegaConf
from test_evaluation import run_evaluate
from test_train import summary

from digitrec.data import extra
from digitrec.data.datamodule import MNISTDataModule
from digitrec.data.extra import Digits, held_out_share, load_extra, split_extra
from digitrec.errors import ConfigError
from digitrec.feedback.export import export
from digitrec.feedback.store import FeedbackStore, Item

PIXELS = 28 * 28


def pixels_of(i: int) -> bytes:
    """Digit i's own 28×28 image, labelled i % 10: seeded noise with the fake MNIST's mark of its class
    (conftest.make_fake_mnist), so that users' digits are learnt too."""
    image = torch.randint(0, 60, (28, 28), generator=torch.Generator().manual_seed(1_000 + i), dtype=torch.uint8)
    label = i % 10
    r, c = 2 + 2 * (label // 5) * 5, 2 + (label % 5) * 5
    image[r : r + 8, c : c + 4] = 255
    return image.numpy().tobytes()


def add_digits(store: FeedbackStore, numbers: range) -> None:
    for i in numbers:
        probabilities = [0.1] * 10
        item = Item(f"image {i}".encode(), pixels_of(i), i % 10, i % 10, probabilities, "ab" * 32, "cnn")
        store.add(item)


def make_store(path: Path, n: int) -> Path:
    store = FeedbackStore(path)
    add_digits(store, range(n))
    store.close()
    return path


def random_digits(n: int, seed: int = 0) -> Digits:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return Digits(images, torch.randint(0, 10, (n,), generator=g))


def keys(digits: Digits) -> set[bytes]:
    return {row.numpy().tobytes() for row in digits.images.reshape(len(digits), -1)}


@pytest.fixture
def store_db(tmp_path: Path) -> Path:
    return make_store(tmp_path / "feedback.db", 60)


# loading


def test_a_store_its_url_and_its_export_give_the_same_digits(store_db: Path, tmp_path: Path) -> None:
    from_file = load_extra([str(store_db)])
    assert len(from_file) == 60 and from_file.images.dtype == torch.uint8
    assert from_file.images.shape == (60, 1, 28, 28) and from_file.labels.tolist() == [i % 10 for i in range(60)]
    assert from_file.images[7].numpy().tobytes() == pixels_of(7)
    store = FeedbackStore(store_db)
    export(store, tmp_path / "export")
    store.close()
    for source in (f"sqlite:///{store_db}", str(tmp_path / "export")):
        digits = load_extra([source])
        assert torch.equal(digits.images, from_file.images) and torch.equal(digits.labels, from_file.labels)
    both = load_extra([str(store_db), str(tmp_path / "export")])  # the same digits twice count once
    assert torch.equal(both.images, from_file.images)


def test_the_export_file_names_are_the_exporters() -> None:
    from digitrec.feedback import export as exporter

    assert (extra.IMAGES, extra.LABELS) == (exporter.IMAGES, exporter.LABELS)


# the split


def test_the_split_is_seeded_disjoint_and_complete() -> None:
    digits = random_digits(2_000)
    split = split_extra(digits, holdout=0.2, seed=42)
    parts = [keys(split.train), keys(split.val), keys(split.test)]
    assert sum(map(len, parts)) == len(digits) and set().union(*parts) == keys(digits)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert 0.08 < len(split.val) / len(digits) < 0.12 and 0.08 < len(split.test) / len(digits) < 0.12
    again = split_extra(digits, holdout=0.2, seed=42)
    assert torch.equal(again.test.images, split.test.images) and torch.equal(again.test.labels, split.test.labels)
    other = split_extra(digits, holdout=0.2, seed=7)
    assert keys(other.test) != parts[2]


def test_a_digit_keeps_its_part_as_the_store_grows(tmp_path: Path) -> None:
    db = make_store(tmp_path / "feedback.db", 60)
    before = split_extra(load_extra([str(db)]), 0.2, 42)
    store = FeedbackStore(db)
    add_digits(store, range(60, 120))
    store.close()
    after = split_extra(load_extra([str(db)]), 0.2, 42)
    for part in ("train", "val", "test"):
        assert keys(getattr(before, part)) <= keys(getattr(after, part)), part
    assert len(after.train) > len(before.train)


def test_the_share_is_the_seeded_hash_of_the_pixels() -> None:
    import hashlib

    pixels = pixels_of(3)
    digest = hashlib.sha256((42).to_bytes(8, "big", signed=True) + pixels).digest()
    assert held_out_share(pixels, 42) == int.from_bytes(digest[:8], "big") / 2**64
    assert held_out_share(pixels, 42) != held_out_share(pixels, 43)


# batches


def test_every_training_batch_carries_the_set_share_of_users_digits(store_db: Path, tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(make_fake_mnist(tmp_path)), batch_size=32, extra=[str(store_db)])
    dm.setup()
    users = keys(Digits(dm.extra_train_set.images, dm.extra_train_set.labels))
    held_out = keys(Digits(dm.extra_val_set.images, dm.extra_val_set.labels)) | keys(
        Digits(dm.extra_test_set.images, dm.extra_test_set.labels)
    )
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())
    assert len(batches) == -(-len(dm.train_set) // 24)  # 24 MNIST digits per batch: an epoch is one pass over MNIST
    for images, labels in batches:
        rows = [row.numpy().tobytes() for row in images.reshape(len(images), -1)]
        assert sum(r in users for r in rows) == 8 and all(r in users for r in rows[-8:])
        assert not any(r in held_out for r in rows)
        assert labels.dtype == torch.int64 and len(labels) == len(images)
    torch.manual_seed(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, dm.train_dataloader()))  # the global RNG decides
    val, test = dm.val_dataloader(), dm.test_dataloader()
    assert len(val) == len(test) == 2
    assert keys(Digits(*next(iter(val[1])))) == keys(Digits(dm.extra_val_set.images, dm.extra_val_set.labels))
    assert len(dm.extra_train_set) + len(dm.extra_val_set) + len(dm.extra_test_set) == 60


def test_without_extra_nothing_changes(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(make_fake_mnist(tmp_path)), batch_size=32)
    dm.setup()
    assert len(next(iter(dm.train_dataloader()))[0]) == 32
    assert isinstance(dm.val_dataloader(), torch.utils.data.DataLoader) and dm.extra_test_set is None


def test_the_sources_are_kept_as_a_plain_list(store_db: Path) -> None:
    dm = MNISTDataModule(extra=OmegaConf.create([str(store_db)]))
    assert type(dm.hparams.extra) is list and dm.hparams.extra == [str(store_db)]


# bad input


def test_bad_sources_and_shares_are_clear_errors(tmp_path: Path, store_db: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a database")
    empty = FeedbackStore(tmp_path / "empty.db").open()
    empty.close()
    few = make_store(tmp_path / "few.db", 4)
    cases = [
        ({"extra": [str(tmp_path / "missing.db")]}, "missing.db does not exist"),
        ({"extra": [str(tmp_path / "folder")]}, "holds no feedback-images-idx3-ubyte.gz"),
        ({"extra": []}, "empty list"),
        ({"extra": [str(store_db)], "extra_fraction": 0}, "data.extra_fraction must be a number in (0, 1)"),
        ({"extra": [str(store_db)], "extra_fraction": 1.0}, "data.extra_fraction must be a number in (0, 1)"),
        ({"extra": [str(store_db)], "extra_holdout": 1.5}, "data.extra_holdout must be a number in (0, 1)"),
        ({"extra": [str(store_db)], "batch_size": 2, "extra_fraction": 0.1}, "leaves 0 users' digits per batch"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            MNISTDataModule(**kwargs)
    with pytest.raises(ConfigError, match="empty.db holds no digits"):
        load_extra([str(tmp_path / "empty.db")])
    with pytest.raises(ConfigError, match="cannot read .*notes.txt as a feedback store"):
        load_extra([str(tmp_path / "notes.txt")])
    with pytest.raises(ConfigError, match=r"4 users' digits are too few to split .* collect more digits"):
        split_extra(load_extra([str(few)]), 0.2, 42)


# through train.py and evaluate.py


@pytest.fixture(scope="session")
def extra_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mlp run (EMA weights) on a fake MNIST plus 100 users' digits from a store: folder/run, folder/feedback.db."""

    def train(folder: Path) -> None:
        make_fake_mnist(folder / "data")
        make_store(folder / "feedback.db", 100)
        run_train(
            "model=mlp",
            "callbacks=ema",
            "trainer.max_epochs=2",
            f"data.data_dir={folder / 'data'}",
            f"data.extra=[{folder / 'feedback.db'}]",
            f"hydra.run.dir={folder / 'run'}",
            cwd=folder,
        )

    return once_per_session(tmp_path_factory, "extra-run", train)


@pytest.mark.slow  # trains a run with users' digits (train.py, evaluate.py)
def test_a_run_with_users_digits_logs_and_summarises_their_accuracy(extra_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = summary(extra_run / "run")
    assert 0.5 < result["test_acc_extra"] <= 1 and 0.5 < result["test_acc"] <= 1 and "before" not in result
    tags = set()
    for events in (extra_run / "run" / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"val/acc", "val/acc_extra", "val/loss", "test/acc", "test/acc_extra", "hp/test_acc_extra"} <= tags
    assert not [t for t in tags if "dataloader_idx" in t]
    ckpt = torch.load(extra_run / "run" / "checkpoints" / "mlp-best.ckpt", weights_only=True)
    assert ckpt["datamodule_hyper_parameters"]["extra"] == [str(extra_run / "feedback.db")]
    assert "test/acc_extra" in (extra_run / "run" / "train.log").read_text()


@pytest.mark.slow  # trains a run with users' digits (train.py, evaluate.py)
def test_evaluate_scores_the_held_out_users_digits_as_the_run_did(extra_run: Path, tmp_path: Path) -> None:
    proc = run_evaluate(
        f"ckpt_path={extra_run / 'run'}",
        f"data_dir={extra_run / 'data'}",
        f"data.extra=[{extra_run / 'feedback.db'}]",
        f"output_dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    held_out = split_extra(load_extra([str(extra_run / "feedback.db")]), 0.2, 42).test
    assert metrics["test_size_extra"] == len(held_out)
    assert metrics["test_acc_extra"] == pytest.approx(summary(extra_run / "run")["test_acc_extra"], abs=1e-6)
    assert "users' digits" in proc.stdout


@pytest.mark.slow  # trains a run with users' digits (train.py, evaluate.py)
def test_init_from_starts_from_the_weights_and_their_network(extra_run: Path, tmp_path: Path) -> None:
    source = summary(extra_run / "run")
    run_train(
        f"init_from={source['best_checkpoint']}",
        "model=cnn",  # the network comes from the weights: an mlp
        "trainer.max_epochs=1",
        f"data.data_dir={extra_run / 'data'}",
        f"data.extra=[{extra_run / 'feedback.db'}]",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    result = summary(tmp_path / "run")
    assert result["model"] == "mlp" and result["init_from"] == source["best_checkpoint"]
    assert result["before"]["test_acc"] == pytest.approx(source["test_acc"], abs=1e-6)
    assert result["before"]["test_acc_extra"] == pytest.approx(source["test_acc_extra"], abs=1e-6)
    assert result["test_acc"] is not None and result["test_acc_extra"] is not None
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Started from" in log and "give model=mlp to name them after the network" in log


@pytest.mark.slow  # trains a run with users' digits (train.py, evaluate.py)
def test_init_from_loads_the_same_weights_into_the_module(extra_run: Path) -> None:
    from digitrec.training.finetune import load_initial_network, load_weights, net_config
    from digitrec.training.module import DigitClassifier

    ckpt = summary(extra_run / "run")["best_checkpoint"]
    trained = load_initial_network(ckpt)
    module = DigitClassifier(net=net_config(trained))
    load_weights(module.net, trained)
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    for name, value in module.net.state_dict().items():
        assert torch.equal(value, saved[f"net.{name}"]), name


def test_init_from_bundled_takes_the_bundled_network() -> None:
    from hydra import compose, initialize_config_dir

    from digitrec.training.finetune import follow_network, load_initial_network

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=finetune", "model=mlp"])
    trained = load_initial_network(cfg.init_from)
    follow_network(cfg, trained)
    assert OmegaConf.to_container(cfg.module.net, resolve=True) == {"_target_": "digitrec.models.CNN", "dropout": 0.25}
    assert cfg.trainer.limit_train_batches <= 300 and cfg.init_from == "bundled"


def test_init_from_refuses_a_resume_and_a_missing_file(tmp_path: Path) -> None:
    from digitrec.training.finetune import load_initial_network

    with pytest.raises(ConfigError, match="exclude each other"):
        load_initial_network("bundled", ckpt_path="last")
    with pytest.raises(ConfigError, match="no such file"):
        load_initial_network(str(tmp_path / "missing.ckpt"))
    proc = run_train(f"init_from={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 1 and "init_from=" in proc.stdout + proc.stderr and "no such file" in proc.stdout
