"""The small-data recipe on coco-sample: `scenectl quickstart --coco-root` for several seeds, with and without the
auxiliary visible-classes head, and the table of docs/results.md ("Small-data recipe on coco-sample").

Each run is the quickstart chain as a user runs it (build-shards on both splits, train with the recipe, eval with
1000 image-level bootstrap resamples), seeded with --seed (shard order, weights, data order, augmentation and the
bootstrap); only --aux-visible is set here, everything else is the recipe's default (scenectl.quickstart.RECIPES).
Per run it records the wall time and the load average before and after (the machine may be shared).

    OMP_NUM_THREADS=1 python benchmarks/recipe_seeds.py --out /tmp/recipe --seeds 0 1 2 --aux 0 1
    python benchmarks/recipe_seeds.py --out /tmp/recipe --seeds 0 1 2 --aux 0 1 --table-only   # re-print the table

Run folders: OUT/aux{W}-seed{S}/ (a quickstart folder; run/eval/report.json), OUT/aux{W}-seed{S}.json (wall time,
load). The tables: each seed's value with its 95 % interval, the mean over seeds, and the prior's and the
co-occurrence baseline's values (the same val2017 samples for every seed); then the mean over seeds with intervals
that hold the training-seed variance and the differences worded after Holm (pooled()).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"
METRICS = [("top-1", "topk", "1"), ("top-5", "topk", "5"), ("bal top-5", "topk_balanced", "5"),
           ("bal top-10", "topk_balanced", "10")]


def run_one(coco_root: Path, out: Path, seed: int, aux: float, workers: int) -> dict:
    """One quickstart chain; returns its timing record (also written to OUT.json)."""
    from scenectl.quickstart import QuickstartConfig, quickstart

    load0, t0 = os.getloadavg(), time.perf_counter()
    quickstart(QuickstartConfig(out=str(out), coco_root=str(coco_root), seed=seed, aux_visible=aux, device="cpu",
                                workers=workers, overwrite=True), echo=lambda line: print(line, flush=True))
    rec = {"seed": seed, "aux_visible": aux, "wall_s": time.perf_counter() - t0, "load_before": load0,
           "load_after": os.getloadavg(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    out.with_suffix(".json").write_text(json.dumps(rec, indent=1))
    return rec


def cell(report: dict, group: str, k: str) -> tuple[float, list[float] | None]:
    """(value, [lo, hi]) in percent of one metric of a report (or of one of its baselines)."""
    ci = report.get(f"{group}_ci", {}).get(k)
    return 100 * report[group][k], None if ci is None else [100 * v for v in ci]


def fmt(v: float, ci: list[float] | None) -> str:
    return f"{v:.1f}" if ci is None else f"{v:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def table(out: Path, seeds: list[int], auxes: list[float]) -> str:
    """The markdown table of every finished run under OUT."""
    head = "| run | wall time | load (1 min, before / after) | " + " | ".join(m for m, _, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * 3 + "---:|" * len(METRICS)]
    baselines = None
    for aux in auxes:
        values = {m: [] for m, _, _ in METRICS}
        for seed in seeds:
            rep_path = out / f"aux{aux:g}-seed{seed}" / "run" / "eval" / "report.json"
            if not rep_path.is_file():
                continue
            rep = json.loads(rep_path.read_text())
            rec = json.loads((out / f"aux{aux:g}-seed{seed}.json").read_text())
            baselines = baselines or rep["baselines"]
            cells = []
            for m, group, k in METRICS:
                v, ci = cell(rep, group, k)
                values[m].append(v)
                cells.append(fmt(v, ci))
            lines.append(f"| --aux-visible {aux:g}, seed {seed} | {rec['wall_s'] / 60:.1f} min | "
                         f"{rec['load_before'][0]:.1f} / {rec['load_after'][0]:.1f} | " + " | ".join(cells) + " |")
        if all(values.values()):
            n = len(values["top-1"])
            lines.append(f"| **--aux-visible {aux:g}, mean of {n}** | | | "
                         + " | ".join(f"**{statistics.mean(values[m]):.1f}**" for m, _, _ in METRICS) + " |")
    for name in ("prior", "cooccurrence"):
        if baselines and name in baselines:
            b = baselines[name]
            lines.append(f"| {name} baseline (seed {seeds[0]}'s intervals) | | | "
                         + " | ".join(fmt(*cell(b, g, k)) for _, g, k in METRICS) + " |")
    return "\n".join(lines)


def pooled(out: Path, seeds: list[int], auxes: list[float], n_resamples: int = 1000) -> str:
    """The mean over seeds with intervals that hold the image resamples AND the training seeds: every seed's
    predictions (predictions.h5, matched by sample key) are scored on the same resamples of the val2017 images
    (balanced metrics over the declared class set, classes with >= 5 targets), metrics.seed_interval widens each
    side by the across-seed variance; beside them the prior on the same resamples (a constant predictor: its
    balanced metrics get no interval), and the differences mean - prior and (with two --aux values) the last minus
    the first (paired per seed), worded after Holm over all of the table's differences (one family)."""
    import numpy as np

    from scenectl import metrics
    from scenectl.checkpoint import read_checkpoint
    from scenectl.predictions import read_predictions

    ks, names = [1, 5, 10], [m for m, _, _ in METRICS]
    runs = {aux: [out / f"aux{aux:g}-seed{s}" / "run" for s in seeds] for aux in auxes}
    runs = {aux: rs for aux, rs in runs.items() if all((r / "eval" / "predictions.h5").is_file() for r in rs)}
    if not runs:
        return "(no complete set of seeds for a pooled interval)"
    first = next(iter(runs.values()))[0]
    ref = read_predictions(first / "eval" / "predictions.h5")
    order = {k: i for i, k in enumerate(ref.keys)}
    cooc = read_checkpoint(first / "last.pt").cooccurrence  # the training split's counts (same for every seed)
    plausible = metrics.plausible_matrix(cooc)
    rs = metrics.image_resamples(ref.image_ids, n_resamples, 0)
    cls = metrics.declared_classes(ref.labels, len(ref.class_names))
    prior = metrics.prior_scores(cooc, len(ref.keys))

    def seed_run(scores, seed: int | None) -> metrics.SeedRun:  # each metric on the original samples and resamples
        point = metrics.point_metrics(scores, ref.labels, ref.visible, plausible, ks, rs, cls)
        return metrics.SeedRun(point, metrics.resampled_metrics(scores, ref.labels, ref.visible, plausible, ks, rs,
                                                                cls), seed)

    def arm_runs(paths: list[Path]) -> list[metrics.SeedRun]:
        out_runs = []
        for seed, r in zip(seeds, paths):
            p = read_predictions(r / "eval" / "predictions.h5")
            idx = np.array([order[k] for k in p.keys])  # this run's samples in the reference order
            logits = np.empty_like(p.logits)
            logits[idx] = p.logits
            out_runs.append(seed_run(logits, seed))
        return out_runs

    arms = {f"--aux-visible {aux:g}": arm_runs(paths) for aux, paths in runs.items()}
    arms["prior baseline"] = [seed_run(prior, None)]
    def arm(name: str, m: str) -> metrics.Arm:  # one metric of one arm over its seeds
        rs_ = arms[name]
        return metrics.Arm.of([r.point[m] for r in rs_], [r.dists[m] for r in rs_],
                              None if rs_[0].seed is None else [r.seed for r in rs_])

    pairs = [(a, "prior baseline") for a in arms if a != "prior baseline"]
    if len(runs) == 2:
        pairs.append(tuple(reversed([a for a in arms if a != "prior baseline"])))
    flat = {f"{a} minus {b}\t{m}": metrics.seed_interval(arm(a, m), arm(b, m)) for a, b in pairs for m in names}
    family = f"{len(pairs)} comparisons on {len(names)} metrics: {len(flat)} differences, Holm"
    worded = metrics.holm_verdicts(flat, family)

    def show(name: str, m: str) -> str:
        r = metrics.seed_interval(arm(name, m))
        if name == "prior baseline" and m.startswith("bal"):
            return f"{100 * r['value']:.1f} (constant predictor: no interval)"
        sd = metrics.seed_summary(arm(name, m))["seed_sd"]
        return (f"{100 * r['value']:.1f} [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"
                + (f" (SD {100 * sd:.1f})" if sd is not None else ""))

    def show_diff(key: str) -> str:
        r = worded[key]
        return f"{100 * r['value']:+.1f} [{100 * r['ci_holm'][0]:+.1f}, {100 * r['ci_holm'][1]:+.1f}] {r['verdict']}"

    lines = [f"| (%; seeds {', '.join(map(str, seeds))}; {n_resamples} resamples of the {rs.n_images} images, seed 0; "
             f"balanced over the {cls.classes.size} classes with >= {cls.min_samples} targets) | "
             + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name in arms:
        lines.append(f"| {name}" + (f", mean of {len(arms[name])} seeds (SD over seeds)" if name != "prior baseline"
                                    else "") + " | " + " | ".join(show(name, m) for m in names) + " |")
    for a, b in pairs:
        lines.append(f"| {a} minus {b} [Holm-adjusted] | "
                     + " | ".join(show_diff(f"{a} minus {b}\t{m}") for m in names) + " |")
    lines += ["", f"Verdicts after Holm over one family: {family}; an interval that holds 0 reads \"inconclusive\"."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coco-root", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=Path("/tmp/recipe"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--aux", type=float, nargs="+", default=[0.0, 1.0], help="--aux-visible weights to run")
    ap.add_argument("--workers", type=int, default=2, help="quickstart --workers")
    ap.add_argument("--table-only", action="store_true", help="only print the table of the runs already in --out")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.table_only:
        for aux in a.aux:
            for seed in a.seeds:
                rec = run_one(a.coco_root, a.out / f"aux{aux:g}-seed{seed}", seed, aux, a.workers)
                print(f"aux {aux:g} seed {seed}: {rec['wall_s'] / 60:.1f} min", flush=True)
    print(table(a.out, a.seeds, a.aux))
    print()
    print(pooled(a.out, a.seeds, a.aux))


if __name__ == "__main__":
    main()
