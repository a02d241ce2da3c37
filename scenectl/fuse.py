"""`scenectl fuse`: combine an object classifier with the context model as a product of experts.

    cfg = FuseConfig(context="runs/train/best.pt", object="runs/distill/ce/best.pt", shards="shards/val-obj",
                     ooc_shards="shards/ooc", out="runs/fuse")
    report = fuse(cfg)

Per sample the object model sees `object.jpg` (the unmasked crop) and the context model the masked scene:

    log p_fused(c) = log p_obj(c) + w * log p_ctx(c) - log Z          (Z normalises over the C classes)

w = 0 is the object model alone; larger w trusts the scene more. w is chosen on the validation set (`--shards`)
from a grid: highest top-1, ties broken by lower negative log-likelihood, then by smaller w. Validation numbers
therefore use a w fitted on them (optimistic); `val_crossfit` gives the honest estimate: w chosen on one half of
the set (by key parity) and scored on the other, both ways. The OOC set (`--ooc-shards`, scenectl build-ooc) is
never used for choosing w: it is reported as a whole and for its out-of-context and in-context halves, with
metrics.flag_report on the context model. Writes report.json (last), report.md, weights.png and config.json into
an output folder of its own kind (scenectl.folders): --overwrite replaces only an earlier fusion report.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scenectl import metrics, plots, report
from scenectl.checkpoint import Checkpoint, SampleSet, read_checkpoint
from scenectl.config import FuseConfig
from scenectl.data.coco import classes_match
from scenectl.data.loader import EvalBatches, ShardSet, make_eval_loader, open_shard_set
from scenectl.data.remote import NetOptions
from scenectl.data.transforms import batch_to_device
from scenectl.devices import parse_device
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.fusion import fuse_logprobs
from scenectl.io import write_bytes_atomic, write_json_atomic
from scenectl.metrics import flag_report, log_softmax
from scenectl.report import format_table


# --- the math (numpy, (N, C) arrays) ------------------------------------------------------------------------------
def nll(logp: np.ndarray, labels: np.ndarray) -> float:
    return float(-logp[np.arange(len(labels)), labels].mean())


def choose_weight(logp_obj: np.ndarray, logp_ctx: np.ndarray, labels: np.ndarray,
                  grid: list[float]) -> tuple[float, list[dict]]:
    """The grid's best w (top-1, then lower NLL, then smaller w) and the whole curve [{w, top1, nll}]."""
    curve = []
    for w in sorted(set(float(w) for w in grid)):
        lp = fuse_logprobs(logp_obj, logp_ctx, w)
        curve.append({"w": w, "top1": metrics.topk_accuracy(lp, labels, [1])[1], "nll": nll(lp, labels)})
    best = min(curve, key=lambda r: (-r["top1"], r["nll"], r["w"]))
    return best["w"], curve


def changes(logp_obj: np.ndarray, logp_fused: np.ndarray, labels: np.ndarray) -> dict:
    """Where fusion changes the top-1 answer: fixed (object wrong -> fused right), broken (right -> wrong)."""
    a, b = metrics.ranking(logp_obj)[:, 0], metrics.ranking(logp_fused)[:, 0]  # ties: lower class index
    changed = a != b
    return {"changed": int(changed.sum()), "fixed": int((changed & (a != labels) & (b == labels)).sum()),
            "broken": int((changed & (a == labels) & (b != labels)).sum()),
            "changed_wrong_to_wrong": int((changed & (a != labels) & (b != labels)).sum())}


def compare(logp_obj, logp_ctx, labels, w: float, num_classes: int) -> dict:
    """Accuracies of object-only, context-only and fused on the same samples, and the changes."""
    fused = fuse_logprobs(logp_obj, logp_ctx, w)
    k5 = min(5, num_classes)
    row = {}
    for name, lp in (("object", logp_obj), ("context", logp_ctx), ("fused", fused)):
        acc = metrics.topk_accuracy(lp, labels, [1, k5])
        row[name] = {"top1": acc[1], "top5": acc[k5],
                     "bal_top1": metrics.balanced_topk_accuracy(lp, labels, [1], num_classes)[1],
                     "nll": nll(log_softmax(lp), labels)}
    return {"n": int(len(labels)), "w": w, **row, **changes(logp_obj, fused, labels)}


def crossfit(logp_obj, logp_ctx, labels, keys: list[str], grid: list[float], num_classes: int) -> dict:
    """Two-fold: w chosen on the samples of one key parity (crc32), scored on the other; the folds' counts added."""
    fold = np.array([zlib.crc32(k.encode()) % 2 for k in keys])
    fused = np.zeros_like(np.asarray(logp_obj, np.float64))
    ws = []
    for f in (0, 1):
        fit, test = fold != f, fold == f
        if not fit.any() or not test.any():
            return {"n": 0, "note": "a fold is empty (too few samples)"}
        w, _ = choose_weight(logp_obj[fit], logp_ctx[fit], labels[fit], grid)
        fused[test] = fuse_logprobs(logp_obj[test], logp_ctx[test], w)
        ws.append(w)
    return {"n": int(len(labels)), "weights": ws, "fused_top1": metrics.topk_accuracy(fused, labels, [1])[1],
            "object_top1": metrics.topk_accuracy(logp_obj, labels, [1])[1], **changes(logp_obj, fused, labels)}


# --- running both models over a shard set -------------------------------------------------------------------------
@dataclass
class Scores:
    logp_obj: np.ndarray  # (N, C)
    logp_ctx: np.ndarray  # (N, C)
    labels: np.ndarray  # (N,)
    keys: list[str]
    visible: list[list[int]]
    ooc: np.ndarray  # (N,) bool (False where the json has no "ooc")


def open_checked(spec: str, obj: Checkpoint, ctx: Checkpoint, net: NetOptions | None) -> ShardSet:
    """Shard set `spec`, checked to name both models' classes (before the output folder is made)."""
    s = open_shard_set(spec, net)
    for name, ck in (("--context", ctx), ("--object", obj)):
        if not classes_match(ck.classes, s.classes):
            raise ScenectlError(f"{spec}: its classes differ from the {name} model's ({len(s.classes)} vs "
                                f"{ck.num_classes} classes, or other names/ids)")
    return s


@torch.inference_mode()
def score_set(spec: str, s: ShardSet, obj: Checkpoint, obj_net, ctx: Checkpoint, ctx_net, cfg: FuseConfig,
              device: torch.device) -> Scores:
    """Both models over every sample of shard set `s` (opened from `spec`) once, in order: the object model on
    object.jpg (crops at its size), the context model on the masked scene (as it was trained); the one place fuse
    asks the shard reader."""
    loader = make_eval_loader(s, EvalBatches(view="object", image_size=obj.image_size, batch_size=cfg.batch_size,
                                             workers=cfg.workers, scene_size=ctx.image_size,
                                             scene_mask=ctx.mask_channel))
    lo, lc, y, keys, vis, ooc = [], [], [], [], [], []
    for batch in loader:
        b = batch_to_device(batch, device)  # model input: crops (B, 3, H, W), scenes (B, C, H', W')
        lo.append(obj_net(b["input"]).float().cpu())  # (B, C)
        lc.append(ctx_net(b["scene_input"]).float().cpu())  # (B, C)
        y.append(batch["label"])
        keys += batch["key"]
        vis += batch["visible"]
        ooc += [bool(m.get("ooc", False)) for m in batch["meta"]]
    if not keys:
        raise ScenectlError(f"{spec}: the shard set yielded no samples")
    return Scores(log_softmax(torch.cat(lo).numpy()), log_softmax(torch.cat(lc).numpy()), torch.cat(y).numpy(),
                  keys, vis, np.array(ooc, bool))


# --- reports ------------------------------------------------------------------------------------------------------
def table(sets: dict[str, dict], markdown: bool = False) -> str:
    pct = {n: {"object top-1": r["object"]["top1"], "context top-1": r["context"]["top1"],
               "fused top-1": r["fused"]["top1"], "fused bal top-1": r["fused"]["bal_top1"]} for n, r in sets.items()}
    text = format_table(pct, ["object top-1", "context top-1", "fused top-1", "fused bal top-1"], markdown=markdown)
    counts = [f"{n}: n={r['n']}, changed {r['changed']}, fixed {r['fixed']}, broken {r['broken']}"
              for n, r in sets.items()]
    return text + "\n" + "\n".join(("- " if markdown else "") + c for c in counts)


def write_report(out: Path, rep: dict) -> None:
    lines = ["# fusion: object model × context model", "",
             f"- context `{rep['context']}`, object `{rep['object']}`",
             f"- log p ∝ log p_obj + w·log p_ctx; w = {rep['w']} chosen on `{rep['shards']}` "
             f"(grid {rep['grid'][0]}..{rep['grid'][-1]})",
             "- `val` uses the w fitted on it (optimistic); `val_crossfit` chooses w on one half and scores the other: "
             f"object {100 * rep['val_crossfit'].get('object_top1', float('nan')):.1f} → fused "
             f"{100 * rep['val_crossfit'].get('fused_top1', float('nan')):.1f} top-1 "
             f"(w per fold {rep['val_crossfit'].get('weights')})",
             "", "Percentages; fixed = object wrong → fused right, broken = object right → fused wrong.", "",
             table(rep["sets"], markdown=True), ""]
    if rep.get("ooc_flags"):
        f = rep["ooc_flags"]
        lines += ["## How the context model flags out-of-context objects", "",
                  f"ROC AUC of -log p_ctx(true class), out-of-context vs in-context: **{f['auc_context_model']:.3f}** "
                  f"(label-only naive Bayes on the visible classes: {f['auc_label_only_naive_bayes']:.3f}).", "",
                  "| subset | n | mean p(true) | median p(true) | top-1 | top-5 | plaus@10 | true class plausible |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, s in f["subsets"].items():
            pl = "—" if s["plausibility@10"] is None else f"{100 * s['plausibility@10']:.1f}"
            tp = "—" if s["true_class_plausible"] is None else f"{100 * s['true_class_plausible']:.1f}"
            lines.append(f"| {name} | {s['n']} | {s['p_true_mean']:.4f} | {s['p_true_median']:.4f} | "
                         f"{100 * s['top1']:.1f} | {100 * s['top5']:.1f} | {pl} | {tp} |")
        lines.append("")
    lines += ["![w](weights.png)", ""]
    write_bytes_atomic(out / "report.md", ("\n".join(lines) + "\n").encode())


# --- main ---------------------------------------------------------------------------------------------------------
def load_models(cfg: FuseConfig, device: torch.device) -> tuple[Checkpoint, torch.nn.Module, Checkpoint,
                                                                    torch.nn.Module]:
    """(object checkpoint, its model, context checkpoint, its model), checked to fit together."""
    ctx, obj = read_checkpoint(cfg.context), read_checkpoint(cfg.object)
    if obj.in_chans != 3:
        raise ScenectlError(f"--object {cfg.object} takes {obj.in_chans} input channels; an object "
                            "classifier sees RGB crops (train one with `scenectl distill` or `scenectl transfer`)")
    if not classes_match(ctx.classes, obj.classes):
        raise ScenectlError(f"--object {cfg.object} and --context {cfg.context} name different classes")
    return obj, obj.build_model(device), ctx, ctx.build_model(device)


def ooc_sets(o: Scores, w: float, num_classes: int) -> dict[str, dict]:
    """The OOC set scored as a whole and as its out-of-context and in-context halves."""
    sets = {"ooc set (all)": compare(o.logp_obj, o.logp_ctx, o.labels, w, num_classes)}
    for name, sel in (("ooc: out-of-context", o.ooc), ("ooc: in-context", ~o.ooc)):
        if sel.any():
            sets[name] = compare(o.logp_obj[sel], o.logp_ctx[sel], o.labels[sel], w, num_classes)
    return sets


def fuse(cfg: FuseConfig) -> dict:
    """Choose w on cfg.shards and report every set; writes cfg.out (a `fuse` folder), report.json last."""
    cfg.check()
    device = parse_device(cfg.device)
    obj, obj_net, ctx, ctx_net = load_models(cfg, device)
    num_classes = ctx.num_classes
    sets = {spec: open_checked(spec, obj, ctx, cfg.net.options()) for spec in (cfg.shards, cfg.ooc_shards) if spec}
    with claim(cfg.out, "fuse", overwrite=cfg.overwrite, config=asdict(cfg)) as folder:
        write_json_atomic(folder.path / "config.json", asdict(cfg))
        val = score_set(cfg.shards, sets[cfg.shards], obj, obj_net, ctx, ctx_net, cfg, device)
        w, curve = choose_weight(val.logp_obj, val.logp_ctx, val.labels, cfg.weights)
        rep = {"format": "scenectl-fuse/1", "out": str(folder.path), "context": cfg.context, "object": cfg.object,
               "shards": cfg.shards, "ooc_shards": cfg.ooc_shards, "w": w, "grid": sorted(set(cfg.weights)),
               "weight_curve": curve,
               "val_crossfit": crossfit(val.logp_obj, val.logp_ctx, val.labels, val.keys, cfg.weights, num_classes),
               "sets": {"val": compare(val.logp_obj, val.logp_ctx, val.labels, w, num_classes)}}
        scored = [SampleSet.of(sets[cfg.shards].location, sets[cfg.shards].manifest, val.keys)]
        if cfg.ooc_shards:
            o = score_set(cfg.ooc_shards, sets[cfg.ooc_shards], obj, obj_net, ctx, ctx_net, cfg, device)
            scored.append(SampleSet.of(sets[cfg.ooc_shards].location, sets[cfg.ooc_shards].manifest, o.keys))
            rep["sets"].update(ooc_sets(o, w, num_classes))
            if o.ooc.any() and (~o.ooc).any():
                cooc = ctx.cooccurrence  # the context model's training counts, else the OOC set's copy of them
                cooc = sets[cfg.ooc_shards].cooccurrence() if cooc is None else cooc
                rep["ooc_flags"] = flag_report(o.logp_ctx, o.labels, o.ooc, o.visible, cooc)
        rep["provenance"] = report.report_provenance([cfg.context, cfg.object], scored)
        with plots.source(checkpoint=f"{cfg.context} + {cfg.object}", data=cfg.shards, n=len(val.labels)):
            plots.plot_weights(curve, w, folder.path / "weights.png")
        write_report(folder.path, rep)
        write_json_atomic(folder.path / "report.json", rep)
    return rep


def summary_text(rep: dict) -> str:
    parts = [f"w = {rep['w']} (chosen on {rep['shards']})", table(rep["sets"])]
    cf = rep["val_crossfit"]
    if cf.get("n"):
        parts.append(f"val cross-fitted (w per half {cf['weights']}): object top-1 {100 * cf['object_top1']:.1f}, "
                     f"fused {100 * cf['fused_top1']:.1f}, fixed {cf['fixed']}, broken {cf['broken']}")
    if rep.get("ooc_flags"):
        f = rep["ooc_flags"]
        parts.append(f"OOC detection by context surprise: ROC AUC {f['auc_context_model']:.3f} "
                     f"(label-only naive Bayes {f['auc_label_only_naive_bayes']:.3f})")
    parts.append(f"wrote {rep['out']}/{{report.json, report.md, weights.png, config.json}}")
    return "\n".join(parts)
