"""Networks for distillation and evaluation, built by name with :func:`build_model`.

Every network maps (B, C, H, W) inputs, already normalised, to (B, num_classes) logits, exposes
``embed`` (the penultimate features) and a final ``nn.Linear`` called ``classifier``, and names
its parameters by what they are (``features.0.conv.weight``), so trajectories stored by name
never depend on parameter order.
"""

from lit_distill.models.alexnet import AlexNet
from lit_distill.models.convnet import ConvNet, FeatureClassifier
from lit_distill.models.registry import (
    available_models,
    build_model,
    check_model,
    model_options,
    register_model,
)
from lit_distill.models.resnet import ResNet
from lit_distill.models.vgg import VGG11

__all__ = [
    "AlexNet",
    "ConvNet",
    "FeatureClassifier",
    "ResNet",
    "VGG11",
    "available_models",
    "build_model",
    "check_model",
    "model_options",
    "register_model",
]
