import re

import pytest
import torch

from conftest import REPO
from digitrec.errors import ConfigError
from digitrec.models import MODELS, build_model, count_parameters, model_name


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shape_and_finite(name: str) -> None:
    torch.manual_seed(0)
    net = build_model(name).eval()
    out = net(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    net = build_model(name).train()
    loss = torch.nn.functional.cross_entropy(net(torch.randn(8, 1, 28, 28)), torch.arange(8))
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"


def test_parameter_counts_match_readme() -> None:
    """The README's model table states the true counts; the code must agree with it."""
    table = dict(re.findall(r"^\|\s*`(\w+)`\s*\|\s*([\d,]+)\s*\|", (REPO / "README.md").read_text(), re.M))
    counts = {name: count_parameters(build_model(name)) for name in MODELS}
    print("parameter counts:", counts)
    assert {name: int(table[name].replace(",", "")) for name in MODELS} == counts
    assert counts["mlp"] == 569_226 and counts["cnn"] == 871_530  # the layers the seed describes


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="mlp, cnn, deep_cnn"):
        build_model("resnet")


def test_config_names_resolve_to_registry() -> None:
    assert model_name({"_target_": "digitrec.models.DeepCNN"}) == "deep_cnn"
    assert model_name({"name": "mlp"}) == "mlp"


def test_bad_model_argument_is_config_error() -> None:
    with pytest.raises(ConfigError, match="cnn"):
        build_model({"_target_": "digitrec.models.CNN", "widht": 3})
