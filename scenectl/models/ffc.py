"""Fast Fourier Convolution ResNets.

After L. Chi, B. Jiang, Y. Mu, "Fast Fourier Convolution", NeurIPS 2020
(https://proceedings.neurips.cc/paper/2020/hash/2fd5d41ec6cfab47e32164d5624269b1-Abstract.html).

Why FFC here: naming a hidden object from its context needs evidence from the whole image, while an ordinary
ResNet only sees the whole image in its last stages. An FFC splits every feature map into a *local* part
(ordinary convolutions) and a *global* part whose convolution happens in the Fourier domain: a 1×1 convolution
on the spectrum mixes every position with every other one, so even the first stage has an image-wide receptive
field, at about the cost of a 1×1 convolution.

    FourierUnit        rfft2 → [real | imag] as channels → 1×1 conv + BN + ReLU → irfft2 back to (H, W)
    SpectralTransform  1×1 conv (halve channels) → FourierUnit (+ local Fourier unit on 2×2 quadrants) → sum → 1×1 conv
    FFC                four paths: local→local, global→local, local→global (convolutions), global→global (spectral)
    FFC_BN_ACT         FFC then BatchNorm + activation on each part
    FFCResNet          ResNet layout; stage 1 goes 0 → r global channels, stages 2-3 keep r, stage 4 goes r → 0

Written from the paper; the authors' reference code (github.com/pkumivision/FFC) was read to match its choices
(LFU on the first quarter of the channels, average pooling before a strided spectral transform). Differences:
odd spatial sizes work everywhere (the reference breaks on them), BasicBlock uses its second convolution (the
reference skips it), and the FFT always runs in float32 so mixed precision works.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from scenectl.models.head import ClassifierHead

# A feature map inside an FFC network: (local, global); the global part is None where it has no channels.
Pair = tuple[torch.Tensor, Optional[torch.Tensor]]


class FourierUnit(nn.Module):
    """A 1×1 convolution applied to the 2-D spectrum of a (B, C, H, W) map; output (B, out_channels, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # real and imaginary parts travel as separate channels, hence the factors of 2
        self.conv = nn.Conv2d(2 * in_channels, 2 * out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # cuFFT in half precision only takes power-of-2 sizes and CPU has no bf16 FFT: transform in float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W//2+1) complex
            spec = torch.cat([spec.real, spec.imag], dim=1)  # (B, 2C, H, W//2+1) real
        spec = self.relu(self.bn(self.conv(spec)))  # (B, 2C', H, W//2+1); autocast may run the conv in half
        with torch.autocast(device_type=x.device.type, enabled=False):
            re, im = spec.float().chunk(2, dim=1)  # 2 × (B, C', H, W//2+1)
            # s=(h, w) recovers odd widths, which rfft2's W//2+1 bins alone cannot tell apart from even ones
            out = torch.fft.irfft2(torch.complex(re, im), s=(h, w), norm="ortho")  # (B, C', H, W)
        return out.to(x.dtype)


class SpectralTransform(nn.Module):
    """The global→global path: (B, Cin, H, W) → (B, Cout, H/stride, W/stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        # ceil_mode matches the ceil(H/2) size of a padded stride-2 convolution on the local path for odd H
        self.downsample = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride == 2 else nn.Identity()
        mid = out_channels // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid, kernel_size=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        )
        self.fu = FourierUnit(mid, mid)
        # LFU: the first quarter of the channels, cut into 2×2 spatial quadrants stacked as channels (4 × mid//4)
        self.lfu_chans = mid // 4
        self.lfu = FourierUnit(4 * self.lfu_chans, mid) if self.lfu_chans else None
        self.conv2 = nn.Conv2d(mid, out_channels, kernel_size=1, bias=False)

    def local_fourier(self, x: torch.Tensor) -> torch.Tensor | int:
        """Semi-global mixing: an FFT over each quadrant, tiled back over the map. (B, mid, H, W) → same."""
        h, w = x.shape[-2:]
        hh, hw = h // 2, w // 2
        if self.lfu is None or hh == 0 or hw == 0:
            return 0
        q = x[:, : self.lfu_chans, : 2 * hh, : 2 * hw]  # (B, mid//4, 2hh, 2hw), odd row/col dropped
        q = torch.cat(q.split(hh, dim=-2), dim=1)  # (B, mid//2, hh, 2hw): top and bottom halves
        q = torch.cat(q.split(hw, dim=-1), dim=1)  # (B, 4·(mid//4), hh, hw): the four quadrants
        q = self.lfu(q)  # (B, mid, hh, hw)
        # tile periodically; for odd H or W one extra row/column continues the period, then crop to (H, W)
        return q.repeat(1, 1, math.ceil(h / hh), math.ceil(w / hw))[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.downsample(x))  # (B, mid, H', W')
        return self.conv2(x + self.fu(x) + self.local_fourier(x))  # (B, Cout, H', W')


class FFC(nn.Module):
    """Fast Fourier Convolution on a (local, global) pair; `ratio_gin`/`ratio_gout` = global share of channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0):
        super().__init__()
        if not (0 <= ratio_gin < 1 and 0 <= ratio_gout < 1):
            raise ValueError(f"FFC global ratios must lie in [0, 1), got {ratio_gin}, {ratio_gout}")
        if stride not in (1, 2):
            raise ValueError(f"FFC stride must be 1 or 2, got {stride}")
        self.in_cg = int(in_channels * ratio_gin)
        self.in_cl = in_channels - self.in_cg
        self.out_cg = int(out_channels * ratio_gout)
        self.out_cl = out_channels - self.out_cg

        def conv(cin: int, cout: int) -> nn.Conv2d | None:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)

        self.convl2l = conv(self.in_cl, self.out_cl)
        self.convg2l = conv(self.in_cg, self.out_cl)
        self.convl2g = conv(self.in_cl, self.out_cg)
        self.convg2g = SpectralTransform(self.in_cg, self.out_cg, stride) if self.in_cg and self.out_cg else None

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = x  # (B, in_cl, H, W), (B, in_cg, H, W) or None
        out_l = self.convl2l(x_l)  # (B, out_cl, H', W')
        if self.convg2l is not None:
            out_l = out_l + self.convg2l(x_g)
        out_g = None
        if self.out_cg:
            out_g = self.convl2g(x_l)  # (B, out_cg, H', W')
            if self.convg2g is not None:
                out_g = out_g + self.convg2g(x_g)
        return out_l, out_g


class FFC_BN_ACT(nn.Module):
    """FFC, then BatchNorm and an activation (ReLU or none) applied to the local and global parts separately.
    Padding is kernel_size // 2 ("same" size at stride 1), as every block of the FFC ResNets uses."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, act: bool = True):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, kernel_size // 2)
        self.bn_l = nn.BatchNorm2d(self.ffc.out_cl)
        self.bn_g = nn.BatchNorm2d(self.ffc.out_cg) if self.ffc.out_cg else None
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = self.ffc(x)
        return self.act(self.bn_l(x_l)), None if x_g is None else self.act(self.bn_g(x_g))


def _add_relu(a: Pair, b: Pair) -> Pair:
    """Residual sum then ReLU, part by part."""
    return F.relu(a[0] + b[0]), None if a[1] is None else F.relu(a[1] + b[1])


class BasicBlock(nn.Module):
    """Two 3×3 FFCs (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 ratio_gin: float, ratio_gout: float):
        super().__init__()
        self.conv1 = FFC_BN_ACT(inplanes, planes, 3, ratio_gin, ratio_gout, stride)
        self.conv2 = FFC_BN_ACT(planes, planes, 3, ratio_gout, ratio_gout, 1, act=False)
        self.downsample = downsample

    def forward(self, x: Pair) -> Pair:
        identity = x if self.downsample is None else self.downsample(x)
        return _add_relu(self.conv2(self.conv1(x)), identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 FFCs (ResNet-50 block); the stride sits on the 3×3 as in torchvision's ResNet v1.5."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 ratio_gin: float, ratio_gout: float):
        super().__init__()
        r = ratio_gout
        self.conv1 = FFC_BN_ACT(inplanes, planes, 1, ratio_gin, r)
        self.conv2 = FFC_BN_ACT(planes, planes, 3, r, r, stride)
        self.conv3 = FFC_BN_ACT(planes, planes * 4, 1, r, r, act=False)
        self.downsample = downsample

    def forward(self, x: Pair) -> Pair:
        identity = x if self.downsample is None else self.downsample(x)
        return _add_relu(self.conv3(self.conv2(self.conv1(x))), identity)


class FFCResNet(ClassifierHead, nn.Module):
    """ResNet whose convolutions are FFCs. Input (B, in_chans, H, W) → logits (B, num_classes)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int,
                 in_chans: int = 3, ratio: float = 0.5):
        super().__init__()
        self.inplanes = 64
        # the stem is an ordinary convolution: at full resolution a global branch would cost much and add little
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # stage 1 opens the global branch (0 → r), stage 4 closes it (r → 0) so the head sees one plain tensor
        self.layer1 = self._make_layer(block, 64, layers[0], 1, 0.0, ratio)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, ratio, ratio)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, ratio, ratio)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, ratio, 0.0)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _make_layer(self, block, planes: int, blocks: int, stride: int, rin: float, rout: float):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion or rin != rout:
            downsample = FFC_BN_ACT(self.inplanes, planes * block.expansion, 1, rin, rout, stride, act=False)
        layers = [block(self.inplanes, planes, stride, downsample, rin, rout)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None, rout, rout) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation, so both families start alike
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        pair: Pair = (x, None)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            pair = layer(pair)  # stages 1-3: (local, global); stage 4: (B, 512·e, H/32, W/32), None
        return torch.flatten(self.avgpool(pair[0]), 1)  # (B, num_features)
