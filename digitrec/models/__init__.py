"""The networks and their registry: `build_model("cnn")`, or `digitrec.models.CNN` as a config's `_target_`."""

from digitrec.models.networks import CNN, MLP, DeepCNN, Dropout, ResNet, SpeedNet
from digitrec.models.registry import MODELS, build_model, count_parameters, model_name

__all__ = [
    "CNN",
    "MLP",
    "MODELS",
    "DeepCNN",
    "Dropout",
    "ResNet",
    "SpeedNet",
    "build_model",
    "count_parameters",
    "model_name",
]
