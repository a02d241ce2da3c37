"""Checkpoints: one file holds everything needed to resume a run or use its model; one reader parses it.

    {
      "format": "scenectl-checkpoint/1",
      "scenectl_version": str,
      "kind": "context" | "transfer" | "distill",   # which command wrote it
      "arch": str, "in_chans": int, "num_classes": int, "mask_channel": bool, "image_size": int,
      "aux_visible": float,            # train --aux-visible (absent: 0); > 0 iff "model" holds aux_fc.* weights
      "hole_only": bool,               # train --hole-only (absent: false): the model sees the mask channel alone
      "model": state_dict, "optimizer": state_dict | None, "scheduler": state_dict | None, "scaler": state_dict | None,
      "epoch": int, "epoch_step": int, "step": int, "best_top1": float,
      "config": dict,                  # the command's config dataclass, asdict()
      "classes": [{"index", "coco_id", "name"}, ...],
      "cooccurrence": Cooccurrence.to_state() | None,   # the training split's counts
      "metrics": dict,                 # last validation metrics
      "training_shards": {"spec": str, "params": {"shape", "fill", "margin", "image_size", "max_area"}},
                                       # train: its --shards and their build params (TrainingShards); absent: none
      "selected_on": {"location": str, "manifest_sha256": str, "keys_sha256": str | None, "n": int | None},
                                       # best.pt only: the validation samples it was picked on (SampleSet)
    }

Saved atomically (temporary name, then rename) and always loaded with `torch.load(weights_only=True)`, so a file
crafted to run code when unpickled is refused instead of executed. `read_checkpoint` validates every field a
command relies on once and returns a `Checkpoint` record; no command reads the raw dict's facts itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from scenectl import __version__
from scenectl.data.masks import FILLS, SHAPES
from scenectl.errors import ScenectlError
from scenectl.io import atomic_path
from scenectl.options import RANGES

FORMAT = "scenectl-checkpoint/1"
KINDS = ("context", "transfer", "distill")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, "scenectl_version": __version__, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, loaded safely; any file that is not a scenectl checkpoint is a one-line error."""
    path = Path(path)
    if path.is_dir():
        inside = [p.name for p in sorted(path.glob("*.pt"))[:3]]
        raise ScenectlError(f"checkpoint {path} is a folder, not a checkpoint file: "
                            + (f"give one of its {', '.join(inside)}" if inside else
                               "a checkpoint is the .pt file that train, transfer or distill write (e.g. "
                               "runs/train/last.pt)"))
    if not path.is_file():
        raise ScenectlError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # a pickled object other than tensors and containers
            raise ScenectlError(f"refusing to load {path}: it holds Python objects, not plain weights, and "
                                "scenectl never unpickles code (not a scenectl checkpoint)") from None
        raise ScenectlError(f"{path} is not a scenectl checkpoint (not a readable torch file)") from None
    except Exception as e:  # torch.load raises many types for files that are not torch files (text, truncated zip)
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ScenectlError(f"{path} is not a readable scenectl checkpoint (truncated or corrupt, or not a torch file: "
                            f"{first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ScenectlError(f"{path} is not a scenectl checkpoint (no '{FORMAT}' format tag)")
    return state


@dataclass(frozen=True)
class BuildParams:
    """How build-shards hid the objects of a shard set (its manifest's `params`, validated): what `predict` repeats
    on a user's image."""

    shape: str
    fill: str
    margin: int
    image_size: int
    max_area: float

    @classmethod
    def parse(cls, params: Mapping, where: str) -> "BuildParams":
        """From a manifest's or a checkpoint's params (other keys ignored); a missing or bad value names `where`."""
        def bad(name: str) -> ScenectlError:
            return ScenectlError(f"{where}: build param '{name}' is {params.get(name)!r}, which build-shards never "
                                 "writes")

        if not isinstance(params, Mapping):
            raise ScenectlError(f"{where}: the build params are not a dict")
        for name, allowed in (("shape", SHAPES), ("fill", FILLS)):
            if params.get(name) not in allowed:
                raise bad(name)
        for name in ("margin", "image_size", "max_area"):  # build-shards' options, each in its option's range
            if RANGES[name].problem(params.get(name)):
                raise bad(name)
        return cls(*(params[f.name] for f in fields(cls)))

    @classmethod
    def of_manifest(cls, manifest: Mapping, where: str) -> "BuildParams | None":
        """A shard set's build params, or None when its manifest does not record them all."""
        params = manifest.get("params")
        if not isinstance(params, Mapping) or any(f.name not in params for f in fields(cls)):
            return None
        return cls.parse(params, where)


@dataclass(frozen=True)
class TrainingShards:
    """The shard set a context model was trained on, a fact of its checkpoint (read by eval's mask-only control and
    by predict): the --shards spec as given and its build params (None in checkpoints that predate them, which
    name their shards only in their config)."""

    spec: str
    params: BuildParams | None = None  # saved as dataclasses.asdict(TrainingShards)


def _sha256_hex(v) -> bool:
    return isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v) is not None


def keys_sha256(keys) -> str:
    """The sha256 of a set of sample keys, independent of their order (sorted, one per line)."""
    return hashlib.sha256("\n".join(sorted(str(k) for k in keys)).encode()).hexdigest()


@dataclass(frozen=True)
class SampleSet:
    """A set of samples, fingerprinted: where it was read, the sha256 of its manifest (canonical JSON) and of its
    sample keys (keys_sha256; None where they were not all seen in one process, e.g. under DDP), and n.

    best.pt records the validation set it was picked on (`selected_on`); eval and compare fingerprint the sets they
    score and call a score of best.pt on the same samples optimistic: the checkpoint was chosen for doing well there."""

    location: str
    manifest_sha256: str
    keys_sha256: str | None = None
    n: int | None = None

    @classmethod
    def of(cls, location: str, manifest: Mapping, keys=None) -> "SampleSet":
        """A shard set's fingerprint from its manifest and (if known) the keys of the samples read."""
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
        return cls(str(location), hashlib.sha256(text.encode()).hexdigest(),
                   None if keys is None else keys_sha256(keys), None if keys is None else len(keys))

    def same_samples(self, other: "SampleSet") -> bool:
        """The same manifest (the same build, all or some of its samples) or exactly the same sample keys (the same
        samples rebuilt elsewhere)."""
        return self.manifest_sha256 == other.manifest_sha256 or (
            self.keys_sha256 is not None and self.keys_sha256 == other.keys_sha256)

    @classmethod
    def parse(cls, raw, where: str) -> "SampleSet":
        if not (isinstance(raw, Mapping) and isinstance(raw.get("location"), str)
                and _sha256_hex(raw.get("manifest_sha256"))
                and (raw.get("keys_sha256") is None or _sha256_hex(raw.get("keys_sha256")))
                and (raw.get("n") is None or (type(raw.get("n")) is int and raw["n"] >= 0))):
            raise ScenectlError(f"{where}: not {{location: str, manifest_sha256: hex, keys_sha256: hex | null, "
                                "n: int | null}")
        return cls(raw["location"], raw["manifest_sha256"], raw.get("keys_sha256"), raw.get("n"))


def optimistic_note(path: str | Path, selected_on: SampleSet | None, scored: list[SampleSet]) -> str | None:
    """The warning a report carries when a checkpoint is scored on the samples it was selected on (else None)."""
    if selected_on is None or not any(selected_on.same_samples(s) for s in scored):
        return None
    return (f"selected on these samples: optimistic. {path} was picked as the best epoch by validation top-1 on "
            f"{selected_on.location}, the samples scored here, so its numbers flatter it; score last.pt (eval's "
            "default) or a held-out set for an unbiased estimate")


@dataclass(frozen=True)
class Checkpoint:
    """The facts of a checkpoint every command uses, validated once (`state` keeps the raw dict for resume)."""

    path: Path
    kind: str
    arch: str
    classes: list[dict]
    in_chans: int
    mask_channel: bool
    image_size: int
    config: dict
    state: dict
    training_shards: TrainingShards | None = None
    hole_only: bool = False  # train --hole-only: build_model replaces every input's RGB by the fill
    selected_on: SampleSet | None = None  # best.pt: the samples it was picked on

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [str(c["name"]) for c in self.classes]

    @property
    def cooccurrence(self):
        """The training split's co-occurrence counts (a Cooccurrence), or None when the checkpoint carries none."""
        from scenectl.data.cooccurrence import Cooccurrence

        raw = self.state.get("cooccurrence")
        if raw is None:
            return None
        try:
            cooc = Cooccurrence.from_state(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ScenectlError(f"{self.path}: its co-occurrence counts are malformed ({e})") from None
        if cooc.names != self.names:
            raise ScenectlError(f"{self.path}: its co-occurrence counts name other classes than its head")
        return cooc

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's weights, checked against the checkpoint's own architecture, classes and input channels
        before any model is allocated (weights_problem); keys saved by a DistributedDataParallel wrapper lose their
        `module.` prefix."""
        from scenectl.models import create_model

        state = {k.removeprefix("module."): v for k, v in self.state["model"].items()}
        with torch.device("meta"):  # shapes and dtypes only: no memory, whatever the checkpoint declares
            skeleton = create_model(self.arch, self.num_classes, self.in_chans,
                                    aux_classes=_aux_classes(state)).state_dict()
        problem = weights_problem(state, skeleton)
        if problem:
            raise ScenectlError(f"{self.path}: weights do not fit a {self.arch} model of {self.num_classes} classes "
                                f"and {self.in_chans} input channels ({problem})")
        return state

    def build_model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The checkpoint's model with its weights, in eval mode on `device`. An auxiliary head (train
        --aux-visible) is loaded with the rest, so every weight is checked, then removed: it is a training aid, and
        every command that builds a model from a checkpoint uses its classifier."""
        from scenectl.models import create_model

        state = self.model_state()
        model = create_model(self.arch, self.num_classes, self.in_chans, aux_classes=_aux_classes(state))
        model.load_state_dict(state)  # every key, shape and dtype checked by model_state
        model.add_aux_head(0)
        if self.hole_only:
            from scenectl.data.transforms import make_hole_only

            make_hole_only(model)
        return model.to(device).eval()


def _aux_classes(state: Mapping[str, torch.Tensor]) -> int:
    """Outputs of the auxiliary head (train --aux-visible) the weights hold: 0 without one (or with a head of the
    wrong rank, which weights_problem then names)."""
    aux = state.get("aux_fc.weight")
    return aux.shape[0] if aux is not None and aux.ndim == 2 else 0


def weights_problem(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps `state` from loading into a model whose state_dict is `expected` (a meta-device skeleton's), or
    None: a missing or unexpected key, another shape (0-d and empty tensors included) or kind of dtype, a tensor
    that is not dense (sparse, or a stride-0 broadcast that declares more values than the file holds), a
    non-finite weight."""
    missing, unexpected = [k for k in expected if k not in state], [k for k in state if k not in expected]
    if missing or unexpected:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    for k, v in state.items():
        e = expected[k]
        if v.shape != e.shape:
            return f"{k} has shape {tuple(v.shape)}, the model's is {tuple(e.shape)}"
        if v.layout != torch.strided or v.is_floating_point() != e.is_floating_point() or v.is_complex():
            return f"{k} is a {v.layout} {v.dtype} tensor, the model's a dense {e.dtype} one"
        if any(s == 0 and n > 1 for s, n in zip(v.stride(), v.shape)):
            return f"{k} is a stride-0 view: it declares more values than the file holds"
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return f"{k} holds NaN or infinite values"
    return None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load `path` (weights only) and validate the facts commands rely on, naming the file and the field at fault."""
    path = Path(path)
    raw = load_checkpoint(path)

    def bad(field: str, why: str) -> ScenectlError:
        return ScenectlError(f"{path}: field '{field}' {why}: not a usable scenectl model checkpoint")

    from scenectl.models import resolve_name

    if not isinstance(raw.get("arch"), str):
        raise bad("arch", "is missing or not a name")
    try:
        arch = resolve_name(raw["arch"])
    except ScenectlError as e:
        raise bad("arch", f"names an unknown model ({raw['arch']!r})") from e
    if not isinstance(raw.get("model"), dict) or not all(isinstance(v, torch.Tensor) for v in raw["model"].values()):
        raise bad("model", "is missing or not a dict of tensors")
    classes = _classes(raw, bad)
    in_chans = _int(raw, "in_chans", bad, 3, 4)
    mask = raw.get("mask_channel", in_chans == 4)
    if not isinstance(mask, bool) or mask != (in_chans == 4):
        raise bad("mask_channel", f"({mask!r}) disagrees with in_chans {in_chans}")
    config = raw.get("config", {})
    if not isinstance(config, dict):
        raise bad("config", "is not a dict")
    if "image_size" not in raw and "image_size" in config:  # written before image_size moved to the top level
        raw = {**raw, "image_size": config["image_size"]}
    image_size = _int(raw, "image_size", bad, RANGES["image_size"].lo, RANGES["image_size"].hi)  # --image-size's range
    _aux_visible(raw, bad)
    kind = raw.get("kind", "context")
    if kind not in KINDS:
        raise bad("kind", f"is {kind!r}, not one of {', '.join(KINDS)}")
    shards = _training_shards(raw, config, path, bad)
    hole_only = raw.get("hole_only", False)  # train --hole-only (absent: false): only with the mask channel
    if not isinstance(hole_only, bool) or (hole_only and not mask):
        raise bad("hole_only", f"({hole_only!r}) is not a boolean, or is true without the mask channel")
    selected = raw.get("selected_on")
    return Checkpoint(path, kind, arch, classes, in_chans, mask, image_size, config, raw, shards, hole_only,
                      None if selected is None else SampleSet.parse(selected, f"{path}: field 'selected_on'"))


def _training_shards(raw: dict, config: dict, path: Path, bad) -> TrainingShards | None:
    """The recorded training shards; in a checkpoint written before they were recorded, the shard set its config
    names (`data.shards`, or a flat `shards`) without build params; None when there is none (transfer, distill)."""
    fact = raw.get("training_shards")
    if fact is None:
        for group in (config.get("data"), config):
            spec = group.get("shards") if isinstance(group, dict) else None
            spec = spec[0] if isinstance(spec, list) and spec else spec
            if isinstance(spec, str) and spec:
                return TrainingShards(spec)
        return None
    if not isinstance(fact, dict) or not isinstance(fact.get("spec"), str) or not fact["spec"]:
        raise bad("training_shards", "is not {spec: str, params: dict}")
    params = fact.get("params")
    return TrainingShards(fact["spec"], None if params is None else
                          BuildParams.parse(params, f"{path}: field 'training_shards'"))


def _aux_visible(raw: dict, bad) -> None:
    """The --aux-visible weight the run trained with (0: none) must agree with the weights' auxiliary head."""
    w = raw.get("aux_visible", 0.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise bad("aux_visible", f"is {w!r}, not a finite number >= 0")
    has_head = any(k.removeprefix("module.").startswith("aux_fc.") for k in raw["model"])
    if has_head != (w > 0):
        raise bad("aux_visible", f"is {w!r} but the weights hold {'an' if has_head else 'no'} auxiliary head")


def _int(raw: dict, field: str, bad, lo: int, hi: int) -> int:
    v = raw.get(field)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise bad(field, f"is {v!r}, not an integer in [{lo}, {hi}]")
    return v


def _classes(raw: dict, bad) -> list[dict]:
    classes, n = raw.get("classes"), raw.get("num_classes")
    if not isinstance(classes, list) or not classes:
        raise bad("classes", "is missing or empty")
    for i, c in enumerate(classes):
        if not (isinstance(c, dict) and c.get("index") == i and isinstance(c.get("name"), str)
                and isinstance(c.get("coco_id"), int) and not isinstance(c.get("coco_id"), bool)):
            raise bad("classes", f"entry {i} is not {{index: {i}, coco_id: int, name: str}}")
    if n is not None and n != len(classes):
        raise bad("num_classes", f"({n!r}) differs from the {len(classes)} classes listed")
    return classes
