"""Regenerate docs/gallery/*.png and docs/gallery.md: every figure scenectl draws, made by the commands themselves
(`python -m scenectl ...`, one process each, as a user runs them) on synthetic scenes from `scenectl sample`, on the
CPU in a few minutes.

    PYTHONPATH=$PWD python3 docs/gallery/make_gallery.py                   # from the repository root
    PYTHONPATH=$PWD python3 docs/gallery/make_gallery.py --work /tmp/gw    # keep the runs and shards there

The commands' own progress goes to WORK/commands.log (as log lines: standard error is a file there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent  # docs/gallery
DOC = HERE.parent / "gallery.md"
CPU = ["--device", "cpu"]

# Each step: a command line ({W} = the work folder). Sizes: enough samples for readable figures, a few CPU minutes.
STEPS = [
    ["sample", "--out", "{W}/scenes", "--train-images", "200", "--val-images", "60", "--seed", "0"],
    ["build-shards", "--coco-root", "{W}/scenes", "--split", "train2017", "--split", "val2017",
     "--out", "{W}/shards/{split}", "--image-size", "64", "--shape", "circle", "--with-object", "--workers", "1"],
    ["build-shards", "--coco-root", "{W}/scenes", "--split", "val2017", "--out", "{W}/shards/val-square",
     "--image-size", "64", "--shape", "square", "--workers", "1"],
    ["train", "--shards", "{W}/shards/train2017", "--val-shards", "{W}/shards/val2017", "--out", "{W}/runs/2-epochs",
     "--epochs", "2", "--batch-size", "32", "--workers", "0", *CPU],
    ["train", "--shards", "{W}/shards/train2017", "--val-shards", "{W}/shards/val2017", "--out", "{W}/runs/1-epoch",
     "--epochs", "1", "--batch-size", "32", "--workers", "0", *CPU],
    ["eval", "--checkpoint", "{W}/runs/2-epochs/last.pt", "--shards", "{W}/shards/val2017",
     "--shards", "{W}/shards/val-square", "--out", "{W}/eval", "--bootstrap", "200", *CPU],
    ["compare", "{W}/runs/2-epochs/last.pt", "{W}/runs/1-epoch/last.pt", "--shards", "{W}/shards/val2017",
     "--out", "{W}/compare", "--bootstrap", "200", *CPU],
    ["predict", "--checkpoint", "{W}/runs/2-epochs/last.pt", "{IMAGE}", "--box", "{BOX}",
     "--out", "{W}/figures/predict.png", *CPU],
    ["cooccurrence", "{W}/shards/train2017", "--out", "{W}/figures/cooccurrence.png"],
    ["cooccurrence", "{W}/shards/train2017", "--by", "pmi", "--min-count", "5",
     "--out", "{W}/figures/cooccurrence-pmi.png"],
    ["inspect-shards", "{W}/shards/val2017", "--out", "{W}/figures/contact-sheet.png"],
    ["distill", "--teacher", "{W}/runs/2-epochs/last.pt", "--shards", "{W}/shards/train2017",
     "--val-shards", "{W}/shards/val2017", "--out", "{W}/distill", "--epochs", "1", *CPU],
    ["fuse", "--context", "{W}/runs/2-epochs/last.pt", "--object", "{W}/distill/kd/last.pt",
     "--shards", "{W}/shards/val2017", "--out", "{W}/fuse", *CPU],
]

# (file in docs/gallery, where the command wrote it in {W}, the step that drew it, what it shows)
FIGURES = [
    ("eval-confusion.png", "eval/confusion.png", "eval",
     "Row-normalised confusion matrix in %: each row is a true class, each column the top-1 prediction."),
    ("eval-per-class.png", "eval/per_class.png", "eval",
     "Top-1 accuracy per class, best first, with the sample count and the 95% interval of each class."),
    ("eval-baselines.png", "eval/baselines.png", "eval",
     "The model beside the prior, co-occurrence, mask-only and random baselines, every metric with its 95% "
     "interval."),
    ("eval-comparison.png", "eval/comparison.png", "eval",
     "With several shard sets (here circle and square holes over the same images): the model on each."),
    ("compare-scores.png", "compare/scores.png", "compare", "Several models (here 2 epochs of training and 1) scored on exactly the same samples."),
    ("compare-differences.png", "compare/differences.png", "compare",
     "Each model's paired difference to the reference, in percentage points; an interval across 0 reads "
     "'inconclusive'."),
    ("predict.png", "figures/predict.png", "predict",
     "The whole image with the hidden region outlined, the model input (its fill has the padding's grey), and the "
     "top classes; the checkpoint is named at the foot."),
    ("cooccurrence.png", "figures/cooccurrence.png", "cooccurrence",
     "P(companion j in the image | class i in the image) over the training split's images."),
    ("cooccurrence-pmi.png", "figures/cooccurrence-pmi.png", "cooccurrence --by pmi",
     "PMI in nats; pairs seen together in fewer than --min-count images are grey, as they are absent from the "
     "text ranking."),
    ("inspect-contact-sheet.png", "figures/contact-sheet.png", "inspect-shards",
     "Samples drawn at random across images (seeded), each with its class and hidden-area fraction, above the "
     "set's hidden-area histogram."),
    ("train-curves.png", "runs/2-epochs/curves.png", "train",
     "Training curves (redrawn after every epoch): loss per step and per epoch, validation accuracy, learning rate."),
    ("distill-curves.png", "distill/curves.png", "distill",
     "The same curves for distill's student (and transfer's runs), one colour per run."),
    ("fuse-weights.png", "fuse/weights.png", "fuse",
     "Validation top-1 of object model x context model against the context weight w, the chosen w marked."),
]


def first_box(scenes: Path) -> tuple[Path, str]:
    """A validation image and the box of one of its mid-sized objects (2-8 % of the image): a hole small enough
    that only its outline shows where it is."""
    data = json.loads((scenes / "annotations" / "instances_val2017.json").read_text())
    images = {im["id"]: im for im in data["images"]}
    for ann in data["annotations"]:
        im = images[ann["image_id"]]
        if not ann.get("iscrowd") and 0.02 <= ann["area"] / (im["width"] * im["height"]) <= 0.08:
            x, y, w, h = (round(v) for v in ann["bbox"])
            return scenes / "val2017" / im["file_name"], f"{x},{y},{w},{h}"
    raise SystemExit("no mid-sized object in the synthetic validation split")


def run(step: list[str], work: Path, log) -> list[str]:
    """Run one command as a user would (its progress as log lines into `log`); returns the command line."""
    # run inside the work folder with paths relative to it: the figures name their checkpoint and data at their foot,
    # and no temporary path may show there
    args = [a.replace("{W}/", "") for a in step]
    if "{IMAGE}" in args:
        image, box = first_box(work / "scenes")
        args = [str(image.relative_to(work)) if a == "{IMAGE}" else box if a == "{BOX}" else a for a in args]
    log.write(f"$ scenectl {' '.join(args)}\n")
    log.flush()
    # one intra-op thread unless told otherwise: small CPU models gain nothing from more, and OpenMP threads spinning
    # on a shared machine make them many times slower
    env = {"OMP_NUM_THREADS": "1", **os.environ, "SCENECTL_PROGRESS": "log"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scenectl", *args], check=True, stdout=log, stderr=log, env=env, cwd=work)
    print(f"{time.perf_counter() - t0:6.1f} s  scenectl {' '.join(args)}", flush=True)
    return args


def machine() -> str:
    import matplotlib
    import torch

    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()  # other work on the machine stretches the time: say how much there was
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores, CPU only, load average "
            f"{load[1]:.1f} over the last 5 minutes at the end; Python {platform.python_version()}, torch "
            f"{torch.__version__}, matplotlib {matplotlib.__version__}")


def write_doc(lines_run: list[list[str]], seconds: float) -> None:
    shown = {" ".join(a) for a in lines_run}
    out = ["# Gallery: what each command draws", "",
           "Every PNG below was drawn by the command named above it, on synthetic scenes (`scenectl sample`, "
           "docs/synthetic.md) and models trained for a few epochs on them, so the numbers are small and beside the "
           "point: the figures show what a reader of each report sees, at 100 %. All of them are drawn by "
           "`scenectl/plots.py` and keep its rules (a title, labelled axes with units, "
           "text of 8 pt or more at the saved 110 dpi, a labelled colour bar wherever colour stands for a number), "
           "which `tests/test_plots.py` checks. A figure drawn from a checkpoint or a shard set names them, and n, at "
           "its foot (`plots.source`).", "",
           "Regenerated by `PYTHONPATH=$PWD python3 docs/gallery/make_gallery.py` (from the repository root), "
           f"in {seconds:.0f} s on: {machine()}; one intra-op thread per command (`OMP_NUM_THREADS=1` unless set), "
           "progress as log lines (`SCENECTL_PROGRESS=log`).", "",
           "The commands it ran, inside a temporary folder:", "",
           "```"]
    out += [f"scenectl {line}" for line in sorted(shown, key=[" ".join(a) for a in lines_run].index)]
    out += ["```", ""]
    for name, _, command, caption in FIGURES:
        out += [f"## `scenectl {command}`: {name}", "", caption, "", f"![{command}](gallery/{name})", ""]
    DOC.write_text("\n".join(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="Folder for the scenes, shards and runs (default: a temporary one).")
    opts = ap.parse_args()
    work = (opts.work or Path(tempfile.mkdtemp(prefix="scenectl-gallery-"))).resolve()  # commands run inside it
    (work / "figures").mkdir(parents=True, exist_ok=True)  # single-file outputs: outside the folders commands own
    t0, done = time.perf_counter(), []
    with open(work / "commands.log", "w") as log:
        for step in STEPS:
            done.append(run(step, work, log))
    for name, source, _, _ in FIGURES:
        shutil.copyfile(work / source, HERE / name)
    shown = [[a.replace(str(work), "WORK") for a in args] for args in done]
    write_doc(shown, time.perf_counter() - t0)
    total = sum((HERE / name).stat().st_size for name, *_ in FIGURES)
    print(f"wrote {len(FIGURES)} figures ({total / 1e6:.2f} MB) to {HERE} and {DOC}; work folder {work}")
    if opts.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
