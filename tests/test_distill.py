"""scenectl.distill: Hinton's KD loss against a hand-computed case, the distill run end to end, bad inputs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import kit
from scenectl.checkpoint import read_checkpoint
from scenectl.cli import app
from scenectl.data.imagefolder import make_loader, open_target
from scenectl.data.loader import decode_sample, open_shard_set
from scenectl.distill import SCENE, DistillConfig, distill, distillation_loss, kd_loss
from scenectl.errors import ScenectlError
from scenectl.inference import validate

runner = CliRunner()


def test_kd_loss_matches_hand_computed_case():
    # Two samples, two classes, T = 2, alpha = 0.5.
    # sample 1: student s = [1, 0], teacher t = [0, 1], label 0
    #   s/T = [0.5, 0] -> p_s = [e^.5, 1] / (e^.5 + 1) = [0.622459, 0.377541]
    #   t/T = [0, 0.5] -> p_t = [0.377541, 0.622459]
    #   KL(p_t || p_s) = 0.377541 ln(0.377541/0.622459) + 0.622459 ln(0.622459/0.377541)
    #                  = (0.622459 - 0.377541) * 0.5      (each log ratio is exactly -/+ 0.5)
    #                  = 0.122459
    #   CE(s, 0) at T = 1: -ln(e / (e + 1)) = ln(1 + e^-1) = 0.313262
    # sample 2: student s = [0, 0], teacher t = [0, 0], label 1
    #   p_s = p_t = [0.5, 0.5] -> KL = 0;  CE = ln 2 = 0.693147
    # batch means: CE = (0.313262 + 0.693147) / 2 = 0.503204,  KL = 0.122459 / 2 = 0.0612295
    # loss = (1 - 0.5) * 0.503204 + 0.5 * 2^2 * 0.0612295 = 0.251602 + 0.122459 = 0.374061
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    out = kd_loss(s, t, y, temperature=2.0, alpha=0.5)
    assert out["ce"].item() == pytest.approx(0.503204, abs=1e-6)
    assert out["kl"].item() == pytest.approx(0.0612295, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.374061, abs=1e-6)
    # alpha = 0 is plain cross-entropy; alpha = 1 is the soft term alone (T^2 KL)
    assert kd_loss(s, t, y, 2.0, 0.0)["loss"].item() == pytest.approx(0.503204, abs=1e-6)
    assert kd_loss(s, t, y, 2.0, 1.0)["loss"].item() == pytest.approx(0.244918, abs=1e-6)  # 4 * 0.0612295


def test_kd_loss_gradient_pulls_student_toward_teacher():
    s = torch.tensor([[1.0, 0.0]], requires_grad=True)
    kd_loss(s, torch.tensor([[0.0, 1.0]]), torch.tensor([0]), 2.0, 1.0)["loss"].backward()
    assert s.grad[0, 0] > 0 > s.grad[0, 1]  # descending lowers class 0 and raises class 1, the teacher's choice


def test_distillation_loss_is_a_function_of_model_and_batch_alone():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(6, 3), torch.nn.Linear(4, 3)  # stand-ins: scene (B, 6), crop (B, 4) -> (B, 3)
    teacher.requires_grad_(False)
    batch = {"input": torch.randn(5, 4), SCENE: torch.randn(5, 6), "label": torch.tensor([0, 1, 2, 0, 1])}
    loss_fn = distillation_loss(teacher, temperature=2.0, alpha=0.5)
    want = kd_loss(student(batch["input"]), teacher(batch[SCENE]), batch["label"], 2.0, 0.5)["loss"]
    assert torch.equal(loss_fn(student, batch), want)
    other = {**batch, SCENE: torch.randn(5, 6)}
    assert not torch.equal(loss_fn(student, other), want)  # the teacher sees this batch's scenes ...
    assert torch.equal(loss_fn(student, batch), want)  # ... and nothing is carried from one call to the next
    assert math.isfinite(want.item()) and not [k for k in vars(loss_fn) if not k.startswith("__")]
    loss_fn(student, batch).backward()
    assert teacher.weight.grad is None and student.weight.grad is not None


def context_checkpoint(path: Path, classes: list[dict]) -> Path:
    """A (random-weight) 4-channel context checkpoint in scenectl's format: enough to test the plumbing."""
    return kit.checkpoint(path, classes, config={"image_size": 32, "mask_channel": True})


@pytest.fixture(scope="module")
def teacher(synthetic_shards, tmp_path_factory) -> Path:
    classes = open_shard_set(synthetic_shards["train"]).classes
    return context_checkpoint(tmp_path_factory.mktemp("teacher") / "ctx.pt", classes)


@pytest.mark.slow
def test_distill_end_to_end_with_and_without_teacher(synthetic_shards, teacher, tmp_path):
    cfg = DistillConfig(teacher=str(teacher), student="resnet18", shards=str(synthetic_shards["train"]),
                        val_shards=str(synthetic_shards["val"]), out=str(tmp_path / "d"), temperature=2.0,
                        alpha=0.5, epochs=1, max_steps=2, batch_size=8, image_size=32, device="cpu")
    rep = distill(cfg)
    assert set(rep["runs"]) == {"kd", "ce"}
    for name in ("kd", "ce"):
        run = tmp_path / "d" / name
        assert all((run / f).is_file() for f in ("config.json", "metrics.jsonl", "last.pt", "best.pt"))
        assert rep["runs"][name]["step"] == 2 and 0 <= rep["runs"][name]["val_top1"] <= 1
        assert rep["runs"][name]["val_samples"] == open_shard_set(synthetic_shards["val"]).num_samples
    # same seed, same initial student: the two runs differ only by the teacher's term
    kd = torch.load(tmp_path / "d" / "kd" / "last.pt", weights_only=True)
    ce = torch.load(tmp_path / "d" / "ce" / "last.pt", weights_only=True)
    assert kd["kind"] == "distill" and kd["alpha"] == 0.5 and ce["alpha"] == 0.0
    assert not torch.equal(kd["model"]["fc.weight"], ce["model"]["fc.weight"])
    disk = json.loads((tmp_path / "d" / "report.json").read_text())
    assert disk["teacher_val"]["val_samples"] > 0
    prov = disk["provenance"]  # what the report is of: version, commit, the teacher's sha256, the data, n
    from scenectl.io import file_sha256
    assert prov["scenectl"] and "git_commit" in prov and prov["checkpoints"][0]["sha256"] == file_sha256(cfg.teacher)
    assert prov["data"]["val_shards"] == cfg.data.val_shards and prov["n"]["kd"] == rep["runs"]["kd"]["val_samples"]
    # the metrics logged during training are those of the saved weights (validation in eval mode, BN untouched)
    model = read_checkpoint(tmp_path / "d" / "ce" / "last.pt").build_model("cpu")
    val = open_target(str(synthetic_shards["val"]), "--val")
    again = validate(model, make_loader(val, image_size=32, batch_size=8), torch.device("cpu"),
                     len(val.classes))
    assert again["val_top1"] == rep["runs"]["ce"]["val_top1"]
    assert again["val_loss"] == pytest.approx(rep["runs"]["ce"]["val_loss"], rel=1e-5)
    assert (tmp_path / "d" / "curves.png").stat().st_size > 0

    r = runner.invoke(app, ["distill", "--teacher", str(teacher), "--shards", str(synthetic_shards["train"]),
                            "--val-shards", str(synthetic_shards["val"]), "--out", str(tmp_path / "cli"),
                            "--max-steps", "1", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
                            "--device", "cpu", "--no-compare"])
    assert r.exit_code == 0, r.output
    assert "kd" in r.output and "top-1" in r.output and "teacher on the validation scenes" in r.output


def _without_object(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["params"]["with_object"] = False
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_distill_refuses_shards_without_object_crops(synthetic_shards, teacher, tmp_path):
    plain = _without_object(synthetic_shards["val"], tmp_path / "plain")
    r = runner.invoke(app, ["distill", "--teacher", str(teacher), "--shards", str(plain), "--val-shards",
                            str(synthetic_shards["val"]), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "scenectl build-shards --with-object" in r.output and len(r.output.strip().splitlines()) == 1
    # the per-sample check says the same when a sample lacks the member
    with pytest.raises(ScenectlError, match="--with-object"):
        decode_sample({"__key__": "k", "jpg": b"", "cls": b"1", "json": b"{}"}, ("object.jpg",))


def test_distill_refuses_a_teacher_with_other_classes(synthetic_shards, tmp_path):
    classes = open_shard_set(synthetic_shards["train"]).classes
    other = context_checkpoint(tmp_path / "other.pt", classes[:-1])
    with pytest.raises(ScenectlError, match="teacher"):
        distill(DistillConfig(teacher=str(other), shards=str(synthetic_shards["train"]),
                              val_shards=str(synthetic_shards["val"]), out=str(tmp_path / "o"), device="cpu"))


def test_distill_refuses_bad_options_and_non_checkpoints(synthetic_shards, teacher, tmp_path):
    base = dict(teacher=str(teacher), shards=str(synthetic_shards["train"]), val_shards=str(synthetic_shards["val"]),
                out=str(tmp_path / "o"), device="cpu")
    with pytest.raises(ScenectlError, match="--alpha"):
        distill(DistillConfig(**base, alpha=1.5))
    with pytest.raises(ScenectlError, match="--temperature"):
        distill(DistillConfig(**base, temperature=0))
    fake = tmp_path / "fake.pt"
    torch.save({"weights": torch.zeros(2)}, fake)
    with pytest.raises(ScenectlError, match="not a scenectl checkpoint"):
        distill(DistillConfig(**{**base, "teacher": str(fake)}))


@pytest.mark.slow
def test_distill_resume_with_a_changed_option_is_refused_naming_it(synthetic_shards, teacher, tmp_path):
    out = tmp_path / "d"
    args = ["distill", "--teacher", str(teacher), "--shards", str(synthetic_shards["train"]), "--val-shards",
            str(synthetic_shards["val"]), "--out", str(out), "--max-steps", "1", "--epochs", "1", "--batch-size", "8",
            "--image-size", "32", "--device", "cpu", "--no-compare"]
    r = runner.invoke(app, args + ["-T", "2"])
    assert r.exit_code == 0, r.output
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert out / "report.json" in before and (out / "kd" / "curves.png") in before
    r = runner.invoke(app, args + ["-T", "3", "--resume"])
    assert r.exit_code == 2 and "--temperature: 2.0 -> 3.0" in r.output and len(r.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before  # nothing deleted
