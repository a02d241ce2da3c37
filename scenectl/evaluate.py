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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scenectl import maskonly, metrics, plots, report
from scenectl.checkpoint import Checkpoint, read_checkpoint
from scenectl.config import EvalConfig  # the options (declared with their help and ranges in scenectl.config)
from scenectl.data.coco import classes_match, supercategories
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.devices import parse_device, set_cpu_threads, torchrun_env
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.inference import Outputs, checkpoint_cooccurrence, concat, open_sets, resolve_ks, run_sets, set_names
from scenectl.io import write_bytes_atomic, write_json_atomic
from scenectl.predictions import SetIndex, write_predictions

REPORT_FORMAT = "scenectl-eval/1"


# --- 1. options (the checkpoint, its shard sets and the model over them: scenectl.inference) ------------------------
def check_options(cfg: EvalConfig) -> None:
    if torchrun_env()[1] > 1:  # every rank would write the same files
        raise ScenectlError("scenectl eval runs in one process: start it without torchrun (see docs/evaluation.md)")
    cfg.check()


# --- 3. metrics ---------------------------------------------------------------------------------------------------
ESTIMATORS = {"prior": "prior", "cooccurrence": "co-occurrence", "mask_only": "mask-only", "random": "random",
              "hole_only": "hole-only"}


def mask_only_source(cfg: EvalConfig, ckpt: Checkpoint) -> tuple[object, str | None, str | None]:
    """The shard set the mask-only baseline is fitted on, its spec, and why the control cannot run (else None).
    An unusable --mask-only-train is an error; unusable training shards named by the checkpoint are a note."""
    from scenectl.data.loader import open_shard_set

    if not cfg.mask_only:
        return None, None, "not run (--no-mask-only)"
    spec = cfg.mask_only_train or (ckpt.training_shards.spec if ckpt.training_shards else None)
    if spec is None:
        return None, None, "not run: the checkpoint names no training shards (pass --mask-only-train)"
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


@dataclass(frozen=True)
class Setup:
    """What every report of one eval shares: the training counts, the ks, the seeds and the class metadata."""

    cooc: Cooccurrence
    ks: list[int]
    seed: int
    bootstrap: int
    min_class_samples: int
    super_of: np.ndarray | None  # (C,) each class's supercategory index; None where the classes carry none

    @property
    def plausible(self) -> np.ndarray:
        return metrics.plausible_matrix(self.cooc)  # (C, C) bool


def score(out: Outputs, setup: Setup, num_classes: int, extra: dict[str, np.ndarray]) -> dict:
    """The model's metrics, the plausibility rows and the baselines (label-only, and `extra`: the mask-only and
    hole-only scores) on the same samples, balanced over one declared class set, with intervals when bootstrapping."""
    ks, plausible = setup.ks, setup.plausible
    cls = metrics.declared_classes(out.labels, num_classes, setup.min_class_samples)
    estimators = {"model": out.logits, **metrics.baseline_scores(out.labels, out.visible, setup.cooc, num_classes,
                                                                 setup.seed), **extra}
    rs = metrics.image_resamples(out.image_ids, setup.bootstrap, setup.seed)
    reps = {}
    for name, s in estimators.items():
        reps[name] = {**metrics.summarize(s, out.labels, out.visible, plausible, ks, num_classes, cls),
                      **metrics.supercategory_fields(s, out.labels, setup.super_of, rs)}
        if metrics.constant_predictor(s, max(ks)):  # the prior: the same ranking for every sample
            reps[name]["no_interval"] = metrics.CONSTANT_REASON
    rep = reps.pop("model")
    rep["class_set"] = cls.record()
    rep["plausibility"] = metrics.plausibility_rows(out.logits, out.labels, out.visible, plausible)
    rep["plausibility_true_label"] = rep["plausibility"]["k=1"]["true label"]
    rep["plausibility@10_max"] = rep["plausibility"][f"k={metrics.PLAUSIBILITY_K}"]["attainable maximum"]
    rep["baselines"] = reps
    rep["bootstrap"] = {"resamples": 0}
    if setup.bootstrap:
        add_intervals(rep, estimators, out, setup, rs, cls)
    return rep


def add_intervals(rep: dict, estimators: dict[str, np.ndarray], out: Outputs, setup: Setup,
                  rs: metrics.Resamples, cls: metrics.ClassSet) -> None:
    """95% percentile-bootstrap intervals over images for every metric of the model and of each baseline, and the
    model's paired differences to each baseline: one draw of resamples serves them all (docs/metrics.md). Balanced
    metrics average over the declared class set `cls`; a constant predictor's balanced metrics get no interval;
    per-class intervals are Wilson's, widened by the image clustering and hidden below --min-class-samples."""
    t0 = time.perf_counter()
    ks, plausible = setup.ks, setup.plausible
    dists = {name: metrics.resampled_metrics(s, out.labels, out.visible, plausible, ks, rs, cls)
             for name, s in estimators.items()}
    rep["vs_baselines"], outside = {}, []
    for name, d in dists.items():
        target = rep if name == "model" else rep["baselines"][name]
        target.update(metrics.ci_fields(d, ks))
        if target.get("no_interval"):
            target["topk_balanced_ci"] = {k: None for k in ks}
        outside += [f"{ESTIMATORS.get(name, name)} {m}" for m in report.outside_interval(target, ks)]
        top1 = metrics.topk_hits(estimators[name], out.labels, [1])[1]
        cis = metrics.per_class_wilson(target["per_class"], metrics.design_effect(top1, rs), cls.min_samples)
        for row, ci in zip(target["per_class"], cis):
            row["ci"] = ci
        if name != "model":
            diffs = metrics.paired_differences(dists["model"], d, report.flat(rep, ks), report.flat(target, ks))
            rep["vs_baselines"][name] = {**metrics.nest(diffs, ks), "notes": [metrics.NO_SEED_NOISE]}
    if "mask_only" in dists:  # how far the hole alone gets beyond the class prior, paired
        hole, prior = rep["baselines"]["mask_only"], rep["baselines"]["prior"]
        hole["vs_prior"] = metrics.nest(metrics.paired_differences(dists["mask_only"], dists["prior"],
                                                                   report.flat(hole, ks), report.flat(prior, ks)), ks)
        rep["explained_dists"] = {n: dists[n]["top-1"] for n in ("model", "mask_only", "prior")}
    true_label = metrics.plausible_shares(out.labels[:, None], out.visible, plausible, k=1)
    rep["plausibility_true_label_ci"] = metrics.interval(metrics.resampled_mean(*true_label, rs))
    rep["bootstrap"] = {"resamples": setup.bootstrap, "seed": setup.seed, "unit": "image", "images": rs.n_images,
                        "samples": len(out.keys), "without_image_id": rs.unknown, "level": metrics.LEVEL,
                        "method": "percentile", "per_class": "Wilson, widened by the image design effect",
                        "outside": outside, "seconds": time.perf_counter() - t0}


def explained(rep: dict) -> dict | None:
    """maskonly.explained_share of this report (clipped to [0, 1], with its interval when bootstrapped), or None
    without the mask-only baseline."""
    if "mask_only" not in rep["baselines"]:
        return None
    top1 = lambda r: r["topk"][1]  # noqa: E731
    return maskonly.explained_share(top1(rep), top1(rep["baselines"]["mask_only"]),
                                    top1(rep["baselines"]["prior"]), rep.pop("explained_dists", None))


def scored(common: dict, shards: list[str], out: Outputs, setup: Setup, extra: dict[str, np.ndarray]) -> dict:
    """One report: the common facts, the shard sets it covers, the metrics and the throughput."""
    num_classes = len(common["classes"])
    rep = {**common, "shards": shards, **score(out, setup, num_classes, extra),
           "seconds": out.seconds, "samples_per_s": len(out.keys) / max(out.seconds, 1e-9)}
    rep["mask_only"] = {**common["mask_only"], "explained_top1": explained(rep)}
    if rep["bootstrap"].get("outside"):  # a shifted bootstrap distribution (docs/metrics.md)
        rep["notes"] = rep["notes"] + [f"the interval of {', '.join(rep['bootstrap']['outside'])} does not hold its "
                                       "point estimate"]
    return rep


def set_summary(rep: dict, name: str) -> dict:
    """What the top-level report keeps of one shard set's sub-report (the rest is in sets/NAME/report.json)."""
    keep = ("shards", "n", "topk", "topk_balanced", "plausibility@10", "plausibility@10_max", "plausibility_true_label",
            "plausibility_n", "plausibility_excluded", "topk_ci", "topk_balanced_ci", "plausibility@10_ci",
            "plausibility_true_label_ci", "supercategory_topk", "supercategory_topk_ci", "class_set", "vs_baselines")
    metric_keys = ("topk", "topk_balanced", "plausibility@10", "topk_ci", "topk_balanced_ci", "plausibility@10_ci",
                   "supercategory_topk", "supercategory_topk_ci", "no_interval", "vs_prior")
    baselines = {b: {m: r[m] for m in metric_keys if m in r} for b, r in rep["baselines"].items()}
    return {**{k: rep[k] for k in keep if k in rep}, "baselines": baselines, "report": f"sets/{name}/report.json"}


# --- 4. outputs ---------------------------------------------------------------------------------------------------
def results_table(rep: dict, ks: list[int], markdown: bool = False) -> str:
    """Metrics as rows (supercategory top-k below, where the classes carry supercategories); the model and each
    baseline as columns."""
    reps = {"model": rep} | {label: rep["baselines"][key] for key, label in ESTIMATORS.items()
                             if key in rep["baselines"]}
    rows = report.by_metric({c: report.metric_cells(r, ks) for c, r in reps.items()}, ks)
    return report.format_table(report.with_super_rows(rows, reps), list(reps), markdown)


def differences_table(rep: dict, ks: list[int], shown: list[str] | None = None, markdown: bool = False) -> str:
    """One row per baseline: the model minus it, in percentage points, with the paired interval and its verdict
    (model - hole-only: the context contribution)."""
    rows = {f"model - {ESTIMATORS[name]}" + (" (context)" if name == "hole_only" else ""):
            report.difference_cells(d, ks) for name, d in rep["vs_baselines"].items()}
    return report.format_table(rows, shown or metrics.metric_names(ks), markdown)


def sets_table(rep: dict, ks: list[int], markdown: bool = False) -> str:
    cols = {s: report.metric_cells(r, ks) for s, r in rep["sets"].items()} | {"all": report.metric_cells(rep, ks)}
    return report.format_table(report.by_metric(cols, ks), list(cols), markdown)


def mask_only_text(rep: dict) -> str:
    """What the shape-leakage control says, in a few sentences."""
    mo = rep["mask_only"]
    if not mo["run"]:
        return f"Mask-only baseline (shape-leakage control): {mo['reason']}."
    hole = rep["baselines"]["mask_only"]
    text = (f"Mask-only baseline (shape-leakage probe: the hidden region's shape, size and position, no scene "
            f"pixels; fitted on `{mo['train_shards']}`, {mo['train_samples']} samples; its own top-1 "
            f"{report.pct(mo['train_top1']).strip()} % on its training part, "
            f"{report.pct(mo['heldout_top1']).strip()} % held out): top-1 "
            f"{report.pct_ci(hole['topk'][1], (hole.get('topk_ci') or {}).get(1))} % against the prior's "
            f"{report.pct(rep['baselines']['prior']['topk'][1]).strip()} % and the model's "
            f"{report.pct(rep['topk'][1]).strip()} %")
    if hole.get("vs_prior"):
        text += f" (mask-only minus prior: {report.signed_ci(hole['vs_prior']['topk'][1])})"
    text += "."
    share = mo.get("explained_top1")
    if share is None or share["value"] is None:
        return text + " The model does not beat the prior at top-1, so no share of its gain is put down to the hole."
    return (text + f" The hole alone reaches {report.pct_ci(share['value'], share['ci'])} % of the model's top-1 "
            "gain over the prior (clipped to [0, 100] %).")


def class_set_text(rep: dict) -> str:
    cs = rep["class_set"]
    return (f"balanced metrics over the declared class set: the {cs['size']} classes with >= "
            f"{cs['min_class_samples']} evaluated targets (--min-class-samples), {100 * cs['sample_share']:.1f} % "
            "of the samples; every resample divides by this set")


def plausibility_text(rep: dict) -> str:
    return (f"plausibility@10 over {rep['plausibility_n']} scenes ({rep['plausibility_excluded']} without another "
            f"visible object excluded): model {report.pct(rep['plausibility@10']).strip()} %, attainable maximum "
            f"{report.pct(rep['plausibility@10_max']).strip()} %; at k = 1: model "
            f"{report.pct(rep['plausibility']['k=1']['model']).strip()} %, the true label "
            f"{report.pct_ci(rep['plausibility_true_label'], rep.get('plausibility_true_label_ci'))} %")


def plausibility_table(rep: dict, markdown: bool = False) -> str:
    """k = 1: the model beside the true label; k = 10: the model beside the attainable maximum (percent)."""
    rows = {}
    for k, r in rep["plausibility"].items():  # {"model": x, "true label" | "attainable maximum": y}
        (name, value), = [(n, v) for n, v in r.items() if n != "model"]
        rows[k] = {"model": r["model"], "reference": value, "reference is": name}
    return report.format_table(rows, ["model", "reference", "reference is"], markdown)


def no_interval_text(rep: dict) -> list[str]:
    """Why some estimators' balanced metrics carry no interval."""
    return [f"{ESTIMATORS[k]}: no balanced interval, {r['no_interval']}" for k, r in rep["baselines"].items()
            if r.get("no_interval") and k in ESTIMATORS]


def supercategory_text(rep: dict) -> str:
    if "supercategory_topk" in rep:
        return "`super top-k` = the true class's supercategory among the first k distinct supercategories ranked."
    return "No supercategory top-k: the checkpoint's classes carry no supercategories (an older shard set)."


def write_report_md(path: Path, rep: dict, ks: list[int], names: list[str], title: str) -> None:
    lines = [f"# {title}", "", *selection_lines(rep),
             f"- checkpoint: `{rep['checkpoint']}` ({rep['arch']}, {len(names)} classes)",
             f"- shard sets: {', '.join(f'`{s}`' for s in rep['shards'])}", f"- samples: {rep['n']}",
             f"- co-occurrence counts: {rep['cooccurrence_source']}",
             f"- intervals: {report.bootstrap_text(rep['bootstrap'])}",
             f"- {class_set_text(rep)}", f"- {plausibility_text(rep)}",
             *(f"- note: {n}" for n in rep["notes"] + no_interval_text(rep)), "",
             "Percentages. `bal` = class-balanced (mean over the declared class set of each class's accuracy). "
             "`plaus@10` = share of the top-10 predictions that co-occur more often than chance (PMI > 0 and at "
             f"least {metrics.MIN_PAIR_COUNT} training images together) with some visible object; its attainable "
             "maximum lists every plausible class first. The true label's plausibility is a k = 1 figure, beside the "
             f"model's plausibility@1. {supercategory_text(rep)}", "", results_table(rep, ks, markdown=True), "",
             mask_only_text(rep), "", "![model and baselines](baselines.png)", "",
             "## Plausibility (percent)", "", plausibility_table(rep, markdown=True), ""]
    if rep.get("vs_baselines"):
        lines += ["## Model minus each baseline (paired, percentage points)", "",
                  "Same image resamples for the model and the baseline; an interval that contains 0 reads "
                  f"\"inconclusive\". {metrics.NO_SEED_NOISE[0].upper() + metrics.NO_SEED_NOISE[1:]} (compare "
                  "arms of several seeds for that).", "", differences_table(rep, ks, markdown=True), ""]
    if rep.get("sets"):
        lines += ["## Per shard set (model)", "", sets_table(rep, ks, markdown=True), "",
                  "![per shard set](comparison.png)", ""]
    lines += ["## Per class (top-1)", "", "![per class](per_class.png) ![confusion](confusion.png)", "",
              "| class | samples | correct | accuracy |", "|---|---:|---:|---:|"]
    lines += [f"| {names[r['class']]} | {r['support']} | {r['correct']} | {report.pct_ci(r['accuracy'], r.get('ci'))} |"
              for r in rep["per_class"] if r["support"]]
    lines += ["", "Intervals: Wilson, widened by the image clustering; none below "
                  f"{rep['class_set']['min_class_samples']} samples."]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def selection_lines(rep: dict) -> list[str]:
    """report.md's warning, first of all, when the checkpoint was selected on the samples scored."""
    note = rep["selection"]["note"]
    return [f"**{note[0].upper()}{note[1:]}.**", ""] if note else []


def plot_estimators(rep: dict, ks: list[int], path: Path, title: str) -> None:
    """baselines.png: every metric of the model and of each baseline, with 95% error bars."""
    reps = {"model": rep} | {label: rep["baselines"][key] for key, label in ESTIMATORS.items()
                             if key in rep["baselines"]}
    plots.plot_comparison({n: report.flat(r, ks) for n, r in reps.items()}, path, title=title,
                          errors={n: report.flat(r, ks, "_ci") for n, r in reps.items()})


def write_outputs(folder: Path, rep: dict, out: Outputs, title: str, cfg: EvalConfig, plausible: np.ndarray,
                  sets: SetIndex | None = None) -> None:
    """predictions.h5, plots and report.md first; report.json last (its presence marks a complete report)."""
    ks, names = rep["ks"], rep["classes"]
    folder.mkdir(parents=True, exist_ok=True)
    write_predictions(folder / "predictions.h5", out, names, max(ks), sets, cfg.save_logits,
                      {"checkpoint": str(cfg.checkpoint), "shards": json.dumps(rep["shards"]),
                       "cooccurrence_source": rep["cooccurrence_source"],
                       **({"supercategories": json.dumps(rep["supercategories"])} if rep["supercategories"] else {})},
                      plausible)
    conf = plots.confusion_matrix(out.labels, out.logits.argmax(axis=1), len(names))
    plots.plot_confusion(conf, names, folder / "confusion.png", title=f"{title}: confusion (row-normalised)")
    support = [r["support"] for r in rep["per_class"]]
    plots.plot_per_class([r["accuracy"] for r in rep["per_class"]], support, names, folder / "per_class.png",
                         title=f"{title}: per-class top-1 (samples)", intervals=[r.get("ci") for r in rep["per_class"]])
    plot_estimators(rep, ks, folder / "baselines.png", f"{title}: model and baselines (95% intervals)")
    write_report_md(folder / "report.md", rep, ks, names, title)
    write_json_atomic(folder / "report.json", report.jsonable(rep))


def write_reports(out_dir: Path, cfg: EvalConfig, common: dict, outs: list[Outputs], labels: list[str],
                  setup: Setup, extra: dict[str, np.ndarray]) -> dict:
    """With several shard sets one sub-report each under sets/NAME and comparison.png; then the top-level report
    over all samples (its report.json last of all). Returns the top-level report."""
    ks, plausible = setup.ks, setup.plausible
    ends = np.cumsum([len(o.keys) for o in outs])
    sub = {}
    if len(outs) > 1:
        for spec, name, o, end in zip(cfg.shards, labels, outs, ends):
            part = {b: s[end - len(o.keys):end] for b, s in extra.items()}  # this set's rows of the baselines
            sub[name] = scored(common, [spec], o, setup, part)
            write_outputs(out_dir / "sets" / name, sub[name], o, f"eval of {name}", cfg, plausible)
    allout = concat(outs)
    rep = scored(common, list(cfg.shards), allout, setup, extra)
    if sub:
        rep["sets"] = {n: set_summary(r, n) for n, r in sub.items()}
        plots.plot_comparison({n: report.flat(r, ks) for n, r in sub.items()}, out_dir / "comparison.png",
                              title="model per shard set (95% intervals)",
                              errors={n: report.flat(r, ks, "_ci") for n, r in sub.items()})
    sets = SetIndex(np.concatenate([np.full(len(o.keys), i) for i, o in enumerate(outs)]), labels)
    write_outputs(out_dir, rep, allout, "eval of all shard sets" if sub else "eval", cfg, plausible, sets)
    return rep


def hole_only_model(cfg: EvalConfig, ckpt: Checkpoint, device) -> tuple[Checkpoint, object] | None:
    """The --hole-only-checkpoint (read and checked before anything is written) and its model, or None."""
    if cfg.hole_only_checkpoint is None:
        return None
    hole = read_checkpoint(cfg.hole_only_checkpoint)
    if not hole.hole_only:
        raise ScenectlError(f"--hole-only-checkpoint {cfg.hole_only_checkpoint} was not trained with --hole-only")
    if not classes_match(ckpt.classes, hole.classes):
        raise ScenectlError(f"--hole-only-checkpoint {cfg.hole_only_checkpoint}: its class list differs from "
                            "the checkpoint's")
    return hole, hole.build_model(device)


def hole_only_scores(cfg: EvalConfig, hole: tuple | None, shard_sets: list, outs: list[Outputs],
                     device) -> dict[str, np.ndarray]:
    """{"hole_only": (N, C) logits of the hole-only control on the evaluated samples}, or {} without one."""
    if hole is None:
        return {}
    ckpt, model = hole
    got = run_sets(cfg, ckpt, model, shard_sets, device)
    for o, g in zip(outs, got):
        if o.keys != g.keys:  # the same loader over the same shards: the same samples in the same order
            raise ScenectlError(f"--hole-only-checkpoint {cfg.hole_only_checkpoint}: scored other samples than the "
                                "checkpoint (its image size or mask channel differ?)")
    return {"hole_only": concat(got).logits}


# --- main ---------------------------------------------------------------------------------------------------------
def evaluate(cfg: EvalConfig) -> dict:
    """Evaluate; returns the top-level report (also written as OUT/report.json)."""
    check_options(cfg)
    device = parse_device(cfg.device)
    set_cpu_threads(device, cfg.workers)  # torch's threads: one per core of this process (devices.cpu_threads)
    ckpt = read_checkpoint(cfg.checkpoint)
    model = ckpt.build_model(device)
    ks, notes = resolve_ks(cfg.topk, ckpt.num_classes)
    shard_sets = open_sets(cfg, ckpt)
    cooc, cooc_source = checkpoint_cooccurrence(ckpt, cfg.cooccurrence)
    mask_source = mask_only_source(cfg, ckpt)
    hole = hole_only_model(cfg, ckpt, device)
    sup = supercategories(ckpt.classes)
    setup = Setup(cooc, ks, cfg.seed, cfg.bootstrap, cfg.min_class_samples,
                  None if sup is None else metrics.supercategory_index(sup)[0])
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent / "eval"
    # a folder without report.json holds an unfinished eval, replaced without --overwrite (nothing to lose)
    with claim(out, "eval", overwrite=cfg.overwrite or not (out / "report.json").is_file(),
               config=asdict(cfg)) as folder:
        write_json_atomic(folder.path / "config.json", asdict(cfg))
        labels = set_names(list(cfg.shards))
        outs = run_sets(cfg, ckpt, model, shard_sets, device)
        extra, mask_record = mask_only_baseline(cfg, mask_source, shard_sets, outs, ckpt.num_classes)
        extra |= hole_only_scores(cfg, hole, shard_sets, outs, device)
        common = {"format": REPORT_FORMAT, "out": str(folder.path), "checkpoint": str(cfg.checkpoint),
                  "arch": ckpt.arch, "classes": ckpt.names, "ks": ks, "cooccurrence_source": cooc_source,
                  "notes": notes, "mask_only": mask_record, "supercategories": sup,
                  "hole_only_checkpoint": cfg.hole_only_checkpoint, **report.what_was_scored(ckpt, shard_sets, outs)}
        with plots.source(**report.figure_source(common["provenance"])):
            return write_reports(folder.path, cfg, common, outs, labels, setup, extra)


def summary_text(rep: dict, out_dir: Path | str) -> str:
    """What the CLI prints: the results table(s), the model's differences to the baselines and where the files are."""
    ks = rep["ks"]
    note = rep["selection"]["note"]
    parts = [f"WARNING: {note}"] if note else []
    parts += [f"{rep['n']} samples, {len(rep['classes'])} classes, {rep['samples_per_s']:.1f} samples/s; "
             f"{report.bootstrap_text(rep['bootstrap'])}", results_table(rep, ks)]
    if rep.get("vs_baselines"):
        parts += [f"model minus each baseline (percentage points; all metrics in report.md; {metrics.NO_SEED_NOISE}):",
                  differences_table(rep, ks, ["top-1", "bal top-1", "plaus@10"])]
    parts.append(mask_only_text(rep).replace("`", ""))
    if rep.get("sets"):
        parts += ["per shard set (model):", sets_table(rep, ks)]
    parts += [class_set_text(rep), plausibility_text(rep),
              *(f"note: {n}" for n in rep["notes"] + no_interval_text(rep))]
    files = "report.json, report.md, predictions.h5, baselines.png, confusion.png, per_class.png"
    parts.append(f"wrote {out_dir}/{{{files}{', comparison.png, sets/' if rep.get('sets') else ''}}}")
    if note:  # said last as well: the line a reader sees below a long table
        parts.append(f"WARNING: {note}")
    return "\n".join(parts)
