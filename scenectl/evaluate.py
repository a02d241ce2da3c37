"""`scenectl eval`: score a trained checkpoint on one or more shard sets, beside baselines, with 95% intervals.

    scenectl eval --checkpoint runs/train/best.pt --shards shards/val2017 --topk 50

Reads top to bottom:
  1. load the checkpoint (model, classes, the TRAINING split's co-occurrence counts) and check every shard set against it
  2. stream each shard set through the model, keeping logits (N, C), labels (N,), keys, visible classes and image ids
  3. metrics.summarize for the model and the baselines on the same samples: prior, co-occurrence naive Bayes, random
     (metrics.baseline_scores) and the mask-only shape-leakage control (scenectl.maskonly, fitted on the training
     shards); 95% percentile-bootstrap intervals over images for all of them and the model's paired differences to
     each baseline (metrics.image_resamples: one draw of resamples shared by every estimator)
  4. write predictions.h5 (scenectl.predictions), confusion.png, per_class.png, baselines.png, report.md and
     report.json (LAST: its presence = eval complete) into an `eval` folder (scenectl.folders.claim: never a folder
     another command owns)

Several shard sets (e.g. one per mask shape) give one sub-report each under `sets/NAME/`, a comparison table and
comparison.png, and metrics over all sets together in the top-level report.json.

Single process: evaluation runs on one device (`--device`), with `--workers` loader processes decoding shards.
Under torchrun only rank 0 would be meaningful, so it is not DDP-aware; a CPU/GPU eval of COCO val (36k samples)
is minutes, not hours.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from scenectl import maskonly, metrics, plots, report
from scenectl.checkpoint import Checkpoint, classes_match, read_checkpoint
from scenectl.config import EvalConfig  # the options (declared with their help and ranges in scenectl.config)
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.devices import parse_device
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.inference import Outputs, concat, run_model
from scenectl.io import write_bytes_atomic, write_json_atomic
from scenectl.predictions import write_predictions

REPORT_FORMAT = "scenectl-eval/1"


# --- 1. checkpoint, shard sets, options ---------------------------------------------------------------------------
def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The checkpoint's model in eval mode and its raw dict: a thin alias of read_checkpoint kept only because
    distill.py still imports it (the engine rewrite reads checkpoints with read_checkpoint directly)."""
    ckpt = read_checkpoint(path)
    return ckpt.build_model(device), ckpt.state


def check_options(cfg: EvalConfig) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would write the same files
        raise ScenectlError("scenectl eval runs in one process: start it without torchrun (see docs/evaluation.md)")
    cfg.check()


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
    sets = [open_shard_set(s, cfg.net.options()) for s in cfg.shards]
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
def eval_loader(shard_set, ckpt: Checkpoint, cfg: EvalConfig, device: torch.device | None = None):
    """The shard set as batches shaped for this checkpoint's model (image size, mask channel as in training); on a
    CUDA `device` the JPEGs are decoded per batch there (transforms.batch_to_device)."""
    from scenectl.data.loader import make_eval_loader

    return make_eval_loader(shard_set, image_size=ckpt.image_size, mask_channel=ckpt.mask_channel,
                            batch_size=cfg.batch_size, workers=cfg.workers,
                            defer_jpeg=device is not None and device.type == "cuda")


def run_sets(cfg: EvalConfig, ckpt: Checkpoint, model: torch.nn.Module, shard_sets: list, labels: list[str],
             device: torch.device) -> list[Outputs]:
    outs = []
    for spec, name, ss in zip(cfg.shards, labels, shard_sets):
        o = run_model(model, eval_loader(ss, ckpt, cfg, device), device, cfg.max_samples, desc=f"eval {name}",
                      total=ss.num_samples)  # the manifest's count: the progress shows N/TOTAL and an ETA
        if not o.keys:
            raise ScenectlError(f"--shards {spec}: the shard set yielded no samples")
        outs.append(o)
    return outs


# --- 3. metrics ---------------------------------------------------------------------------------------------------
ESTIMATORS = {"prior": "prior", "cooccurrence": "co-occurrence", "mask_only": "mask-only", "random": "random"}


def mask_only_source(cfg: EvalConfig, ckpt: Checkpoint) -> tuple[object, str | None, str | None]:
    """The shard set the mask-only baseline is fitted on, its spec, and why the control cannot run (else None).
    An unusable --mask-only-train is an error; unusable training shards named by the checkpoint are a note."""
    from scenectl.data.loader import open_shard_set

    if not cfg.mask_only:
        return None, None, "not run (--no-mask-only)"
    spec = cfg.mask_only_train or maskonly.training_shards(ckpt.config)
    if spec is None:
        return None, None, "not run: the checkpoint's config names no training shards (pass --mask-only-train)"
    try:  # a spec read from the checkpoint is data: only a local folder is opened, never a URL or a command
        ss = open_shard_set(spec, cfg.net.options(),
                            from_file=None if cfg.mask_only_train else f"{ckpt.path}'s config")
        ss.require_masked("--mask-only-train")
        if not classes_match(ckpt.classes, ss.classes):
            raise ScenectlError(f"--mask-only-train {spec}: its class list differs from the checkpoint's")
    except ScenectlError as e:
        if cfg.mask_only_train:
            raise
        return None, spec, f"not run: the checkpoint's training shards {spec} cannot be read here ({e})"
    return ss, spec, None


def mask_only_baseline(cfg: EvalConfig, source: tuple, shard_sets: list, outs: list[Outputs],
                       num_classes: int) -> tuple[dict[str, np.ndarray], dict]:
    """({"mask_only": (N, C) scores of all evaluated samples}, the report's record), or ({}, why not)."""
    train_set, spec, why = source
    if train_set is None:
        return {}, {"run": False, "reason": why, "train_shards": spec}
    scores, record = maskonly.run_control(train_set, spec, shard_sets, [o.keys for o in outs], num_classes, cfg.seed)
    return {"mask_only": scores}, record


def score(out: Outputs, cooc: Cooccurrence, ks: list[int], num_classes: int, seed: int, bootstrap: int,
          extra: dict[str, np.ndarray]) -> dict:
    """The model's metrics, the ground-truth plausibility ceiling and the baselines (label-only, and `extra`: the
    mask-only scores) on the same samples, with their intervals when `bootstrap` > 0."""
    plausible = metrics.plausible_matrix(cooc)  # (C, C) bool
    estimators = {"model": out.logits, **metrics.baseline_scores(out.labels, out.visible, cooc, num_classes, seed),
                  **extra}
    reps = {n: metrics.summarize(s, out.labels, out.visible, plausible, ks, num_classes) for n, s in estimators.items()}
    rep = reps.pop("model")
    ceiling = metrics.plausibility_of_labels(out.labels, out.visible, plausible)
    rep["plausibility_ceiling"] = ceiling["value"]  # share of true labels plausible with their scene
    rep["baselines"] = reps
    rep["bootstrap"] = {"resamples": 0}
    if bootstrap:
        add_intervals(rep, estimators, out, plausible, ks, bootstrap, seed)
    return rep


def add_intervals(rep: dict, estimators: dict[str, np.ndarray], out: Outputs, plausible: np.ndarray, ks: list[int],
                  n: int, seed: int) -> None:
    """95% percentile-bootstrap intervals over images for every metric of the model and of each baseline, and the
    model's paired differences to each baseline: one draw of resamples serves them all (docs/metrics.md)."""
    t0 = time.perf_counter()
    rs = metrics.image_resamples(out.image_ids, n, seed)
    dists = {name: metrics.resampled_metrics(s, out.labels, out.visible, plausible, ks, rs)
             for name, s in estimators.items()}
    rep["vs_baselines"], outside = {}, []
    for name, d in dists.items():
        target = rep if name == "model" else rep["baselines"][name]
        target.update(metrics.ci_fields(d, ks))
        outside += [f"{ESTIMATORS.get(name, name)} {m}" for m in report.outside_interval(target, ks)]
        for row, ci in zip(target["per_class"], metrics.class_intervals(d["per_class"])):
            row["ci"] = ci
        if name != "model":
            diffs = metrics.paired_differences(dists["model"], d, report.flat(rep, ks), report.flat(target, ks))
            rep["vs_baselines"][name] = metrics.nest(diffs, ks)
    if "mask_only" in dists:  # how far the hole alone gets beyond the class prior, paired
        hole, prior = rep["baselines"]["mask_only"], rep["baselines"]["prior"]
        hole["vs_prior"] = metrics.nest(metrics.paired_differences(dists["mask_only"], dists["prior"],
                                                                   report.flat(hole, ks), report.flat(prior, ks)), ks)
    ceiling = metrics.plausible_shares(out.labels[:, None], out.visible, plausible, k=1)
    rep["plausibility_ceiling_ci"] = metrics.interval(metrics.resampled_mean(*ceiling, rs))
    rep["bootstrap"] = {"resamples": n, "seed": seed, "unit": "image", "images": rs.n_images, "samples": len(out.keys),
                        "without_image_id": rs.unknown, "level": metrics.LEVEL, "method": "percentile",
                        "outside": outside, "seconds": time.perf_counter() - t0}


def explained_share(rep: dict) -> float | None:
    """(mask-only top-1 - prior top-1) / (model top-1 - prior top-1): the share of the model's top-1 gain over the
    prior that the hole alone reaches; None without the mask-only baseline or when the model does not beat the prior."""
    if "mask_only" not in rep["baselines"]:
        return None
    model, prior, hole = rep["topk"][1], rep["baselines"]["prior"]["topk"][1], rep["baselines"]["mask_only"]["topk"][1]
    return (hole - prior) / (model - prior) if model > prior else None


def scored(common: dict, shards: list[str], out: Outputs, cooc: Cooccurrence, ks: list[int], cfg: EvalConfig,
           extra: dict[str, np.ndarray]) -> dict:
    """One report: the common facts, the shard sets it covers, the metrics and the throughput."""
    num_classes = len(common["classes"])
    rep = {**common, "shards": shards, **score(out, cooc, ks, num_classes, cfg.seed, cfg.bootstrap, extra),
           "seconds": out.seconds, "samples_per_s": len(out.keys) / max(out.seconds, 1e-9)}
    rep["mask_only"] = {**common["mask_only"], "explained_top1": explained_share(rep)}
    if rep["bootstrap"].get("outside"):  # a shifted bootstrap distribution (docs/metrics.md)
        rep["notes"] = rep["notes"] + [f"the interval of {', '.join(rep['bootstrap']['outside'])} does not hold its "
                                       "point estimate: resamples that miss rare classes shift balanced accuracy"]
    return rep


def set_summary(rep: dict, name: str) -> dict:
    """What the top-level report keeps of one shard set's sub-report (the rest is in sets/NAME/report.json)."""
    keep = ("shards", "n", "topk", "topk_balanced", "plausibility@10", "plausibility_ceiling", "plausibility_n",
            "plausibility_excluded", "topk_ci", "topk_balanced_ci", "plausibility@10_ci", "plausibility_ceiling_ci",
            "vs_baselines")
    metric_keys = ("topk", "topk_balanced", "plausibility@10", "topk_ci", "topk_balanced_ci", "plausibility@10_ci",
                   "vs_prior")
    baselines = {b: {m: r[m] for m in metric_keys if m in r} for b, r in rep["baselines"].items()}
    return {**{k: rep[k] for k in keep if k in rep}, "baselines": baselines, "report": f"sets/{name}/report.json"}


# --- 4. outputs ---------------------------------------------------------------------------------------------------
def results_table(rep: dict, ks: list[int], markdown: bool = False) -> str:
    """Metrics as rows; the model and each baseline as columns."""
    cols = {"model": report.metric_cells(rep, ks)}
    cols.update({label: report.metric_cells(rep["baselines"][key], ks) for key, label in ESTIMATORS.items()
                 if key in rep["baselines"]})
    return report.format_table(report.by_metric(cols, ks), list(cols), markdown)


def differences_table(rep: dict, ks: list[int], shown: list[str] | None = None, markdown: bool = False) -> str:
    """One row per baseline: the model minus it, in percentage points, with the paired interval and its verdict."""
    rows = {f"model - {ESTIMATORS[name]}": report.difference_cells(d, ks) for name, d in rep["vs_baselines"].items()}
    return report.format_table(rows, shown or metrics.metric_names(ks), markdown)


def sets_table(rep: dict, ks: list[int], markdown: bool = False) -> str:
    cols = {s: report.metric_cells(r, ks) for s, r in rep["sets"].items()} | {"all": report.metric_cells(rep, ks)}
    return report.format_table(report.by_metric(cols, ks), list(cols), markdown)


def mask_only_text(rep: dict) -> str:
    """What the shape-leakage control says, in one sentence or two."""
    mo = rep["mask_only"]
    if not mo["run"]:
        return f"Mask-only baseline (shape-leakage control): {mo['reason']}."
    hole = rep["baselines"]["mask_only"]
    text = (f"Mask-only baseline (shape-leakage control: the hidden region's shape, size and position, no scene "
            f"pixels; fitted on `{mo['train_shards']}`, {mo['train_samples']} samples): top-1 "
            f"{report.pct_ci(hole['topk'][1], (hole.get('topk_ci') or {}).get(1))} % against the prior's "
            f"{report.pct(rep['baselines']['prior']['topk'][1]).strip()} % and the model's "
            f"{report.pct(rep['topk'][1]).strip()} %")
    if hole.get("vs_prior"):
        text += f" (mask-only minus prior: {report.signed_ci(hole['vs_prior']['topk'][1])})"
    text += "."
    share = mo.get("explained_top1")
    if share is None:
        return text + " The model does not beat the prior at top-1, so no share of its gain is put down to the hole."
    return text + f" The hole alone reaches {100 * share:.0f} % of the model's top-1 gain over the prior."


def plausibility_text(rep: dict) -> str:
    return (f"plausibility@10 over {rep['plausibility_n']} scenes ({rep['plausibility_excluded']} without another "
            f"visible object excluded); true labels (ceiling): "
            f"{report.pct_ci(rep['plausibility_ceiling'], rep.get('plausibility_ceiling_ci'))} %")


def write_report_md(path: Path, rep: dict, ks: list[int], names: list[str], title: str) -> None:
    lines = [f"# {title}", "", f"- checkpoint: `{rep['checkpoint']}` ({rep['arch']}, {len(names)} classes)",
             f"- shard sets: {', '.join(f'`{s}`' for s in rep['shards'])}", f"- samples: {rep['n']}",
             f"- co-occurrence counts: {rep['cooccurrence_source']}",
             f"- intervals: {report.bootstrap_text(rep['bootstrap'])}",
             f"- {plausibility_text(rep)}", *(f"- note: {n}" for n in rep["notes"]), "",
             "Percentages. `bal` = class-balanced (mean over classes present of each class's accuracy). "
             "`plaus@10` = share of the top-10 predictions that co-occur more often than chance (PMI > 0, training "
             "counts) with some visible object; true labels (ceiling) = share of scenes whose hidden class is itself "
             "plausible with a visible object.", "", results_table(rep, ks, markdown=True), "", mask_only_text(rep),
             "", "![model and baselines](baselines.png)", ""]
    if rep.get("vs_baselines"):
        lines += ["## Model minus each baseline (paired, percentage points)", "",
                  "Same image resamples for the model and the baseline; an interval that contains 0 reads "
                  "\"inconclusive\".", "", differences_table(rep, ks, markdown=True), ""]
    if rep.get("sets"):
        lines += ["## Per shard set (model)", "", sets_table(rep, ks, markdown=True), "",
                  "![per shard set](comparison.png)", ""]
    lines += ["## Per class (top-1)", "", "![per class](per_class.png) ![confusion](confusion.png)", "",
              "| class | samples | correct | accuracy |", "|---|---:|---:|---:|"]
    lines += [f"| {names[r['class']]} | {r['support']} | {r['correct']} | {report.pct_ci(r['accuracy'], r.get('ci'))} |"
              for r in rep["per_class"] if r["support"]]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def plot_estimators(rep: dict, ks: list[int], path: Path, title: str) -> None:
    """baselines.png: every metric of the model and of each baseline, with 95% error bars."""
    reps = {"model": rep} | {label: rep["baselines"][key] for key, label in ESTIMATORS.items()
                             if key in rep["baselines"]}
    plots.plot_comparison({n: report.flat(r, ks) for n, r in reps.items()}, path, title=title,
                          errors={n: report.flat(r, ks, "_ci") for n, r in reps.items()})


def write_outputs(folder: Path, rep: dict, out: Outputs, ks: list[int], names: list[str], title: str,
                  cfg: EvalConfig, plausible: np.ndarray, set_index=None, sets=None) -> None:
    """predictions.h5, plots and report.md first; report.json last (its presence marks a complete report)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_predictions(folder / "predictions.h5", out, names, max(ks), set_index, sets, cfg.save_logits,
                      {"checkpoint": str(cfg.checkpoint), "shards": json.dumps(rep["shards"]),
                       "cooccurrence_source": rep["cooccurrence_source"]}, plausible)
    conf = plots.confusion_matrix(out.labels, out.logits.argmax(axis=1), len(names))
    plots.plot_confusion(conf, names, folder / "confusion.png", title=f"{title}: confusion (row-normalised)")
    support = [r["support"] for r in rep["per_class"]]
    plots.plot_per_class([r["accuracy"] for r in rep["per_class"]], support, names, folder / "per_class.png",
                         title=f"{title}: per-class top-1 (samples)", intervals=[r.get("ci") for r in rep["per_class"]])
    plot_estimators(rep, ks, folder / "baselines.png", f"{title}: model and baselines (95% intervals)")
    write_report_md(folder / "report.md", rep, ks, names, title)
    write_json_atomic(folder / "report.json", report.jsonable(rep))


def write_reports(out_dir: Path, cfg: EvalConfig, common: dict, outs: list[Outputs], labels: list[str],
                  cooc: Cooccurrence, ks: list[int], extra: dict[str, np.ndarray]) -> dict:
    """With several shard sets one sub-report each under sets/NAME and comparison.png; then the top-level report
    over all samples (its report.json last of all). Returns the top-level report."""
    names, plausible = common["classes"], metrics.plausible_matrix(cooc)
    ends = np.cumsum([len(o.keys) for o in outs])
    sub = {}
    if len(outs) > 1:
        for spec, name, o, end in zip(cfg.shards, labels, outs, ends):
            part = {b: s[end - len(o.keys):end] for b, s in extra.items()}  # this set's rows of the baselines
            sub[name] = scored(common, [spec], o, cooc, ks, cfg, part)
            write_outputs(out_dir / "sets" / name, sub[name], o, ks, names, f"eval of {name}", cfg, plausible)
    allout = concat(outs)
    rep = scored(common, list(cfg.shards), allout, cooc, ks, cfg, extra)
    if sub:
        rep["sets"] = {n: set_summary(r, n) for n, r in sub.items()}
        plots.plot_comparison({n: report.flat(r, ks) for n, r in sub.items()}, out_dir / "comparison.png",
                              title="model per shard set (95% intervals)",
                              errors={n: report.flat(r, ks, "_ci") for n, r in sub.items()})
    set_index = np.concatenate([np.full(len(o.keys), i) for i, o in enumerate(outs)])
    write_outputs(out_dir, rep, allout, ks, names, "eval of all shard sets" if sub else "eval", cfg, plausible,
                  set_index, labels)
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
    mask_source = mask_only_source(cfg, ckpt)
    out = output_folder(cfg)
    # a folder without report.json holds an unfinished eval, replaced without --overwrite (nothing to lose)
    with claim(out, "eval", overwrite=cfg.overwrite or not (out / "report.json").is_file(),
               config=asdict(cfg)) as folder:
        write_json_atomic(folder.path / "config.json", asdict(cfg))
        labels = set_names(list(cfg.shards))
        outs = run_sets(cfg, ckpt, model, shard_sets, labels, device)
        extra, mask_record = mask_only_baseline(cfg, mask_source, shard_sets, outs, ckpt.num_classes)
        common = {"format": REPORT_FORMAT, "out": str(folder.path), "checkpoint": str(cfg.checkpoint),
                  "arch": ckpt.arch, "classes": ckpt.names, "ks": ks, "cooccurrence_source": cooc_source,
                  "notes": notes, "mask_only": mask_record}
        return write_reports(folder.path, cfg, common, outs, labels, cooc, ks, extra)


def summary_text(rep: dict, out_dir: Path | str) -> str:
    """What the CLI prints: the results table(s), the model's differences to the baselines and where the files are."""
    ks = rep["ks"]
    parts = [f"{rep['n']} samples, {len(rep['classes'])} classes, {rep['samples_per_s']:.1f} samples/s; "
             f"{report.bootstrap_text(rep['bootstrap'])}", results_table(rep, ks)]
    if rep.get("vs_baselines"):
        parts += ["model minus each baseline (percentage points; all metrics in report.md):",
                  differences_table(rep, ks, ["top-1", "bal top-1", "plaus@10"])]
    parts.append(mask_only_text(rep).replace("`", ""))
    if rep.get("sets"):
        parts += ["per shard set (model):", sets_table(rep, ks)]
    parts += [plausibility_text(rep), *(f"note: {n}" for n in rep["notes"])]
    files = "report.json, report.md, predictions.h5, baselines.png, confusion.png, per_class.png"
    parts.append(f"wrote {out_dir}/{{{files}{', comparison.png, sets/' if rep.get('sets') else ''}}}")
    return "\n".join(parts)
