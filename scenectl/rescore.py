"""`scenectl rescore`: context rescoring of any detector's COCO results, measured by pycocotools' COCOeval.

    rep = rescore(RescoreConfig(detections="dets.json", images="coco/val2017",
                                annotations="coco/annotations/instances_val2017.json",
                                checkpoint="runs/train/best.pt", out="runs/rescore"))

For each kept detection (scenectl.detections: checked rows, at most --max-per-image per image, above --min-score)
its box is hidden exactly as build-shards hides an object for this checkpoint (scenectl.hiding.masked_sample: the
training shards' shape, fill, margin, image size, letterbox; the box's pixels play the instance mask), and the
context model gives log p_ctx(c) over its classes, batched across images. Fusion (scenectl.fusion, the rule `fuse`
uses):

    score'(box, c) = score · (p_ctx(c) / prior(c))^w                  (log: log score + w · log likelihood ratio)

prior(c): the class frequency of the checkpoint's training instances (its co-occurrence counts; else the mean of
p_ctx over the scored boxes). --relabel K adds, per box, rows for the context's K most probable other classes c',
scored (1 - score) / (C - 1) · (p_ctx(c') / prior(c'))^w: the detector's remaining belief spread evenly over the
other classes, times the same evidence.

w is chosen on a calibration part of the images (a seeded split by image id, --calibration) as the grid value of
highest COCO AP there (ties: the smaller w; the grid: every --weight given, else config.RESCORE_GRID), and
everything is reported on the other part only; a single --weight W fixes w and evaluates every image. Before and
after are COCOeval (bbox) on the same images; ΔAP's 95% interval resamples images (scenectl.boxap: COCOeval's
per-image matching reused per resample). Writes into a claimed `rescore`
folder: config.json, rescored.json (every kept detection of every image, scored with the chosen w, COCO results
format), delta_ap.png, changed.png, report.md and report.json (last).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scenectl import boxap, metrics
from scenectl.checkpoint import Checkpoint, read_checkpoint
from scenectl.config import RescoreConfig
from scenectl.data import masks
from scenectl.detections import Detections, read_results
from scenectl.devices import parse_device
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.fusion import product_of_experts
from scenectl.hiding import masked_sample, shard_params
from scenectl.io import write_json_atomic
from scenectl.progress import progress

SHEET = 12  # boxes on the contact sheet


# --- inputs -------------------------------------------------------------------------------------------------------
@dataclass
class Inputs:
    gt: object  # pycocotools COCO of --annotations
    ckpt: Checkpoint
    class_of: dict[int, int]  # annotation category id -> the checkpoint's class index
    dets: Detections
    params: dict  # how build-shards hid objects for this checkpoint (shape, fill, margin, image_size)
    params_source: str


def class_map(gt, ckpt: Checkpoint, path: str) -> dict[int, int]:
    """{annotation category id: checkpoint class index}, matched by name; refused unless both name the same
    classes."""
    cats = {c["name"]: i for i, c in gt.cats.items()}
    names = ckpt.names
    if set(cats) != set(names) or len(cats) != len(names):
        only_ann, only_ck = sorted(set(cats) - set(names)), sorted(set(names) - set(cats))
        raise ScenectlError(f"--annotations {path} and --checkpoint {ckpt.path} name different classes (only in the "
                            f"annotations: {only_ann[:5] or 'none'}; only in the checkpoint: {only_ck[:5] or 'none'})")
    return {cats[n]: i for i, n in enumerate(names)}


def read_inputs(cfg: RescoreConfig) -> Inputs:
    from scenectl.data.coco import load_coco

    gt = load_coco(cfg.annotations)
    ckpt = read_checkpoint(cfg.checkpoint)
    mapping = class_map(gt, ckpt, cfg.annotations)
    sizes = {int(im["id"]): (int(im["width"]), int(im["height"])) for im in gt.dataset["images"]}
    dets = read_results(cfg.detections, sizes, set(mapping), cfg.max_per_image, cfg.min_score)
    return Inputs(gt, ckpt, mapping, dets, *shard_params(ckpt))  # checked there (checkpoint.BuildParams.parse)


def split(image_ids, fraction: float | None, seed: int) -> tuple[list[int], list[int]]:
    """(calibration ids, evaluation ids): a seeded permutation of the sorted ids, its first round(fraction · n)
    for calibration (none when fraction is None: --weight given)."""
    ids = np.array(sorted(int(i) for i in image_ids), np.int64)
    if fraction is None:
        return [], ids.tolist()
    perm = np.random.default_rng(seed).permutation(ids)
    n_cal = int(round(fraction * ids.size))
    if n_cal == 0 or n_cal == ids.size:
        raise ScenectlError(f"--calibration {fraction} leaves one part of the {ids.size} images empty")
    return sorted(perm[:n_cal].tolist()), sorted(perm[n_cal:].tolist())


# --- the context model over every box -----------------------------------------------------------------------------
class BoxScenes(torch.utils.data.Dataset):
    """One item per image holding detections: its boxes hidden one at a time, as model input (uint8)."""

    def __init__(self, inp: Inputs, images: str, seed: int):
        self.inp, self.images, self.seed = inp, Path(images), seed
        d = inp.dets
        self.image_ids = sorted(set(d.image_id.tolist()))
        order = np.argsort(d.image_id, kind="stable")
        cuts = np.searchsorted(d.image_id[order], self.image_ids + [np.iinfo(np.int64).max])
        self.members = [order[a:b] for a, b in zip(cuts[:-1], cuts[1:])]  # detection indices per image

    def __len__(self) -> int:
        return len(self.image_ids)

    def scene(self, image_id: int):
        """The image decoded as build-shards decodes it (draft for the shards' size), its letterboxed base."""
        from scenectl.data.coco import BadImage, load_image

        rec = self.inp.gt.imgs[image_id]
        path = self.images / rec["file_name"]
        try:
            dec = load_image(path, int(rec["width"]), int(rec["height"]), draft=int(self.inp.params["image_size"]))
        except (BadImage, FileNotFoundError) as e:
            raise ScenectlError(f"--images: {path} (image {image_id}) is missing or unreadable ({e})") from None
        base = masks.Letterbox(*dec.size, int(self.inp.params["image_size"])).image(dec.image)
        return rec, dec, base

    def hidden(self, rec: dict, dec, base: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Detection i's box hidden -> (masked scene (S, S, 3) uint8, mask (S, S) uint8 255 = hidden)."""
        from PIL import Image

        obj = masks.box_mask(self.inp.dets.bbox[i].tolist(), int(rec["width"]), int(rec["height"]))  # stored frame
        if dec.turn is not None:  # pixels upright: turn the box's mask likewise (as build-shards turns regions)
            obj = np.asarray(Image.fromarray(obj).transpose(dec.turn))
        seed = [self.seed, int(rec["id"]), int(self.inp.dets.row[i])]  # per box, independent of order and workers
        scene, mask, _ = masked_sample(dec, obj, self.inp.params, seed, base)
        return scene, mask

    def __getitem__(self, k: int):
        from scenectl.data.transforms import to_input

        rec, dec, base = self.scene(self.image_ids[k])
        ck = self.inp.ckpt
        pairs = [to_input(*self.hidden(rec, dec, base, int(i)), ck.image_size, ck.mask_channel)
                 for i in self.members[k]]
        masks_ = torch.stack([m for _, m in pairs]) if ck.mask_channel else None  # (n, 1, S, S)
        return torch.as_tensor(self.members[k]), torch.stack([x for x, _ in pairs]), masks_  # (n,), (n, 3, S, S)


@torch.inference_mode()
def context_logprobs(inp: Inputs, cfg: RescoreConfig, device: torch.device) -> tuple[np.ndarray, float]:
    """(N, C) log p_ctx of every kept detection's hidden box, and the detections per second."""
    from scenectl.data.transforms import batch_to_device

    ds = BoxScenes(inp, cfg.images, cfg.seed)
    model = inp.ckpt.build_model(device)
    out = np.zeros((len(inp.dets), inp.ckpt.num_classes), np.float32)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=cfg.workers)
    pending: list[tuple] = []
    t0 = time.perf_counter()

    def flush(final: bool) -> None:
        """Forward the pending boxes in batches of --batch-size (all of them when final; else a remainder smaller
        than a batch waits for the next images' boxes)."""
        b, n = cfg.batch_size, sum(len(p[0]) for p in pending)
        if n == 0 or (n < b and not final):
            return
        idx, rgb = torch.cat([p[0] for p in pending]), torch.cat([p[1] for p in pending])
        m = torch.cat([p[2] for p in pending]) if pending[0][2] is not None else None
        pending.clear()
        for s in range(0, n, b):
            part = slice(s, s + b)
            if not final and s + b > n:
                pending.append((idx[part], rgb[part], None if m is None else m[part]))
                return
            batch = {"input": rgb[part]} if m is None else {"input": rgb[part], "input_mask": m[part]}
            x = batch_to_device(batch, device)["input"]  # (B, C_in, S, S) float, as every batch
            out[idx[part].numpy()] = torch.log_softmax(model(x).float(), dim=1).cpu().numpy()

    with progress(desc="rescore: context model", total=len(inp.dets), unit="det") as bar:
        for item in loader:
            pending.append(item)
            flush(False)
            bar.update(len(item[0]))
        flush(True)
    return out, len(inp.dets) / max(time.perf_counter() - t0, 1e-9)


def log_prior(ckpt: Checkpoint, logp_ctx: np.ndarray) -> tuple[np.ndarray, str]:
    """(C,) log prior(c): the checkpoint's training instance frequencies (Laplace 1), else the mean of p_ctx."""
    cooc = ckpt.cooccurrence
    if cooc is not None:
        return metrics.prior_scores(cooc, 1)[0], "the checkpoint's training instance counts"
    mean = np.exp(logp_ctx.astype(np.float64)).mean(axis=0) if len(logp_ctx) else np.full(ckpt.num_classes, 1.0)
    return np.log(np.maximum(mean, 1e-12) / mean.sum()), "the mean context probability over the scored boxes"


# --- fusion and rows ----------------------------------------------------------------------------------------------
@dataclass
class Evidence:
    """Per detection: the context model's log likelihood ratios and the detection's own class index."""

    llr: np.ndarray  # (N, C) log p_ctx(c) - log prior(c)
    cls: np.ndarray  # (N,) the detection's class index in the checkpoint
    cat_of: np.ndarray  # (C,) annotation category id of each checkpoint class


def evidence(inp: Inputs, logp_ctx: np.ndarray, lprior: np.ndarray) -> Evidence:
    cat_of = np.zeros(inp.ckpt.num_classes, np.int64)
    cat_of[list(inp.class_of.values())] = list(inp.class_of)
    cls = np.array([inp.class_of[int(c)] for c in inp.dets.category_id], np.int64)
    return Evidence(logp_ctx.astype(np.float64) - lprior[None, :], cls, cat_of)


def rescored(d: Detections, ev: Evidence, w: float, relabel: int, sel: np.ndarray | None = None
             ) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Results rows of detections `sel` (all when None) scored with weight w -> (rows, (n,) fused scores of the
    detections' own classes, (n, K) relabel scores or (n, 0)); the first n rows are the detections in order, the
    relabel rows follow."""
    idx = np.arange(len(d)) if sel is None else np.flatnonzero(sel)
    own = np.exp(product_of_experts(np.log(d.score[idx]), ev.llr[idx, ev.cls[idx]], w))  # (n,)
    rows = d.take(idx).rows(own)
    alt_scores = np.zeros((idx.size, 0))
    if relabel:
        c = ev.llr.shape[1]
        others = np.where(np.arange(c)[None, :] == ev.cls[idx, None], -np.inf, ev.llr[idx])  # (n, C), own class out
        alt = np.argsort(-others, axis=1, kind="stable")[:, :min(relabel, c - 1)]  # (n, K) by p_ctx / prior
        rest = np.log(np.maximum(1.0 - d.score[idx], 1e-12) / max(c - 1, 1))  # (n,)
        alt_scores = np.exp(product_of_experts(rest[:, None], np.take_along_axis(ev.llr[idx], alt, 1), w))
        for j, k in enumerate(idx):
            box = [float(v) for v in d.bbox[k]]
            rows += [{"image_id": int(d.image_id[k]), "category_id": int(ev.cat_of[a]), "bbox": box,
                      "score": float(s)} for a, s in zip(alt[j], alt_scores[j])]
        alt_scores = np.concatenate([alt[..., None], alt_scores[..., None]], axis=2)  # (n, K, 2): class, score
    return rows, own, alt_scores


def choose_weight(inp: Inputs, ev: Evidence, cal_ids: list[int], cfg: RescoreConfig) -> tuple[float, list[dict]]:
    """The grid's (--weight) w of highest AP on the calibration images (ties: smaller w), and the curve [{w, AP}];
    the one w given when there is no calibration part."""
    if not cal_ids:
        return float(cfg.weights[0]), []
    sel = np.isin(inp.dets.image_id, cal_ids)
    curve = [{"w": w, "AP": boxap.evaluate(inp.gt, rescored(inp.dets, ev, w, cfg.relabel, sel)[0], cal_ids).stats[0]}
             for w in sorted(set(float(v) for v in cfg.weights))]
    best = min(curve, key=lambda r: (-r["AP"], r["w"]))
    return best["w"], curve


# --- evaluation ---------------------------------------------------------------------------------------------------
def compare(inp: Inputs, ev: Evidence, w: float, relabel: int, eval_ids: list[int], bootstrap: int,
            seed: int) -> dict:
    """COCOeval before and after on `eval_ids`, and the paired ΔAP with its image-level bootstrap interval."""
    sel = np.isin(inp.dets.image_id, eval_ids)
    names = {i: c["name"] for i, c in inp.gt.cats.items()}
    before = boxap.evaluate(inp.gt, inp.dets.take(np.flatnonzero(sel)).rows(), eval_ids)
    after = boxap.evaluate(inp.gt, rescored(inp.dets, ev, w, relabel, sel)[0], eval_ids)
    out = {"images": len(eval_ids), "detections": int(sel.sum()), "before": boxap.summary(before, names),
           "after": boxap.summary(after, names), "bootstrap": bootstrap}
    out["delta"] = {m: (None if out["after"][m] is None or out["before"][m] is None
                        else out["after"][m] - out["before"][m]) for m in boxap.METRICS}
    ci = None
    if bootstrap:
        t0 = time.perf_counter()
        weights = metrics.image_resamples(eval_ids, bootstrap, seed).weights  # (B, G), images in sorted order
        diff = boxap.Matching.of(after).ap(weights) - boxap.Matching.of(before).ap(weights)
        ci = metrics.interval(diff)
        out["bootstrap_seconds"] = time.perf_counter() - t0
    out["delta_AP_ci"], out["verdict"] = ci, metrics.verdict(ci)
    return out


# --- the command --------------------------------------------------------------------------------------------------
def provenance_of(cfg: RescoreConfig, n: int) -> dict:
    """What the report is of: scenectl's version and commit, the context checkpoint and the input files with their
    sha256 (a detector's results are not a shard set: the files are the fingerprint), n evaluation images."""
    from scenectl.io import file_sha256
    from scenectl.report import provenance_record

    files = [{"location": str(p), "sha256": file_sha256(p)} for p in (cfg.detections, cfg.annotations)]
    return provenance_record([cfg.checkpoint], files + [{"location": str(cfg.images)}], n)


def rescore(cfg: RescoreConfig) -> dict:
    """Rescore cfg.detections with the context model; writes cfg.out (a `rescore` folder), report.json last."""
    cfg.check()
    device = parse_device(cfg.device)
    inp = read_inputs(cfg)
    fixed = len(set(cfg.weights)) == 1
    cal_ids, eval_ids = split(inp.gt.getImgIds(), None if fixed else cfg.calibration, cfg.seed)
    with claim(cfg.out, "rescore", overwrite=cfg.overwrite, config=asdict(cfg)) as folder:
        write_json_atomic(folder.path / "config.json", asdict(cfg))
        logp, rate = context_logprobs(inp, cfg, device)
        lprior, prior_source = log_prior(inp.ckpt, logp)
        ev = evidence(inp, logp, lprior)
        w, curve = choose_weight(inp, ev, cal_ids, cfg)
        rows, own, alts = rescored(inp.dets, ev, w, cfg.relabel)
        write_json_atomic(folder.path / "rescored.json", rows)
        rep = {"format": "scenectl-rescore/1", "out": str(folder.path), "detections_file": cfg.detections,
               "annotations": cfg.annotations, "checkpoint": cfg.checkpoint, "w": w,
               "w_chosen_on": "--weight (fixed)" if fixed else "calibration images",
               "grid": sorted(set(cfg.weights)), "weight_curve": curve, "relabel": cfg.relabel, "prior": prior_source,
               "hiding": {**{k: inp.params[k] for k in ("shape", "fill", "margin", "image_size")},
                          "source": inp.params_source},
               "rows": {"read": inp.dets.rows_read, "kept": len(inp.dets),
                        "skipped": {k: v for k, v in sorted(inp.dets.skipped.items()) if v},
                        "relabel_rows": len(rows) - len(inp.dets)},
               "split": {"seed": cfg.seed, "calibration": None if fixed else cfg.calibration,
                         "calibration_image_ids": cal_ids, "evaluation_image_ids": eval_ids},
               "evaluation": compare(inp, ev, w, cfg.relabel, eval_ids, cfg.bootstrap, cfg.seed)}
        rep["provenance"] = provenance_of(cfg, len(eval_ids))
        rep["speed"] = {"detections_per_s": rate, "device": str(device),
                        "bootstrap_seconds": rep["evaluation"].pop("bootstrap_seconds", None)}
        from scenectl import plots, rescore_report

        with plots.source(checkpoint=str(cfg.checkpoint), data=f"{cfg.detections} on {cfg.images}",
                          n=len(eval_ids)):
            rescore_report.write(folder.path, rep, sheet_samples(inp, cfg, changed_boxes(inp, ev, own, alts, eval_ids)))
        write_json_atomic(folder.path / "report.json", rep)
    return rep


@dataclass
class Changed:
    det: int  # detection index
    before: tuple[int, float, int]  # (category id, score, rank in its image)
    after: tuple[int, float, int]


def changed_boxes(inp: Inputs, ev: Evidence, own: np.ndarray, alts: np.ndarray, eval_ids: list[int]) -> list[Changed]:
    """The evaluation part's boxes whose best label or rank within their image the rescoring changed, most
    changed first (a new label, then the larger rank change), at most SHEET."""
    d = inp.dets
    best_cat, best = d.category_id.copy(), own.copy()
    if alts.shape[1]:
        top = alts[:, 0, :]  # (N, 2): the best alternative's class index and score
        wins = top[:, 1] > own
        best[wins] = top[wins, 1]
        best_cat[wins] = ev.cat_of[top[wins, 0].astype(np.int64)]  # its annotation category id
    out = []
    sel = np.flatnonzero(np.isin(d.image_id, eval_ids))
    sel = sel[np.argsort(d.image_id[sel], kind="stable")]  # grouped by image, file order within
    for idx in np.split(sel, np.flatnonzero(np.diff(d.image_id[sel])) + 1):
        if idx.size == 0:
            continue
        r0 = np.argsort(np.argsort(-d.score[idx], kind="stable"), kind="stable")  # rank of each box, 0 = top
        r1 = np.argsort(np.argsort(-best[idx], kind="stable"), kind="stable")
        for j, i in enumerate(idx):
            if best_cat[i] != d.category_id[i] or r0[j] != r1[j]:
                out.append(Changed(int(i), (int(d.category_id[i]), float(d.score[i]), int(r0[j]) + 1),
                                   (int(best_cat[i]), float(best[i]), int(r1[j]) + 1)))
    out.sort(key=lambda c: (c.before[0] == c.after[0], -abs(c.before[2] - c.after[2]), c.det))
    return out[:SHEET]


def sheet_samples(inp: Inputs, cfg: RescoreConfig, changed: list[Changed]) -> list[dict]:
    """The changed boxes as contact-sheet tiles (plots.plot_contact_sheet): the hidden scene the context model saw,
    the hidden region outlined, titled before -> after (class, score, rank in the image)."""
    ds, names = BoxScenes(inp, cfg.images, cfg.seed), {i: c["name"] for i, c in inp.gt.cats.items()}
    tiles = []
    for c in changed:
        rec, dec, base = ds.scene(int(inp.dets.image_id[c.det]))
        scene, mask = ds.hidden(rec, dec, base, c.det)
        text = (f"img {rec['id']}: {names[c.before[0]]} {c.before[1]:.2f} #{c.before[2]}\n"
                f"-> {names[c.after[0]]} {c.after[1]:.2f} #{c.after[2]}")
        tiles.append({"jpg": scene, "mask.png": mask, "json": {"category_name": text}})
    return tiles


def summary_text(rep: dict) -> str:
    e = rep["evaluation"]
    ci = e["delta_AP_ci"]
    ci_txt = f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else ""
    b, a = e["before"]["AP"], e["after"]["AP"]
    return (f"w = {rep['w']} ({rep['w_chosen_on']}); on {e['images']} evaluation images: AP {100 * (b or 0):.2f} -> "
            f"{100 * (a or 0):.2f}, ΔAP {100 * (e['delta']['AP'] or 0):+.2f}{ci_txt} ({e['verdict'] or 'no interval'})"
            f"\nwrote {rep['out']}/{{rescored.json, report.json, report.md, delta_ap.png, changed.png, config.json}}")
