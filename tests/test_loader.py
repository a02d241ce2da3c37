"""Shard-set opening, sample decoding, augmentation and the train / eval pipelines (scenectl.data.loader)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
import webdataset as wds
from PIL import Image

from scenectl.data.loader import (
    Augment,
    EvalBatches,
    TrainBatches,
    decode_sample,
    make_eval_loader,
    make_train_loader,
    open_shard_set,
    to_input,
)
from scenectl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, batch_to_device, color_jitter
from scenectl.errors import OutOfMemory, ScenectlError
from kit import CLASSES, fast_first, write_shards

@pytest.fixture(scope="module")
def shardset_dir(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("loader") / "set")


# --- opening ---------------------------------------------------------------------------------------------------

def test_open_folder_and_brace_pattern(shardset_dir):
    s = open_shard_set(shardset_dir)
    assert len(s.urls) == 3 and s.num_samples == 24 and s.classes == CLASSES and s.image_size == 32
    assert s.cooccurrence().n_images == 24
    sub = open_shard_set(f"{shardset_dir}/shard-{{000000..000001}}.tar")
    assert len(sub.urls) == 2 and sub.num_samples == 16 and sub.location == str(shardset_dir)
    f = open_shard_set(f"file:{shardset_dir}/shard-000002.tar")
    assert f.num_samples == 8


def test_open_errors_name_the_place(tmp_path, shardset_dir):
    with pytest.raises(ScenectlError, match="not found"):
        open_shard_set(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScenectlError, match="empty has no manifest.json"):
        open_shard_set(tmp_path / "empty")
    inc = tmp_path / "incomplete"
    inc.mkdir()
    (inc / "progress.json").write_text("{}")
    (inc / "shard-000000.tar.partial").write_bytes(b"")
    with pytest.raises(ScenectlError, match="incomplete.*--resume"):
        open_shard_set(inc)
    with pytest.raises(ScenectlError, match="not listed"):
        open_shard_set(f"{shardset_dir}/shard-{{000000..000005}}.tar")
    gone = shutil.copytree(shardset_dir, tmp_path / "gone")
    (gone / "shard-000001.tar").unlink()
    with pytest.raises(ScenectlError, match="shard-000001.tar.*missing"):
        open_shard_set(gone)


# --- decoding ---------------------------------------------------------------------------------------------------

def _raw(shardset_dir) -> dict:
    return next(iter(wds.DataPipeline(wds.SimpleShardList([str(shardset_dir / "shard-000000.tar")]),
                                      wds.tarfile_to_samples())))


def test_decode_sample_only_known_members(shardset_dir):
    raw = _raw(shardset_dir)
    raw["pyd"] = b"\x80\x04garbage-pickle"  # unknown members are ignored, never unpickled
    s = decode_sample(raw)
    assert s["image"].dtype == s["mask"].dtype == torch.uint8 and isinstance(s["label"], int)
    assert s["image"].shape[0] == 3 and s["mask"].shape == (1, *s["image"].shape[1:])  # RGB, and L of its size
    assert s["visible"] == s["meta"]["visible_categories"] and "object" not in s


@pytest.mark.parametrize("member,value,match", [
    ("cls", None, "'cls' is missing"), ("jpg", b"not a jpeg", "'jpg' is not a readable image"),
    ("json", b"{", "'json' is not valid"), ("cls", b"seven", "'cls' is not an ASCII integer"),
])
def test_decode_sample_errors_name_shard_and_member(shardset_dir, member, value, match):
    raw = _raw(shardset_dir)
    if value is None:
        del raw[member]
    else:
        raw[member] = value
    with pytest.raises(ScenectlError, match=match) as e:
        decode_sample(raw)
    assert "shard-000000.tar" in str(e.value)


def test_decode_sample_refuses_truncated_images(shardset_dir):
    """torchvision's decoders, like PIL's, refuse an image cut short (not a partly grey picture)."""
    raw = _raw(shardset_dir)
    for member in ("jpg", "mask.png"):
        with pytest.raises(ScenectlError, match=f"'{member}' is not a readable image"):
            decode_sample(dict(raw, **{member: raw[member][: len(raw[member]) * 2 // 3]}))


# --- transforms --------------------------------------------------------------------------------------------------

def test_to_input_shape_and_mask_channel():
    img = Image.new("RGB", (40, 40), (255, 0, 0))
    mask = Image.new("L", (40, 40), 0)
    mask.paste(255, (10, 10, 20, 20))
    rgb, m = to_input(img, mask, 16, mask_channel=True)
    assert rgb.shape == (3, 16, 16) and m.shape == (1, 16, 16) and rgb.dtype == m.dtype == torch.uint8
    x = batch_to_device({"input": rgb[None], "input_mask": m[None]}, torch.device("cpu"))["input"][0]
    assert x.shape == (4, 16, 16) and x.dtype == torch.float32
    assert set(x[3].unique().tolist()) == {0.0, 1.0} and x[3].sum() == 16  # (10 px of 40) -> 4 px of 16, squared
    want = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)  # pure red
    assert torch.allclose(x[:3, 0, 0], want, atol=1e-5)
    rgb, m = to_input(img, None, 16, mask_channel=False)
    assert rgb.shape == (3, 16, 16) and m is None


def test_batch_color_jitter_matches_torchvision_per_sample():
    """The per-batch jitter is torchvision's brightness, contrast, saturation, each sample with its own factors."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=g)
    f = torch.tensor([[1.2, 0.8, 1.1], [0.85, 1.15, 0.9], [1.0, 1.0, 1.0]])
    got = color_jitter(x.float() / 255, f)
    for i in range(3):
        want = x[i].float() / 255
        want = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(want, f[i, 0].item()), f[i, 1].item()),
                                    f[i, 2].item())
        assert torch.allclose(got[i], want, atol=1e-5), i
    assert not torch.allclose(got[0], x[0].float() / 255)


def test_augment_keeps_hidden_region_in_view():
    aug = Augment(min_scale=0.1)
    mask = torch.zeros((1, 64, 64), dtype=torch.uint8)
    mask[:, 5:20, 40:60] = 255
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for i in range(50):
        im2, m2, jitter = aug(img, mask, np.random.default_rng(i), 32)
        assert im2.shape == (3, 32, 32) and m2.shape == (1, 32, 32) and jitter.shape == (3,)
        m = m2[0] > 127
        # the whole region stays in view (at 32 of 64 px: at least a quarter of its pixels, at worst ~ 0.9 of that)
        assert m.any() and m.sum() >= 20 * 15 / 4 * 0.9
        assert set(m2.unique().tolist()) <= {0, 255}  # nearest-neighbour: mask stays binary
        assert ((0.8 <= jitter) & (jitter <= 1.2)).all()
    a = aug(img, mask, np.random.default_rng(3), 32)
    b = aug(img, mask, np.random.default_rng(3), 32)
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # the sample's RNG alone decides
    # image and mask are cropped and flipped alike: the image's white square is the mask's region, up to bilinear
    # rounding on the region's edge (a pixel that differs has a neighbour on the other side of the mask's edge)
    marked = torch.zeros_like(img)
    marked[:, 5:20, 40:60] = 255
    for i in range(20):
        im2, m2, _ = Augment(min_scale=0.1, jitter=0)(marked, mask, np.random.default_rng(i), 64)
        white, hidden = im2[0] > 127, m2[0] > 127
        pad = torch.nn.functional.pad(hidden[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
        near = torch.nn.functional.max_pool2d(pad[None], 3, 1)[0] != -torch.nn.functional.max_pool2d(-pad[None], 3, 1)[0]
        assert hidden.any() and not (white != hidden)[~near].any(), i
        assert (white != hidden).sum() <= 0.05 * hidden.sum(), i


# --- pipelines ----------------------------------------------------------------------------------------------------

def _keys(loader) -> list[list[str]]:
    return [b["key"] for b in loader]


def test_eval_loader_every_sample_once(shardset_dir):
    s = open_shard_set(shardset_dir)
    batches = list(make_eval_loader(s, EvalBatches(image_size=16, batch_size=5)))
    keys = [k for b in batches for k in b["key"]]
    assert len(keys) == 24 and len(set(keys)) == 24
    b = batches[0]
    assert b["input"].shape == (5, 3, 16, 16) and b["input_mask"].shape == (5, 1, 16, 16) and b["label"].shape == (5,)
    assert b["input"].dtype == torch.uint8 and batch_to_device(b, torch.device("cpu"))["input"].shape == (5, 4, 16, 16)
    assert len(b["visible"]) == 5 and isinstance(b["meta"][0], dict)
    # DDP: ranks split the shards (3 shards, 2 ranks) or the samples (3 shards, 4 ranks); together exactly once
    for world in (2, 4):
        per_rank = [[k for b in make_eval_loader(s, EvalBatches(image_size=16, batch_size=8, rank=r, world_size=world))
                     for k in b["key"]] for r in range(world)]
        assert sorted(sum(per_rank, [])) == sorted(keys)


def test_train_loader_fixed_length_deterministic_and_resumable(shardset_dir):
    s = open_shard_set(shardset_dir)
    kw = dict(steps=7, batch_size=4, image_size=16, seed=1, shuffle_buffer=10)
    a = _keys(make_train_loader(s, TrainBatches(epoch=0, **kw)))
    assert len(a) == 7 and all(len(k) == 4 for k in a)  # 28 > 24 samples: the stream goes round again
    assert a == _keys(make_train_loader(s, TrainBatches(epoch=0, **kw)))
    assert a != _keys(make_train_loader(s, TrainBatches(epoch=1, **kw)))
    # resuming at step 3 gives exactly the remaining batches, inputs included
    full = list(make_train_loader(s, TrainBatches(epoch=0, **kw)))
    rest = list(make_train_loader(s, TrainBatches(epoch=0, start_step=3, **kw)))
    assert [b["key"] for b in rest] == a[3:]
    assert torch.equal(rest[0]["input"], full[3]["input"])
    # two ranks read different samples and both get exactly `steps` batches
    r0 = _keys(make_train_loader(s, TrainBatches(epoch=0, rank=0, world_size=2, **kw)))
    r1 = _keys(make_train_loader(s, TrainBatches(epoch=0, rank=1, world_size=2, **kw)))
    assert len(r0) == len(r1) == 7 and r0 != r1


def test_train_loader_workers_resume_order(shardset_dir):
    s = open_shard_set(shardset_dir)
    kw = dict(steps=6, batch_size=4, image_size=16, seed=2, shuffle_buffer=10, workers=2)
    a = _keys(make_train_loader(s, TrainBatches(**kw)))
    assert len(a) == 6 and a == _keys(make_train_loader(s, TrainBatches(**kw)))
    assert _keys(make_train_loader(s, TrainBatches(start_step=3, **kw))) == a[3:]


def test_truncated_shard_error_or_skip(tmp_path, shardset_dir):
    bad = shutil.copytree(shardset_dir, tmp_path / "bad")
    tar = bad / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    s = open_shard_set(bad)
    with pytest.raises(ScenectlError, match="shard-000001.tar"):
        list(make_eval_loader(s, EvalBatches(image_size=16, batch_size=4)))
    loader = make_eval_loader(s, EvalBatches(image_size=16, batch_size=4, skip_corrupt=True))
    keys = [k for b in loader for k in b["key"]]
    assert loader.skipped >= 1 and 16 <= len(keys) < 24


def test_shard_cut_at_a_member_boundary_is_noticed(tmp_path, shardset_dir):
    import tarfile

    bad = shutil.copytree(shardset_dir, tmp_path / "cut")
    tar = bad / "shard-000002.tar"
    with tarfile.open(tar) as t:
        end = t.getmembers()[12].offset  # the 4th sample's first header: tarfile reads 3 samples and stops quietly
    tar.write_bytes(tar.read_bytes()[:end])
    s = open_shard_set(bad)
    with pytest.raises(ScenectlError, match=r"shard-000002.tar gave 3 samples where its manifest lists 8"):
        list(make_eval_loader(s, EvalBatches(image_size=16, batch_size=4)))
    loader = make_eval_loader(s, EvalBatches(image_size=16, batch_size=4, skip_corrupt=True))
    assert sum(len(b["key"]) for b in loader) == 19 and loader.skipped == 1


def test_pipe_spec_reads_manifest_through_the_same_command(shardset_dir):
    s = open_shard_set(f"pipe:cat {shardset_dir}/shard-{{000000..000001}}.tar")
    assert s.urls[0] == f"pipe:cat {shardset_dir}/shard-000000.tar" and s.num_samples == 16
    assert s.cooccurrence().n_images == 24  # cooccurrence.h5 fetched with `cat` too
    keys = [k for b in make_eval_loader(s, EvalBatches(image_size=16, batch_size=8)) for k in b["key"]]
    assert len(keys) == 16


# --- the manifest's shard list ----------------------------------------------------------------------------------

@pytest.mark.parametrize("edit,match", [
    (lambda shards: shards.append(dict(shards[0])), "lists shard shard-000000.tar twice"),
    (lambda shards: shards[1].update(name="../shard-000001.tar"), "not a plain .tar file name"),
    (lambda shards: shards[1].update(samples=0), "shard-000001.tar with 0 samples"),
    (lambda shards: shards[1].update(samples="8"), "shard-000001.tar with '8' samples"),
])
def test_open_refuses_a_bad_shard_list(tmp_path, shardset_dir, edit, match):
    bad = shutil.copytree(shardset_dir, tmp_path / "bad")
    m = json.loads((bad / "manifest.json").read_text())
    edit(m["shards"])
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ScenectlError, match=match):
        open_shard_set(bad)


def test_open_refuses_a_pattern_naming_a_shard_twice(shardset_dir):
    with pytest.raises(ScenectlError, match="shard-000001.tar is named twice"):
        open_shard_set(f"{shardset_dir}/shard-{{000000,000001,000001}}.tar")


# --- decoding: cls agrees with the json and the manifest ---------------------------------------------------------

def test_decode_sample_checks_cls_against_json_and_classes(shardset_dir):
    raw = _raw(shardset_dir)
    meta = json.loads(raw["json"])
    other = dict(raw, cls=str((meta["cls"] + 1) % 4).encode())
    with pytest.raises(ScenectlError, match=r"member 'cls' is \d but the json metadata says cls"):
        decode_sample(other)
    with pytest.raises(ScenectlError, match="says cls None"):
        decode_sample(dict(raw, json=json.dumps({"visible_categories": []}).encode()))
    out_of_range = dict(raw, cls=b"7", json=json.dumps({**meta, "cls": 7}).encode())
    assert decode_sample(out_of_range)["label"] == 7
    with pytest.raises(ScenectlError, match="is 7, outside the manifest's 4 classes"):
        decode_sample(out_of_range, num_classes=4)
    with pytest.raises(ScenectlError, match="'object.jpg' is missing.*--with-object"):
        decode_sample(raw, ("object.jpg",))


# --- views --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def object_sets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("views")
    return {"with_object": write_shards(d / "with", n=12, per_shard=4, size=24, with_object=True),
            "task_object": write_shards(d / "task", n=12, per_shard=4, size=24, task="object")}


def test_object_view_with_and_without_the_scene(object_sets):
    s = open_shard_set(object_sets["with_object"])
    b = next(iter(make_eval_loader(s, EvalBatches(view="object", image_size=20, batch_size=5))))
    assert b["input"].shape == (5, 3, 20, 20) and "scene_input" not in b and len(b["url"]) == 5
    b = next(iter(make_eval_loader(s, EvalBatches(view="object", image_size=20, batch_size=5, scene_size=16, scene_mask=True))))
    assert b["input"].shape == (5, 3, 20, 20) and b["scene_input"].shape == (5, 3, 16, 16)
    assert batch_to_device(b, torch.device("cpu"))["scene_input"].shape == (5, 4, 16, 16)  # + the mask channel
    scene = next(iter(make_eval_loader(s, EvalBatches(image_size=16, batch_size=5))))
    assert torch.equal(b["scene_input"], scene["input"]) and b["key"] == scene["key"]  # the same samples, in order
    assert torch.equal(b["scene_input_mask"], scene["input_mask"])
    b = next(iter(make_eval_loader(s, EvalBatches(view="object", image_size=20, batch_size=5, scene_size=16, scene_mask=False))))
    assert "scene_input_mask" not in b and batch_to_device(b, torch.device("cpu"))["scene_input"].shape == (5, 3, 16, 16)
    t = open_shard_set(object_sets["task_object"])
    keys = [k for b in make_eval_loader(t, EvalBatches(view="object", image_size=20, batch_size=5)) for k in b["key"]]
    assert keys == [k for b in make_eval_loader(s, EvalBatches(view="object", image_size=20, batch_size=5)) for k in b["key"]]


def test_views_refuse_sets_that_lack_them(object_sets, shardset_dir):
    plain, task = open_shard_set(shardset_dir), open_shard_set(object_sets["task_object"])
    with pytest.raises(ScenectlError, match="no object crops.*--with-object"):
        make_eval_loader(plain, EvalBatches(view="object", image_size=16, batch_size=4))
    with pytest.raises(ScenectlError, match="--task object"):
        make_train_loader(task, TrainBatches(steps=1, batch_size=4, image_size=16))
    with pytest.raises(ScenectlError, match="--task object"):
        make_eval_loader(task, EvalBatches(view="object", image_size=16, batch_size=4, scene_size=16))
    with pytest.raises(ValueError, match="unknown view"):
        make_eval_loader(plain, EvalBatches(view="crop", image_size=16, batch_size=4))


def test_object_view_train_stream_is_the_scene_streams(object_sets):
    """The object view draws the same samples in the same order as the scene view (one stream mechanism)."""
    s = open_shard_set(object_sets["with_object"])
    kw = dict(steps=6, batch_size=4, image_size=16, seed=3, shuffle_buffer=6)
    obj = list(make_train_loader(s, TrainBatches(view="object", **kw)))
    assert _keys(obj) == _keys(make_train_loader(s, TrainBatches(**kw))) and obj[0]["input"].shape == (4, 3, 16, 16)
    rest = list(make_train_loader(s, TrainBatches(view="object", start_step=2, **kw)))
    assert _keys(rest) == _keys(obj)[2:] and torch.equal(rest[0]["input"], obj[2]["input"])
    two = _keys(make_train_loader(s, TrainBatches(view="object", workers=2, **kw)))
    again = _keys(make_train_loader(s, TrainBatches(view="object", workers=2, start_step=3, **kw)))
    assert len(two) == 6 and again == two[3:]


def test_eval_workers_split_the_shards(shardset_dir):
    """Each DataLoader worker reads its own shards: no batch mixes the shards of two workers."""
    s = open_shard_set(shardset_dir)  # 3 shards of 8
    batches = list(make_eval_loader(s, EvalBatches(image_size=16, batch_size=16, workers=2)))
    keys = [k for b in batches for k in b["key"]]
    assert len(keys) == 24 and len(set(keys)) == 24
    names = [{u.rsplit("/", 1)[-1] for u in b["url"]} for b in batches]
    assert all(n <= {"shard-000000.tar", "shard-000002.tar"} or n == {"shard-000001.tar"} for n in names), names


# --- names read from a manifest are data: never a command, a URL or a path out of the folder -----------------------

HOSTILE = ["pipe:touch marker.tar", "pipe:touch /tmp/x", "http://evil/x.tar", "file:x.tar", "../x.tar", "/abs/x.tar",
           "a/b.tar", "a\\b.tar", "x\0.tar", "x\n.tar", "x;touch marker;.tar", ".hidden.tar", "x..tar", " x.tar", 7]


def _with_first_shard_named(src: Path, dst: Path, name) -> Path:
    bad = shutil.copytree(src, dst)
    m = json.loads((bad / "manifest.json").read_text())
    m["shards"][0]["name"] = name
    (bad / "manifest.json").write_text(json.dumps(m))
    if isinstance(name, str) and "/" not in name and "\0" not in name:
        (bad / "shard-000000.tar").rename(bad / name)  # the file is there too: only the name check can refuse it
    return bad


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_hostile_shard_names_are_refused_and_never_run(tmp_path, shardset_dir, monkeypatch, name):
    from scenectl.data.verify import verify_shards

    bad = _with_first_shard_named(shardset_dir, tmp_path / "set", name)
    monkeypatch.chdir(bad)  # `--shards .`: the name alone would be the URL webdataset opens
    for spec in (".", str(bad), f"pipe:cat {bad}/"):  # a local folder; a pipe: folder whose names join the command
        with pytest.raises(ScenectlError, match=r"manifest .* lists shard .*which is not a plain \.tar file name"):
            open_shard_set(spec)
    report = verify_shards(bad)
    assert not report["ok"] and any(p["kind"] == "manifest" for p in report["problems"])
    assert not (bad / "marker.tar").exists() and not (bad / "marker").exists() and not Path("/tmp/x").exists()


def test_a_pipe_folder_reads_plain_names_through_the_users_command(shardset_dir):
    s = open_shard_set(f"pipe:cat {shardset_dir}/")
    assert s.urls[1] == f"pipe:cat {shardset_dir}/shard-000001.tar" and s.num_samples == 24


# --- shard sets are whole or refused: cooccurrence.h5 against the manifest's files{} sha256 ----------------------

def test_cooccurrence_is_checked_against_the_manifests_sha256(tmp_path, shardset_dir):
    import hashlib

    d = shutil.copytree(shardset_dir, tmp_path / "set")
    assert open_shard_set(d).cooccurrence().n_images == 24  # an older set without `files`: taken as it is
    m = json.loads((d / "manifest.json").read_text())
    m["files"] = {"cooccurrence.h5": hashlib.sha256((d / "cooccurrence.h5").read_bytes()).hexdigest()}
    (d / "manifest.json").write_text(json.dumps(m))
    assert open_shard_set(d).cooccurrence().n_images == 24
    write_shards(tmp_path / "other", n=16, seed=5)  # another split's statistics standing in
    shutil.copy(tmp_path / "other" / "cooccurrence.h5", d / "cooccurrence.h5")
    with pytest.raises(ScenectlError, match=r"^\S*cooccurrence.h5: sha256 \w+\.\.\. differs from the manifest's"):
        open_shard_set(d).cooccurrence()
    with pytest.raises(ScenectlError, match=r"cooccurrence.h5: sha256"):
        open_shard_set(f"pipe:cat {d}/").cooccurrence()  # remote sets: the same check on the fetched bytes
    for files, match in [({"../cooccurrence.h5": "0" * 64}, "'files' names '../cooccurrence.h5', which is not"),
                         ({"cooccurrence.h5": "abc"}, "'files' gives cooccurrence.h5 the sha256 'abc'"),
                         (["cooccurrence.h5"], "'files' is not a mapping")]:
        (d / "manifest.json").write_text(json.dumps({**m, "files": files}))
        with pytest.raises(ScenectlError, match=match):
            open_shard_set(d)


# --- bounded failure: --skip-corrupt over nothing but failures stops, naming the bound -----------------------------

@pytest.mark.parametrize("damage", ["shards", "samples"])
def test_skip_corrupt_over_nothing_but_failures_stops(tmp_path, shardset_dir, damage):
    from damaged_sets import read_samples, write_samples
    from scenectl.data.loader import FAILURES_IN_A_ROW

    bad = shutil.copytree(shardset_dir, tmp_path / "bad")
    for tar in sorted(bad.glob("*.tar")):
        if damage == "shards":  # no shard can be read at all
            tar.write_bytes(b"not a tar" * 100)
        else:  # every shard reads, every sample's image is junk
            write_samples(tar, [(k, [(m, b"junk" if m == "jpg" else d) for m, d in ms]) for k, ms in read_samples(tar)])
    s = open_shard_set(bad)
    loader = make_train_loader(s, TrainBatches(steps=2, batch_size=4, image_size=16, skip_corrupt=True))
    with pytest.raises(ScenectlError, match=rf"stopped: {FAILURES_IN_A_ROW} failures in a row with --skip-corrupt "
                                            rf"and no usable sample between them \(the limit is {FAILURES_IN_A_ROW}\)"):
        list(loader)
    assert loader.skipped == FAILURES_IN_A_ROW


def test_skip_corrupt_goes_on_while_some_samples_are_usable(tmp_path, shardset_dir, monkeypatch):
    import scenectl.data.loader as loader_module

    monkeypatch.setattr(loader_module, "FAILURES_IN_A_ROW", 5)
    bad = shutil.copytree(shardset_dir, tmp_path / "bad")
    for tar in ("shard-000000.tar", "shard-000001.tar"):  # two of three shards unreadable, read again and again
        (bad / tar).write_bytes(b"not a tar" * 100)
    loader = make_train_loader(open_shard_set(bad), TrainBatches(steps=20, batch_size=8, image_size=16,
                                                                 skip_corrupt=True, shuffle_buffer=8))
    assert sum(1 for _ in loader) == 20 and loader.skipped > 5  # more failures than the bound, never 5 in a row


def test_deferred_jpeg_decoding_matches_the_workers_decoding(shardset_dir):
    """defer_jpeg (a GPU decodes the batch's JPEGs): batch_to_device gives the same model input as decoding in the
    workers -- exactly without augmentation, up to float vs uint8 resampling with it -- and the same masks."""
    from scenectl.data.loader import View, collate, make_view, raw_samples

    s = open_shard_set(shardset_dir)
    raws = list(raw_samples(s))[:6]
    cpu = torch.device("cpu")
    for size, aug in ((32, False), (24, True)):
        eager, lazy = make_view(s, "scene", size), make_view(s, "scene", size, defer_jpeg=True)
        assert isinstance(lazy, View) and lazy.defer_jpeg
        rng = (lambda i: np.random.default_rng([7, i])) if aug else (lambda i: None)
        a = collate([eager(r, rng(i)) for i, r in enumerate(raws)])
        b = collate([lazy(r, rng(i)) for i, r in enumerate(raws)])
        assert "input" not in b and len(b["input_jpg"]) == 6 and b["input_geometry"].shape == (6, 6)
        assert torch.equal(a["input_mask"], b["input_mask"]) and ("jitter" in a) == ("jitter" in b) == aug
        assert not aug or torch.equal(a["jitter"], b["jitter"])
        xa, xb = batch_to_device(a, cpu)["input"], batch_to_device(b, cpu)["input"]
        assert xa.shape == xb.shape == (6, 4, size, size)
        if aug:  # 2 levels of 255, normalised, at most (uint8 vs float antialiased bilinear)
            assert (xa - xb).abs().max() <= 2 / 255 / min(IMAGENET_STD) + 1e-5
        else:
            assert torch.equal(xa, xb)
    with pytest.raises(ValueError, match="scene view"):
        make_view(s, "object", 16, defer_jpeg=True)


@pytest.mark.parametrize("oom", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                             "can't allocate memory: you tried to allocate 3000000000 bytes")])
@pytest.mark.parametrize("skip_corrupt", fast_first([True, False]))
def test_running_out_of_memory_while_decoding_is_said_never_called_corrupt(shardset_dir, monkeypatch, oom, skip_corrupt):
    """Issue 23: out of memory while decoding was reported as a corrupt sample (and skipped with --skip-corrupt)."""
    import scenectl.data.loader as L

    def decode(data, mode):
        raise oom

    monkeypatch.setattr(L, "decode_image", decode)
    loader = make_eval_loader(open_shard_set(shardset_dir), EvalBatches(image_size=16, batch_size=4,
                                                                        skip_corrupt=skip_corrupt))
    with pytest.raises(OutOfMemory, match="out of memory decoding member 'jpg' .* not a damaged input") as e:
        list(loader)
    assert "corrupt" not in str(e.value) and loader.skipped == 0


def test_the_cli_says_out_of_memory_in_one_line():
    from scenectl.cli._app import describe

    status, line = describe(MemoryError(), "eval")
    assert status == 2 and line.startswith("error: scenectl eval: out of memory: a resource limit")
    assert "unexpected" not in line
