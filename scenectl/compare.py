"""`scenectl compare`: several models scored on exactly the same samples, each metric with its 95% interval, and each
model's paired difference to a reference model with its interval.

    scenectl compare runs/r18/eval runs/ffc18/eval --reference runs/r18/eval
    scenectl compare runs/r18/best.pt runs/ffc18/best.pt --shards shards/val2017 --out runs/compare

Reads top to bottom:
  1. open every input: an eval folder (its predictions.h5), a predictions.h5 file, or a checkpoint (run on --shards
     through scenectl.inference, as `scenectl eval` runs it, so its inputs are prepared exactly alike)
  2. refuse inputs that do not cover the same samples (keys), classes or labels; put every model in the reference's
     sample order
  3. draw the image resamples ONCE (metrics.image_resamples): every model is scored on the same resamples, so the
     difference of two models on each resample gives a paired interval (docs/metrics.md)
  4. write scores.png, differences.png, report.md and report.json (last) into a `compare` folder
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scenectl import metrics, plots, report
from scenectl.config import CompareConfig
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.io import write_bytes_atomic, write_json_atomic
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
                     p.plausible, p.notes, scored=eval_record(path.parent / "report.json"))
    from scenectl.checkpoint import read_checkpoint
    from scenectl.inference import open_sets

    ckpt = read_checkpoint(path)
    if not cfg.shards:
        raise ScenectlError(f"{spec} is a checkpoint: pass --shards to say which samples to score it on")
    return Model(name, spec, "checkpoint", classes=ckpt.names, pending=(ckpt, open_sets(_eval_config(cfg, spec), ckpt)))


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
    cooc, source = checkpoint_cooccurrence(ckpt, sets)
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
    return Model(m.name, m.source, m.kind, list(ref.keys), ref.labels, ref.image_ids, m.scores[order],
                 ref.visible, m.classes, m.plausible, m.notes, scored=m.scored)


def pick_reference(cfg: CompareConfig, names: list[str]) -> int:
    if cfg.reference is None:
        return 0
    want = str(cfg.reference).rstrip("/")
    for i, (spec, name) in enumerate(zip(cfg.inputs, names)):
        if want in (str(spec).rstrip("/"), name) or Path(want).resolve() == Path(spec).resolve():
            return i
    raise ScenectlError(f"--reference {cfg.reference} is none of the inputs ({', '.join(names)})")


# --- 3. scores, intervals, paired differences ----------------------------------------------------------------------
def check_ks(models: list[Model], ks: list[int]) -> None:
    """Models stored as top-K indices (eval --no-logits) can be scored only up to k = K (and plaus@10 needs K >= 10)."""
    need = max(ks + [min(metrics.PLAUSIBILITY_K, len(models[0].classes))])
    for m in models:
        if m.scores.dtype.kind in "iu" and m.scores.shape[1] < need:
            raise ScenectlError(f"{m.source} stores only its top-{m.scores.shape[1]} classes (eval --no-logits): "
                                f"top-{need} cannot be computed from it; drop the larger --topk or re-run eval")


def score(models: list[Model], ref: int, ks: list[int], plausible: np.ndarray | None, cfg: CompareConfig) -> dict:
    """Each model's metrics with intervals, and each other model minus the reference, all on one draw of resamples."""
    t0 = time.perf_counter()
    base = models[ref]
    rs = metrics.image_resamples(base.image_ids, cfg.bootstrap, cfg.seed)
    pl = plausible if plausible is not None else np.zeros((len(base.classes),) * 2, bool)
    points, dists = {}, {}
    for m in models:
        dists[m.name] = metrics.resampled_metrics(m.scores, base.labels, base.visible, pl, ks, rs)
        points[m.name] = metrics.point_metrics(m.scores, base.labels, base.visible, pl, ks, rs)
        if plausible is None:  # no counts to judge plausibility with: leave the metric out
            points[m.name]["plaus@10"] = None
            dists[m.name]["plaus@10"] = np.full(rs.n_resamples, np.nan)
    scores = {n: metrics.nest(points[n], ks) | metrics.ci_fields(dists[n], ks) for n in points}
    diffs = {m.name: metrics.nest(metrics.paired_differences(dists[m.name], dists[base.name], points[m.name],
                                                             points[base.name]), ks)
             for m in models if m.name != base.name}
    boot = {"resamples": cfg.bootstrap, "seed": cfg.seed, "unit": "image", "images": rs.n_images,
            "samples": len(base.keys), "without_image_id": rs.unknown, "level": metrics.LEVEL,
            "method": "percentile", "seconds": time.perf_counter() - t0}
    return {"scores": scores, "differences": diffs, "bootstrap": boot}


# --- 4. outputs ----------------------------------------------------------------------------------------------------
def scores_table(rep: dict, markdown: bool = False) -> str:
    cols = {n: report.metric_cells(s, rep["ks"]) for n, s in rep["scores"].items()}
    return report.format_table(report.by_metric(cols, rep["ks"]), list(cols), markdown)


def differences_table(rep: dict, markdown: bool = False) -> str:
    ref = rep["reference"]
    cols = {f"{n} - {ref}": report.difference_cells(d, rep["ks"]) for n, d in rep["differences"].items()}
    return report.format_table(report.by_metric(cols, rep["ks"]), list(cols), markdown)


def verdict_lines(rep: dict) -> list[str]:
    """In words, per model: the metrics where it differs from the reference and those where it does not."""
    lines = []
    for name, d in rep["differences"].items():
        flat = report.flat(d, rep["ks"])
        said = {w: [m for m, r in flat.items() if r and r.get("verdict") == w] for w in ("higher", "lower")}
        same = [m for m, r in flat.items() if r and r.get("verdict") == "no difference"]
        if not any(said.values()) and not same:
            lines.append(f"{name} vs {rep['reference']}: no intervals (--bootstrap 0), so no verdict")
            continue
        words = [f"{w} on {', '.join(ms)}" for w, ms in said.items() if ms]
        words += [f"no difference on {', '.join(same)}"] if same else []
        lines.append(f"{name} vs {rep['reference']}: " + "; ".join(words))
    return lines


def intervals_text(rep: dict) -> str:
    return report.bootstrap_text(rep["bootstrap"], "the same resamples for every model: paired")


def write_report_md(path: Path, rep: dict) -> None:
    lines = ["# compare", "", *(f"**{w}**" for w in optimistic_lines(rep)), *([""] if rep["optimistic"] else []),
             *(f"- {m['name']}: `{m['source']}` ({m['kind']})" for m in rep["models"]),
             f"- reference: {rep['reference']}", f"- samples: {rep['n']} (the same for every model)",
             f"- intervals: {intervals_text(rep)}", f"- plausibility@10: {rep['plausibility_source']}",
             *(f"- note: {n}" for n in rep["notes"]), "", "## Scores (percentages)", "", scores_table(rep, True), "",
             "![scores](scores.png)", ""]
    if rep["differences"]:
        lines += [f"## Difference to {rep['reference']} (paired, percentage points)", "",
                  "An interval that contains 0 reads \"no difference\".", "", differences_table(rep, True), "",
                  *(f"- {v}" for v in verdict_lines(rep)), "", "![differences](differences.png)", ""]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def write_outputs(folder: Path, rep: dict) -> None:
    """Plots and report.md first; report.json last (its presence marks a complete report)."""
    ks = rep["ks"]
    plots.plot_comparison({n: report.flat(s, ks) for n, s in rep["scores"].items()}, folder / "scores.png",
                          title="models on the same samples (95% intervals)",
                          errors={n: report.flat(s, ks, "_ci") for n, s in rep["scores"].items()})
    if rep["differences"]:
        plots.plot_differences({n: report.flat(d, ks) for n, d in rep["differences"].items()},
                               folder / "differences.png", rep["reference"],
                               title=f"difference to {rep['reference']} (paired bootstrap, 95% intervals)")
    write_report_md(folder / "report.md", rep)
    write_json_atomic(folder / "report.json", report.jsonable(rep))


# --- main ----------------------------------------------------------------------------------------------------------
def prepare(cfg: CompareConfig) -> tuple[list[Model], int, list[int], list[str]]:
    """Every input read (checkpoints run) and checked before the output folder is made, so a refused comparison
    leaves nothing behind. Returns the models in the reference's sample order."""
    from scenectl.inference import resolve_ks

    if len(cfg.inputs) < 2:
        raise ScenectlError("compare needs at least two inputs (eval folders, predictions.h5 files or checkpoints)")
    cfg.check()
    names = model_names(cfg.inputs)
    ref = pick_reference(cfg, names)
    models = [open_input(spec, name, cfg) for spec, name in zip(cfg.inputs, names)]
    ks, notes = resolve_ks(cfg.topk, len(models[0].classes))
    ready = [m for m in models if m.pending is None]
    for m in ready[1:]:
        check_same_samples(ready[0], m)  # before any checkpoint runs: a mismatch of stored predictions is quick
    for m in models:
        if m.pending is not None:
            run_pending(m, cfg)
    models = [models[ref] if i == ref else aligned(models[ref], m) for i, m in enumerate(models)]
    check_ks(models, ks)
    return models, ref, ks, notes


def compare(cfg: CompareConfig) -> dict:
    """Compare; returns the report (also written as OUT/report.json)."""
    models, ref, ks, notes = prepare(cfg)
    with claim(cfg.out, "compare", overwrite=cfg.overwrite, config=asdict(cfg)) as folder:
        write_json_atomic(folder.path / "config.json", asdict(cfg))
        plausible = models[ref].plausible
        source = (f"plausible pairs of {models[ref].name} (its training counts)" if plausible is not None else
                  f"not computed: {models[ref].source} stores no plausible-pair matrix (an older eval)")
        rep = {"format": REPORT_FORMAT, "out": str(folder.path), "reference": models[ref].name,
               "models": [{"name": m.name, "source": m.source, "kind": m.kind} for m in models],
               "n": len(models[ref].keys), "ks": ks, "classes": models[ref].classes, "plausibility_source": source,
               "notes": notes + [n for m in models for n in m.notes], **score(models, ref, ks, plausible, cfg),
               **what_is_compared(models)}
        with plots.source(data=", ".join(cfg.shards) or None, n=rep["n"],
                          checkpoint=", ".join(m.name for m in models)):
            write_outputs(folder.path, rep)
        return rep


def summary_text(rep: dict) -> str:
    """What the CLI prints: both tables, the verdicts in words and where the files are."""
    parts = [*optimistic_lines(rep), f"{len(rep['models'])} models on the same {rep['n']} samples; "
             f"{intervals_text(rep)}", scores_table(rep)]
    if rep["differences"]:
        parts += [f"difference to {rep['reference']} (percentage points):", differences_table(rep),
                  *verdict_lines(rep)]
    files = "report.json, report.md, scores.png" + (", differences.png" if rep["differences"] else "")
    parts += [*(f"note: {n}" for n in rep["notes"]), f"wrote {rep['out']}/{{{files}}}"]
    return "\n".join(parts)
