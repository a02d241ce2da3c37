"""`scenectl eval`: score a trained checkpoint on one or more shard sets, beside label-only baselines.

    scenectl eval --checkpoint runs/train/best.pt --shards shards/val2017 --topk 50

Reads top to bottom:
  1. load the checkpoint (model, classes, the TRAINING split's co-occurrence counts) and check every shard set against it
  2. stream each shard set through the model, keeping logits (N, C), labels (N,), keys and visible classes
  3. metrics.summarize for the model and metrics.baselines (prior, co-occurrence naive Bayes, random) on the same samples
  4. write predictions.h5 (scenectl.predictions), confusion.png, per_class.png, report.md and report.json (LAST: its
     presence = eval complete) into an `eval` folder (scenectl.folders.claim: never a folder another command owns)

Several shard sets (e.g. one per mask shape) give one sub-report each under `sets/NAME/`, a comparison table and
comparison.png, and metrics over all sets together in the top-level report.json.

Single process: evaluation runs on one device (`--device`), with `--workers` loader processes decoding shards.
Under torchrun only rank 0 would be meaningful, so it is not DDP-aware; a CPU/GPU eval of COCO val (36k samples)
is minutes, not hours.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from scenectl import metrics, plots
from scenectl.checkpoint import Checkpoint, classes_match, read_checkpoint
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.devices import parse_device
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.inference import Outputs, concat, run_model
from scenectl.io import write_bytes_atomic, write_json_atomic
from scenectl.predictions import write_predictions
from scenectl.report import format_table, pct

REPORT_FORMAT = "scenectl-eval/1"


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


# --- 1. checkpoint, shard sets, options ---------------------------------------------------------------------------
def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The checkpoint's model in eval mode and its raw dict: a thin alias of read_checkpoint kept only because
    distill.py still imports it (the engine rewrite reads checkpoints with read_checkpoint directly)."""
    ckpt = read_checkpoint(path)
    return ckpt.build_model(device), ckpt.state


def check_options(cfg: EvalConfig) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would write the same files
        raise ScenectlError("scenectl eval runs in one process: start it without torchrun (see docs/evaluation.md)")
    if cfg.batch_size < 1:
        raise ScenectlError(f"--batch-size must be positive, got {cfg.batch_size}")


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


def checkpoint_cooccurrence(ckpt: Checkpoint, shard_sets: list) -> tuple[Cooccurrence, str]:
    """The training split's counts (from the checkpoint); without them, the first shard set's own (noted)."""
    cooc = ckpt.cooccurrence
    if cooc is not None:
        return cooc, "checkpoint (training split)"
    return shard_sets[0].cooccurrence(), f"{shard_sets[0].urls[0] if shard_sets[0].urls else 'shards'}: " \
        "the evaluated split's own counts (the checkpoint carries none)"


def open_sets(cfg: EvalConfig, ckpt: Checkpoint) -> list:
    from scenectl.data.loader import open_shard_set

    if not cfg.shards:
        raise ScenectlError("no shard set given (--shards)")
    sets = [open_shard_set(s) for s in cfg.shards]
    for spec, ss in zip(cfg.shards, sets):
        ss.require_masked("--shards")
        if not classes_match(ckpt.classes, ss.classes):
            raise ScenectlError(f"--shards {spec}: its class list differs from the checkpoint's "
                                f"({len(ss.classes)} vs {ckpt.num_classes} classes, or other names/ids)")
    return sets


def set_names(specs: list[str]) -> list[str]:
    """Short unique names for shard sets: the folder's name, numbered where two collide."""
    base = [Path(str(s).rstrip("/")).name.split("{")[0].split("*")[0] or f"set{i}" for i, s in enumerate(specs)]
    return [b if base.count(b) == 1 else f"{b}-{i}" for i, b in enumerate(base)]


# --- 2. the model over each shard set ------------------------------------------------------------------------------
def eval_loader(shard_set, ckpt: Checkpoint, cfg: EvalConfig):
    """The shard set as batches shaped for this checkpoint's model (image size, mask channel as in training)."""
    from scenectl.data.loader import make_eval_loader

    return make_eval_loader(shard_set, image_size=ckpt.image_size, mask_channel=ckpt.mask_channel,
                            batch_size=cfg.batch_size, workers=cfg.workers)


def run_sets(cfg: EvalConfig, ckpt: Checkpoint, model: torch.nn.Module, shard_sets: list, labels: list[str],
             device: torch.device) -> list[Outputs]:
    outs = []
    for spec, name, ss in zip(cfg.shards, labels, shard_sets):
        o = run_model(model, eval_loader(ss, ckpt, cfg), device, cfg.max_samples, desc=f"eval {name}")
        if not o.keys:
            raise ScenectlError(f"--shards {spec}: the shard set yielded no samples")
        outs.append(o)
    return outs


# --- 3. metrics ---------------------------------------------------------------------------------------------------
def score(out: Outputs, cooc: Cooccurrence, ks: list[int], num_classes: int, seed: int) -> dict:
    """The model's metrics, the ground-truth plausibility ceiling and the three baselines on the same samples."""
    plausible = metrics.plausible_matrix(cooc)  # (C, C) bool
    rep = metrics.summarize(out.logits, out.labels, out.visible, plausible, ks, num_classes)
    ceiling = metrics.plausibility_of_labels(out.labels, out.visible, plausible)
    rep["plausibility_ceiling"] = ceiling["value"]  # share of true labels plausible with their scene
    rep["baselines"] = metrics.baselines(out.labels, out.visible, cooc, plausible, ks, num_classes, seed)
    return rep


def scored(common: dict, shards: list[str], out: Outputs, cooc: Cooccurrence, ks: list[int], num_classes: int,
           seed: int) -> dict:
    """One report: the common facts, the shard sets it covers, the metrics and the throughput."""
    return {**common, "shards": shards, **score(out, cooc, ks, num_classes, seed), "seconds": out.seconds,
            "samples_per_s": len(out.keys) / max(out.seconds, 1e-9)}


def set_summary(rep: dict, name: str) -> dict:
    """What the top-level report keeps of one shard set's sub-report (the rest is in sets/NAME/report.json)."""
    keep = ("shards", "n", "topk", "topk_balanced", "plausibility@10", "plausibility_ceiling", "plausibility_n",
            "plausibility_excluded")
    baselines = {b: {m: r[m] for m in ("topk", "topk_balanced", "plausibility@10")} for b, r in rep["baselines"].items()}
    return {**{k: rep[k] for k in keep}, "baselines": baselines, "report": f"sets/{name}/report.json"}


# --- 4. outputs ---------------------------------------------------------------------------------------------------
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


def write_reports(out_dir: Path, cfg: EvalConfig, common: dict, outs: list[Outputs], labels: list[str],
                  cooc: Cooccurrence, ks: list[int]) -> dict:
    """With several shard sets one sub-report each under sets/NAME and comparison.png; then the top-level report
    over all samples (its report.json last of all). Returns the top-level report."""
    names, num_classes = common["classes"], len(common["classes"])
    sub = {}
    if len(outs) > 1:
        for spec, name, o in zip(cfg.shards, labels, outs):
            sub[name] = scored(common, [spec], o, cooc, ks, num_classes, cfg.seed)
            write_outputs(out_dir / "sets" / name, sub[name], o, ks, names, f"eval of {name}", cfg)
    allout = concat(outs)
    rep = scored(common, list(cfg.shards), allout, cooc, ks, num_classes, cfg.seed)
    if sub:
        rep["sets"] = {n: set_summary(r, n) for n, r in sub.items()}
        plots.plot_comparison({n: metric_row(r, ks) | {"plaus@10": r["plausibility@10"] or 0.0}
                               for n, r in sub.items()}, out_dir / "comparison.png", title="model per shard set")
    set_index = np.concatenate([np.full(len(o.keys), i) for i, o in enumerate(outs)])
    write_outputs(out_dir, rep, allout, ks, names, "eval of all shard sets" if sub else "eval", cfg, set_index,
                  labels)
    return rep


# --- main ---------------------------------------------------------------------------------------------------------
def output_folder(cfg: EvalConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent / "eval"


def main(cfg: EvalConfig) -> dict:
    """Evaluate; returns the top-level report (also written as OUT/report.json)."""
    check_options(cfg)
    device = parse_device(cfg.device)
    ckpt = read_checkpoint(cfg.checkpoint)
    model = ckpt.build_model(device)
    ks, notes = resolve_ks(cfg.topk, ckpt.num_classes)
    shard_sets = open_sets(cfg, ckpt)
    cooc, cooc_source = checkpoint_cooccurrence(ckpt, shard_sets)
    out = output_folder(cfg)
    # a folder without report.json holds an unfinished eval, replaced without --overwrite (nothing to lose)
    with claim(out, "eval", overwrite=cfg.overwrite or not (out / "report.json").is_file(),
               config=asdict(cfg)) as folder:
        write_json_atomic(folder.path / "config.json", asdict(cfg))
        labels = set_names(list(cfg.shards))
        outs = run_sets(cfg, ckpt, model, shard_sets, labels, device)
        common = {"format": REPORT_FORMAT, "out": str(folder.path), "checkpoint": str(cfg.checkpoint),
                  "arch": ckpt.arch, "classes": ckpt.names, "ks": ks, "cooccurrence_source": cooc_source,
                  "notes": notes}
        return write_reports(folder.path, cfg, common, outs, labels, cooc, ks)


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
