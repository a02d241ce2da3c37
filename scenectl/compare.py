"""`scenectl compare`: arms (one model each, or one model per training seed) scored on exactly the same samples,
each metric with its interval, and each arm's difference to a reference arm worded after Holm over the table.

    scenectl compare runs/r18/eval runs/ffc18/eval --reference runs/r18/eval
    scenectl compare r18=runs/r18-s0/eval,runs/r18-s1/eval,runs/r18-s2/eval ffc=runs/ffc-s0/eval,... -r r18
    scenectl compare runs/r18/best.pt runs/ffc18/best.pt --shards shards/val2017 --out runs/compare

Reads top to bottom:
  1. parse the arms (NAME=PATH[,PATH...]: one path per training seed; a bare PATH is an arm of one seed) and open
     every input: an eval folder (its predictions.h5), a predictions.h5 file, or a checkpoint (run on --shards
     through scenectl.inference, as `scenectl eval` runs it, so its inputs are prepared exactly alike)
  2. refuse inputs that do not cover the same samples (keys), classes or labels; put every model in the reference's
     sample order
  3. draw the image resamples ONCE (metrics.image_resamples): every seed of every arm is scored on the same
     resamples; metrics.seed_table adds the across-seed variance to each interval (Satterthwaite df), words every
     difference to the reference after Holm over all of the table's differences (one family) and states the
     minimum detectable difference
  4. write scores.png, differences.png, report.md and report.json (last) into a `compare` folder
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from scenectl import metrics, plots, report
from scenectl.config import CompareConfig
from scenectl.data.coco import supercategories
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.io import parse_json, write_bytes_atomic, write_json_atomic
from scenectl.predictions import read_predictions

REPORT_FORMAT = "scenectl-compare/1"
MAX_SHOWN = 3  # sample keys named when inputs differ


@dataclass
class Model:
    """One input's per-sample predictions (N samples, C classes)."""

    name: str
    source: str
    kind: str  # "predictions" or "checkpoint"
    keys: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None  # (N,)
    image_ids: np.ndarray | None = None  # (N,)
    scores: np.ndarray | None = None  # (N, C) logits, or (N, K) ranked class indices (eval --no-logits)
    visible: list[list[int]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    plausible: np.ndarray | None = None  # (C, C) bool
    notes: list[str] = field(default_factory=list)
    pending: tuple | None = None  # a checkpoint not run yet: (Checkpoint, its opened shard sets)
    arm: str = ""
    supercategories: list[str] | None = None  # each class's COCO supercategory, where the input records them
    scored: dict = field(default_factory=dict)  # {"provenance", "selection"} of what it is (report.what_was_scored)


# --- 1. inputs -----------------------------------------------------------------------------------------------------
def model_names(inputs: list[str]) -> list[str]:
    """The shortest unique path tails: runs/r18/eval, runs/ffc18/eval -> r18/eval, ffc18/eval."""
    parts = [Path(str(p).rstrip("/")).parts or (str(p),) for p in inputs]
    for n in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{'/'.join(p)}#{i}" for i, p in enumerate(parts)]  # the same input given twice


def _named(spec: str) -> bool:
    """NAME=PATH[,PATH...]: a name before the first "=" (no path separator in it)."""
    name = str(spec).split("=", 1)[0]
    return "=" in str(spec) and bool(name) and "/" not in name and "\\" not in name


def parse_arms(inputs: list[str]) -> dict[str, list[str]]:
    """{arm name: its paths, one per training seed}; a bare PATH is an arm of one, named by model_names."""
    bare = [str(s) for s in inputs if not _named(s)]
    tails = iter(model_names(bare)) if bare else iter(())
    arms: dict[str, list[str]] = {}
    for spec in map(str, inputs):
        if _named(spec):
            name, rest = spec.split("=", 1)
            paths = [p for p in rest.split(",") if p]
        else:
            name, paths = next(tails), [spec]
        if not paths:
            raise ScenectlError(f"arm {spec!r}: give NAME=PATH[,PATH...] with at least one path")
        if name in arms:
            raise ScenectlError(f"arm {name!r} is named twice: give every arm its own name")
        arms[name] = paths
    return arms


def seed_names(arm: str, paths: list[str]) -> list[str]:
    """A model name per seed of an arm: the arm's name for one seed, NAME#1, NAME#2, ... for several."""
    return [arm] if len(paths) == 1 else [f"{arm}#{i + 1}" for i in range(len(paths))]


def open_input(spec: str, name: str, cfg: CompareConfig) -> Model:
    """An eval folder or predictions.h5 is read whole; a checkpoint is read and its --shards opened (run later)."""
    path = Path(spec)
    if not path.exists():
        raise ScenectlError(f"input not found: {spec} (give an eval folder, a predictions.h5 file or a checkpoint)")
    if path.is_dir():
        path = path / "predictions.h5"
        if not path.is_file():
            raise ScenectlError(f"{spec} holds no predictions.h5: give an eval folder (scenectl eval), a "
                                "predictions.h5 file or a checkpoint")
    if path.suffix == ".h5":
        p = read_predictions(path)
        return Model(name, spec, "predictions", p.keys, p.labels, p.image_ids, p.scores, p.visible, p.class_names,
                     p.plausible, p.notes, supercategories=stored_supercategories(p.attrs, len(p.class_names), spec),
                     scored=eval_record(path.parent / "report.json"))
    from scenectl.checkpoint import read_checkpoint
    from scenectl.inference import open_sets

    ckpt = read_checkpoint(path)
    if not cfg.shards:
        raise ScenectlError(f"{spec} is a checkpoint: pass --shards to say which samples to score it on")
    return Model(name, spec, "checkpoint", classes=ckpt.names, pending=(ckpt, open_sets(_eval_config(cfg, spec), ckpt)),
                 supercategories=supercategories(ckpt.classes))


def stored_supercategories(attrs: dict, num_classes: int, spec: str) -> list[str] | None:
    """The supercategories eval stored in predictions.h5 (a JSON list of C names), or None (an older file); read
    from a file, so checked before use."""
    raw = attrs.get("supercategories")
    if raw is None:
        return None
    where = f"{spec}: its supercategories attribute"
    sup = parse_json(raw, where, expect=list, limit=1_000_000) if isinstance(raw, str) else None
    got = supercategories([{"supercategory": x} for x in sup]) if sup is not None else None
    if got is None or len(got) != num_classes:
        raise ScenectlError(f"{where} is not a list of {num_classes} names")
    return got


def _eval_config(cfg: CompareConfig, checkpoint: str):
    from scenectl.config import EvalConfig

    return EvalConfig(checkpoint=checkpoint, shards=list(cfg.shards), scoring=cfg.scoring, max_samples=cfg.max_samples,
                      net=cfg.net)


def run_pending(m: Model, cfg: CompareConfig) -> None:
    """Score a checkpoint input on --shards as `scenectl eval` would (same loader, same device handling)."""
    from scenectl.devices import parse_device
    from scenectl.inference import checkpoint_cooccurrence, concat, run_sets

    ckpt, sets = m.pending
    device = parse_device(cfg.device)
    outs = run_sets(_eval_config(cfg, m.source), ckpt, ckpt.build_model(device), sets, device)
    out = concat(outs)
    cooc, source = checkpoint_cooccurrence(ckpt)
    m.keys, m.labels, m.image_ids, m.scores, m.visible = out.keys, out.labels, out.image_ids, out.logits, out.visible
    m.plausible, m.pending = metrics.plausible_matrix(cooc), None
    m.scored = report.what_was_scored(ckpt, sets, outs)
    m.notes.append(f"{m.name}: run on {', '.join(cfg.shards)}; co-occurrence counts: {source}")


def eval_record(report_json: Path) -> dict:
    """The provenance and selection record of the eval report beside a predictions.h5 ({} without one)."""
    from scenectl.io import read_json

    if not report_json.is_file():
        return {}
    rep = read_json(report_json, "eval report")
    return {k: rep[k] for k in ("provenance", "selection") if isinstance(rep, dict) and isinstance(rep.get(k), dict)}


def what_is_compared(models: list[Model]) -> dict:
    """compare's provenance (its version and commit, each input's own record) and the inputs whose checkpoint was
    selected on the samples compared (marked optimistic in every output)."""
    from scenectl.config import provenance

    prov = provenance()
    optimistic = {m.name: m.scored["selection"]["note"] for m in models
                  if m.scored.get("selection", {}).get("optimistic")}
    return {"provenance": {"scenectl": prov["version"], "git_commit": prov.get("git_commit"),
                           "inputs": {m.name: m.scored.get("provenance") for m in models}},
            "optimistic": optimistic}


def optimistic_lines(rep: dict) -> list[str]:
    return [f"WARNING: {name}: {note}" for name, note in rep["optimistic"].items()]


# --- 2. the same samples -------------------------------------------------------------------------------------------
def _few(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:MAX_SHOWN]) + (", ..." if len(keys) > MAX_SHOWN else "")


def check_same_samples(ref: Model, m: Model) -> np.ndarray:
    """Refuse `m` unless it covers exactly `ref`'s samples with the same classes and labels; returns the index
    (N,) that puts m's samples in ref's order."""
    a, b = set(ref.keys), set(m.keys)
    if a != b:
        raise ScenectlError(
            f"{m.source} and {ref.source} do not cover the same samples ({len(b)} vs {len(a)}): {len(b - a)} only in "
            f"{m.name} ({_few(b - a) or 'none'}), {len(a - b)} only in {ref.name} ({_few(a - b) or 'none'}); "
            "compare scores models on exactly the same samples (evaluate them on the same --shards)")
    if m.classes != ref.classes:
        raise ScenectlError(f"{m.source} and {ref.source} name different classes ({len(m.classes)} vs "
                            f"{len(ref.classes)}, or other names): they are not models of the same task")
    where = {k: i for i, k in enumerate(m.keys)}
    order = np.array([where[k] for k in ref.keys], dtype=np.int64)
    differ = np.flatnonzero(m.labels[order] != ref.labels)
    if differ.size:
        raise ScenectlError(f"{m.source} and {ref.source} give {differ.size} samples different labels "
                            f"({_few(ref.keys[i] for i in differ)}): not the same samples")
    return order


def aligned(ref: Model, m: Model) -> Model:
    """m with its samples in ref's order (after check_same_samples)."""
    order = check_same_samples(ref, m)
    return replace(m, keys=list(ref.keys), labels=ref.labels, image_ids=ref.image_ids, scores=m.scores[order],
                   visible=ref.visible)


def pick_reference(cfg: CompareConfig, arms: dict[str, list[str]]) -> str:
    """The reference arm: --hole-only-arm's (the control every other arm is measured against), else --reference (an arm
    name, or the path of a one-seed arm), else the first."""
    want = cfg.hole_only_arm or cfg.reference
    if want is None:
        return next(iter(arms))
    if cfg.hole_only_arm and cfg.reference and cfg.reference.rstrip("/") != cfg.hole_only_arm:
        raise ScenectlError(f"--hole-only-arm {cfg.hole_only_arm} is the reference: drop --reference {cfg.reference}")
    want = str(want).rstrip("/")
    for name, paths in arms.items():
        if want == name or (len(paths) == 1 and (want == paths[0].rstrip("/")
                                                 or Path(want).resolve() == Path(paths[0]).resolve())):
            return name
    flag = "--hole-only-arm" if cfg.hole_only_arm else "--reference"
    raise ScenectlError(f"{flag} {want} is none of the arms ({', '.join(arms)})")


# --- 3. scores, intervals, differences worded over one family ------------------------------------------------------
def check_ks(models: list[Model], ks: list[int]) -> None:
    """Models stored as top-K indices (eval --no-logits) can be scored only up to k = K (and plaus@10 needs K >= 10)."""
    need = max(ks + [min(metrics.PLAUSIBILITY_K, len(models[0].classes))])
    for m in models:
        if m.scores.dtype.kind in "iu" and m.scores.shape[1] < need:
            raise ScenectlError(f"{m.source} stores only its top-{m.scores.shape[1]} classes (eval --no-logits): "
                                f"top-{need} cannot be computed from it; drop the larger --topk or re-run eval")
        if m.scores.dtype.kind in "iu" and m.supercategories is not None and m.scores.shape[1] < len(m.classes):
            m.supercategories = None  # supercategory top-k ranks every class: not from a top-K file


def super_index(models: list[Model]) -> np.ndarray | None:
    """(C,) supercategory index of each class when every input records the same supercategories, else None."""
    sups = [m.supercategories for m in models]
    if any(x is None for x in sups) or any(x != sups[0] for x in sups):
        return None
    return metrics.supercategory_index(sups[0])[0]


def seed_run(m: Model, base: Model, pl: np.ndarray, has_pl: bool, scoring: tuple) -> metrics.SeedRun:
    """One model's metrics on the original samples and on every shared resample (scoring: ks, rs, cls, super_of)."""
    ks, rs, cls, super_of = scoring
    dists = metrics.resampled_metrics(m.scores, base.labels, base.visible, pl, ks, rs, cls)
    point = metrics.point_metrics(m.scores, base.labels, base.visible, pl, ks, rs, cls)
    dists.pop("per_class")
    if not has_pl:  # no counts to judge plausibility with: leave the metric out
        point["plaus@10"] = None
    if super_of is not None:
        for k, h in metrics.supercategory_hits(m.scores, base.labels, super_of).items():
            point[f"super top-{k}"] = float(h.mean())
            dists[f"super top-{k}"] = metrics.resampled_mean(h.astype(np.float64), np.ones_like(h), rs)
    return metrics.SeedRun(point, dists)


def score(models: list[Model], reference: str, ks: list[int], plausible: np.ndarray | None,
          cfg: CompareConfig) -> dict:
    """Every arm's metrics (per seed, seed SD, the seed-aware interval) and every other arm minus the reference,
    worded after Holm over the table's differences: all on one draw of image resamples."""
    t0 = time.perf_counter()
    base = models[0]
    rs = metrics.image_resamples(base.image_ids, cfg.bootstrap, cfg.seed)
    cls = metrics.declared_classes(base.labels, len(base.classes), cfg.min_class_samples)
    pl = plausible if plausible is not None else np.zeros((len(base.classes),) * 2, bool)
    super_of = super_index(models)
    runs: dict[str, list[metrics.SeedRun]] = {}
    for m in models:
        runs.setdefault(m.arm, []).append(seed_run(m, base, pl, plausible is not None, (ks, rs, cls, super_of)))
    names = metrics.metric_names(ks) + ([f"super top-{k}" for k in metrics.SUPER_KS] if super_of is not None else [])
    table = metrics.seed_table(runs, reference, names)
    if not cfg.bootstrap:  # no resamples: every interval is None, so no difference is worded
        table = {"arms": table["arms"], "differences": {}}
    boot = {"resamples": cfg.bootstrap, "seed": cfg.seed, "unit": "image", "images": rs.n_images,
            "samples": len(base.keys), "without_image_id": rs.unknown, "level": metrics.LEVEL,
            "method": "percentile, widened by the across-seed variance (Satterthwaite df)",
            "seconds": time.perf_counter() - t0}
    return {"metrics": names, "scores": table["arms"], "differences": table["differences"],
            "family": table.get("family"), "class_set": cls.record(), "bootstrap": boot,
            "supercategories": None if super_of is not None else
            "not reported: some input records no supercategories (an older eval, or a --no-logits file)"}


# --- 4. outputs ----------------------------------------------------------------------------------------------------
def _table(rep: dict, group: str, cell, markdown: bool, suffix: str = "") -> str:
    """Metrics as rows, one column per arm of rep[group] (headed by its name + `suffix`): cell(the arm's record of
    the metric), "—" where it has none."""
    rows = {m: {a + suffix: cell(r[m]) if r.get(m) else "—" for a, r in rep[group].items()} for m in rep["metrics"]}
    return report.format_table(rows, [a + suffix for a in rep[group]], markdown)


def scores_table(rep: dict, markdown: bool = False) -> str:
    """Metrics as rows, arms as columns: the mean over seeds [its interval]."""
    return _table(rep, "scores", lambda s: report.pct_ci(s["mean"], s["ci"]), markdown)


def seeds_table(rep: dict, markdown: bool = False) -> str:
    """Metrics as rows, arms as columns: each seed's value and the seed SD (one seed: said in words below)."""
    def cell(s: dict) -> str:
        vals = " / ".join(report.pct(v).strip() for v in s["per_seed"])
        return vals + (f" (SD {100 * s['seed_sd']:.1f})" if s["seed_sd"] is not None else "")
    return _table(rep, "scores", cell, markdown)


def difference_cell(d: dict) -> str:
    """"+2.1 [-0.5, +4.7] inconclusive": the difference, its Holm-adjusted interval and the verdict."""
    return report.signed_ci({"difference": d["value"], "ci": d["ci_holm"], "verdict": d["verdict"]})


def differences_table(rep: dict, markdown: bool = False) -> str:
    return _table(rep, "differences", difference_cell, markdown, f" - {rep['reference']}")


def mdd_table(rep: dict, markdown: bool = False) -> str:
    """The minimum detectable difference of each comparison (80 % power at the 5 % level, before Holm)."""
    return _table(rep, "differences", lambda d: f"{100 * d['mdd']:.1f}", markdown, f" - {rep['reference']}")


def verdict_lines(rep: dict) -> list[str]:
    """In words, per arm: the metrics where it differs from the reference after Holm, and those left inconclusive."""
    lines = []
    for name, d in rep["differences"].items():
        said = {w: [m for m, r in d.items() if r and r["verdict"] == w] for w in ("higher", "lower",
                                                                                  metrics.INCONCLUSIVE)}
        words = [f"{w} on {', '.join(ms)}" for w, ms in said.items() if ms]
        lines.append(f"{name} vs {rep['reference']}: " + ("; ".join(words) or "no intervals"))
    return lines


def seed_notes(rep: dict) -> list[str]:
    """The arms of one seed, in words (their intervals hold the test images' noise only)."""
    one = [a for a, s in rep["scores"].items() if any(v and v["seeds"] == 1 for v in s.values())]
    return [f"{a}: {metrics.NO_SEED_NOISE.replace('this interval', 'its intervals')}" for a in one]


def family_text(rep: dict) -> str:
    if not rep.get("family"):
        return "no differences worded (--bootstrap 0 gives no intervals)"
    return (f"verdicts after Holm over one family: {rep['family']}; [lo, hi] = the Holm-adjusted interval; an "
            "interval that holds 0 reads \"inconclusive\"")


def context_text(rep: dict) -> list[str]:
    if not rep.get("hole_only"):
        return []
    return [f"{rep['hole_only']} is the hole-only control (train --hole-only): each arm minus it is that arm's "
            "context contribution"]


def intervals_text(rep: dict) -> str:
    return report.bootstrap_text(rep["bootstrap"], "the same resamples for every model: paired; each side widened "
                                                   "by the across-seed variance of arms of several seeds")


def write_report_md(path: Path, rep: dict) -> None:
    cs = rep["class_set"]
    lines = ["# compare", "", *(f"**{w}**" for w in optimistic_lines(rep)), *([""] if rep["optimistic"] else []),
             *(f"- {m['name']} (arm {m['arm']}): `{m['source']}` ({m['kind']})" for m in rep["models"]),
             f"- reference: {rep['reference']}", f"- samples: {rep['n']} (the same for every model)",
             f"- intervals: {intervals_text(rep)}", f"- plausibility@10: {rep['plausibility_source']}",
             f"- balanced metrics over the {cs['size']} classes with >= {cs['min_class_samples']} samples "
             f"({100 * cs['sample_share']:.1f} % of the samples)",
             *(f"- note: {n}" for n in rep["notes"] + seed_notes(rep) + context_text(rep)),
             *([f"- note: supercategory top-k {rep['supercategories']}"] if rep["supercategories"] else []), "",
             "## Scores (percentages; mean over seeds [interval])", "", scores_table(rep, True), "",
             "## Per seed (percentages; seed SD)", "", seeds_table(rep, True), "", "![scores](scores.png)", ""]
    if rep["differences"]:
        lines += [f"## Difference to {rep['reference']} (percentage points)", "", family_text(rep) + ".", "",
                  differences_table(rep, True), "", *(f"- {v}" for v in verdict_lines(rep)), "",
                  "Minimum detectable difference (percentage points; 80 % power at the 5 % level, before Holm):", "",
                  mdd_table(rep, True), "", "![differences](differences.png)", ""]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def write_outputs(folder: Path, rep: dict) -> None:
    """Plots and report.md first; report.json last (its presence marks a complete report)."""
    means = {a: {m: (s.get(m) or {}).get("mean") for m in rep["metrics"]} for a, s in rep["scores"].items()}
    plots.plot_comparison(means, folder / "scores.png", title="arms on the same samples (95% intervals)",
                          errors={a: {m: (s.get(m) or {}).get("ci") for m in rep["metrics"]}
                                  for a, s in rep["scores"].items()})
    if rep["differences"]:
        diffs = {a: {m: {"difference": r["value"], "ci": r["ci_holm"]} if r else None for m, r in d.items()}
                 for a, d in rep["differences"].items()}
        plots.plot_differences(diffs, folder / "differences.png", rep["reference"],
                               title=f"difference to {rep['reference']} (Holm-adjusted 95% intervals)")
    write_report_md(folder / "report.md", rep)
    write_json_atomic(folder / "report.json", report.jsonable(rep))


# --- main ----------------------------------------------------------------------------------------------------------
def prepare(cfg: CompareConfig) -> tuple[list[Model], str, list[int], list[str]]:
    """Every input read (checkpoints run) and checked before the output folder is made, so a refused comparison
    leaves nothing behind. Returns the models (the reference arm's first), all in its first model's sample order."""
    from scenectl.inference import resolve_ks

    arms = parse_arms(cfg.inputs)
    if len(arms) < 2:
        raise ScenectlError("compare needs at least two arms (eval folders, predictions.h5 files or checkpoints)")
    cfg.check()
    ref = pick_reference(cfg, arms)
    order = [ref] + [a for a in arms if a != ref]
    models = []
    for arm in order:
        for spec, name in zip(arms[arm], seed_names(arm, arms[arm])):
            models.append(open_input(spec, name, cfg))
            models[-1].arm = arm
    ks, notes = resolve_ks(cfg.topk, len(models[0].classes))
    ready = [m for m in models if m.pending is None]
    for m in ready[1:]:
        check_same_samples(ready[0], m)  # before any checkpoint runs: a mismatch of stored predictions is quick
    for m in models:
        if m.pending is not None:
            run_pending(m, cfg)
    models = [models[0]] + [aligned(models[0], m) for m in models[1:]]
    check_ks(models, ks)
    return models, ref, ks, notes


def compare(cfg: CompareConfig) -> dict:
    """Compare; returns the report (also written as OUT/report.json)."""
    models, ref, ks, notes = prepare(cfg)
    with claim(cfg.out, "compare", overwrite=cfg.overwrite, config=asdict(cfg)) as folder:
        write_json_atomic(folder.path / "config.json", asdict(cfg))
        plausible = models[0].plausible
        source = (f"plausible pairs of {models[0].name} (its training counts)" if plausible is not None else
                  f"not computed: {models[0].source} stores no plausible-pair matrix (an older eval)")
        rep = {"format": REPORT_FORMAT, "out": str(folder.path), "reference": ref, "hole_only": cfg.hole_only_arm,
               "models": [{"name": m.name, "arm": m.arm, "source": m.source, "kind": m.kind} for m in models],
               "n": len(models[0].keys), "ks": ks, "classes": models[0].classes, "plausibility_source": source,
               "notes": notes + [n for m in models for n in m.notes], **score(models, ref, ks, plausible, cfg),
               **what_is_compared(models)}
        with plots.source(data=", ".join(cfg.shards) or None, n=rep["n"],
                          checkpoint=", ".join(m.name for m in models)):
            write_outputs(folder.path, rep)
        return rep


def summary_text(rep: dict) -> str:
    """What the CLI prints: the tables, the verdicts in words and where the files are."""
    arms = len(rep["scores"])
    parts = [*optimistic_lines(rep), f"{arms} arms ({len(rep['models'])} models) on the same {rep['n']} samples; "
             f"{intervals_text(rep)}", scores_table(rep), "per seed (seed SD):", seeds_table(rep)]
    if rep["differences"]:
        parts += [f"difference to {rep['reference']} (percentage points); {family_text(rep)}:",
                  differences_table(rep), *verdict_lines(rep),
                  "minimum detectable difference (percentage points; 80 % power at the 5 % level, before Holm):",
                  mdd_table(rep)]
    files = "report.json, report.md, scores.png" + (", differences.png" if rep["differences"] else "")
    parts += [*(f"note: {n}" for n in rep["notes"] + seed_notes(rep) + context_text(rep)),
              f"wrote {rep['out']}/{{{files}}}"]
    return "\n".join(parts)
