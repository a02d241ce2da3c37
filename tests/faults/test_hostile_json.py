"""Hostile JSON (issue 23, class "JSON"): a 5000-digit number, nesting 100000 deep, the wrong top-level type, a
device or a FIFO given as a config, manifest, folder marker or sample metadata. Every one is read by the one reader
(scenectl.io.read_json / parse_json) and ends in one `error:` line naming the file, exit 2 (verify-shards: a
`manifest` problem in its JSON report) -- never "unexpected", never a hang, never memory exhausted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from scenectl.cli import app
from scenectl.errors import ScenectlError
from scenectl.folders import MARKER, claim

runner = CliRunner()
HOSTILE = {
    "long number": '{"format": "scenectl-shards/1", "seed": ' + "1" * 5000 + "}",
    "deep nesting": "[" * 100000 + "]" * 100000,
    "top-level array": "[1, 2]",
}


def _one_line_error(r, *texts):
    assert r.exit_code == 2 and "Traceback" not in r.output and "unexpected" not in r.output, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(t in lines[0] for t in texts), r.output


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_config_files_are_one_line_errors(case, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(HOSTILE[case])
    _one_line_error(runner.invoke(app, ["eval", "--config", str(cfg)]), str(cfg))


@pytest.mark.parametrize("what", ["device", "fifo"])
def test_a_device_or_fifo_config_is_refused_at_once(what, tmp_path):
    path = "/dev/zero" if what == "device" else str(tmp_path / "config.json")
    if what == "fifo":
        os.mkfifo(path)
    r = subprocess.run([sys.executable, "-m", "scenectl", "eval", "--config", path], capture_output=True, text=True,
                       timeout=60)  # the main before this read /dev/zero until out of memory and hung on the FIFO
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert path in r.stderr and "not a regular file" in r.stderr


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifests_are_one_line_errors_and_verify_problems(case, synthetic_shards, tmp_path):
    s = tmp_path / "set"
    shutil.copytree(synthetic_shards["val"], s)
    (s / "manifest.json").write_text(HOSTILE[case])
    _one_line_error(runner.invoke(app, ["inspect-shards", str(s), "--n", "1", "--out", str(tmp_path / "x.png")]),
                    str(s / "manifest.json"))
    r = runner.invoke(app, ["verify-shards", str(s), "--json", "--no-progress"])
    assert r.exit_code == 1, r.output
    report = json.loads(r.output)
    assert not report["ok"] and [p["kind"] for p in report["problems"]] == ["manifest"], report


def test_a_hostile_folder_marker_is_a_one_line_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / MARKER).write_text(HOSTILE["deep nesting"])
    with pytest.raises(ScenectlError, match=f"{MARKER} is damaged"):
        with claim(tmp_path / "r", "run"):
            pass
