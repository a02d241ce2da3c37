"""Networks that name the hidden object: torchvision ResNets and Fast Fourier Convolution ResNets."""

from scenectl.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # the input normalisation ImageNet weights expect
from scenectl.models.registry import ALIASES, create_model, list_models, resolve_name

__all__ = ["ALIASES", "IMAGENET_MEAN", "IMAGENET_STD", "create_model", "list_models", "resolve_name"]
