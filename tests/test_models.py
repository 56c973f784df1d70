import pytest
import torch

from digitrec.errors import ConfigError
from digitrec.models import MODELS, Dropout, build_model, count_parameters, model_name


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


# The counts docs/training.md states for each model with its default arguments; mlp and cnn are the layers the
# original project describes. A change here is a change of the networks: update that table with it.
PARAMETER_COUNTS = {"mlp": 569_226, "cnn": 871_530, "deep_cnn": 1_482_794, "resnet": 4_732_682, "speednet": 29_290}


def test_parameter_counts_are_the_documented_ones() -> None:
    assert {name: count_parameters(build_model(name)) for name in MODELS} == PARAMETER_COUNTS


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="mlp, cnn, deep_cnn"):
        build_model("vgg")


def test_config_names_resolve_to_registry() -> None:
    assert model_name({"_target_": "digitrec.models.DeepCNN"}) == "deep_cnn"
    assert model_name({"name": "mlp"}) == "mlp"


def test_bad_model_argument_is_config_error() -> None:
    with pytest.raises(ConfigError, match="cnn"):
        build_model({"_target_": "digitrec.models.CNN", "widht": 3})


@pytest.mark.parametrize("p", [0.2, 0.25, 0.5])
def test_cpu_dropout_keeps_each_element_with_probability_1_minus_p(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 32, 14, 14) + 0.5  # no zeros of its own
    y = Dropout(p).train()(x)
    dropped = y == 0
    n = dropped.numel()
    tolerance = 5 * (p * (1 - p) / n) ** 0.5
    assert abs(dropped.float().mean().item() - p) < tolerance
    # each of the four 16-bit lanes of a random draw is uniform on its own (no biased sign bit)
    for lane in dropped.flatten()[: n // 4 * 4].view(-1, 4).float().mean(0):
        assert abs(lane.item() - p) < 2 * tolerance
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p))


def test_cpu_dropout_gradient_follows_the_mask_and_layout_is_kept() -> None:
    x = torch.randn(8, 16, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = Dropout(0.25).train()(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() / 0.75)


def test_cpu_dropout_is_seeded_fresh_per_call_and_identity_in_eval() -> None:
    layer, x = Dropout(0.5), torch.ones(1000)
    torch.manual_seed(1)
    a, b = layer(x), layer(x)
    torch.manual_seed(1)
    assert torch.equal(layer(x), a) and not torch.equal(a, b)
    assert torch.equal(layer.eval()(x), x)
