"""scenectl transfer and export-imagefolder: frozen backbones stay bit-identical, the mask channel is dropped
exactly, the side-by-side comparison runs end to end, and bad targets / checkpoints are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import webdataset as wds
from typer.testing import CliRunner

import kit
from scenectl.checkpoint import read_checkpoint
from scenectl.cli import app
from scenectl.data.export import export_imagefolder
from scenectl.data.configs import ExportConfig
from scenectl.data.imagefolder import open_image_folder
from scenectl.data.loader import open_shard_set
from scenectl.errors import ScenectlError
from scenectl.models import create_model
from scenectl.transfer import TransferConfig, adapt_state, build_model, transfer

runner = CliRunner()


def context_checkpoint(path: Path, classes: list[dict], image_size: int = 32, seed: int = 0) -> Path:
    """A 4-channel context checkpoint in scenectl's format; BN statistics made non-trivial so that a test of
    "unchanged" cannot pass by accident on default buffers."""
    torch.manual_seed(seed)
    model = create_model("resnet18", len(classes), in_chans=4)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return kit.checkpoint(path, classes, model=model, image_size=image_size, config={"image_size": image_size})


@pytest.fixture(scope="module")
def folders(synthetic_shards, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crops")
    for name in ("train", "val"):
        export_imagefolder(ExportConfig(shards=str(synthetic_shards[name]), out=str(root / name)))
    return {"train": root / "train", "val": root / "val"}


@pytest.fixture(scope="module")
def ctx(synthetic_shards, tmp_path_factory) -> Path:
    return context_checkpoint(tmp_path_factory.mktemp("ctx") / "ctx.pt", open_shard_set(synthetic_shards["train"]).classes)


def test_export_imagefolder_copies_every_object_crop(synthetic_shards, folders):
    s = open_shard_set(synthetic_shards["val"])
    raw = list(wds.DataPipeline(wds.SimpleShardList(s.urls), wds.tarfile_to_samples()))
    ds = open_image_folder(folders["val"])
    assert len(ds) == len(raw) == s.num_samples
    names = {c["index"]: c["name"] for c in s.classes}
    for r in raw[:20]:  # bytes copied as stored, filed under the class name
        path = folders["val"] / names[int(r["cls"])] / f"{r['__key__']}.jpg"
        assert path.read_bytes() == r["object.jpg"]
    exported = json.loads((folders["val"] / "classes.json").read_text())
    assert [c["name"] for c in exported] == sorted(ds.classes, key=[c["name"] for c in s.classes].index)
    with pytest.raises(ScenectlError, match="holds an ImageFolder export: pass --overwrite to replace it"):
        export_imagefolder(ExportConfig(shards=str(synthetic_shards["val"]), out=str(folders["val"])))


def test_dropping_the_mask_channel_equals_an_all_zero_mask(synthetic_shards, ctx):
    ck = read_checkpoint(ctx)
    m4 = create_model("resnet18", ck.num_classes, in_chans=4)
    m4.load_state_dict(ck.model_state())
    m3 = build_model(ck, "context", num_classes=3, seed=0)
    x = torch.randn(2, 3, 32, 32)
    m3.eval(), m4.eval()
    with torch.no_grad():
        want = m4.forward_features(torch.cat([x, torch.zeros(2, 1, 32, 32)], 1))
        assert torch.allclose(m3.forward_features(x), want, atol=1e-5)
    assert m3.get_classifier().out_features == 3
    assert "fc.weight" not in adapt_state(ck.model_state(), m3)  # a fresh head, never the old one


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


@pytest.mark.slow
def test_linear_probe_leaves_backbone_bit_identical_and_finetune_does_not(folders, ctx, tmp_path):
    ck = read_checkpoint(ctx)
    start = _backbone(adapt_state(ck.model_state(), create_model("resnet18", 3, in_chans=3)))
    base = dict(checkpoint=str(ctx), train=str(folders["train"]), val=str(folders["val"]), epochs=1, max_steps=3,
                batch_size=8, image_size=32, device="cpu")
    transfer(TransferConfig(**base, mode="linear", out=str(tmp_path / "lin")))
    after = torch.load(tmp_path / "lin" / "context" / "last.pt", weights_only=True)
    assert after["step"] == 3 and after["kind"] == "transfer"
    got = _backbone(after["model"])
    assert got.keys() == start.keys()  # weights AND BatchNorm buffers (running stats, num_batches_tracked)
    changed = [k for k in start if not torch.equal(start[k], got[k])]
    assert changed == []
    fresh = build_model(ck, "context", len(after["classes"]), seed=0).get_classifier().weight
    assert not torch.equal(after["model"]["fc.weight"], fresh)  # the head did learn

    rep = transfer(TransferConfig(**base, mode="finetune", backbone_lr_scale=0.1, out=str(tmp_path / "ft")))
    tuned = _backbone(torch.load(tmp_path / "ft" / "context" / "last.pt", weights_only=True)["model"])
    assert any(not torch.equal(start[k], tuned[k]) for k in start if k.endswith("weight"))
    assert any(not torch.equal(start[k], tuned[k]) for k in start if k.endswith("running_mean"))
    assert set(rep["runs"]) == {"context"}


@pytest.mark.slow
def test_compare_scratch_prints_both_side_by_side(folders, ctx, tmp_path):
    out = tmp_path / "cmp"
    args = ["transfer", "--checkpoint", str(ctx), "--train", str(folders["train"]), "--val", str(folders["val"]),
            "--compare-scratch", "--max-steps", "2", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
            "--device", "cpu", "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any("top-1" in line and "bal top-5" in line for line in lines)  # the table's header
    assert any(line.startswith("context") for line in lines) and any(line.startswith("scratch") for line in lines)
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["runs"]) == {"context", "scratch"} and rep["steps"] == 2
    for run in ("context", "scratch"):
        assert all((out / run / f).is_file() for f in ("config.json", "metrics.jsonl", "last.pt", "best.pt"))
    assert (out / "curves.png").stat().st_size > 0 and (out / "report.md").is_file()
    # same seed, same budget: the scratch run starts from random weights, the other from the context backbone
    a = torch.load(out / "context" / "last.pt", weights_only=True)["model"]["conv1.weight"]
    b = torch.load(out / "scratch" / "last.pt", weights_only=True)["model"]["conv1.weight"]
    assert not torch.equal(a, b)
    r = runner.invoke(app, args)  # the folder now holds runs
    assert r.exit_code == 2 and "--resume" in r.output
    r = runner.invoke(app, args + ["--resume"])  # both finished: resuming returns their results
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_bad_targets_and_checkpoints_are_refused(folders, ctx, tmp_path):
    def run(*args):
        return runner.invoke(app, ["transfer", "--device", "cpu", "--out", str(tmp_path / "o"), *args])

    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    r = run("--checkpoint", str(ctx), "--train", str(empty), "--val", str(folders["val"]))
    assert r.exit_code == 2 and "not an ImageFolder tree" in r.output and len(r.output.strip().splitlines()) == 1
    one = tmp_path / "one"
    (one / "cat").mkdir(parents=True)
    (one / "cat" / "a.jpg").write_bytes((next((folders["val"]).glob("*/*.jpg"))).read_bytes())
    r = run("--checkpoint", str(ctx), "--train", str(one), "--val", str(folders["val"]))
    assert r.exit_code == 2 and "only one class" in r.output
    r = run("--checkpoint", str(ctx), "--train", str(tmp_path / "nowhere"), "--val", str(folders["val"]))
    assert r.exit_code == 2 and "no such folder" in r.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    r = run("--checkpoint", str(junk), "--train", str(folders["train"]), "--val", str(folders["val"]))
    assert r.exit_code == 2 and "junk.pt" in r.output and len(r.output.strip().splitlines()) == 1
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    r = run("--checkpoint", str(plain), "--train", str(folders["train"]), "--val", str(folders["val"]))
    assert r.exit_code == 2 and "not a scenectl checkpoint" in r.output
    r = run("--checkpoint", str(ctx), "--train", str(folders["train"]), "--val", str(folders["val"]), "--mode", "frozen")
    assert r.exit_code == 2 and "--mode" in r.output


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_resume_with_changed_options_is_refused_before_anything_is_deleted(folders, ctx, tmp_path):
    out = tmp_path / "t"
    args = ["transfer", "--checkpoint", str(ctx), "--train", str(folders["train"]), "--val", str(folders["val"]),
            "--max-steps", "1", "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--device", "cpu",
            "--out", str(out)]
    r = runner.invoke(app, args + ["--mode", "linear"])
    assert r.exit_code == 0, r.output
    assert all((d / "curves.png").is_file() for d in (out, out / "context"))  # the run's and the comparison's
    before = _snapshot(out)
    assert "report.json" in before and "context/last.pt" in before
    for extra, msg in ((["--mode", "finetune"], "--mode: 'linear' -> 'finetune'"),
                       (["--mode", "linear", "--lr", "0.01"], "--lr: 0.001 -> 0.01")):
        r = runner.invoke(app, args + extra + ["--resume"])
        assert r.exit_code == 2 and msg in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and isinstance(r.exception, SystemExit)  # no traceback
        assert _snapshot(out) == before  # the finished report and both run folders untouched
    r = runner.invoke(app, args + ["--mode", "linear", "--resume"])  # the same options: the finished run reports
    assert r.exit_code == 0, r.output
    assert json.loads((out / "report.json").read_text())["runs"]["context"]["step"] == 1


# --- the one validation (inference.validate: train, transfer and distill) ------------------------------------------
def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 4) -> list[dict]:
    return [{"input": x[i:i + size], "label": y[i:i + size], "key": [str(k) for k in range(i, i + len(y[i:i + size]))],
             "visible": [[]] * len(y[i:i + size])} for i in range(0, len(y), size)]


def test_validation_metrics_and_their_sum_over_ranks(monkeypatch):
    """Loss, micro and class-balanced top-k against a direct computation; under DDP each rank's per-class sums are
    added before the ratios, so two ranks' halves give exactly the whole set's numbers."""
    import scenectl.distributed as D
    from scenectl.data.transforms import model_input
    from scenectl.inference import class_sums, run_model, validate

    torch.manual_seed(0)
    x = torch.randint(0, 256, (22, 3, 4, 4), dtype=torch.uint8)
    y = torch.tensor([0] * 12 + [1, 2, 3, 4, 5, 6] * 1 + [6] * 4)  # unbalanced: 12 of class 0; class 7 absent
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 8)).eval()
    with torch.no_grad():
        logits = model(model_input(x)).double()  # (22, 8)
    top = logits.topk(5, dim=1).indices
    hit1, hit5 = top[:, 0] == y, (top == y[:, None]).any(1)
    present = y.unique()
    want = {"val_loss": torch.nn.functional.cross_entropy(logits, y).item(), "val_top1": hit1.double().mean().item(),
            "val_top5": hit5.double().mean().item(),
            "val_bal_top1": torch.stack([hit1[y == c].double().mean() for c in present]).mean().item(),
            "val_bal_top5": torch.stack([hit5[y == c].double().mean() for c in present]).mean().item(),
            "val_samples": 22}
    got = validate(model, _batches(x, y), torch.device("cpu"), 8)
    assert got == pytest.approx(want) and got["val_samples"] == 22
    other = class_sums(run_model(model, _batches(x[10:], y[10:]), torch.device("cpu")), 8)  # "rank 1"'s share
    monkeypatch.setattr(D, "all_reduce_sum", lambda t: t + other)
    assert validate(model, _batches(x[:10], y[:10]), torch.device("cpu"), 8, reduce=True) == pytest.approx(want)
    with pytest.raises(ScenectlError, match="yielded no samples"):
        validate(model, [], torch.device("cpu"), 8)
