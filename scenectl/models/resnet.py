"""torchvision ResNets with the scenectl model interface.

torchvision's builder makes the network; `ResNet` takes over its modules under the same names (conv1, bn1, ...,
layer4, fc), so its state_dict has exactly torchvision's keys: ImageNet weights and any torchvision-format file load
without renaming, and our checkpoints load back into a plain torchvision model.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torchvision

from scenectl.models.head import ClassifierHead


class ResNet(ClassifierHead, nn.Module):
    """A torchvision ResNet plus forward_features / get_classifier / reset_classifier / head_parameter_names."""

    def __init__(self, builder: Callable[..., torchvision.models.ResNet], num_classes: int, in_chans: int = 3):
        super().__init__()
        net = builder(weights=None, num_classes=num_classes)
        for name, module in net.named_children():  # conv1 bn1 relu maxpool layer1..4 avgpool fc
            self.add_module(name, module)
        if in_chans != 3:
            # a fresh stem for other inputs (e.g. RGB + hidden-region mask); pretrained loading adapts the weights
            old = self.conv1
            self.conv1 = nn.Conv2d(in_chans, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.num_features = self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, num_features, H/32, W/32)
        return torch.flatten(self.avgpool(x), 1)  # (B, num_features)
