"""The classifier-head interface every scenectl model shares (timm-style).

A model defines `forward_features(x) -> (B, num_features)`, a `fc` linear head and `num_features`; this mixin
adds the rest, so transfer and distillation treat ResNets and FFC-ResNets alike.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn


class ClassifierHead:
    fc: nn.Linear
    num_features: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))  # (B, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)

    def head_parameter_names(self) -> list[str]:
        return [f"fc.{n}" for n, _ in self.fc.named_parameters()]

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        head = set(self.head_parameter_names())
        return (p for n, p in self.named_parameters() if n not in head)
