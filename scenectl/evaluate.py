"""`scenectl eval`: score a trained checkpoint on one or more shard sets, beside label-only baselines.

    scenectl eval --checkpoint runs/train/best.pt --shards shards/val2017 --topk 50

Reads top to bottom:
  1. load the checkpoint (model, classes, the TRAINING split's co-occurrence counts) and check every shard set against it
  2. stream each shard set through the model, keeping logits (N, C), labels (N,), keys and visible classes
  3. metrics.summarize for the model and metrics.baselines (prior, co-occurrence naive Bayes, random) on the same samples
  4. write predictions.h5, confusion.png, per_class.png, report.md and report.json (LAST: its presence = eval complete)

Several shard sets (e.g. one per mask shape) give one sub-report each under `sets/NAME/`, a comparison table and
comparison.png, and metrics over all sets together in the top-level report.json.

Single process: evaluation runs on one device (`--device`), with `--workers` loader processes decoding shards.
Under torchrun only rank 0 would be meaningful, so it is not DDP-aware; a CPU/GPU eval of COCO val (36k samples)
is minutes, not hours.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np
import torch

from scenectl import metrics, plots
from scenectl.checkpoint import classes_match, load_checkpoint
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.errors import ScenectlError
from scenectl.inference import Outputs, concat, run_model  # noqa: F401  (Outputs, run_model: re-exported)
from scenectl.io import atomic_path, write_bytes_atomic, write_json_atomic
from scenectl.report import pct, format_table

REPORT_FORMAT = "scenectl-eval/1"
PREDICTIONS_FORMAT = "scenectl-predictions/1"


@dataclass
class EvalConfig:
    checkpoint: str = "runs/train/best.pt"  # `scenectl train`'s default output
    shards: list[str] = field(default_factory=lambda: ["shards/val2017"])  # build-shards' default output
    topk: list[int] = field(default_factory=list)  # extra k values; 1, 5 and 10 are always reported
    out: str | None = None  # default: <checkpoint's folder>/eval
    device: str = "auto"  # auto = cuda if available, else cpu
    batch_size: int = 64
    workers: int = 2
    seed: int = 0  # the random baseline's seed
    overwrite: bool = False
    save_logits: bool = True  # full (N, C) logits in predictions.h5 besides the top-k
    max_samples: int | None = None  # per shard set; None = all (quick looks and tests)


# --- 1. checkpoint, model, options --------------------------------------------------------------------------------
from scenectl.devices import parse_device as resolve_device  # noqa: E402  (moved; the one --device parser)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The checkpoint's model in eval mode on `device`, and the checkpoint dict (weights only, never unpickled)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    return model_from_checkpoint(ckpt, path, device), ckpt


def model_from_checkpoint(ckpt: dict, path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    from scenectl.models import create_model

    for key in ("arch", "model", "num_classes", "classes"):
        if key not in ckpt:
            raise ScenectlError(f"{path} holds no '{key}': not a model checkpoint scenectl eval can use")
    model = create_model(ckpt["arch"], int(ckpt["num_classes"]), int(ckpt.get("in_chans", 3)))
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}  # DDP-saved weights too
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ScenectlError(f"{path}: weights do not fit a {ckpt['arch']} model ({first})") from None
    return model.to(device).eval()


def resolve_ks(requested: Iterable[int], num_classes: int) -> tuple[list[int], list[str]]:
    """Sorted ks (1, 5, 10 always), each clamped to C; notes say which were clamped."""
    requested = [int(k) for k in requested]
    bad = [k for k in requested if k < 1]
    if bad:
        raise ScenectlError(f"--topk must be a positive integer, got {bad[0]}")
    ks, notes = set(), []
    for k in sorted(set(requested) | set(metrics.DEFAULT_KS)):
        if k > num_classes:
            notes.append(f"top-{k} clamped to top-{num_classes}: the model knows only {num_classes} classes")
        ks.add(min(k, num_classes))
    return sorted(ks), notes


def checkpoint_cooccurrence(ckpt: dict, shard_sets: list) -> tuple[Cooccurrence, str]:
    """The training split's counts (from the checkpoint); without them, the first shard set's own (noted)."""
    if ckpt.get("cooccurrence") is not None:
        return Cooccurrence.from_state(ckpt["cooccurrence"]), "checkpoint (training split)"
    return shard_sets[0].cooccurrence(), f"{shard_sets[0].urls[0] if shard_sets[0].urls else 'shards'}: " \
        "the evaluated split's own counts (the checkpoint carries none)"


def set_names(specs: list[str]) -> list[str]:
    """Short unique names for shard sets: the folder's name, numbered where two collide."""
    base = [Path(str(s).rstrip("/")).name.split("{")[0].split("*")[0] or f"set{i}" for i, s in enumerate(specs)]
    return [b if base.count(b) == 1 else f"{b}-{i}" for i, b in enumerate(base)]


# --- 3. metrics ---------------------------------------------------------------------------------------------------
def score(out: Outputs, cooc: Cooccurrence, ks: list[int], num_classes: int, seed: int) -> dict:
    """The model's metrics, the ground-truth plausibility ceiling and the three baselines on the same samples."""
    plausible = metrics.plausible_matrix(cooc)  # (C, C) bool
    rep = metrics.summarize(out.logits, out.labels, out.visible, plausible, ks, num_classes)
    ceiling = metrics.plausibility_of_labels(out.labels, out.visible, plausible)
    rep["plausibility_ceiling"] = ceiling["value"]  # share of true labels plausible with their scene
    rep["baselines"] = metrics.baselines(out.labels, out.visible, cooc, plausible, ks, num_classes, seed)
    return rep


# --- 4. outputs ---------------------------------------------------------------------------------------------------
def write_predictions(path: Path, out: Outputs, names: list[str], k: int, set_index: np.ndarray | None = None,
                      sets: list[str] | None = None, save_logits: bool = True, attrs: dict | None = None) -> None:
    """predictions.h5 (layout in docs/evaluation.md). Top-k by softmax probability, ties to the lower class index."""
    probs = torch.softmax(torch.from_numpy(out.logits), dim=1).numpy()  # (N, C)
    top = np.argsort(-out.logits, axis=1, kind="stable")[:, :k]  # (N, k): same ranking rule as metrics.ranking
    lengths = np.array([len(v) for v in out.visible], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (N + 1,)
    flat = np.array([c for v in out.visible for c in v], dtype=np.int64)
    string = h5py.string_dtype()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = PREDICTIONS_FORMAT
            f.attrs["k"] = k
            for name, value in (attrs or {}).items():
                f.attrs[name] = value
            f.create_dataset("keys", data=np.array(out.keys, dtype=object), dtype=string)
            f["labels"] = out.labels.astype(np.int64)
            f["topk_indices"] = top.astype(np.int64)
            f["topk_scores"] = np.take_along_axis(probs, top, axis=1).astype(np.float32)
            if save_logits:
                f.create_dataset("logits", data=out.logits.astype(np.float32), compression="gzip", compression_opts=4)
            f["visible_flat"] = flat
            f["visible_offsets"] = offsets
            f.create_dataset("class_names", data=np.array(names, dtype=object), dtype=string)
            if set_index is not None:
                f["set_index"] = set_index.astype(np.int64)
                f.create_dataset("set_names", data=np.array(sets, dtype=object), dtype=string)


def read_visible(f: h5py.File) -> list[list[int]]:
    """The ragged visible-class lists back from predictions.h5 (flat + offsets)."""
    flat, off = f["visible_flat"][()], f["visible_offsets"][()]
    return [flat[off[i]:off[i + 1]].tolist() for i in range(len(off) - 1)]


def metric_columns(ks: list[int]) -> list[str]:
    return [f"top-{k}" for k in ks] + [f"bal top-{k}" for k in ks] + ["plaus@10"]


def metric_row(rep: dict, ks: list[int]) -> dict[str, float | None]:
    row = {f"top-{k}": rep["topk"][k] for k in ks}
    row.update({f"bal top-{k}": rep["topk_balanced"][k] for k in ks})
    row["plaus@10"] = rep["plausibility@10"]
    return row


def model_table_rows(rep: dict, ks: list[int], label: str = "model") -> dict[str, dict]:
    rows = {label: metric_row(rep, ks)}
    for name, b in rep["baselines"].items():
        rows[f"{name} baseline"] = metric_row(b, ks)
    rows["true labels (ceiling)"] = {"plaus@10": rep["plausibility_ceiling"]}
    return rows


def _jsonable(rep: dict) -> dict:
    """int keys → str (JSON), recursively."""
    if isinstance(rep, dict):
        return {str(k): _jsonable(v) for k, v in rep.items()}
    if isinstance(rep, list):
        return [_jsonable(v) for v in rep]
    return rep


def write_report_md(path: Path, rep: dict, ks: list[int], names: list[str], title: str) -> None:
    lines = [f"# {title}", "", f"- checkpoint: `{rep['checkpoint']}` ({rep['arch']}, {len(names)} classes)",
             f"- shard sets: {', '.join(f'`{s}`' for s in rep['shards'])}", f"- samples: {rep['n']}",
             f"- co-occurrence counts: {rep['cooccurrence_source']}",
             f"- plausibility@10 over {rep['plausibility_n']} scenes; {rep['plausibility_excluded']} scenes with no "
             "other visible object excluded", *(f"- note: {n}" for n in rep["notes"]), "",
             "Percentages. `bal` = class-balanced (mean over classes present of each class's accuracy). "
             "`plaus@10` = share of the top-10 predictions that co-occur more often than chance (PMI > 0, training "
             "counts) with some visible object; true labels (ceiling) = share of scenes whose hidden class is itself "
             "plausible with a visible object.", "",
             format_table(model_table_rows(rep, ks), metric_columns(ks), markdown=True), ""]
    if rep.get("sets"):
        lines += ["## Per shard set (model)", "", format_table({s: metric_row(r, ks) for s, r in rep["sets"].items()},
                                                                metric_columns(ks), markdown=True), ""]
    lines += ["## Per class (top-1)", "", "| class | samples | correct | accuracy |", "|---|---:|---:|---:|"]
    lines += [f"| {names[r['class']]} | {r['support']} | {r['correct']} | {pct(r['accuracy'])} |"
              for r in rep["per_class"] if r["support"]]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def write_outputs(folder: Path, rep: dict, out: Outputs, ks: list[int], names: list[str], title: str,
                  cfg: EvalConfig, set_index=None, sets=None) -> None:
    """predictions.h5, plots and report.md first; report.json last (its presence marks a complete report)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_predictions(folder / "predictions.h5", out, names, max(ks), set_index, sets, cfg.save_logits,
                      {"checkpoint": str(cfg.checkpoint), "shards": json.dumps(rep["shards"])})
    conf = plots.confusion_matrix(out.labels, out.logits.argmax(axis=1), len(names))
    plots.plot_confusion(conf, names, folder / "confusion.png", title=f"{title}: confusion (row-normalised)")
    support = [r["support"] for r in rep["per_class"]]
    plots.plot_per_class([r["accuracy"] for r in rep["per_class"]], support, names, folder / "per_class.png",
                         title=f"{title}: per-class top-1 (samples)")
    write_report_md(folder / "report.md", rep, ks, names, title)
    write_json_atomic(folder / "report.json", _jsonable(rep))


def prepare_out(cfg: EvalConfig) -> Path:
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent / "eval"
    if (out / "report.json").exists():
        if not cfg.overwrite:
            raise ScenectlError(f"{out} already holds a report (report.json); pass --overwrite or choose another --out")
        shutil.rmtree(out / "sets", ignore_errors=True)  # stale sub-reports of an earlier multi-set eval
        (out / "report.json").unlink()  # until the new one is whole, the folder must not look complete
    out.mkdir(parents=True, exist_ok=True)
    return out


# --- main ---------------------------------------------------------------------------------------------------------
def open_sets(cfg: EvalConfig, ckpt: dict):
    from scenectl.data.loader import open_shard_set

    if not cfg.shards:
        raise ScenectlError("no shard set given (--shards)")
    sets = [open_shard_set(s) for s in cfg.shards]
    for spec, ss in zip(cfg.shards, sets):
        ss.require_masked("--shards")
        if not classes_match(ckpt["classes"], ss.classes):
            raise ScenectlError(f"--shards {spec}: its class list differs from the checkpoint's "
                                f"({len(ss.classes)} vs {len(ckpt['classes'])} classes, or other names/ids)")
    return sets


def eval_loader(shard_set, ckpt: dict, cfg: EvalConfig):
    """The shard set as batches shaped for this checkpoint's model (image size, mask channel as in training)."""
    from scenectl.data.loader import make_eval_loader

    tcfg = ckpt.get("config") or {}
    return make_eval_loader(shard_set, image_size=int(tcfg.get("image_size", 224)),
                            mask_channel=bool(tcfg.get("mask_channel", int(ckpt.get("in_chans", 3)) == 4)),
                            batch_size=cfg.batch_size, workers=cfg.workers)


def main(cfg: EvalConfig) -> dict:
    """Evaluate; returns the top-level report (also written as OUT/report.json)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would write the same files
        raise ScenectlError("scenectl eval runs in one process: start it without torchrun (see docs/evaluation.md)")
    if any(int(k) < 1 for k in cfg.topk):
        raise ScenectlError(f"--topk must be a positive integer, got {min(int(k) for k in cfg.topk)}")
    if cfg.batch_size < 1:
        raise ScenectlError(f"--batch-size must be positive, got {cfg.batch_size}")
    device = resolve_device(cfg.device)
    model, ckpt = load_model(cfg.checkpoint, device)
    names = [str(c["name"]) for c in ckpt["classes"]]
    num_classes = int(ckpt["num_classes"])
    if len(names) != num_classes:
        raise ScenectlError(f"{cfg.checkpoint}: {len(names)} class names but a {num_classes}-class head")
    ks, notes = resolve_ks(cfg.topk, num_classes)
    shard_sets = open_sets(cfg, ckpt)
    cooc, cooc_source = checkpoint_cooccurrence(ckpt, shard_sets)
    out_dir = prepare_out(cfg)
    write_json_atomic(out_dir / "config.json", asdict(cfg))

    labels = set_names(list(cfg.shards))
    outs = []
    for spec, name, ss in zip(cfg.shards, labels, shard_sets):
        o = run_model(model, eval_loader(ss, ckpt, cfg), device, cfg.max_samples, desc=f"eval {name}")
        if not o.keys:
            raise ScenectlError(f"--shards {spec}: the shard set yielded no samples")
        outs.append(o)
    common = {"format": REPORT_FORMAT, "out": str(out_dir), "checkpoint": str(cfg.checkpoint), "arch": ckpt["arch"], "classes": names,
              "ks": ks, "cooccurrence_source": cooc_source, "notes": notes}

    sub = {}
    if len(outs) > 1:  # one sub-report per shard set, then the comparison
        for spec, name, o in zip(cfg.shards, labels, outs):
            rep = {**common, "shards": [spec], **score(o, cooc, ks, num_classes, cfg.seed),
                   "seconds": o.seconds, "samples_per_s": len(o.keys) / max(o.seconds, 1e-9)}
            write_outputs(out_dir / "sets" / name, rep, o, ks, names, f"eval of {name}", cfg)
            sub[name] = rep
    allout = concat(outs)
    rep = {**common, "shards": list(cfg.shards), **score(allout, cooc, ks, num_classes, cfg.seed),
           "seconds": allout.seconds, "samples_per_s": len(allout.keys) / max(allout.seconds, 1e-9)}
    if sub:
        rep["sets"] = {n: {k: r[k] for k in ("shards", "n", "topk", "topk_balanced", "plausibility@10",
                                              "plausibility_ceiling", "plausibility_n", "plausibility_excluded")}
                       | {"baselines": {b: {m: r["baselines"][b][m] for m in ("topk", "topk_balanced", "plausibility@10")}
                                        for b in r["baselines"]}, "report": f"sets/{n}/report.json"}
                       for n, r in sub.items()}
        plots.plot_comparison({n: {f"top-{k}": r["topk"][k] for k in ks} | {f"bal top-{k}": r["topk_balanced"][k] for k in ks}
                               | {"plaus@10": r["plausibility@10"] or 0.0} for n, r in sub.items()},
                              out_dir / "comparison.png", title="model per shard set")
    set_index = np.concatenate([np.full(len(o.keys), i) for i, o in enumerate(outs)])
    write_outputs(out_dir, rep, allout, ks, names, "eval" if not sub else "eval of all shard sets", cfg,
                  set_index, labels)
    return rep


def summary_text(rep: dict, out_dir: Path | str) -> str:
    """What the CLI prints: the results table(s) and where the files are."""
    ks = rep["ks"]
    parts = [f"{rep['n']} samples, {len(rep['classes'])} classes, {rep['samples_per_s']:.1f} samples/s",
             format_table(model_table_rows(rep, ks), metric_columns(ks))]
    if rep.get("sets"):
        parts += ["per shard set (model):", format_table({s: metric_row(r, ks) for s, r in rep["sets"].items()} |
                                                         {"all": metric_row(rep, ks)}, metric_columns(ks))]
    parts += [f"plausibility@10 over {rep['plausibility_n']} scenes ({rep['plausibility_excluded']} without another "
              "visible object excluded)", *(f"note: {n}" for n in rep["notes"])]
    files = "report.json, report.md, predictions.h5, confusion.png, per_class.png"
    parts.append(f"wrote {out_dir}/{{{files}{', comparison.png, sets/' if rep.get('sets') else ''}}}")
    return "\n".join(parts)


# --- `scenectl cooccurrence`: which classes keep each class company ------------------------------------------------
@dataclass
class CooccurrenceConfig:
    source: str = "shards/train2017"  # a shard set, a checkpoint (.pt) or a cooccurrence.h5
    top: int = 5
    by: str = "conditional"  # conditional: P(j in image | i in image); pmi: log P(i, j) / (P(i) P(j))
    min_count: int = 1  # ignore pairs seen together in fewer images (PMI over-rates rare pairs)
    out: str | None = "cooccurrence.png"


def load_cooccurrence(source: str) -> tuple[Cooccurrence, str]:
    """Counts from a checkpoint (the training split's), a cooccurrence.h5, or a shard set's folder/URL."""
    path = Path(source)
    if path.is_file() and path.suffix in (".h5", ".hdf5"):
        return Cooccurrence.load(path), f"{path}"
    if path.is_file():
        ckpt = load_checkpoint(path)
        if ckpt.get("cooccurrence") is None:
            raise ScenectlError(f"{path} carries no co-occurrence counts")
        return Cooccurrence.from_state(ckpt["cooccurrence"]), f"{path} (training split)"
    from scenectl.data.loader import open_shard_set

    ss = open_shard_set(source)
    return ss.cooccurrence(), f"{ss.location}/cooccurrence.h5"


def companion_matrix(cooc: Cooccurrence, by: str) -> np.ndarray:
    """(C, C) float: [i, j] = how strongly j accompanies i; NaN where undefined (i never seen, or j = i)."""
    co = cooc.cooccurrence.astype(np.float64)  # (C, C) images holding both
    n_i = cooc.image_counts.astype(np.float64)  # (C,)
    with np.errstate(divide="ignore", invalid="ignore"):
        if by == "conditional":
            m = co / n_i[:, None]  # P(j | i), rows of unseen classes are NaN
        elif by == "pmi":
            m = np.log(co * cooc.n_images) - np.log(n_i[:, None] * n_i[None, :])  # -inf where never together
        else:
            raise ScenectlError(f"--by must be 'conditional' or 'pmi', got '{by}'")
    m[n_i == 0, :] = np.nan
    m[:, n_i == 0] = np.nan
    np.fill_diagonal(m, np.nan)
    return m


def top_companions(cooc: Cooccurrence, top: int = 5, by: str = "conditional", min_count: int = 1) -> list[dict]:
    """Per class seen at least once: its `top` companions [{name, value, images}], best first (ties: more images)."""
    if top < 1:
        raise ScenectlError(f"--top must be a positive integer, got {top}")
    m = companion_matrix(cooc, by)
    rows = []
    for i, name in enumerate(cooc.names):
        if cooc.image_counts[i] == 0:
            continue
        ok = [j for j in range(len(cooc.names)) if np.isfinite(m[i, j]) and cooc.cooccurrence[i, j] >= max(min_count, 1)]
        ok.sort(key=lambda j: (-m[i, j], -int(cooc.cooccurrence[i, j]), j))
        rows.append({"class": name, "images": int(cooc.image_counts[i]),
                     "companions": [{"name": cooc.names[j], "value": float(m[i, j]),
                                     "images": int(cooc.cooccurrence[i, j])} for j in ok[:top]]})
    return rows


def cooccurrence_main(cfg: CooccurrenceConfig) -> tuple[list[dict], str]:
    """Top companions per class, as text lines ready to print; writes the heatmap when cfg.out is set."""
    cooc, where = load_cooccurrence(cfg.source)
    rows = top_companions(cooc, cfg.top, cfg.by, cfg.min_count)
    measure = "P(companion in image | class in image)" if cfg.by == "conditional" else "PMI = ln P(i,j) / (P(i) P(j))"
    lines = [f"co-occurrence of {cooc.n_images} images from {where}; companions ranked by {measure} "
             f"(pairs in >= {max(cfg.min_count, 1)} images; image count in brackets)"]
    width = max((len(r["class"]) for r in rows), default=0)
    for r in rows:
        comp = ", ".join(f"{c['name']} {c['value']:.2f} ({c['images']})" for c in r["companions"]) or "(none)"
        lines.append(f"{r['class']:<{width}}  [{r['images']:>5} images]  {comp}")
    if cfg.out:
        m = companion_matrix(cooc, cfg.by)
        plots.plot_heatmap(np.where(np.isfinite(m), m, np.nan), cooc.names, cfg.out,
                           title=f"co-occurrence ({cfg.by}); {cooc.n_images} images", label=measure)
        lines.append(f"wrote {cfg.out}")
    return rows, "\n".join(lines)
