"""torchvision DenseNets with the scenectl model interface (Huang et al., CVPR 2017; on the seed's reading list).

As for the ResNets, torchvision's builder makes the network and `DenseNet` takes over its modules under the same
names (`features` = conv0 norm0 relu0 pool0 denseblock1..4 transition1..3 norm5, `classifier`), so its state_dict
has exactly torchvision's keys: ImageNet weights and torchvision-format files load without renaming. The stem is
`features.conv0` (grown to 4 input channels for the hidden-region mask) and the head is `classifier`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from scenectl.models.head import ClassifierHead


class DenseNet(ClassifierHead, nn.Module):
    """A torchvision DenseNet plus forward_features / get_classifier / reset_classifier / head_parameter_names."""

    HEAD = "classifier"
    STEM = "features.conv0"

    def __init__(self, builder: Callable[..., torchvision.models.DenseNet], num_classes: int, in_chans: int = 3):
        super().__init__()
        net = builder(weights=None, num_classes=num_classes)
        self.features, self.classifier = net.features, net.classifier
        if in_chans != 3:
            # a fresh stem for RGB + mask (torchvision's init: kaiming normal); pretrained loading adapts the weights
            old = self.features.conv0
            self.features.conv0 = nn.Conv2d(in_chans, old.out_channels, kernel_size=7, stride=2, padding=3,
                                            bias=False)
            nn.init.kaiming_normal_(self.features.conv0.weight)
        self.num_features = self.classifier.in_features

    @property
    def conv1(self) -> nn.Conv2d:
        """The stem convolution, under the name the ResNets give it."""
        return self.features.conv0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))  # (B, num_features, H/32, W/32): torchvision's forward, without the head
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, num_features)
