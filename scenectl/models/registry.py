"""Model registry, timm-style: every architecture is built by name with `create_model`.

    model = create_model("ffc", num_classes=80, in_chans=4)          # alias of ffc_resnet18
    model = create_model("resnet50", 80, 4, pretrained="imagenet")  # ImageNet stem adapted to RGB + mask

Every registered model offers forward(x) → (B, num_classes) logits, forward_features(x) → (B, num_features),
num_features, get_classifier(), reset_classifier(num_classes), head_parameter_names(), backbone_parameters(), and
an optional auxiliary head on the same features (aux_classes; forward(x, aux=True) -> (logits, aux logits)).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch.nn as nn
import torchvision

from scenectl.errors import ScenectlError
from scenectl.models import pretrained as pre
from scenectl.models.densenet import DenseNet
from scenectl.models.ffc import BasicBlock, Bottleneck, FFCResNet
from scenectl.models.resnet import ResNet

# name -> builder(num_classes, in_chans)
_MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18": partial(ResNet, torchvision.models.resnet18),
    "resnet34": partial(ResNet, torchvision.models.resnet34),
    "resnet50": partial(ResNet, torchvision.models.resnet50),
    "ffc_resnet18": partial(FFCResNet, BasicBlock, [2, 2, 2, 2]),
    "ffc_resnet34": partial(FFCResNet, BasicBlock, [3, 4, 6, 3]),
    "ffc_resnet50": partial(FFCResNet, Bottleneck, [3, 4, 6, 3]),
    "densenet121": partial(DenseNet, torchvision.models.densenet121),
    "densenet169": partial(DenseNet, torchvision.models.densenet169),
}
# short names for the CLI: `scenectl train --arch ffc`
ALIASES = {"resnet": "resnet18", "ffc": "ffc_resnet18"}


def list_models() -> list[str]:
    """Canonical model names (aliases excluded), sorted."""
    return sorted(_MODELS)


def resolve_name(name: str) -> str:
    """Canonical name for `name` or one of its aliases; unknown names raise a ScenectlError listing the valid ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in _MODELS:
        aliases = ", ".join(f"{a} → {c}" for a, c in ALIASES.items())
        raise ScenectlError(f"unknown model '{name}'; choose one of: {', '.join(list_models())} (aliases: {aliases})")
    return key


def create_model(name: str, num_classes: int, in_chans: int = 3, pretrained: str | None = None,
                 aux_classes: int = 0) -> nn.Module:
    """Build model `name` with a `num_classes` head for `in_chans`-channel input (and an `aux_classes`-output
    auxiliary head when > 0: train --aux-visible).

    pretrained: None (random init), "imagenet" (torchvision's ImageNet weights, ResNets and DenseNets) or the path of a
    torchvision-format state dict. The head is re-initialised when its class count differs; a 3-channel stem
    is adapted to `in_chans` (extra channels start at zero).
    """
    arch = resolve_name(name)
    if num_classes < 1:
        raise ScenectlError(f"num_classes must be at least 1, got {num_classes}")
    if in_chans < 1:
        raise ScenectlError(f"in_chans must be at least 1, got {in_chans}")
    model = _MODELS[arch](num_classes, in_chans)
    model.arch = arch
    if pretrained:
        if arch.startswith("ffc_"):
            raise ScenectlError(f"--pretrained {pretrained}: FFC models have no public pretrained weights; "
                                "train from scratch")
        if pretrained.lower() == "imagenet":
            state, source = pre.imagenet_state_dict(arch), f"imagenet ({arch})"
        else:
            state, source = pre.file_state_dict(pretrained), pretrained
        pre.load_into(model, state, source)
    model.add_aux_head(aux_classes)  # after the pretrained weights, which have none for it: always fresh
    return model
