"""scenectl.plots: every figure kind, drawn by the commands that draw it from a small run, is readable at 100 %
(tests/figures.py's `figure_problems`: a title, axis labels, text of 8 pt or more at the saved DPI, tick labels that do not overlap, a
labelled colour bar on images of numbers); the checker fails on figures that break each rule; 80 COCO classes fit;
the co-occurrence heatmap shows exactly the pairs --min-count keeps; predict outlines the hidden region; the
contact sheet draws across images, seeded."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from typer.testing import CliRunner

import kit
from figures import Drawn, figure_problems, watch
from scenectl import plots
from scenectl.cli import app
from scenectl.companions import CooccurrenceConfig, cooccurrence_main
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.inspect_shards import inspect_shards
from scenectl.data.loader import open_shard_set, raw_samples

runner = CliRunner()
COCO80 = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
          "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
          "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
          "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
          "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
          "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
          "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
          "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
          "teddy bear", "hair drier", "toothbrush"]


def _only(drawn: list[Drawn]) -> Drawn:
    assert len(drawn) == 1
    assert drawn[0].problems == [], drawn[0].problems
    assert drawn[0].path.stat().st_size > 0
    return drawn[0]


# --- the checker ---------------------------------------------------------------------------------------------------
def _figure(title="t", xlabel="x", ylabel="y", tick_pt=8.0):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.tick_params(labelsize=tick_pt)
    return fig, ax


def test_the_checker_fails_each_broken_rule():
    assert figure_problems(_figure()[0]) == []
    cases = {"no title": _figure(title="")[0], "x axis without a label": _figure(xlabel="")[0],
             "under 8": _figure(tick_pt=5)[0]}
    fig, ax = _figure()
    ax.imshow(np.eye(3))
    cases["without a colour bar"] = fig
    fig, ax = _figure()
    fig.colorbar(ax.imshow(np.eye(3)), ax=ax)
    cases["colour bar without a label"] = fig
    fig, ax = _figure()
    ax.set_xticks(range(40), [f"long class name {i}" for i in range(40)])
    cases["x tick labels overlap"] = fig
    for want, fig in cases.items():
        assert any(want in p for p in figure_problems(fig)), (want, figure_problems(fig))
        plt.close(fig)
    fig = _figure()[0]
    assert figure_problems(fig, dpi=60) == ["saved at 60 dpi, under 100"]
    plt.close(fig)


# --- each kind with 80 COCO classes (the hard case for labels) -----------------------------------------------------
@pytest.mark.slow
def test_confusion_per_class_and_heatmap_fit_80_classes(tmp_path):
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 80, 4000), rng.integers(0, 80, 4000)
    conf = plots.confusion_matrix(labels, preds, 80)
    counts = conf.sum(axis=1)
    with watch() as drawn:
        plots.plot_confusion(conf, COCO80, tmp_path / "confusion.png", title="eval: confusion (row-normalised)")
    assert np.isclose(np.nansum(_only(drawn).figure.axes[0].get_images()[0].get_array()[0]), 100)  # % of the row
    with watch() as drawn:
        plots.plot_per_class(list(np.diag(conf) / counts), list(counts), COCO80, tmp_path / "per_class.png",
                             intervals=[[0.0, 0.1]] * 80)
    _only(drawn)
    with watch() as drawn:
        plots.plot_heatmap(rng.normal(size=(80, 80)), COCO80, tmp_path / "h.png", "co-occurrence", "PMI (nats)")
    _only(drawn)


@pytest.mark.slow
def test_beyond_max_classes_the_largest_are_shown_and_the_title_says_so(tmp_path):
    n = plots.MAX_CLASSES + 20
    names = [f"class {i}" for i in range(n)]
    conf = np.diag(np.arange(1, n + 1))  # class i has i + 1 samples: the last MAX_CLASSES have most
    with watch() as drawn:
        plots.plot_confusion(conf, names, tmp_path / "c.png")
    ax = _only(drawn).figure.axes[0]
    assert f"the {plots.MAX_CLASSES} classes with most samples, of {n}" in ax.get_title().replace("\n", " ")
    assert [t.get_text() for t in ax.get_yticklabels()] == names[20:]


def test_comparison_and_differences_with_many_metrics_and_models(tmp_path):
    metrics = ["top-1", "top-5", "top-10", "top-50", "bal top-1", "bal top-5", "bal top-10", "bal top-50", "plaus@10"]
    rows = {name: {m: 0.1 * (j + 1) for m in metrics} for j, name in
            enumerate(["model", "prior", "co-occurrence", "mask-only", "random"])}
    errors = {n: {m: [v - 0.05, v + 0.05] for m, v in r.items()} for n, r in rows.items()}
    with watch() as drawn:
        plots.plot_comparison(rows, tmp_path / "b.png", "eval: model and baselines", errors)
        plots.plot_differences({"ffc": {m: {"difference": 0.02, "ci": [-0.01, 0.05]} for m in metrics}},
                               tmp_path / "d.png", "resnet18")
    assert len(drawn) == 2 and all(d.problems == [] for d in drawn), [d.problems for d in drawn]
    assert drawn[0].figure.axes[0].get_ylabel() == "score (%)"


def test_prediction_outlines_the_hidden_region_and_its_ticks_stay_apart(tmp_path):
    image = np.full((64, 64, 3), 124, np.uint8)  # all padding grey: only the outline shows the hole
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 24:36] = 255
    probs = [0.031, 0.029, 0.027, 0.02, 0.018, 0.015, 0.012, 0.011, 0.01, 0.009]  # near-flat: many small ticks
    with watch() as drawn:
        plots.plot_prediction(image, probs, COCO80[:10], tmp_path / "p.png", mask=mask)
    picture, bars = _only(drawn).figure.axes
    assert picture.collections, "no outline drawn on the model input"
    ys, xs = np.nonzero(mask)
    for path in picture.collections[-1].get_paths():  # the outline runs along the hidden region's edge
        v = path.vertices
        assert v[:, 0].min() >= xs.min() - 1 and v[:, 0].max() <= xs.max() + 1
        assert v[:, 1].min() >= ys.min() - 1 and v[:, 1].max() <= ys.max() + 1
    assert bars.get_xlabel() == "probability (%)"


@pytest.mark.slow
def test_training_curves_of_two_runs_are_readable(tmp_path):
    """curves.png of train / transfer / distill (engine): two runs, per-step and per-epoch records."""
    def run(offset: float) -> tuple[list[dict], list[dict]]:
        steps = [{"step": s, "loss": 3.0 - s / 60 + offset, "lr": 0.1 * (1 - s / 120)} for s in range(1, 121)]
        epochs = [{"step": 40 * e, "train_loss": 2.5 - e / 2 + offset, "val_loss": 2.6 - e / 2, "val_top1": 0.2 * e,
                   "val_top5": 0.3 * e, "val_bal_top1": 0.15 * e} for e in (1, 2, 3)]
        return steps, epochs

    with watch() as drawn:
        plots.plot_training_curves({"context": run(0.0), "scratch": run(0.3)}, tmp_path / "curves.png",
                                   "transfer: context against scratch")
    _only(drawn)


def _cooc_file(tmp_path: Path) -> Path:
    """Classes a, b, c, d: a with b in one image only; a with c in three; d in none with a."""
    images = [[0, 1]] + [[0, 2]] * 3 + [[3]] * 4 + [[1, 3]] * 2
    path = tmp_path / "cooc.h5"
    Cooccurrence.count(images, [1, 2, 3, 4], ["a", "b", "c", "d"]).save(path)
    return path


@pytest.mark.parametrize("by", ["pmi", "conditional"])
def test_the_heatmap_shows_exactly_the_pairs_min_count_keeps(tmp_path, by):
    h5 = _cooc_file(tmp_path)
    shown = {}
    for min_count in (1, 2):
        with watch() as drawn:
            rows, text = cooccurrence_main(CooccurrenceConfig(str(h5), 3, by, min_count, str(tmp_path / "h.png")))
        cells = _only(drawn).figure.axes[0].get_images()[0].get_array()  # (4, 4), masked where grey
        shown[min_count] = ~np.ma.getmaskarray(cells) & np.isfinite(np.ma.filled(cells, np.nan))
        listed = {(r["class"], c["name"]) for r in rows for c in r["companions"]}
        names = "abcd"
        assert listed == {(names[i], names[j]) for i, j in zip(*np.nonzero(shown[min_count]))}, text
    assert shown[1][0, 1] and not shown[2][0, 1]  # a with b: one image
    assert shown[2][0, 2]  # a with c: three images
    assert not shown[1][0, 3]  # never together: no value at all


# --- every kind, drawn by its command from a small run -------------------------------------------------------------
def _commands(s: dict[str, Path], scenes: Path, d: Path) -> dict[str, list[str]]:
    classes = open_shard_set(s["val"]).classes
    counts = open_shard_set(s["train"]).cooccurrence().to_state()  # the training split's, as train records them
    config = {"image_size": 32, "shards": str(s["train"])}
    ctx, ctx2 = (str(kit.checkpoint(d / name, classes, 4, seed, config=config, cooccurrence=counts))
                 for name, seed in (("ctx.pt", 0), ("ctx2.pt", 1)))
    obj = str(kit.checkpoint(d / "obj.pt", classes, 3, 2, config={"image_size": 32}))
    ann = json.loads((scenes / "annotations" / "instances_val2017.json").read_text())["annotations"][0]
    image = next((scenes / "val2017").glob(f"{ann['image_id']:012d}.jpg"))
    cpu = ["--device", "cpu"]
    return {
        "eval": ["eval", "-c", ctx, "--shards", str(s["val"]), "--shards", str(s["train"]), "--out", str(d / "ev"),
                 "--bootstrap", "20", "--max-samples", "60", *cpu],
        "compare": ["compare", ctx, ctx2, "--shards", str(s["val"]), "--out", str(d / "cmp"), "--bootstrap", "20",
                    "--max-samples", "60", *cpu],
        "predict": ["predict", "-c", ctx, str(image), "--box", ",".join(str(round(v)) for v in ann["bbox"]),
                    "--out", str(d / "f" / "p.png"), *cpu],
        "cooccurrence": ["cooccurrence", str(s["train"]), "--by", "pmi", "--min-count", "2", "--out",
                         str(d / "f" / "c.png")],
        "inspect-shards": ["inspect-shards", str(s["val"]), "--out", str(d / "f" / "s.png")],
        "fuse": ["fuse", "--context", ctx, "--object", obj, "--shards", str(s["val"]), "--out", str(d / "fu"),
                 "-w", "0", "-w", "0.5", "-w", "1", *cpu],
        "train": ["train", "--shards", str(s["train"]), "--val-shards", str(s["val"]), "--out", str(d / "tr"),
                  "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "8", "--image-size", "32",
                  "--workers", "0", "--log-every", "1", *cpu],
    }


@pytest.mark.slow
def test_every_figure_a_command_draws_is_readable(synthetic_shards, synthetic_scenes, tmp_path):
    (tmp_path / "f").mkdir()
    figures = {}
    sourced = {}
    for name, args in _commands(synthetic_shards, synthetic_scenes, tmp_path).items():
        with watch() as drawn:
            r = runner.invoke(app, args)
        assert r.exit_code == 0, (name, r.output)
        figures.update({f"{name}: {d.path.relative_to(tmp_path)}": d.problems for d in drawn})
        sourced.update({f"{name}: {d.path.relative_to(tmp_path)}": _foot(d.figure) for d in drawn})
    expected = {"eval: ev/confusion.png", "eval: ev/per_class.png", "eval: ev/baselines.png", "eval: ev/comparison.png",
                "compare: cmp/scores.png", "compare: cmp/differences.png", "predict: f/p.png",
                "cooccurrence: f/c.png", "inspect-shards: f/s.png", "fuse: fu/weights.png", "train: tr/curves.png"}
    assert expected <= set(figures), sorted(figures)
    assert {k: v for k, v in figures.items() if v} == {}
    # every figure of a checkpoint or a data set says which, and how many samples (plots.source)
    for name, foot in sourced.items():
        command = name.split(":")[0]
        assert "data " in foot or "checkpoint " in foot, (name, foot)
        if command != "predict":  # predict draws one image of the user's: no n
            assert "n = " in foot, (name, foot)
        if command in ("eval", "compare", "train", "inspect-shards"):
            assert "data " in foot, (name, foot)
        if command in ("eval", "predict", "fuse"):
            assert "checkpoint " in foot, (name, foot)
        if command == "eval":
            assert "sha256" in foot, (name, foot)


@pytest.mark.slow
def test_the_learning_rate_panel_draws_a_run_that_logged_one_step(tmp_path):
    steps = [{"step": 3, "loss": 2.0, "lr": 0.05}]
    epochs = [{"step": 6, "train_loss": 2.0, "val_loss": 2.1, "val_top1": 0.3, "val_top5": 0.6, "lr": 0.01}]
    with watch() as drawn:
        plots.plot_training_curves({"r": (steps, epochs)}, tmp_path / "c.png", "t")
    lr_axes = _only(drawn).figure.axes[2]
    (line,) = lr_axes.get_lines()
    assert list(line.get_xdata()) == [3, 6] and list(line.get_ydata()) == [0.05, 0.01] and line.get_marker() == "o"
    with watch() as drawn:  # one step line and no epoch yet: still a visible point
        plots.plot_training_curves({"r": (steps, [])}, tmp_path / "d.png", "t")
    (line,) = _only(drawn).figure.axes[2].get_lines()
    assert list(line.get_xdata()) == [3] and line.get_marker() == "o"


def _foot(fig) -> str:
    """The text at the foot of a figure (plots.stamp), "" without one."""
    return " ".join(t.get_text() for t in fig.texts if t.get_gid() == plots.SOURCE_GID)


@pytest.mark.slow
def test_every_figure_kind_carries_the_source_line(tmp_path):
    """Whatever the kind, a figure saved inside plots.source names the checkpoint, the data and n."""
    names = ["a", "b", "c"]
    kinds = {
        "confusion": lambda p: plots.plot_confusion(np.eye(3), names, p),
        "per_class": lambda p: plots.plot_per_class([0.5, 0.2, 0.9], [3, 4, 5], names, p),
        "comparison": lambda p: plots.plot_comparison({"m": {"top-1": 0.5}, "n": {"top-1": 0.4}}, p),
        "differences": lambda p: plots.plot_differences({"m": {"top-1": {"difference": 0.1, "ci": [0.0, 0.2]}}},
                                                        p, "n"),
        "prediction": lambda p: plots.plot_prediction(np.zeros((8, 8, 3), np.uint8), [0.6, 0.3], ["a", "b"], p,
                                                      full=(np.zeros((12, 16, 3), np.uint8), np.zeros((12, 16)))),
        "heatmap": lambda p: plots.plot_heatmap(np.ones((3, 3)), names, p, "t", "count"),
        "weights": lambda p: plots.plot_weights([{"w": 0.0, "top1": 0.3}, {"w": 1.0, "top1": 0.4}], 1.0, p),
        "curves": lambda p: plots.plot_training_curves({"r": ([{"step": 1, "loss": 2.0, "lr": 0.1}],
                                                              [{"step": 1, "train_loss": 2.0, "val_loss": 2.1,
                                                                "val_top1": 0.3, "val_top5": 0.6, "lr": 0.1}])},
                                                       p, "t"),
    }
    with plots.source(checkpoint="runs/x/last.pt", sha256="ab" * 32, data="shards/val2017", n=123), watch() as drawn:
        for name, draw in kinds.items():
            draw(tmp_path / f"{name}.png")
    assert len(drawn) == len(kinds)
    for d in drawn:
        assert _foot(d.figure) == "checkpoint runs/x/last.pt (sha256 abababababab) · data shards/val2017 · n = 123", \
            d.path
    with watch() as drawn:  # outside the block: no line
        plots.plot_confusion(np.eye(3), names, tmp_path / "plain.png")
    assert _foot(drawn[0].figure) == ""


# --- the contact sheet ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_contact_sheet_draws_across_images_with_its_seed(synthetic_shards, tmp_path):
    val = synthetic_shards["val"]
    image_of = {raw["__key__"]: json.loads(raw["json"])["image_id"] for raw in raw_samples(open_shard_set(val))}
    with watch() as drawn:
        first = inspect_shards(val, n=8, out=tmp_path / "a.png", seed=0)
    again = inspect_shards(val, n=8, out=tmp_path / "b.png", seed=0)
    other = inspect_shards(val, n=8, out=tmp_path / "c.png", seed=1)
    assert first["keys"] == again["keys"] != other["keys"]
    assert len({image_of[k] for k in first["keys"]}) == 8  # eight different images
    assert first["keys"] != sorted(image_of)[:8]  # not the first samples in shard order
    fig = _only(drawn).figure
    tiles = [ax for ax in fig.axes if not ax.axison]
    assert len(tiles) == 8 and all("hidden area 0." in ax.get_title() for ax in tiles)
    histogram = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_xlabel() for ax in histogram] == ["hidden area / image area (fraction)"]
    assert "drawn at random (seed 0)" in fig._suptitle.get_text().replace("\n", " ")
