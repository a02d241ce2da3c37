"""The research plan's experiments, run end to end with scenectl's own commands, and written up as markdown tables.

    python benchmarks/experiments.py --data synthetic --out /tmp/exp/synthetic --image-size 64 --epochs 3
    python benchmarks/experiments.py --data coco-sample --out /tmp/exp/coco --image-size 64 --epochs 2

Four comparisons, each against one reference run (resnet18, circle holes, mask channel on, --hide-same-class off,
i.e. scenectl's defaults):
  (a) resnet18 vs ffc_resnet18
  (b) square vs circle vs box vs instance holes, each model beside its mask-only (shape-leakage) control
  (c) with and without the mask channel
  (d) --hide-same-class off vs on
  (e) the reference minus its hole-only control (train --hole-only: the same model, recipe and seeds on the hidden
      region alone), the context contribution; compare's --hole-only-arm

Reads top to bottom:
  1. the data: `scenectl sample` (synthetic) or coco-sample as it is; one `build-shards` per hole (circle, square,
     box, instance, circle + --hide-same-class), both splits. --max-area 1 keeps every instance whatever its hole,
     so all shard sets hold the same samples (keys image_annotation) and every variant pairs with the reference.
  2. one `train` per variant and seed (--seeds, 5 by default: a verdict about a method needs the training-seed
     variance), run one after another (they share the machine's cores)
  3. one `eval` per run on its own validation shards (same instances, its own holes); eval fits the mask-only control
     on that run's training shards (read from its checkpoint's config)
  4. one `scenectl compare` per table, each variant an arm of all its seeds (NAME=EVAL,EVAL,...): intervals that
     hold the image resamples and the seed-to-seed variance, verdicts after Holm over the table's differences
  5. OUT/tables.md: every metric with its interval and seed SD, each difference with its Holm-adjusted interval and
     verdict (higher / lower / inconclusive), its family and seeds, the commands, the machine, its load average and
     the wall time of every step
A step whose output is already complete (report.json, config.json of a finished build/run) is not run again, so an
interrupted run is continued by the same command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COCO_SAMPLE = ROOT.parent / "shared" / "data" / "coco-sample"
SHAPES = ("circle", "square", "box", "instance")
# variant -> (shard set, extra train flags); "reference" is scenectl's defaults
VARIANTS = {
    "reference": ("circle", []),
    "ffc_resnet18": ("circle", ["--arch", "ffc_resnet18"]),
    "square": ("square", []),
    "box": ("box", []),
    "instance": ("instance", []),
    "no-mask-channel": ("circle", ["--no-mask-channel"]),
    "hide-same-class": ("circle-hide", []),
    "hole-only": ("circle", ["--hole-only"]),
}
TABLES = {  # table -> (title, variants in row order; the reference first)
    "arch": ("(a) resnet18 vs ffc_resnet18", ["reference", "ffc_resnet18"]),
    "shape": ("(b) hole shape (each with its mask-only control)", ["reference", "square", "box", "instance"]),
    "mask": ("(c) with and without the mask channel", ["reference", "no-mask-channel"]),
    "hide": ("(d) --hide-same-class off vs on", ["reference", "hide-same-class"]),
    "context": ("(e) the context contribution: the reference minus its hole-only control (Δ = reference − hole-only)",
                ["reference", "hole-only"]),
}
ROW_NAMES = {"reference": "resnet18, circle, mask channel, hide off (reference)", "ffc_resnet18": "ffc_resnet18",
             "square": "square", "box": "box", "instance": "instance", "no-mask-channel": "--no-mask-channel",
             "hide-same-class": "--hide-same-class",
             "hole-only": "--hole-only (circle holes; RGB replaced by the fill, mask channel kept)"}


class Runner:
    """Runs scenectl commands in a subprocess, one at a time, and records each command with its wall time."""

    def __init__(self, out: Path):
        self.out, self.log = out, out / "commands.jsonl"
        self.steps: list[dict] = [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []

    def __call__(self, args: list[str], done: bool) -> None:
        """Run `scenectl ARGS` unless `done` (its output is complete from an earlier invocation)."""
        cmd = ["scenectl", *args]
        if done:
            print(f"[experiments] done already: {shlex.join(cmd)}", flush=True)
            return
        print(f"[experiments] {shlex.join(cmd)}", flush=True)
        t0, load0 = time.time(), os.getloadavg()[0]
        subprocess.run([sys.executable, "-m", "scenectl", *args], check=True)
        step = {"command": shlex.join(cmd), "seconds": round(time.time() - t0, 1),
                "load_start": round(load0, 2), "load_end": round(os.getloadavg()[0], 2)}
        self.steps.append(step)
        with self.log.open("a") as f:
            f.write(json.dumps(step) + "\n")


def shard_sets(run: Runner, a, out: Path) -> tuple[Path, dict[str, Path]]:
    """1. the data root, and one shard folder per hole (holding train2017/ and val2017/)."""
    if a.data == "synthetic":
        root = out / "scenes"
        run(["sample", "--out", str(root), "--train-images", str(a.train_images), "--val-images",
             str(a.val_images), "--seed", "0"], (root / "val2017").is_dir())
    else:
        root = Path(a.coco_root).resolve()
    sets = {}
    for name in (*SHAPES, "circle-hide"):
        sets[name] = out / "shards" / name
        extra = ["--hide-same-class"] if name == "circle-hide" else []
        run(["build-shards", "--coco-root", str(root), "--out", f"{sets[name]}/{{split}}", "--shape",
             name.split("-")[0], "--max-area", "1", "--image-size", str(a.image_size), "--workers", "1",
             "--seed", "0", *extra], (sets[name] / "val2017" / "manifest.json").exists())
    return root, sets


def train_and_eval(run: Runner, a, out: Path, sets: dict[str, Path], seed: int) -> dict[str, Path]:
    """2-3. every variant trained and evaluated; returns variant -> eval folder."""
    evals = {}
    for name, (shards, flags) in VARIANTS.items():
        rdir = out / f"seed{seed}" / name
        run(["train", "--shards", str(sets[shards] / "train2017"), "--val-shards", str(sets[shards] / "val2017"),
             "--out", str(rdir), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--image-size",
             str(a.image_size), "--seed", str(seed), "--device", "cpu", "--workers", "1", *flags],
            _finished(rdir, a.epochs))
        # last.pt, not best.pt: best.pt is chosen on the validation shards, which are also what eval scores
        evals[name] = rdir / "eval"
        run(["eval", "--checkpoint", str(rdir / "last.pt"), "--shards", str(sets[shards] / "val2017"), "--out",
             str(evals[name]), "--device", "cpu", "--workers", "1", "--seed", "0"], (evals[name] / "report.json").exists())
    return evals


def _finished(rdir: Path, epochs: int) -> bool:
    """A run folder whose metrics.jsonl records its last epoch (train writes last.pt before that line)."""
    if not (rdir / "metrics.jsonl").exists():
        return False
    lines = [json.loads(x) for x in (rdir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return any(x.get("kind") == "epoch" and x.get("epoch") == epochs for x in lines)


def compare_tables(run: Runner, out: Path, evals: dict[int, dict[str, Path]]) -> dict[str, Path]:
    """4. one `scenectl compare` per table: each variant an arm of its seeds' evals, the reference first."""
    folders = {}
    for table, (_, names) in TABLES.items():
        folders[table] = out / f"compare-{table}"
        arms = [f"{n}=" + ",".join(str(e[n]) for e in evals.values()) for n in names]
        ref = ["--hole-only-arm", "hole-only"] if "hole-only" in names else ["--reference", "reference"]
        run(["compare", *arms, *ref, "--out", str(folders[table]), "--seed", "0"],
            (folders[table] / "report.json").exists())
    return folders


# --- 5. markdown ---------------------------------------------------------------------------------------------------
def pct(s: dict | None) -> str:
    """An arm's metric: its mean over seeds [interval] (SD over seeds)."""
    if not s:
        return "n/a"
    text = f"{100 * s['mean']:.1f}" + (f" [{100 * s['ci'][0]:.1f}, {100 * s['ci'][1]:.1f}]" if s["ci"] else "")
    return text + (f" (SD {100 * s['seed_sd']:.1f})" if s["seed_sd"] is not None else "")


def diff(d: dict | None) -> str:
    """A difference to the reference: its value, its Holm-adjusted interval and its verdict."""
    if not d:
        return ""
    lo, hi = d["ci_holm"]
    return f"{100 * d['value']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] {d['verdict']}"


def per_seed(d: dict | None) -> str:
    """A paired difference of one seed's eval (image-only interval)."""
    if not d or not d.get("ci"):
        return "n/a"
    return f"{100 * d['difference']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}] {d['verdict']}"


def table_md(table: str, cmp: dict, evals: dict[int, dict[str, Path]]) -> str:
    """Rows: variants; columns: top-1, top-5, balanced top-1, plausibility@10 (mean over seeds, interval, seed SD),
    and the difference to the reference in top-1 and balanced top-1 after Holm over the table. The shape table adds
    each seed's model − mask-only top-1 (from that run's eval report: one seed, image-only intervals)."""
    title, names = TABLES[table]
    head = ["run", "top-1", "top-5", "bal. top-1", "plaus@10", "Δ top-1 vs ref.", "Δ bal. top-1 vs ref."]
    if table == "shape":
        head += ["model − mask-only probe top-1, each seed's own eval (image noise only, unadjusted)"]
    seeds = list(evals)
    lines = [f"**{title}** — {cmp['n']} samples, seeds {', '.join(map(str, seeds))}; % mean over seeds [interval "
             f"with the seed variance] (seed SD); Δ in percentage points [Holm-adjusted interval], verdicts after "
             f"Holm over this table's family: {cmp.get('family') or 'none'}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    ref = cmp["reference"]
    for n in names:
        s, d = cmp["scores"][n], cmp["differences"].get(n, {})
        row = [ROW_NAMES[n], pct(s["top-1"]), pct(s["top-5"]), pct(s["bal top-1"]), pct(s.get("plaus@10")),
               diff(d.get("top-1")) if n != ref else "—", diff(d.get("bal top-1")) if n != ref else "—"]
        if table == "shape":
            reps = [json.loads((evals[seed][n] / "report.json").read_text()) for seed in seeds]
            row += ["; ".join(per_seed(r["vs_baselines"]["mask_only"]["topk"]["1"]) for r in reps)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_tables(out: Path, a, folders: dict[str, Path], evals: dict[int, dict[str, Path]],
                 run: Runner, wall: float) -> Path:
    rep0 = json.loads(next(iter(evals.values()))["reference"].joinpath("report.json").read_text())
    loads = [s["load_start"] for s in run.steps] + [s["load_end"] for s in run.steps]
    parts = [f"# Experiments on {a.data}", "",
             f"Command: `python benchmarks/experiments.py {shlex.join(sys.argv[1:])}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}, Python "
             f"{platform.python_version()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load "
             f"average {min(loads):.1f}–{max(loads):.1f} during the steps. Wall time of this invocation "
             f"{wall / 60:.1f} min; every step's command and wall time: commands.jsonl (and below).", "",
             f"Budget per run: {a.epochs} epochs, batch {a.batch_size}, {a.image_size} px, CPU; evaluation on "
             f"{rep0['n']} validation samples; intervals: 1000 image resamples (seed 0), widened by the across-seed "
             "variance; an interval that holds 0 reads \"inconclusive\".", ""]
    for table, folder in folders.items():
        parts += [table_md(table, json.loads((folder / "report.json").read_text()), evals), ""]
    parts += ["## Steps", "", "| command | wall s | load start → end |", "|---|---:|---|"]
    parts += [f"| `{s['command']}` | {s['seconds']} | {s['load_start']} → {s['load_end']} |" for s in run.steps]
    path = out / "tables.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=["coco-sample", "synthetic"], required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-images", type=int, default=400, help="synthetic scenes in train2017")
    p.add_argument("--val-images", type=int, default=100, help="synthetic scenes in val2017")
    p.add_argument("--coco-root", default=str(COCO_SAMPLE))
    a = p.parse_args()
    if a.data == "coco-sample" and not (Path(a.coco_root) / "annotations").is_dir():
        sys.exit(f"error: --coco-root {a.coco_root} holds no annotations/ folder")
    a.out.mkdir(parents=True, exist_ok=True)
    t0, run = time.time(), Runner(a.out)
    _, sets = shard_sets(run, a, a.out)
    evals = {seed: train_and_eval(run, a, a.out, sets, seed) for seed in a.seeds}
    folders = compare_tables(run, a.out, evals)
    print(f"[experiments] wrote {write_tables(a.out, a, folders, evals, run, time.time() - t0)}")


if __name__ == "__main__":
    main()
