"""Images to model input: decoding, resizing, letterboxing, training augmentation and normalisation.

Every reader of images uses these: the shard reader (scenectl.data.loader) for each view, the ImageFolder path of
`transfer` (scenectl.data.imagefolder) and `predict`. The work is split in two, so that what costs per pixel in
float runs once per batch, where the batch meets the model (on the training device):

  per sample (DataLoader workers), uint8 throughout, pixels stored height-width-channel as the decoders give them:
    decode_image(bytes, "RGB")                # (3, H, W) uint8 straight from libjpeg-turbo / libpng (torchvision.io)
    to_input(image, mask, S, mask_channel)    # scene (+ mask) -> (3, S, S), (1, S, S) or None; uint8
    letterbox_input(image, S, rng, augment)   # object crop -> (3, S, S) uint8, letterboxed, augmented with rng
    Augment()(image, mask, rng, S)            # random crop (resized once, straight to S), flip; draws the jitter
  per batch (scenectl.engine, inference, train, fuse, predict, all through this one function):
    batch_to_device(batch, device)            # tensors to device; `input` (+ `input_mask`) uint8 -> float32
                                              #   (B, C, S, S): colour jitter (training), ImageNet normalisation,
                                              #   the mask as channel 4 (1.0 = hidden); `scene_input` likewise
  at the model (train --hole-only, recorded in the checkpoint):
    make_hole_only(model)                     # every input's RGB replaced by the fill, mask channel kept

A reader's batch holds `input` (B, 3, S, S) uint8 RGB and, for a model with the mask channel, `input_mask`
(B, 1, S, S) uint8 (255 = hidden); `jitter` (B, 3) holds each sample's brightness / contrast / saturation factors,
drawn per sample from its seeded RNG. Joining image and mask, and any change of memory layout, happens in float on
the device: on uint8 in a CPU worker either costs as much as decoding the JPEG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode
from torchvision.io import decode_image as _decode
from torchvision.io import decode_jpeg as _decode_jpeg

from scenectl.data.masks import MEAN_RGB, Letterbox, bbox
from scenectl.errors import ScenectlError

# The input normalisation the torchvision ResNets and their ImageNet weights expect (torchvision's transforms for
# them use the same numbers); scenectl.models takes them from here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
MODES = {"RGB": ImageReadMode.RGB, "L": ImageReadMode.GRAY}


def decode_image(data: bytes, mode: str) -> torch.Tensor:
    """JPEG / PNG bytes -> (3, H, W) uint8 for mode "RGB", (1, H, W) for "L"; raises on unreadable bytes."""
    return _decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=MODES[mode])


def as_tensor(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """A PIL image (from a file) or an (H, W[, 3]) uint8 array (predict's scene) as (C, H, W) uint8 stored
    height-width-channel, as the decoders give it; tensors pass unchanged."""
    if isinstance(image, torch.Tensor):
        return image
    a = torch.from_numpy(np.array(image))  # (H, W, 3) or (H, W)
    return a.permute(2, 0, 1) if a.ndim == 3 else a[None]


def to_input(image, mask, image_size: int, mask_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(image (3, H, W), mask (1, H, W); uint8 tensors, or as_tensor's others) -> (RGB (3, S, S), mask (1, S, S) or
    None), uint8, the mask 255 where hidden. This is the whole eval preprocessing of a sample: a plain resize where
    the shards' size differs (they are already square, letterboxed); `batch_to_device` makes the model's float input."""
    x = _resized(as_tensor(image), image_size, "bilinear")
    if not mask_channel:
        return x, None
    if mask is None:
        raise ScenectlError("the model takes a mask channel but no mask was given")
    return x, _resized(as_tensor(mask), image_size, "nearest")


def _resized(x: torch.Tensor, size: int, mode: str, box: tuple | None = None) -> torch.Tensor:
    """(C, h, w) uint8, or its `box` (x0, y0, x1, y1) -> (C, size, size), height-width-channel storage (bilinear:
    antialiased when shrinking; torch's uint8 kernel, fastest on that layout)."""
    if box is not None:
        x = x[:, box[1]:box[3], box[0]:box[2]]  # crop first: a view
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if mode == "nearest":  # the source pixel under each output pixel's centre (as PIL, and as the bilinear image's
        # sampling grid: torch's "nearest-exact"), as numpy `take` along each axis (5x faster than torch or numpy
        # fancy indexing of both axes at once)
        rows = (2 * np.arange(size) + 1) * h // (2 * size)
        cols = (2 * np.arange(size) + 1) * w // (2 * size)
        return torch.from_numpy(x.numpy().take(rows, axis=1).take(cols, axis=2))
    x4 = x[None].contiguous(memory_format=torch.channels_last)  # (1, C, h, w); a copy only of a cropped view
    # antialiasing changes nothing when enlarging (same output), but its kernel is slower: only when shrinking
    shrink = h > size or w > size
    return F.interpolate(x4, size=(size, size), mode="bilinear", antialias=shrink, align_corners=False)[0]


def letterbox_input(image, image_size: int, rng: np.random.Generator | None,
                    augment: Augment) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Object crop (PIL or (3, H, W) uint8) -> ((3, S, S) uint8, jitter (3,) or None): letterboxed to a square (as
    the shards are), augmented when rng is given."""
    if isinstance(image, torch.Tensor) and image.shape[-1] != image.shape[-2]:  # shard crops are always square
        image = Image.fromarray(image.permute(1, 2, 0).numpy())
    if isinstance(image, Image.Image) and image.size[0] != image.size[1]:
        image = Image.fromarray(Letterbox(image.width, image.height, image_size).image(image))
    x = as_tensor(image)
    if rng is None:
        return _resized(x, image_size, "bilinear"), None
    blank = torch.zeros((1, *x.shape[-2:]), dtype=torch.uint8)  # no hidden region: the crop may fall anywhere
    x, _, jitter = augment(x, blank, rng, image_size)
    return x, jitter


def deferred_scene(mask: torch.Tensor, size: int, mask_channel: bool, rng: np.random.Generator | None,
                   augment: Augment) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """A scene whose JPEG `decode_batch` decodes later, on the model's device: its choices drawn now, from the mask
    (1, H, W) alone -> (geometry (6,) = crop box, flip, size; mask (1, S, S) or None; jitter (3,) or None), the same
    draws as `Augment.__call__` (no crop without rng)."""
    H, W = mask.shape[-2:]
    drawn = rng is not None and augment.enabled
    box, flip, jitter = augment.draw(mask, rng) if drawn else ((0, 0, W, H), False, None)
    m = _resized(mask, size, "nearest", box) if mask_channel else None
    m = m.flip(-1) if flip and m is not None else m
    return torch.tensor([*box, int(flip), size]), m, jitter


@dataclass
class Augment:
    """Training augmentation, applied identically to the image and the mask (colour jitter: image only).

    A random crop of `min_scale`..1 of the image area and aspect ratio 3/4..4/3 that always contains the whole
    hidden region's bounding box (the crop is grown when the box is larger), resized once to the output size; a
    horizontal flip with probability `flip`; brightness / contrast / saturation each scaled by a factor drawn from
    [1 - jitter, 1 + jitter] -- drawn here, applied per batch by `batch_to_device` (float work, on the device).
    """

    min_scale: float = 0.35
    flip: float = 0.5
    jitter: float = 0.2
    enabled: bool = True

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator, size: int | None = None):
        """(3, H, W), (1, H, W) uint8 -> (image (3, S, S), mask (1, S, S), jitter (3,) float32 or None); S = `size`
        (default: the input's height). The RNG draws come in a fixed order, so a sample's augmentation depends on
        its RNG alone."""
        size = size or image.shape[-2]
        box, flip, jitter = self.draw(mask, rng) if self.enabled else (None, False, None)
        image, mask = _resized(image, size, "bilinear", box), _resized(mask, size, "nearest", box)  # one resize each
        if flip:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask, jitter

    def draw(self, mask: torch.Tensor, rng: np.random.Generator) -> tuple[tuple, bool, torch.Tensor | None]:
        """The random choices for an image of the mask's size (1, H, W): crop box (x0, y0, x1, y1), flip, jitter
        factors (3,) or None (what `__call__` applies; batch_to_device applies them to a JPEG decoded later)."""
        H, W = mask.shape[-2:]
        box = bbox(mask[0].numpy() > 127)  # the hidden region's (x0, y0, x1, y1), exclusive ends, or None
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
        flip = bool(rng.random() < self.flip)
        jitter = (torch.from_numpy(rng.uniform(1 - self.jitter, 1 + self.jitter, size=3).astype(np.float32))
                  if self.jitter > 0 else None)
        return (x, y, x + w, y + h), flip, jitter


# --------------------------------------------------------------------------------------------------------------
# Per batch, where the batch meets the model


def stack(images: list[torch.Tensor]) -> torch.Tensor:
    """Samples (C, S, S) stored height-width-channel -> (B, C, S, S), the same storage: one plain copy, no
    transposition (the batch is a channels_last view)."""
    return torch.stack([x.permute(1, 2, 0) for x in images]).permute(0, 3, 1, 2)


def batch_to_device(batch: dict, device: torch.device) -> dict:
    """The one place a batch meets the model (train, eval, transfer, distill, fuse, predict): its tensors moved to
    `device`, and `input` / `scene_input` (+ their `_mask`) made model input there (`model_input`); `jitter` and
    the masks are used up."""
    out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if "input_jpg" in out:  # a View(defer_jpeg=True) batch: the scenes' JPEGs are decoded here, on `device`
        out["input"] = decode_batch(out.pop("input_jpg"), out.pop("input_geometry"), device)
    jitter = out.pop("jitter", None)
    out["input"] = model_input(out["input"], out.pop("input_mask", None), jitter)
    if "scene_input" in out:  # a context model's view: never augmented
        out["scene_input"] = model_input(out["scene_input"], out.pop("scene_input_mask", None))
    return out


def decode_batch(jpgs: list[torch.Tensor], geometry: torch.Tensor, device: torch.device) -> torch.Tensor:
    """JPEG bytes (1-D uint8 tensors) -> (B, 3, S, S) uint8 on `device`, decoded there (nvJPEG on CUDA, in one call
    for the batch; libjpeg-turbo on the CPU), each cropped to its box, resized to S (bilinear, antialiased, in float)
    and flipped as its sample drew: `geometry` (B, 6) = x0, y0, x1, y1, flip, S (View with defer_jpeg)."""
    images = _decode_jpeg(jpgs, mode=ImageReadMode.RGB, device=device)
    out = []
    for img, (x0, y0, x1, y1, flip, size) in zip(images, geometry.tolist()):
        crop = img[None, :, y0:y1, x0:x1].float()  # (1, 3, h, w)
        if crop.shape[-2:] != (size, size):
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(crop[0].flip(-1) if flip else crop[0])
    return torch.stack(out).round_().clamp_(0, 255).to(torch.uint8)


def model_input(x: torch.Tensor, mask: torch.Tensor | None = None, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """RGB (B, 3, S, S) uint8 (+ mask (B, 1, S, S) uint8, 255 = hidden) -> (B, C, S, S) float32, C = 4 with the
    mask: RGB colour-jittered (factors (B, 3), training) and normalised, the mask channel 1.0 where hidden and 0.0
    elsewhere. Contiguous (channels_last on CUDA). Float input is taken as already model input.

    One output buffer, every step in place on it: fresh batch-sized temporaries (and their page faults) and
    arithmetic in the reader's height-width-channel layout (3 channels innermost: not vectorised) cost several times
    the arithmetic itself on a CPU."""
    if x.dtype != torch.uint8:
        return x
    B, _, S, S2 = x.shape
    layout = torch.channels_last if x.is_cuda else torch.contiguous_format
    out = torch.empty((B, 3 if mask is None else 4, S, S2), device=x.device).contiguous(memory_format=layout)
    rgb = out[:, :3]
    rgb.copy_(x).mul_(1 / 255)  # (B, 3, S, S) in [0, 1]: the one pass that changes layout
    if jitter is not None:
        color_jitter(rgb, jitter.to(rgb.device, torch.float32))
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    rgb.sub_(mean).div_(std)
    if mask is not None:
        out[:, 3:].copy_(mask > 127)
    return out


def color_jitter(rgb: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1], factors (B, 3) = brightness, contrast, saturation -> jittered in place (and returned),
    in that order: torchvision's adjust_brightness / adjust_contrast / adjust_saturation, per sample."""
    b, c, s = (factors[:, i].view(-1, 1, 1, 1) for i in range(3))
    rgb.mul_(b).clamp_(0, 1)
    mean = _gray(rgb).mean((2, 3), keepdim=True)  # (B, 1, 1, 1) mean luma
    rgb.mul_(c).add_((1 - c) * mean).clamp_(0, 1)
    gray = _gray(rgb)  # (B, 1, S, S), before rgb changes
    return rgb.mul_(s).addcmul_(gray, 1 - s).clamp_(0, 1)


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 1, S, S) luma (GRAY weights)."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    return (r * GRAY[0]).add_(g, alpha=GRAY[1]).add_(b, alpha=GRAY[2])


# --------------------------------------------------------------------------------------------------------------
# The hole-only control (`train --hole-only`): the model sees the hidden region's shape and nothing else


def hole_only_input(x: torch.Tensor) -> torch.Tensor:
    """Model input (B, 4, S, S) float (normalised RGB + mask channel) -> a copy whose RGB is the build-shards mean
    fill (MEAN_RGB, normalised) at every pixel; the mask channel is kept. What is left is where the hole is and its
    shape and size: the context pixels are gone, so a model trained on this measures what the hole alone gives away."""
    if x.ndim != 4 or x.shape[1] != 4:
        raise ScenectlError(f"the hole-only input needs RGB + mask (B, 4, S, S), got {tuple(x.shape)}: a hole-only "
                            "model needs the mask channel")
    mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in (IMAGENET_MEAN, IMAGENET_STD))
    fill = (torch.tensor(MEAN_RGB, dtype=x.dtype, device=x.device) / 255 - mean) / std  # (3,) as model_input makes it
    out = x.clone(memory_format=torch.preserve_format)
    out[:, :3] = fill.view(1, 3, 1, 1)
    return out


def make_hole_only(model: torch.nn.Module) -> torch.nn.Module:
    """Apply hole_only_input to every input of `model` (a forward pre-hook, so the weights' names are unchanged and
    every command that runs the model, train steps, validation, eval, predict, sees the same input). Returns it."""
    model.register_forward_pre_hook(lambda module, args: (hole_only_input(args[0]), *args[1:]))
    model.hole_only = True
    return model
