"""Checkpoints: one file holds everything needed to resume a run or evaluate it.

    {
      "format": "scenectl-checkpoint/1",
      "scenectl_version": str,
      "kind": "context" | "transfer" | "distill" | ...,   # which command wrote it
      "arch": str, "in_chans": int, "num_classes": int,
      "model": state_dict, "optimizer": state_dict | None, "scheduler": state_dict | None, "scaler": state_dict | None,
      "epoch": int, "step": int,
      "config": dict,                  # the command's config dataclass, asdict()
      "classes": [{"index", "coco_id", "name"}, ...],
      "cooccurrence": Cooccurrence.to_state() | None,   # the training split's counts
      "metrics": dict,                 # last validation metrics
    }

Saved atomically (temporary name, then rename) and always loaded with `torch.load(weights_only=True)`, so a file
crafted to run code when unpickled is refused instead of executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from scenectl import __version__
from scenectl.errors import ScenectlError
from scenectl.io import atomic_path

FORMAT = "scenectl-checkpoint/1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, "scenectl_version": __version__, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a scenectl checkpoint safely; any other file gives a one-line ScenectlError."""
    path = Path(path)
    if not path.is_file():
        raise ScenectlError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ScenectlError(f"refusing to load {path}: not a plain-weights checkpoint ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ScenectlError(f"{path} is not a readable checkpoint (truncated or corrupt?): {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ScenectlError(f"{path} is not a scenectl checkpoint (no '{FORMAT}' format tag)")
    return state


def classes_match(a: list[dict], b: list[dict]) -> bool:
    key = lambda cs: [(int(c["coco_id"]), str(c["name"])) for c in cs]  # noqa: E731
    return key(a) == key(b)
