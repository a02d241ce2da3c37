"""Hiding a region of any image exactly as build-shards hides an object, for a given checkpoint: the build params of
its training shards (checkpoint.TrainingShards; for an older checkpoint, the manifest of the set its config names
when it can be opened here, else build-shards' defaults) and build-shards' masked-sample steps. `scenectl predict`
(a region the user draws) and `scenectl rescore` (a detector's boxes) both hide through this module, so a region
reaches the model as the training samples did (tests/test_predict.py and tests/test_rescore.py compare pixels with
build-shards' own samples)."""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np
from PIL import Image

from scenectl.checkpoint import BuildParams, Checkpoint
from scenectl.data import masks
from scenectl.errors import ScenectlError


def default_params() -> dict:
    """build-shards' own defaults (BuildConfig), used when the checkpoint does not say how its shards were built."""
    from scenectl.data.shards import BuildConfig

    return asdict(BuildParams.parse(asdict(BuildConfig()), "build-shards' defaults"))


def shard_params(ckpt: Checkpoint) -> tuple[dict, str]:
    """Build parameters of the checkpoint's training shards (checkpoint.TrainingShards), and where they came from:
    the checkpoint itself; for one that predates them, the manifest of the shard set its config names when it can
    be opened here; else build-shards' defaults."""
    from scenectl.data.loader import open_shard_set

    shards = ckpt.training_shards
    if shards is not None and shards.params is not None:
        return asdict(shards.params), f"checkpoint (training shards {shards.spec})"
    if shards is not None:
        try:
            params = open_shard_set(shards.spec, from_file="the checkpoint's config").manifest.get("params", {})
        except ScenectlError:
            params = None  # moved, on another machine, or a URL / command (never run from a file): the defaults
        if isinstance(params, dict):
            return asdict(BuildParams.parse({**default_params(), **params}, f"manifest of {shards.spec}")), \
                f"manifest of {shards.spec}"
    return default_params(), "build-shards defaults (the checkpoint names no reachable training shards)"


def masked_sample(dec, obj: np.ndarray, params: dict, seed, base: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """build-shards' masked-sample steps (scenectl.data.shards.mask_scene) for object mask `obj` (H, W) bool, given
    in upright full-resolution pixels -> (masked scene (S, S, 3) uint8 after the JPEG round trip, mask (S, S) uint8
    255 = hidden, hidden share of the image). `seed`: numpy seed (an int or a sequence) of noise / blur fills;
    `base`: the unmasked letterboxed scene when the caller made it once for several regions of one image."""
    from scenectl.data.format import encode_jpeg
    from scenectl.data.shards import SceneView, mask_scene

    region, box = masks.hidden_region(obj, params["shape"], int(params["margin"]))  # (H, W) bool, contains obj
    lb = masks.Letterbox(*dec.size, int(params["image_size"]))
    base = lb.image(dec.image) if base is None else base  # (S, S, 3): the unmasked letterboxed scene
    scene = mask_scene(SceneView(dec, lb, base), region, box, params["fill"], np.random.default_rng(seed))
    with Image.open(io.BytesIO(encode_jpeg(scene))) as im:  # shards store JPEG: the model saw its artefacts
        scene = np.asarray(im.convert("RGB"))
    return scene, lb.mask(region, box), float(region[box[1]:box[3], box[0]:box[2]].sum()) / region.size
