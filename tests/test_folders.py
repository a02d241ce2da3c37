"""scenectl.folders: ownership markers, --resume/--overwrite rules, option changes, one writer per folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from scenectl.errors import ScenectlError
from scenectl.folders import KINDS, LOCK, MARKER, check_file_target, claim, owner


def test_fresh_folder_gets_a_marker_and_a_lock_while_claimed(tmp_path):
    out = tmp_path / "a" / "run"
    with claim(out, "run", config={"lr": 0.1}) as f:
        assert f.fresh and (out / LOCK).is_file()
        assert json.loads((out / (LOCK + ".json")).read_text())["command"] == "train"
        assert json.loads((out / MARKER).read_text())["kind"] == "run"
    assert not (out / LOCK).exists() and not (out / (LOCK + ".json")).exists() and owner(out) == "run"


def test_refusal_leaves_nothing_behind(tmp_path):
    with pytest.raises(ScenectlError, match="holds no training run to resume"):
        with claim(tmp_path / "new" / "deeper", "run", resume=True):
            pass
    assert not (tmp_path / "new").exists()


def test_own_kind_needs_resume_or_overwrite(tmp_path):
    with claim(tmp_path / "r", "run", config={"lr": 0.1}):
        (tmp_path / "r" / "last.pt").write_bytes(b"x")
    with pytest.raises(ScenectlError, match="pass --resume to continue it or --overwrite"):
        with claim(tmp_path / "r", "run"):
            pass
    with claim(tmp_path / "r", "run", resume=True, config={"lr": 0.1}) as f:
        assert not f.fresh and (tmp_path / "r" / "last.pt").exists()
    with claim(tmp_path / "r", "run", overwrite=True, config={"lr": 0.2}) as f:
        assert f.fresh and not (tmp_path / "r" / "last.pt").exists()


def test_resume_names_each_changed_option_and_both_values(tmp_path):
    cfg = {"optim": {"lr": 0.1, "optimizer": "sgd"}, "loop": {"workers": 2, "epochs": 3}, "mode": "linear"}
    with claim(tmp_path / "r", "run", config=cfg):
        pass
    changed = {"optim": {"lr": 0.2, "optimizer": "sgd"}, "loop": {"workers": 4, "epochs": 3}, "mode": "finetune"}
    with pytest.raises(ScenectlError) as e:
        with claim(tmp_path / "r", "run", resume=True, config=changed, keep={"workers"}):
            pass
    msg = str(e.value)
    assert "--lr: 0.1 -> 0.2" in msg and "--mode: 'linear' -> 'finetune'" in msg and "workers" not in msg
    with claim(tmp_path / "r", "run", resume=True, config={**cfg, "loop": {"workers": 8, "epochs": 3}},
               keep={"workers"}):
        pass


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("other", sorted(KINDS))
def test_never_touches_a_folder_of_another_kind(tmp_path, kind, other):
    if kind == other:
        return
    with claim(tmp_path / "x", other):
        (tmp_path / "x" / "config.json").write_text("{}")
    before = sorted(p.name for p in (tmp_path / "x").iterdir())
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(ScenectlError, match=f"written by `scenectl {KINDS[other].command}`"):
            with claim(tmp_path / "x", kind, **flags):
                pass
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == before


def test_folders_without_marker_are_recognised_by_their_files(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "manifest.json").write_text("{}")
    assert owner(tmp_path / "s") == "shards"
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "notes.txt").write_text("mine")
    with pytest.raises(ScenectlError, match=r"holds files scenectl did not write \(notes.txt"):
        with claim(tmp_path / "f", "run", overwrite=True):
            pass
    assert (tmp_path / "f" / "notes.txt").read_text() == "mine"


def test_overwrite_spares_a_nested_folder_of_another_kind(tmp_path):
    with claim(tmp_path / "r", "run"):
        (tmp_path / "r" / "best.pt").write_bytes(b"x")
    with claim(tmp_path / "r" / "eval", "eval"):
        (tmp_path / "r" / "eval" / "report.json").write_text("{}")
    with claim(tmp_path / "r", "run", overwrite=True):
        pass
    assert not (tmp_path / "r" / "best.pt").exists() and (tmp_path / "r" / "eval" / "report.json").exists()


def test_a_live_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "s"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom scenectl.folders import claim\n"
        f"with claim({str(out)!r}, 'shards'):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ScenectlError, match=r"is being written by `scenectl build-shards` \(pid"):
            with claim(out, "shards", resume=True):
                pass
        assert (out / LOCK).exists() and (out / MARKER).exists()  # nothing of the writer's touched
    finally:
        holder.kill()
        holder.wait()
    assert (out / (LOCK + ".json")).exists()  # SIGKILL: its record stays behind; the kernel released its lock
    with claim(out, "shards", resume=True):
        pass
    assert "ended without finishing" in capsys.readouterr().err


def test_parts_lock_separately(tmp_path):
    with claim(tmp_path / "s", "shards", lock=".part-0-of-2"):
        with claim(tmp_path / "s", "shards", lock=".part-1-of-2", resume=True):
            assert {p.name for p in (tmp_path / "s").iterdir()} >= {LOCK + ".part-0-of-2", LOCK + ".part-1-of-2"}


@pytest.mark.slow
def test_a_part_build_and_a_whole_build_of_one_folder_exclude_each_other(tmp_path):
    out = tmp_path / "s"
    with claim(out, "shards", lock=".part-0-of-2"):
        with pytest.raises(ScenectlError, match=r"being written by `scenectl build-shards` \(pid"):
            with claim(out, "shards", overwrite=True):
                pass
    with claim(out, "shards", overwrite=True):
        with pytest.raises(ScenectlError, match="being written by"):
            with claim(out, "shards", lock=".part-1-of-2", resume=True):
                pass


def _race_worker(args):
    """One side of a synchronised race: wait at the barrier, try to take the trial's folder, and while holding it
    create `held` exclusively (a second holder at the same moment fails to)."""
    pair, barrier, folders, results = args
    from scenectl.errors import ScenectlError as Refused

    outcomes = []
    for folder in folders:
        barrier.wait()
        try:
            with claim(folder, "run", overwrite=True):
                fd = os.open(folder / "held", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                time.sleep(0.002)
                os.close(fd)
                os.unlink(folder / "held")
                outcomes.append("held")
        except Refused:
            outcomes.append("refused")
        except BaseException as e:  # a crash, or two holders at once (FileExistsError)
            outcomes.append(f"{type(e).__name__}: {e}")
    results.put((pair, outcomes))


@pytest.mark.slow
def test_two_writers_racing_for_one_folder_never_both_take_it(tmp_path):
    """200 synchronised trials (2 pairs of processes x 100 folders), each folder carrying a dead writer's record:
    in each, at most one process holds the folder at a time, and none crashes."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    trials, pairs = 100, 2
    folders = [[tmp_path / f"p{p}-{t}" for t in range(trials)] for p in range(pairs)]
    for row in folders:
        for f in row:
            f.mkdir()
            dead = json.dumps({"pid": 999999999, "host": socket.gethostname(), "command": "train"})
            (f / LOCK).write_text(dead)  # a dead holder's lock, as writers before the kernel lock left it
            (f / (LOCK + ".json")).write_text(dead)
    barriers = [ctx.Barrier(2) for _ in range(pairs)]
    results = ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=((p, barriers[p], folders[p], results),))
             for p in range(pairs) for _ in range(2)]
    for proc in procs:
        proc.start()
    # the queue delivers in finishing order: sort the two sides of each pair next to each other
    outcomes = [o for _, o in sorted((results.get(timeout=120) for _ in procs), key=lambda r: r[0])]
    for proc in procs:
        proc.join(30)
    crashes = [o for side in outcomes for o in side if o not in ("held", "refused")]
    assert not crashes, crashes[:3]
    assert all(proc.exitcode == 0 for proc in procs)
    # each trial's folder was taken by at least one of its two processes (a refusal means the other one held it)
    per_trial = [a == "held" or b == "held" for x, y in zip(outcomes[::2], outcomes[1::2]) for a, b in zip(x, y)]
    assert len(per_trial) == trials * pairs and all(per_trial)


def test_commands_without_resume_are_not_told_to_resume(tmp_path):
    with claim(tmp_path / "e", "eval"):
        pass
    with pytest.raises(ScenectlError, match="holds an evaluation report: pass --overwrite to replace it$"):
        with claim(tmp_path / "e", "eval"):
            pass


def test_a_refused_claim_never_removes_a_folder_another_writer_holds(tmp_path):
    out = tmp_path / "new"
    with claim(out, "run"):
        (out / "last.pt").write_bytes(b"x")
        with pytest.raises(ScenectlError, match="is being written by"):
            with claim(out, "run", resume=True):
                pass
        assert (out / "last.pt").exists()


def test_older_ooc_folders_are_recognised_and_a_project_folder_is_no_quickstart_run(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "manifest.json").write_text(json.dumps({"task": "ooc"}))
    assert owner(tmp_path / "o") == "ooc"
    # README's layout (shards/val2017/manifest.json in the project folder): a quickstart run only by its marker
    (tmp_path / "q" / "shards" / "val2017").mkdir(parents=True)
    (tmp_path / "q" / "shards" / "val2017" / "manifest.json").write_text("{}")
    assert owner(tmp_path / "q") == "foreign"
    check_file_target(tmp_path / "q" / "sheet.png")
    with claim(tmp_path / "q" / "runs" / "train", "run"):
        pass


def test_file_outputs_stay_out_of_owned_folders(tmp_path):
    with claim(tmp_path / "s", "shards"):
        pass
    with pytest.raises(ScenectlError, match="is inside a shard set"):
        check_file_target(tmp_path / "s" / "sheet.png")
    check_file_target(tmp_path / "sheet.png")


def test_outputs_never_replace_an_input_nor_land_inside_a_shard_set_or_export(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"jpeg")
    (tmp_path / "link.jpg").symlink_to(photo)
    os.link(photo, tmp_path / "hard.jpg")
    for out in (photo, tmp_path / "link.jpg", tmp_path / "hard.jpg", tmp_path / "." / "photo.jpg"):
        with pytest.raises(ScenectlError, match=r"is the command's input .*photo.jpg"):
            check_file_target(out, inputs=(None, str(photo)))
    with claim(tmp_path / "s", "shards"):
        (tmp_path / "s" / "manifest.json").write_text("{}")
    (tmp_path / "old").mkdir()  # a set written before markers: known by its manifest's format tag
    (tmp_path / "old" / "manifest.json").write_text('{"format": "scenectl-shards/1"}')
    with pytest.raises(ScenectlError, match=r"lies inside a shard set"):
        check_file_target(tmp_path / "old" / "deeper" / "sheet.png")
    (tmp_path / "web").mkdir()  # another tool's manifest.json in a parent folder is no shard set
    (tmp_path / "web" / "manifest.json").write_text('{"name": "an app"}')
    with claim(tmp_path / "web" / "deeper" / "run", "run"):
        pass
    for kind in ("run", "eval"):  # e.g. eval's default --out beside a checkpoint copied into a shard set
        with pytest.raises(ScenectlError, match=r"lies inside a shard set"):
            with claim(tmp_path / "s" / "deeper" / kind, kind):
                pass
    assert not (tmp_path / "s" / "deeper").exists()
    with pytest.raises(ScenectlError, match=r"inside a shard set"):
        check_file_target(tmp_path / "s" / "deeper" / "sheet.png")
    with claim(tmp_path / "run", "run"):  # a run may hold an eval folder (eval's default --out)
        with claim(tmp_path / "run" / "eval", "eval"):
            pass


def test_overwriting_an_export_leaves_exactly_the_new_export(tmp_path):
    with claim(tmp_path / "x", "export"):
        for cls in ("cat", "dog"):
            (tmp_path / "x" / cls).mkdir()
            (tmp_path / "x" / cls / "a.jpg").write_bytes(b"j")
        (tmp_path / "x" / "export.json").write_text("{}")
    with claim(tmp_path / "x", "export", overwrite=True):
        assert sorted(p.name for p in (tmp_path / "x").iterdir() if not p.name.startswith(".")) == []


def test_overwriting_an_experiment_sub_run_removes_its_run_files(tmp_path):
    with claim(tmp_path / "t", "transfer"):
        with claim(tmp_path / "t" / "context", "transfer"):
            for name in ("metrics.jsonl", "last.pt", "best.pt", "curves.png"):
                (tmp_path / "t" / "context" / name).write_bytes(b"x")
    with claim(tmp_path / "t" / "context", "transfer", overwrite=True):
        assert sorted(p.name for p in (tmp_path / "t" / "context").iterdir()) == [LOCK, LOCK + ".json", MARKER]
