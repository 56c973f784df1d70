"""The model registry: the only networks a config or a checkpoint can build, by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from digitrec.errors import ConfigError
from digitrec.models.networks import CNN, MLP, DeepCNN, ResNet, SpeedNet

MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "deep_cnn": DeepCNN,
    "resnet": ResNet,
    "speednet": SpeedNet,
}


def model_name(spec: Mapping[str, Any]) -> str:
    """Registry name for a model config: `{"_target_": "digitrec.models.CNN", ...}` or `{"name": "cnn", ...}`."""
    target = spec.get("_target_") or spec.get("name")
    for name, cls in MODELS.items():
        if target in (name, cls.__name__, f"digitrec.models.{cls.__name__}", f"{cls.__module__}.{cls.__qualname__}"):
            return name
    raise ConfigError(f"Unknown model {target!r}; valid models: {', '.join(MODELS)}.")


def build_model(spec: str | Mapping[str, Any]) -> nn.Module:
    """Build a registered network from its name or its config (`_target_`/`name` plus keyword arguments).

    Only classes in `MODELS` are ever built: a config cannot make this import or call anything else.
    """
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    cls = MODELS[model_name(spec)]
    kwargs = {k: v for k, v in spec.items() if k not in ("_target_", "name")}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # e.g. a dropout outside [0, 1), as torch reports it
        raise ConfigError(f"Bad arguments for model {model_name(spec)!r}: {e}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
