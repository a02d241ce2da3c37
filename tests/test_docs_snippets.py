"""The docs' copy-paste snippets run as written: each test extracts the fenced Python blocks of one doc section
from the doc itself (so a doc and its test cannot drift) and runs them in a folder laid out as the README's chain
leaves it (shards/val2017, runs/train/last.pt). Also: lists of commands in the docs against the commands' --help."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from scenectl.cli import app
from scenectl.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def python_blocks(doc: str, section: str) -> list[str]:
    """The ```python blocks of the `## section` of docs/`doc` (up to the next `## ` heading)."""
    text = (ROOT / "docs" / doc).read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end >= 0 else len(text)]
    blocks = re.findall(r"```python\n(.*?)```", body, re.S)
    assert blocks, f"no python block in docs/{doc} '{section}'"
    return blocks


def run_blocks(blocks: list[str], folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    for i, code in enumerate(blocks):
        path = folder / f"snippet{i}.py"
        path.write_text(code)
        runpy.run_path(str(path), run_name="__main__")  # an assert in a snippet fails the test


@pytest.fixture(scope="module")
def chain(synthetic_shards, tmp_path_factory) -> Path:
    """A folder as the README's chain leaves it: shards/val2017 and a briefly trained runs/train/last.pt."""
    d = tmp_path_factory.mktemp("chain")
    (d / "shards").mkdir()
    (d / "shards" / "val2017").symlink_to(synthetic_shards["val"])
    train(TrainConfig(shards=str(synthetic_shards["train"]), val_shards=str(synthetic_shards["val"]),
                      out=str(d / "runs" / "train"), epochs=1, steps_per_epoch=1, batch_size=4, workers=0,
                      device="cpu", image_size=32, log_every=0, checkpoint_every=0, shuffle_buffer=16))
    return d


def test_shard_format_snippets_read_the_shards_with_webdataset_and_timm(chain, monkeypatch, capsys):
    pytest.importorskip("timm")  # the dev extra
    blocks = python_blocks("shard-format.md", "Reading the shards without scenectl")
    assert len(blocks) == 2
    run_blocks(blocks, chain, monkeypatch)
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\(\d+, \d+\) \(\d+, \d+\) \d+ \S.*", out[0]), out  # RGB image, one-channel mask
    classes = len(json.loads((chain / "shards" / "val2017" / "manifest.json").read_text())["classes"])
    assert re.fullmatch(rf"torch.Size\(\[8, 4, \d+, \d+\]\) torch.Size\(\[8, {classes}\]\)", out[1]), out


def test_models_snippet_loads_a_checkpoint_into_torchvision_and_timm(chain, monkeypatch):
    pytest.importorskip("timm")
    run_blocks(python_blocks("models.md", "Loading a scenectl ResNet checkpoint into torchvision or timm"), chain,
               monkeypatch)


@pytest.mark.slow
def test_training_md_names_every_command_that_takes_the_remote_read_options():
    text = (ROOT / "docs" / "training.md").read_text()
    sentence = text[text.index("every command that reads shard sets also takes the options:"):]
    sentence = sentence[:sentence.index("(the list")]
    listed = set(re.findall(r"`([a-z-]+)`", sentence))
    takes = {name for name in typer.main.get_command(app).commands
             if "--retries" in runner.invoke(app, [name, "--help"]).output}
    assert listed == takes
