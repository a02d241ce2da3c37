"""`scenectl predict`: hide a region of any image exactly as build-shards would, and ask the model what is there.

    scenectl predict --checkpoint runs/train/best.pt photo.jpg --box 120,80,60,90 --shape circle --out pred.png

The user's region plays the instance mask `M` of docs/shard-format.md: a `--box x,y,w,h` (the rectangle),
a `--polygon x1,y1,x2,y2,...` (rasterised by pycocotools, as COCO polygons are) or a `--mask-file` (non-zero =
object). From there the pixel work repeats build-shards' masked-sample steps with scenectl.data.masks: dilate by
`margin`, fit the shape, draft-decode, fill, letterbox to the shard image size, JPEG round trip at the shards'
quality; then `transforms.to_input` resizes and normalises as at evaluation. tests/test_predict.py checks the
result against build-shards' own mask.png and jpg, pixel for pixel. Shape, fill, margin and shard image size are
the build params of the checkpoint's training shards (checkpoint.TrainingShards; for an older checkpoint, the
manifest of the set its config names when it can be opened, else build-shards' defaults); the options override them. Coordinates are pixels of the upright image (EXIF orientation applied), as viewers show it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scenectl.checkpoint import Checkpoint, read_checkpoint
from scenectl.config import PredictConfig
from scenectl.data import masks
from scenectl.devices import parse_device
from scenectl.errors import ScenectlError
from scenectl.folders import check_file_target
from scenectl.hiding import masked_sample, shard_params
from scenectl.io import open_regular


# --- the user's region ---------------------------------------------------------------------------------------------
def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ScenectlError(f"{option} {text!r}: expected comma-separated numbers") from None


def object_mask(cfg: PredictConfig, width: int, height: int) -> tuple[np.ndarray, list[str]]:
    """The object's (H, W) bool mask from --box, --polygon or --mask-file, and notes (clipping)."""
    given = [n for n, v in (("--box", cfg.box), ("--polygon", cfg.polygon), ("--mask-file", cfg.mask_file)) if v]
    if len(given) != 1:
        raise ScenectlError(f"give exactly one of --box, --polygon, --mask-file (got {', '.join(given) or 'none'})")
    notes = []
    if cfg.box:
        v = _numbers(cfg.box, "--box")
        if len(v) != 4 or v[2] <= 0 or v[3] <= 0:
            raise ScenectlError(f"--box {cfg.box!r}: expected x,y,w,h with positive w and h")
        x0, y0, x1, y1 = v[0], v[1], v[0] + v[2], v[1] + v[3]
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise ScenectlError(f"--box {cfg.box} lies outside the {width}x{height} image")
        masks.check_shape("--box", "box", v, width, height)  # NaN passed the comparisons above; huge values too
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            notes.append(f"--box {cfg.box} reaches outside the {width}x{height} image: clipped to it")
        return masks.box_mask([x0, y0, x1 - x0, y1 - y0], width, height), notes  # whole pixels, clipped
    if cfg.polygon:
        from scenectl.data.coco import decode_mask

        v = _numbers(cfg.polygon, "--polygon")
        if len(v) < 6 or len(v) % 2:
            raise ScenectlError(f"--polygon needs at least 3 x,y points, got {len(v)} numbers")
        xs, ys = v[0::2], v[1::2]
        if max(xs) <= 0 or max(ys) <= 0 or min(xs) >= width or min(ys) >= height:
            raise ScenectlError(f"--polygon lies outside the {width}x{height} image")
        masks.check_shape("--polygon", "polygon", v, width, height)  # finite, within reach of the image
        if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
            notes.append(f"--polygon reaches outside the {width}x{height} image: clipped to it")
        m = decode_mask([v], height, width)  # pycocotools rasterisation, as COCO polygons
        if m is None:
            raise ScenectlError("--polygon covers no pixel of the image")
        return m, notes
    path = Path(cfg.mask_file)
    try:
        with open_regular(path, "--mask-file") as f, Image.open(f) as im:
            m = np.asarray(im.convert("L")) > 0
    except ScenectlError:
        raise
    except Exception as e:  # PIL raises many types for bad files
        raise ScenectlError(f"--mask-file {path} is not a readable image ({type(e).__name__})") from None
    if m.shape != (height, width):
        raise ScenectlError(f"--mask-file {path} is {m.shape[1]}x{m.shape[0]}, the image {width}x{height}")
    if not m.any():
        raise ScenectlError(f"--mask-file {path} marks no pixel (non-zero = object)")
    return m, notes


def load_upright(path: str | Path, image_size: int):
    """The image decoded by build-shards' own loader (EXIF orientation, CMYK, greyscale; JPEG draft decoding for
    `image_size` exactly as a masked-scene build does) -> scenectl.data.coco.Decoded."""
    from scenectl.data.coco import BadImage, load_image

    path = Path(path)
    try:
        with open_regular(path, "image") as f, Image.open(f) as im:
            size = im.size  # as stored: load_image checks it like an annotation's width/height
    except ScenectlError:
        raise
    except Exception as e:  # PIL raises many types for bad files
        raise ScenectlError(f"{path} is not a readable image ({type(e).__name__})") from None
    try:
        return load_image(path, *size, draft=image_size)
    except BadImage as e:
        raise ScenectlError(f"{path} is not a readable image ({e})") from None


# --- what predict's figure shows ------------------------------------------------------------------------------------
def full_view(dec, obj: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """The whole upright image (h, w, 3) uint8 as decoded and its hidden region (h, w) uint8, 255 = hidden, at the
    decoded size (JPEG draft decoding may have shrunk it): what predict's figure shows beside the model's input."""
    region, _ = masks.hidden_region(obj, params["shape"], int(params["margin"]))  # (H, W) bool, full resolution
    image = np.asarray(dec.image.convert("RGB"))
    hidden = Image.fromarray(region.astype(np.uint8) * 255).resize(dec.image.size, Image.NEAREST)
    return image, np.asarray(hidden)


def hiding_params(cfg: PredictConfig, ckpt: Checkpoint) -> tuple[dict, str]:
    """How to hide the region: the training shards' parameters, overridden by the options given; and their source."""
    params, source = shard_params(ckpt)
    params |= {key: getattr(cfg, key) for key in ("shape", "fill", "margin") if getattr(cfg, key) is not None}
    if params["shape"] not in masks.SHAPES:
        raise ScenectlError(f"--shape must be one of {', '.join(masks.SHAPES)}, got {params['shape']!r}")
    if params["fill"] not in masks.FILLS:
        raise ScenectlError(f"--fill must be one of {', '.join(masks.FILLS)}, got {params['fill']!r}")
    masks.check_shape("--margin", "margin", params["margin"], 1, 1)  # an integer in [0, MAX_MARGIN]
    return params, source


def predict(cfg: PredictConfig) -> dict:
    """Top-`cfg.top` classes with probabilities for the hidden region; writes cfg.out when set."""
    from scenectl.data.transforms import batch_to_device, to_input

    cfg.check()
    if cfg.out:
        check_file_target(cfg.out, "--out", inputs=(cfg.image, cfg.checkpoint, cfg.mask_file))
    device = parse_device(cfg.device)
    ckpt = read_checkpoint(cfg.checkpoint)  # the model itself is built once the inputs have passed their checks
    params, source = hiding_params(cfg, ckpt)
    dec = load_upright(cfg.image, int(params["image_size"]))
    obj, notes = object_mask(cfg, *dec.size)
    scene, mask, fraction = masked_sample(dec, obj, params, cfg.seed)
    if fraction > float(params.get("max_area", 1.0)):
        notes.append(f"the hidden region covers {100 * fraction:.0f}% of the image, above the training shards' "
                     f"max_area {params['max_area']}: build-shards would have skipped it")
    model = ckpt.build_model(device)
    rgb, m = to_input(scene, mask, ckpt.image_size, ckpt.mask_channel)  # (3, S, S), (1, S, S) or None; uint8
    one = {"input": rgb[None]} if m is None else {"input": rgb[None], "input_mask": m[None]}  # a batch of one
    with torch.inference_mode():
        x = batch_to_device(one, device)["input"]  # (1, C, S, S) float, as every batch
        probs = torch.softmax(model(x).float(), dim=1)[0].cpu().numpy()  # (num_classes,)
    order = np.argsort(-probs, kind="stable")[: min(cfg.top, len(probs))]
    top = [{"class": ckpt.names[i], "index": int(i), "probability": float(probs[i])} for i in order]
    if cfg.out:
        from scenectl import plots

        with plots.source(checkpoint=str(cfg.checkpoint), data=str(cfg.image)):
            plots.plot_prediction(scene, [t["probability"] for t in top], [t["class"] for t in top], cfg.out,
                                  title=f"model input: {params['shape']} region hidden ({params['fill']} fill, "
                                        f"{100 * fraction:.1f}% of the image); outline: hidden region", mask=mask,
                                  full=full_view(dec, obj, params))
    return {"checkpoint": f"{cfg.checkpoint} ({ckpt.arch}, {ckpt.num_classes} classes, {ckpt.kind})", "top": top, "params": {k: params[k] for k in ("shape", "fill", "margin", "image_size")},
            "params_source": source, "hidden_fraction": fraction, "notes": notes, "out": cfg.out}
