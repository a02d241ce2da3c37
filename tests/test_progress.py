"""scenectl.progress: tqdm bars on a terminal, periodic log lines (totals, rate, ETA, never a carriage return) when
standard error is a file; and the commands that take long show their totals through it, in a redirected log."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm
from typer.testing import CliRunner

import kit
from scenectl import progress as P
from scenectl.cli import app
from scenectl.data.loader import open_shard_set
from scenectl.errors import ScenectlError

REPO = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "  # every log line starts with the local time


@pytest.fixture(autouse=True)
def no_style_forced(monkeypatch):
    monkeypatch.delenv(P.STYLE_ENV, raising=False)
    monkeypatch.delenv(P.EVERY_ENV, raising=False)


def test_a_log_gets_whole_lines_with_total_rate_and_eta(monkeypatch):
    monkeypatch.setenv(P.EVERY_ENV, "0")  # a line at every update
    log = io.StringIO()
    with P.progress(desc="eval val2017", total=100, unit="samples", file=log) as bar:
        assert isinstance(bar, P.LogBar)
        bar.update(30)
        bar.set_postfix(loss="0.5")
        bar.update(70)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert re.fullmatch(TIME + r"eval val2017: 30/100 samples \(30%\), [\d.e+]+ samples/s, ETA \d+ s", lines[0]), lines[0]
    assert re.fullmatch(TIME + r"eval val2017: 100/100 samples \(100%\), [\d.e+]+ samples/s, done in \d+ s, loss=0.5",
                        lines[-1]), lines[-1]


def test_work_ended_before_its_total_is_not_called_done(monkeypatch):
    monkeypatch.setenv(P.EVERY_ENV, "3600")
    log = io.StringIO()
    with pytest.raises(RuntimeError):
        with P.progress(desc="run epoch 1/5", total=20, unit="steps", file=log):
            raise RuntimeError("the stream failed")  # before the first step
    assert re.fullmatch(TIME + r"run epoch 1/5: 0/20 steps \(0%\), stopped after \d+ s\n", log.getvalue()), log.getvalue()


def test_lines_come_every_interval_and_at_the_end_only(monkeypatch):
    monkeypatch.setenv(P.EVERY_ENV, "3600")
    log = io.StringIO()
    for _ in P.progress(range(1000), desc="sample train2017", unit="img", file=log):
        pass
    assert log.getvalue().splitlines() == [log.getvalue().strip()]  # one line: the last
    assert re.match(TIME + re.escape("sample train2017: 1000/1000 img (100%)"), log.getvalue())  # the total from len()


def test_without_a_total_the_count_and_rate():
    log = io.StringIO()
    with P.progress(desc="export", unit="img", file=log) as bar:
        bar.update(7)
    assert re.fullmatch(TIME + r"export: 7 img, [\d.e+]+ img/s, done in \d+ s\n", log.getvalue())


def test_a_resumed_count_starts_from_its_initial_value():
    log = io.StringIO()
    bar = P.progress(desc="build-shards train2017", total=10, initial=6, unit="img", file=log)
    bar.update(4)
    bar.close()
    assert re.match(TIME + re.escape("build-shards train2017: 10/10 img (100%)"), log.getvalue())


def test_messages_between_lines_and_a_disabled_counter_write_no_carriage_return(monkeypatch):
    monkeypatch.setenv(P.EVERY_ENV, "0")
    log = io.StringIO()
    bar = P.progress(desc="train", total=4, file=log)
    bar.update(1)
    P.write("epoch 1: loss 0.3", file=log)  # tqdm.write clears bars with '\r' first: not a log's
    tqdm.write("and through tqdm itself", file=log)
    bar.update(3)
    bar.close()
    quiet = P.progress(desc="off", total=3, file=log, disable=True)
    quiet.update(3)
    quiet.close()
    text = log.getvalue()
    assert "\r" not in text and "epoch 1: loss 0.3\n" in text and "off" not in text


def test_a_terminal_gets_tqdms_bar_and_the_environment_can_force_a_style(monkeypatch):
    term = Terminal()
    with P.progress(desc="bar", total=2, file=term) as bar:
        assert type(bar) is tqdm
        bar.update(2)
    assert "\r" in term.getvalue()
    monkeypatch.setenv(P.STYLE_ENV, "log")
    assert isinstance(P.progress(total=1, file=Terminal()), P.LogBar)
    monkeypatch.setenv(P.STYLE_ENV, "off")
    silent = io.StringIO()
    with P.progress(total=1, file=silent) as bar:
        bar.update(1)
    assert silent.getvalue() == ""
    monkeypatch.setenv(P.STYLE_ENV, "fancy")
    with pytest.raises(ScenectlError, match=P.STYLE_ENV):
        P.progress(total=1, file=silent)
    monkeypatch.setenv(P.STYLE_ENV, "log")
    monkeypatch.setenv(P.EVERY_ENV, "soon")
    with pytest.raises(ScenectlError, match=P.EVERY_ENV):
        P.progress(total=1, file=silent)


def test_durations_read_as_words():
    assert [P.duration(s) for s in (0.4, 9, 59.6, 245, 7620)] == ["0 s", "9 s", "1 min 00 s", "4 min 05 s",
                                                                   "2 h 07 min"]


# --- the commands --------------------------------------------------------------------------------------------------
def _total_line(output: str, desc: str, n: int, unit: str) -> bool:
    return re.search(rf"^{TIME}{re.escape(desc)}: {n}/{n} {unit} \(100%\), .*done in", output, re.M) is not None


@pytest.mark.slow
def test_commands_show_totals_and_no_carriage_return_when_not_on_a_terminal(synthetic_shards, tmp_path):
    """CliRunner's standard error is not a terminal: sample, build-shards, verify-, inspect-shards and
    export-imagefolder write log lines with their totals."""
    runner = CliRunner()
    val = synthetic_shards["val"]
    n = open_shard_set(val).num_samples
    runs = {
        "sample": (["sample", "--out", str(tmp_path / "scenes"), "--train-images", "3", "--val-images", "2"],
                   [("sample train2017", 3, "img"), ("sample val2017", 2, "img")]),
        "build-shards": (["build-shards", "--coco-root", str(tmp_path / "scenes"), "--split", "val2017", "--out",
                          str(tmp_path / "b"), "--image-size", "32", "--workers", "1"],
                         [("build-shards val2017", 2, "img")]),
        "verify-shards": (["verify-shards", str(val)], [(f"verify {val.name}", len(list(val.glob("*.tar"))),
                                                         "shards")]),
        "inspect-shards": (["inspect-shards", str(val), "--n", "2", "--out", str(tmp_path / "s.png")],
                           [(f"inspect-shards {val.name}", n, "samples")]),
        "export-imagefolder": (["export-imagefolder", str(val), str(tmp_path / "ex")],
                               [("export-imagefolder ex", n, "img")]),
    }
    for name, (args, expected) in runs.items():
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (name, r.output)
        assert "\r" not in r.output, name
        for desc, total, unit in expected:
            assert _total_line(r.output, desc, total, unit), (name, r.output)


@pytest.mark.slow
def test_a_redirected_eval_log_shows_the_total_and_holds_no_carriage_return(synthetic_shards, tmp_path):
    """`scenectl eval` as a cluster job runs it: standard error to a file."""
    val = open_shard_set(synthetic_shards["val"])
    ckpt = kit.checkpoint(tmp_path / "ctx.pt", val.classes, 4, config={"image_size": 32},
                          cooccurrence=val.cooccurrence().to_state())
    log = tmp_path / "eval.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(P.STYLE_ENV, None)
    with open(log, "wb") as err:
        done = subprocess.run([sys.executable, "-m", "scenectl", "eval", "--checkpoint", str(ckpt), "--shards",
                               str(synthetic_shards["val"]), "--out", str(tmp_path / "eval"), "--no-mask-only",
                               "--bootstrap", "20", "--device", "cpu"], stderr=err, stdout=subprocess.DEVNULL,
                              env=env, cwd=tmp_path, timeout=300)
    text = log.read_bytes().decode()
    assert done.returncode == 0, text
    assert "\r" not in text
    assert _total_line(text, "eval val2017", val.num_samples, "samples"), text


@pytest.mark.slow
def test_training_progress_reads_as_lines_in_a_log(synthetic_shards, tmp_path):
    """The engine's per-epoch counter (train, transfer, distill) goes through the same mechanism."""
    r = CliRunner().invoke(app, ["train", "--shards", str(synthetic_shards["train"]), "--val-shards",
                                 str(synthetic_shards["val"]), "--out", str(tmp_path / "run"), "--epochs", "2",
                                 "--steps-per-epoch", "3", "--batch-size", "8", "--image-size", "32",
                                 "--workers", "0", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output
    for epoch in (1, 2):
        assert _total_line(r.output, f"train epoch {epoch}/2", 3, "steps"), r.output
