"""`scenectl train`: run folder, checkpoints, exact resume, bad input, HTTP streaming, learning on synthetic scenes."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scenectl.checkpoint import load_checkpoint
from scenectl.cli import app
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.errors import ScenectlError
from scenectl.train import TrainConfig, train
from kit import CLASSES, fast_first, write_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("train")
    return {"train": write_shards(d / "train", n=48, per_shard=16, size=32),
            "val": write_shards(d / "val", n=16, per_shard=16, size=32, seed=1)}


def _cfg(tiny, out, **kw) -> TrainConfig:
    base = dict(shards=str(tiny["train"]), val_shards=str(tiny["val"]), out=str(out), arch="resnet18",
                epochs=2, steps_per_epoch=3, batch_size=4, workers=0, log_every=1, checkpoint_every=0,
                device="cpu", shuffle_buffer=16)
    return TrainConfig(**{**base, **kw})


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- run folder, checkpoint contents, exact resume ------------------------------------------------------------

@pytest.mark.slow
def test_resume_mid_epoch_gives_the_same_weights(tiny, tmp_path):
    full = train(_cfg(tiny, tmp_path / "full"))
    run = tmp_path / "split"
    assert train(_cfg(tiny, run, max_steps=4))["step"] == 4  # stops inside epoch 2 (steps 3 + 1)
    ck = load_checkpoint(run / "last.pt")
    assert (ck["epoch"], ck["epoch_step"], ck["step"]) == (1, 1, 4)
    resumed = train(_cfg(tiny, run, resume=True))
    assert resumed["step"] == full["step"] == 6
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(run / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k  # bit-identical: same data order, augmentation and optimiser state
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    # the run folder and the checkpoint contract
    files = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.jsonl", "last.pt", "best.pt"} <= files
    assert json.loads((run / "config.json").read_text())["data"]["image_size"] == 32  # resolved from the manifest
    kinds = [r["kind"] for r in _lines(run)]
    assert kinds.count("epoch") == 2 and "resume" in kinds and kinds.count("step") == 6
    assert b["arch"] == "resnet18" and b["in_chans"] == 4 and b["num_classes"] == 4 and b["classes"] == CLASSES
    cooc = Cooccurrence.from_state(b["cooccurrence"])
    assert cooc.n_images == 48 and cooc.names == [c["name"] for c in CLASSES]  # the TRAINING split's counts
    assert {"val_top1", "val_top5", "val_loss"} <= set(b["metrics"]) and b["scheduler"] and b["config"]["loop"]["seed"] == 0


# --- bad input -------------------------------------------------------------------------------------------------

def test_refuses_mismatched_classes(tiny, tmp_path):
    other = write_shards(tmp_path / "other", n=8, per_shard=8, size=32,
                         classes=[{"index": i, "coco_id": i + 1, "name": f"x{i}"} for i in range(4)])
    r = CliRunner().invoke(app, ["train", "--shards", str(tiny["train"]), "--val-shards", str(other),
                                 "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "class lists differ" in r.output


def test_refuses_out_folder_with_another_run(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")  # a run folder written before folders had markers
    with pytest.raises(ScenectlError, match="--resume to continue it or --overwrite"):
        train(_cfg(tiny, out))
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(ScenectlError, match="holds files scenectl did not write"):
        train(_cfg(tiny, tmp_path / "stranger", overwrite=True))
    assert [p.name for p in (tmp_path / "stranger").iterdir()] == ["notes.txt"]
    with pytest.raises(ScenectlError, match="holds no training run to resume"):
        train(_cfg(tiny, tmp_path / "fresh", resume=True))
    assert not (tmp_path / "fresh").exists()


@pytest.fixture(scope="module")
def one_step_run(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    train(_cfg(tiny, out, max_steps=1, epochs=1, steps_per_epoch=2))
    return out


RESUME_TAMPER = {  # issue 23: each was accepted by load_state_dict and crashed at the first resumed step
    "momentum of another shape": (lambda raw: raw["optimizer"]["state"][0].update(
        momentum_buffer=torch.zeros(3)), "'optimizer' holds a 'momentum_buffer' state"),
    "a learning rate that is text": (lambda raw: raw["optimizer"]["param_groups"][0].update(lr="x"), "'optimizer'"),
    "a schedule with junk": (lambda raw: raw["scheduler"].update(last_epoch=[1]), "'scheduler'"),
    "no optimiser": (lambda raw: raw.update(optimizer=[]), "'optimizer'"),
}


@pytest.mark.parametrize("kind", fast_first(RESUME_TAMPER))
def test_a_resumed_optimiser_and_schedule_must_fit_the_run(tiny, one_step_run, tmp_path, kind):
    tamper, match = RESUME_TAMPER[kind]
    out = shutil.copytree(one_step_run, tmp_path / "run")
    raw = load_checkpoint(out / "last.pt")
    tamper(raw)
    torch.save(raw, out / "last.pt")
    with pytest.raises(ScenectlError, match=f"last.pt: field {match}"):
        train(_cfg(tiny, out, max_steps=2, epochs=1, steps_per_epoch=2, resume=True))


@pytest.mark.slow
def test_an_untampered_one_step_run_resumes(tiny, one_step_run, tmp_path):
    out = shutil.copytree(one_step_run, tmp_path / "run")
    train(_cfg(tiny, out, max_steps=2, epochs=1, steps_per_epoch=2, resume=True))
    assert load_checkpoint(out / "last.pt")["step"] == 2


@pytest.mark.slow
def test_refuses_resume_with_another_arch_or_options(tiny, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tiny, out, max_steps=1, epochs=1, steps_per_epoch=1))
    with pytest.raises(ScenectlError, match="--arch: 'resnet18' -> 'resnet34'"):
        train(_cfg(tiny, out, max_steps=1, epochs=1, steps_per_epoch=1, arch="resnet34", resume=True))
    with pytest.raises(ScenectlError, match="options differ.*--batch-size: 4 -> 2"):
        train(_cfg(tiny, out, epochs=1, steps_per_epoch=1, batch_size=2, resume=True))
    # --overwrite replaces the run
    train(_cfg(tiny, out, max_steps=1, epochs=1, steps_per_epoch=1, overwrite=True))
    assert [r["kind"] for r in _lines(out)].count("resume") == 0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ScenectlError, match=r"loss is nan.*last good checkpoint"):
        train(_cfg(tiny, out, lr=1e30, label_smoothing=0.0, epochs=5, checkpoint_every=1, warmup_steps=0))
    ck = load_checkpoint(out / "last.pt")  # the last step whose loss was finite
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_tensorboard_missing_is_a_clear_error(tiny, tmp_path):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    with pytest.raises(ScenectlError, match=r"pip install 'scenectl\[tensorboard\]'"):
        train(_cfg(tiny, tmp_path / "tb", tensorboard=True, max_steps=1))
    assert not (tmp_path / "tb").exists()  # refused before the run folder was created


@pytest.mark.slow
def test_truncated_training_shard_error_or_skip(tiny, tmp_path):
    bad = shutil.copytree(tiny["train"], tmp_path / "bad")
    for tar in bad.glob("*.tar"):  # every shard cut short: nothing but corrupt data
        tar.write_bytes(tar.read_bytes()[:5000])
    r = CliRunner().invoke(app, ["train", "--shards", str(bad), "--val-shards", str(tiny["val"]), "--out",
                                 str(tmp_path / "r"), "--workers", "0", "--device", "cpu", "--batch-size", "2"])
    # a member cut short or a broken tar header: either way one line naming the shard
    last = r.output.strip().splitlines()[-1]
    assert r.exit_code == 2 and re.search(r"error: scenectl train: (cannot read shard|corrupt sample|shard) .*bad/shard-0000", last)
    val = shutil.copytree(tiny["val"], tmp_path / "val")  # validation reads every sample: the cut one is met
    tar = val / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[:9000])
    m = train(_cfg(tiny, tmp_path / "skip", val_shards=str(val), skip_corrupt=True, epochs=1, steps_per_epoch=1))
    assert 0 < m["val_samples"] < 16
    assert m["skipped_corrupt"] >= 1


def test_help_shows_example():
    r = CliRunner().invoke(app, ["train", "--help"])
    assert r.exit_code == 0 and "scenectl train --arch ffc" in r.output and "--checkpoint-every" in r.output


# --- one engine: resume refuses changed options, curves, a failing stream, --config ------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_resume_with_a_changed_option_is_refused_naming_it_and_deletes_nothing(tiny, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tiny, out, epochs=1, steps_per_epoch=1, lr=0.01))
    before = _snapshot(out)
    r = CliRunner().invoke(app, ["train", "--shards", str(tiny["train"]), "--val-shards", str(tiny["val"]), "--out",
                                 str(out), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4", "--lr",
                                 "0.02", "--workers", "0", "--device", "cpu", "--resume"])
    assert r.exit_code == 2 and "--lr: 0.01 -> 0.02" in r.output and len(r.output.strip().splitlines()) == 1
    assert _snapshot(out) == before
    # options that only change speed or logging may change: the finished run just reports again
    assert train(_cfg(tiny, out, epochs=1, steps_per_epoch=1, lr=0.01, log_every=5, resume=True))["step"] == 1


@pytest.mark.slow
def test_a_run_says_where_it_computes_how_fast_and_how_long(tiny, tmp_path, monkeypatch, capsys):
    """The start-up summary (device, threads, workers, steps), the first measured speed with the whole run's ETA, a
    notice when a CPU run projects hours, timestamps, epochs counted from 1 and percentages."""
    import scenectl.engine as engine

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(engine, "SLOW_CPU_RUN_S", 0.0)  # every run is "hours" long: the notice must appear
    threads = torch.get_num_threads()
    try:
        train(_cfg(tiny, tmp_path / "run", epochs=2, steps_per_epoch=3, max_steps=5))
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    cores = len(os.sched_getaffinity(0))
    assert re.fullmatch(stamp + rf"\[train\] cpu, {cores} intra-op threads? \({cores} cores, 0 loader workers\); "
                        r"2 epochs x 3 steps of 4 samples: 5 steps to go; measuring speed over 5 steps", lines[0]), lines
    assert re.fullmatch(stamp + r"\[train\] first measured: [\d.]+ samples/s; whole run ETA \d+ s", lines[1]), lines
    assert lines[2].startswith("notice: on this CPU the run projects") and "--image-size 64" in lines[2]
    assert re.fullmatch(stamp + r"\[train\] epoch 1 step 3: train loss [\d.]+, val loss [\d.]+, top-1 [\d.]+%, "
                        r"top-5 [\d.]+%, balanced top-1 [\d.]+%", lines[3]), lines
    assert re.fullmatch(stamp + r"\[train\] epoch 2 \(partial\) step 5: .*", lines[4]), lines


def test_cpu_threads_are_one_per_core_of_the_process(monkeypatch):
    from scenectl.devices import available_cores, cpu_threads, set_cpu_threads

    assert [cpu_threads(c) for c in (0, 1, 2, 16)] == [1, 1, 2, 16]
    threads = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting is kept
        torch.set_num_threads(3)
        assert set_cpu_threads(torch.device("cpu"), 2) == "3 intra-op threads (set by $OMP_NUM_THREADS, 2 loader workers)"
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        assert set_cpu_threads(torch.device("cpu"), 2).startswith(f"{available_cores()} intra-op thread")
        assert torch.get_num_threads() == available_cores()  # loader workers take none away (measured slower)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_curves_png_is_drawn_after_every_epoch(tiny, tmp_path, monkeypatch):
    import scenectl.engine as engine

    out, real, seen = tmp_path / "run", engine.plot_curves, []

    def spy(runs, path, title):
        real(runs, path, title)
        seen.append((Path(path).read_bytes()[:8], sum(x["kind"] == "epoch" for x in _lines(out))))

    monkeypatch.setattr(engine, "plot_curves", spy)
    train(_cfg(tiny, out))  # 2 epochs
    assert seen == [(b"\x89PNG\r\n\x1a\n", 1), (b"\x89PNG\r\n\x1a\n", 2)]
    epochs = [x for x in _lines(out) if x["kind"] == "epoch"]
    assert epochs[0]["lr"] > epochs[1]["lr"] == 0.0  # the learning-rate panel's points: cosine decay to 0


@pytest.mark.slow
def test_a_failing_data_stream_saves_last_pt_and_resume_continues(tiny, tmp_path, monkeypatch):
    import scenectl.train as T

    real = T.make_train_loader

    def failing(*args, **kwargs):  # the reader fails on the third batch, as a dropped connection would
        def batches():
            for i, batch in enumerate(real(*args, **kwargs)):
                if i == 2:
                    raise ScenectlError("cannot read shard http://127.0.0.1/shard-000001.tar (connection reset)")
                yield batch
        return batches()

    monkeypatch.setattr(T, "make_train_loader", failing)
    out = tmp_path / "run"
    with pytest.raises(ScenectlError, match=r"connection reset\) \(saved .*last.pt at step 2; continue with --resume"):
        train(_cfg(tiny, out))
    ck = load_checkpoint(out / "last.pt")
    assert (ck["epoch"], ck["epoch_step"], ck["step"]) == (0, 2, 2)
    monkeypatch.setattr(T, "make_train_loader", real)
    assert train(_cfg(tiny, out, resume=True))["step"] == 6
    lines = _lines(out)
    resume = next(x for x in lines if x["kind"] == "resume")
    assert (resume["step"], resume["epoch_step"]) == (2, 2)
    assert [x["step"] for x in lines[lines.index(resume):] if x["kind"] == "step"] == [3, 4, 5, 6]


@pytest.mark.slow
def test_config_file_reruns_a_run_and_command_line_flags_override_it(tiny, tmp_path):
    first = tmp_path / "first"
    train(_cfg(tiny, first, epochs=2, steps_per_epoch=10))  # 20 steps, across an epoch boundary (reshuffle)
    recorded = json.loads((first / "config.json").read_text())
    assert recorded["optim"]["lr"] == 0.1 * 4 / 256 and recorded["scenectl"]["version"]  # resolved; provenance
    again = tmp_path / "again"
    r = CliRunner().invoke(app, ["train", "--config", str(first / "config.json"), "--out", str(again)])
    assert r.exit_code == 0, r.output
    losses = [[x["loss"] for x in _lines(run) if x["kind"] == "step"] for run in (first, again)]
    assert len(losses[0]) == 20 and losses[0] == losses[1]  # the first 20 step losses, bit for bit
    r = CliRunner().invoke(app, ["train", "--config", str(first / "config.json"), "--out", str(tmp_path / "lr"),
                                 "--lr", "0.5", "--max-steps", "1"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "lr" / "config.json").read_text())
    assert cfg["optim"]["lr"] == 0.5 and cfg["loop"]["steps_per_epoch"] == 10 and cfg["data"]["shards"] == str(tiny["train"])


@pytest.mark.slow
def test_bad_options_and_config_files_are_refused_before_anything_is_created(tiny, tmp_path):
    def run(*args):
        return CliRunner().invoke(app, ["train", "--out", str(tmp_path / "o"), "--device", "cpu", *args])

    bad = tmp_path / "bad.json"
    for content, msg in ((["x"], "not a JSON object"), ({"optim": {"lr": "fast"}}, "option 'optim.lr' is 'fast'"),
                         ({"epochs": True}, "option 'epochs' is True"), ({"loop": {"speed": 1}}, "'loop.speed'"),
                         ({"colour": "red"}, "unknown option 'colour'")):
        bad.write_text(json.dumps(content))
        r = run("--config", str(bad))
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1, (content, r.output)
    for args, msg in ((["--epochs", "0"], "--epochs must be an integer from 1"),
                      (["--optimizer", "lion"], "--optimizer"),
                      (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
                      (["--resume", "--overwrite"], "exclude each other")):
        r = run("--shards", str(tiny["train"]), "--val-shards", str(tiny["val"]), *args)
        assert r.exit_code == 2 and msg in r.output, (args, r.output)
    assert not (tmp_path / "o").exists()


# --- streaming over HTTP (loopback only) ------------------------------------------------------------------------

@pytest.fixture
def http_root(tiny):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tiny["train"].parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_train_streams_shards_over_http(tiny, http_root, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [
        "train", "--shards", f"{http_root}/train/shard-{{000000..000002}}.tar", "--val-shards", f"{http_root}/val/",
        "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--workers", "0",
        "--device", "cpu"])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 2 and ck["metrics"]["val_samples"] == 16  # the whole remote val set, once
    assert Cooccurrence.from_state(ck["cooccurrence"]).n_images == 48  # fetched from beside the remote shards


# --- learning: clearly above the class-frequency prior ----------------------------------------------------------

@pytest.mark.slow
def test_learns_context_above_class_prior(tmp_path, request):
    try:
        sets = request.getfixturevalue("synthetic_shards")
    except pytest.FixtureLookupError:
        pytest.skip("needs the synthetic_shards fixture (tests/conftest.py)")
    from scenectl.data.loader import open_shard_set

    tr, va = open_shard_set(sets["train"]), open_shard_set(sets["val"])
    counts = {c["name"]: n for c, n in zip(tr.classes, [0] * len(tr.classes))}
    counts.update({k: v for k, v in tr.manifest["totals"]["per_class"].items()})
    top_class = max(counts, key=counts.get)
    val_counts = va.manifest["totals"]["per_class"]
    prior = val_counts.get(top_class, 0) / va.num_samples  # top-1 of always naming the commonest training class
    m = train(TrainConfig(shards=str(sets["train"]), val_shards=str(sets["val"]), out=str(tmp_path / "run"),
                          arch="resnet18", image_size=48, epochs=4, batch_size=16, workers=0, device="cpu",
                          optimizer="adamw", lr=2e-3, log_every=0, seed=0))
    assert m["val_top1"] >= prior + 0.15, (m, prior)


# --- real COCO: ResNet and FFC, kill -9 mid-epoch and resume ------------------------------------------------------

@pytest.fixture(scope="module")
def coco_shards(coco_sample, tmp_path_factory):
    """Real COCO shards at 64 px from a few images of each split (all 80 categories kept, so class lists match)."""
    shards = pytest.importorskip("scenectl.data.shards")
    out = tmp_path_factory.mktemp("coco")
    for split, n in (("train2017", 40), ("val2017", 12)):
        coco = json.loads((coco_sample / "annotations" / f"instances_{split}.json").read_text())
        coco["images"] = coco["images"][:n]
        keep = {im["id"] for im in coco["images"]}
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
        ann = out / f"instances_{split}.json"
        ann.write_text(json.dumps(coco))
        shards.build_shards(shards.BuildConfig(annotations=ann, images=coco_sample / split,
                                               split=split, out=out / split, image_size=64, progress=False),
                            echo=lambda *_: None)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet", "ffc"])
def test_coco_train_killed_and_resumed(coco_shards, tmp_path, arch):
    out = tmp_path / arch
    args = [sys.executable, "-m", "scenectl", "train", "--shards", str(coco_shards / "train2017"), "--val-shards",
            str(coco_shards / "val2017"), "--arch", arch, "--out", str(out), "--image-size", "64", "--batch-size",
            "4", "--epochs", "1", "--steps-per-epoch", "4", "--checkpoint-every", "1", "--workers", "0",
            "--log-every", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to save anything more
    proc.wait()
    saved = load_checkpoint(out / "last.pt")["step"]
    assert 1 <= saved < 4
    r = subprocess.run(args + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 4 and ck["arch"] == ("resnet18" if arch == "resnet" else "ffc_resnet18")
    resumed = [x for x in _lines(out) if x["kind"] == "resume"]
    assert resumed and resumed[0]["step"] == saved  # continued from the checkpoint, not from zero
    steps_after = [x["step"] for x in _lines(out)[_lines(out).index(resumed[0]):] if x["kind"] == "step"]
    assert steps_after == list(range(saved + 1, 5))
    assert (out / "best.pt").exists() and json.loads((out / "config.json").read_text())["arch"] == ck["arch"]



@pytest.mark.slow
def test_resume_refuses_a_last_pt_whose_position_is_malformed(tiny, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tiny, out, epochs=1, steps_per_epoch=1))
    ck = load_checkpoint(out / "last.pt")
    ck["step"] = "many"  # read from a file: checked before the run relies on it
    torch.save(ck, out / "last.pt")
    with pytest.raises(ScenectlError, match=r"last.pt: field 'step' is missing or malformed"):
        train(_cfg(tiny, out, epochs=1, steps_per_epoch=1, resume=True))


# --- --aux-visible: a second head predicting the classes still visible in the scene ----------------------------

@pytest.mark.slow
def test_aux_visible_head_learns_the_visible_classes():
    from scenectl.engine import cross_entropy
    from scenectl.models import create_model

    torch.manual_seed(0)
    n, c = 16, 4
    visible = [sorted({i % c, (i // c) % c}) for i in range(n)]  # 1-2 visible classes per scene
    x = torch.zeros(n, 4, 32, 32)
    for i, vs in enumerate(visible):  # class k visible: quadrant k bright, so the classes can be seen
        for k in vs:
            x[i, :3, (k // 2) * 16:(k // 2 + 1) * 16, (k % 2) * 16:(k % 2 + 1) * 16] = 1.0
    batch = {"input": x, "label": torch.arange(n) % c, "visible": visible}
    model = create_model("resnet18", c, 4, aux_classes=c)
    loss_fn, plain = cross_entropy(0.0, aux_visible=1.0), cross_entropy(0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def aux_part() -> float:  # the auxiliary term alone: joint loss minus the classifier's
        with torch.no_grad():
            return (loss_fn(model, batch) - plain(model, batch)).item()

    model.eval()
    before = aux_part()
    model.train()
    for _ in range(40):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
    model.eval()
    assert aux_part() < 0.5 * before, (before, aux_part())
    with torch.no_grad():
        _, aux = model(x, aux=True)  # (16, 4)
    target = torch.zeros(n, c, dtype=torch.bool)
    for i, vs in enumerate(visible):
        target[i, vs] = True
    assert ((aux > 0) == target).float().mean() > 0.9  # it predicts exactly the scenes' visible classes
    assert model(x).shape == (n, c)  # forward(x) alone: the classifier only


@pytest.mark.slow
def test_aux_visible_is_recorded_resume_refuses_a_change_and_eval_reads_the_checkpoint(tiny, tmp_path):
    from scenectl.checkpoint import read_checkpoint, save_checkpoint
    from scenectl.evaluate import EvalConfig, evaluate

    out = tmp_path / "run"
    train(_cfg(tiny, out, epochs=1, steps_per_epoch=2, aux_visible=0.5))
    ck = load_checkpoint(out / "best.pt")
    assert ck["aux_visible"] == 0.5 and ck["config"]["aux_visible"] == 0.5
    assert ck["model"]["aux_fc.weight"].shape == (4, ck["model"]["fc.weight"].shape[1])
    with pytest.raises(ScenectlError, match=r"--aux-visible: 0.5 -> 0.0"):
        train(_cfg(tiny, out, epochs=1, steps_per_epoch=2, resume=True))
    # eval (and every command building a model from it) uses the classifier: the auxiliary head is checked and dropped
    model = read_checkpoint(out / "best.pt").build_model()
    assert not any(k.startswith("aux_fc.") for k in model.state_dict())
    rep = evaluate(EvalConfig(checkpoint=str(out / "best.pt"), shards=[str(tiny["val"])], out=str(tmp_path / "ev"),
                              device="cpu", workers=0, bootstrap=0))
    assert rep["n"] == 16
    # the recorded weight must agree with the weights: a checkpoint claiming no head but holding one is refused
    save_checkpoint(tmp_path / "bad.pt", {**ck, "aux_visible": 0.0})
    with pytest.raises(ScenectlError, match=r"bad.pt: field 'aux_visible' is 0.0 but the weights hold an auxiliary"):
        read_checkpoint(tmp_path / "bad.pt")
    # a run without the head writes none, and its checkpoint reads as before
    train(_cfg(tiny, tmp_path / "plain", epochs=1, steps_per_epoch=1))
    assert not any(k.startswith("aux_fc.") for k in load_checkpoint(tmp_path / "plain" / "best.pt")["model"])
