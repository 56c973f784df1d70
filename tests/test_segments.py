"""The segment network that judges a number's candidate digits whole or not: the bundled file is what its
card says, it judges numbers of MNIST test digits (which it never saw) well, and its command makes one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from digitrec.data.mnist import load_split, raw_dir
from digitrec.data.numbers import make_numbers
from digitrec.errors import CheckpointError
from digitrec.inference.checkpoints import card_file
from digitrec.inference.numbers import layout
from digitrec.inference.pretrained import read_card, sha256_file
from digitrec.inference.segments import SEGMENTS_FILE, load_segment_net
from digitrec.models.segments import GEOMETRY
from digitrec.training.segments import examples, judged, main


@pytest.fixture(scope="module")
def test_numbers(mnist_dir: Path) -> list:
    split = load_split(raw_dir(mnist_dir), train=False)
    return make_numbers(split.images[:, 0].numpy(), split.labels.numpy(), 60, seed=7)


def test_the_bundled_segment_net_is_what_its_card_says() -> None:
    card = read_card(SEGMENTS_FILE)
    assert sha256_file(SEGMENTS_FILE) == card["sha256"] and SEGMENTS_FILE.stat().st_size < 2**20
    net = load_segment_net()
    assert sum(p.numel() for p in net.parameters()) == card["parameters"]
    for key in ("command", "data", "commit", "cpu", "validation"):
        assert card[key], key
    assert card["validation"]["accuracy"] > 0.9


def test_it_judges_candidates_of_numbers_of_test_digits_well(test_numbers: list) -> None:
    data = examples(test_numbers)
    scores = judged(load_segment_net(), data)
    majority = max(scores["whole"], scores["candidates"] - scores["whole"]) / scores["candidates"]
    assert scores["candidates"] > 1000 and majority < 0.9
    assert scores["accuracy"] > 0.9 and scores["accuracy"] > majority + 0.05, scores


def test_geometry_rows_describe_each_candidate(test_numbers: list) -> None:
    number = next(n for n in test_numbers if n.gap == "separated")
    item = layout(number.image.astype(np.float32) / 255)
    assert item.shapes.shape == (len(item.spans), len(GEOMETRY))
    row = {name: k for k, name in enumerate(GEOMETRY)}
    for (i, j), shape, box in zip(item.spans, item.shapes, item.boxes):
        assert shape[row["pieces"]] == j - i
        assert shape[row["width"]] == pytest.approx((box[2] - box[0]) / item.ink.line)
        if shape[row["part of a cut unit"]] == 0:  # a whole unit: nothing was cut on either side
            assert shape[row["strokes cut on the left"]] == shape[row["ink cut on the right"]] == 0


def test_the_command_trains_and_writes_weights_with_their_card(tmp_path: Path, mnist_dir: Path) -> None:
    out = tmp_path / "segments.pt"
    args = ["--numbers", "20", "--val-numbers", "8", "--epochs", "1", "--data-dir", str(mnist_dir), "--out", str(out)]
    assert main(args) == 0
    card = json.loads(card_file(out).read_text())
    assert card["sha256"] == sha256_file(out) and card["epochs"] == 1 and len(card["train_loss"]) == 1
    assert "20 numbers of MNIST training digits" in card["data"] and card["validation"]["candidates"] > 0
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values())
    assert load_segment_net(out)(torch.zeros(2, 1, 28, 28), torch.zeros(2, len(GEOMETRY))).shape == (2,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segments.card.json", "segments.pt"]  # no temporaries


def test_the_command_and_the_loader_refuse_bad_input_in_one_line(tmp_path: Path, capsys, caplog) -> None:
    for args, message in (
        (["--epochs", "0"], "--epochs must be a positive integer, got 0."),
        (["--out", str(tmp_path / "s.bin")], "name the weights file with .pt"),
    ):
        with pytest.raises(SystemExit) as stopped:
            main(args if "--out" in args else [*args, "--out", str(tmp_path / "s.pt")])
        assert stopped.value.code == 1 and message in capsys.readouterr().err + caplog.text
    assert not list(tmp_path.iterdir())
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a weights file")
    with pytest.raises(CheckpointError, match="cannot load the network that reads numbers.*training.segments"):
        load_segment_net(broken)
