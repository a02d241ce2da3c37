"""Pretrained weights for the torchvision ResNets and DenseNets: ImageNet through torch's cache, or a local file.

Both sources are torchvision-format state dicts. Two adaptations let them serve scenectl models:
  * the classifier is dropped when its class count differs (a new head is trained);
  * a 3-channel stem grows to 4 input channels (RGB + hidden-region mask): RGB weights are copied and the mask
    channel starts at zero, so at initialisation the network computes exactly what the pretrained one did.
"""

from __future__ import annotations

import os
import pickle
import re
import urllib.error
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from scenectl.errors import ScenectlError

# arch → torchvision weights enum; DEFAULT is the best ImageNet checkpoint torchvision publishes for it
IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights,
    "resnet34": torchvision.models.ResNet34_Weights,
    "resnet50": torchvision.models.ResNet50_Weights,
    "densenet121": torchvision.models.DenseNet121_Weights,
    "densenet169": torchvision.models.DenseNet169_Weights,
}
# torchvision's published DenseNet files name layers 'norm.1' where its modules say 'norm1' (its own loader renames
# them with this pattern, torchvision.models.densenet._load_state_dict)
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `arch`, from torch's cache or (where a network exists) downloaded into it."""
    weights = IMAGENET_WEIGHTS[arch].DEFAULT
    filename = os.path.basename(weights.url)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return renamed(torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True,
                                                          weights_only=True))
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        raise ScenectlError(
            f"cannot fetch ImageNet weights for {arch} ({type(e).__name__}: {e}); offline? download {weights.url} "
            f"elsewhere and pass --pretrained /path/to/{filename}, or place it in {cache}/ ($TORCH_HOME/hub/checkpoints)"
        ) from None


def file_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict from a file, never unpickling code (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ScenectlError(f"pretrained weights file not found: {path} (give 'imagenet' or a .pth state dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ScenectlError(f"refusing to load {path}: not a plain-weights file ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ScenectlError(f"{path} is not a readable weights file: {e}") from None
    # accept a bare state dict, or one wrapped as {"state_dict": ...} / a scenectl checkpoint's {"model": ...}
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ScenectlError(f"{path} does not hold a state dict of tensors")
    return renamed({k.removeprefix("module."): v for k, v in state.items()})  # DDP-saved files prefix every key


def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with torchvision's old DenseNet key names ('denselayer1.norm.1.weight') in today's form
    ('denselayer1.norm1.weight'); every other key unchanged."""
    return {_DENSENET_OLD_KEY.sub(r"\1\2", k): v for k, v in state.items()}


def adapt_conv1(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(O, 3, k, k) RGB stem weights → (O, in_chans, k, k). Extra channels start at zero; 1 channel sums RGB."""
    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] != 3 or in_chans == 2 or in_chans < 1:
        raise ScenectlError(f"cannot adapt {weight.shape[1]}-channel stem weights to in_chans={in_chans}")
    if in_chans == 1:  # a grey image is R = G = B, so summing keeps the response
        return weight.sum(dim=1, keepdim=True)
    extra = weight.new_zeros(weight.shape[0], in_chans - 3, *weight.shape[2:])
    return torch.cat([weight, extra], dim=1)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into a scenectl model, adapting the stem (model.STEM) and dropping a mismatched classifier."""
    own = model.state_dict()
    state = dict(state)
    stem = f"{model.STEM}.weight"
    if stem in state and stem in own:
        state[stem] = adapt_conv1(state[stem], own[stem].shape[1])
    for k in own:
        if k.endswith("num_batches_tracked") and k not in state:  # files saved before PyTorch 0.4 have no such
            state[k] = own[k]  # counter (torchvision's DenseNet ImageNet weights); it only matters for momentum=None
    head = set(model.head_parameter_names())
    for k in head:
        if k in state and state[k].shape != own[k].shape:
            del state[k]  # different class count: keep the fresh head
    missing = [k for k in own if k not in state and k not in head]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ScenectlError(
            f"pretrained weights {source} do not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]} (is it a state dict of the same architecture?)"
        )
    model.load_state_dict(state, strict=False)  # strict=False only to allow the dropped head keys
