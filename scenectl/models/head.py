"""The classifier-head interface every scenectl model shares (timm-style).

A model defines `forward_features(x) -> (B, num_features)`, a linear head (named `fc`, or as its class's HEAD says:
a DenseNet's is torchvision's `classifier`) and `num_features`; this mixin adds the rest, so transfer and
distillation treat every architecture alike.

Optionally a model carries a second, auxiliary head `aux_fc` on the same pooled features (`add_aux_head`):
`train --aux-visible` uses it to predict the classes still visible in the scene (multi-label). `forward(x)` never
uses it; `forward(x, aux=True)` returns both outputs, so a DistributedDataParallel wrapper sees every parameter used.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn


class ClassifierHead:
    HEAD = "fc"  # the attribute (and state_dict prefix) of the linear head
    STEM = "conv1"  # the first convolution, which pretrained loading adapts to more input channels
    num_features: int  # (no class attribute aux_fc: it would shadow the nn.Module registered under that name)

    def forward(self, x: torch.Tensor, aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, num_classes) logits; with aux=True also the auxiliary head's (B, aux outputs) logits."""
        features = self.forward_features(x)  # (B, num_features)
        if not aux:
            return self.forward_head(features)
        aux_fc = getattr(self, "aux_fc", None)
        if aux_fc is None:
            raise ValueError("forward(aux=True) on a model without an auxiliary head (add_aux_head)")
        return self.forward_head(features), aux_fc(features)  # (B, num_classes), (B, aux outputs)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.get_classifier()(features)  # (B, num_classes)

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.HEAD)

    def reset_classifier(self, num_classes: int) -> None:
        setattr(self, self.HEAD, nn.Linear(self.num_features, num_classes))

    def add_aux_head(self, outputs: int) -> None:
        """A fresh auxiliary linear head (num_features -> outputs); outputs 0 removes it (its weights leave the
        state_dict)."""
        self.aux_fc = nn.Linear(self.num_features, outputs) if outputs else None

    def head_parameter_names(self) -> list[str]:
        return [f"{self.HEAD}.{n}" for n, _ in self.get_classifier().named_parameters()]

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        head = set(self.head_parameter_names())
        return (p for n, p in self.named_parameters() if n not in head and not n.startswith("aux_fc."))
