"""Images to model input: normalisation, resizing, letterboxing and training augmentation.

Every reader of images uses these: the shard reader (scenectl.data.loader) for each view, the ImageFolder path of
`transfer` (scenectl.data.imagefolder) and `predict`.

    to_input(image, mask, S, mask_channel)   # PIL scene (+ mask) -> (C, S, S), C = 4 with the mask channel
    letterbox_input(image, S, rng, augment)  # PIL object crop -> (3, S, S): letterboxed to a square, augmented
                                             #   when rng is given
    Augment()(image, mask, rng)              # training augmentation, image and mask alike
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from scenectl.data.masks import Letterbox
from scenectl.errors import ScenectlError

# The input normalisation the torchvision ResNets and their ImageNet weights expect (torchvision's transforms for
# them use the same numbers); scenectl.models takes them from here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_input(image: Image.Image, mask: Image.Image | None, image_size: int, mask_channel: bool = True) -> torch.Tensor:
    """(PIL RGB image, PIL L mask) -> model input (C, image_size, image_size): normalised RGB (+ mask channel).

    The mask channel is 1.0 where the object is hidden and 0.0 elsewhere (not normalised). This is the whole eval
    preprocessing: a plain resize (the shards are already square, letterboxed).
    """
    size = [image_size, image_size]
    x = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)  # (3, H, W) in [0, 1]
    if x.shape[-2:] != torch.Size(size):
        x = TF.resize(x, size, antialias=True)
    x = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    if not mask_channel:
        return x
    if mask is None:
        raise ScenectlError("the model takes a mask channel but no mask was given")
    m = TF.to_image(mask)  # (1, H, W) uint8
    if m.shape[-2:] != torch.Size(size):
        m = TF.resize(m, size, interpolation=TF.InterpolationMode.NEAREST)
    return torch.cat([x, (m > 127).to(torch.float32)], 0)  # (4, S, S)


def letterbox_input(image: Image.Image, image_size: int, rng: np.random.Generator | None,
                    augment: Augment) -> torch.Tensor:
    """PIL RGB -> (3, S, S) normalised: letterbox to a square (as the shards are), augment when rng is given."""
    if image.size != (image_size, image_size):
        box = Letterbox(image.width, image.height, image_size)
        image = Image.fromarray(box.image(image))
    if rng is not None:
        blank = Image.new("L", image.size, 0)  # no hidden region: the crop may fall anywhere
        image, _ = augment(image, blank, rng)
    return to_input(image, None, image_size, mask_channel=False)


@dataclass
class Augment:
    """Training augmentation, applied identically to the image and the mask (colour jitter: image only).

    A random crop of `min_scale`..1 of the image area and aspect ratio 3/4..4/3 that always contains the whole
    hidden region's bounding box (the crop is grown when the box is larger), resized to the output size; a
    horizontal flip with probability `flip`; brightness / contrast / saturation each scaled by a factor drawn from
    [1 - jitter, 1 + jitter].
    """

    min_scale: float = 0.35
    flip: float = 0.5
    jitter: float = 0.2
    enabled: bool = True

    def __call__(self, image: Image.Image, mask: Image.Image, rng: np.random.Generator):
        if not self.enabled:
            return image, mask
        W, H = image.size
        box = _mask_bbox(mask)  # (x0, y0, x1, y1) exclusive, or None
        area = W * H * rng.uniform(self.min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = min(W, max(1, round(math.sqrt(area * ratio))))
        h = min(H, max(1, round(math.sqrt(area / ratio))))
        if box is not None:  # grow the crop to hold the hidden region, then place it around the region
            w, h = max(w, box[2] - box[0]), max(h, box[3] - box[1])
            x = int(rng.integers(max(0, box[2] - w), min(box[0], W - w) + 1))
            y = int(rng.integers(max(0, box[3] - h), min(box[1], H - h) + 1))
        else:
            x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
        image = image.crop((x, y, x + w, y + h)).resize((W, H), Image.BILINEAR)
        mask = mask.crop((x, y, x + w, y + h)).resize((W, H), Image.NEAREST)
        if rng.random() < self.flip:
            image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
        if self.jitter > 0:
            b, c, s = rng.uniform(1 - self.jitter, 1 + self.jitter, size=3)
            image = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, b), c), s)
        return image, mask


def _mask_bbox(mask: Image.Image) -> tuple[int, int, int, int] | None:
    m = np.asarray(mask) > 127  # (H, W)
    if not m.any():
        return None
    ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1
