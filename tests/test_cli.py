"""The command line every command shares (scenectl/cli/_app.py, _config.py): one-line usage errors, never a
traceback, validation before anything is created (issues 12, 16), and `--config FILE` for build-shards and eval
(issue 14). Option ranges and names are in tests/test_options.py."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import scenectl.cli.build_shards as build_cli
import kit
from scenectl.cli import app
from scenectl.config import EvalConfig, from_command_line
from scenectl.data.loader import open_shard_set
from scenectl.errors import ScenectlError
from scenectl.io import atomic_path

runner = CliRunner()


def invoke(*argv, env=None):
    return runner.invoke(app, [str(a) for a in argv], env=env)


def one_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    return lines[0]


@pytest.fixture(scope="module")
def inputs(synthetic_scenes, synthetic_shards, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("cli-inputs")
    classes = open_shard_set(synthetic_shards["val"]).classes
    return {"scenes": synthetic_scenes, "train": synthetic_shards["train"], "val": synthetic_shards["val"],
            "ctx": kit.checkpoint(d / "ctx.pt", classes, 4,
                                  cooccurrence=open_shard_set(synthetic_shards["train"]).cooccurrence().to_state()),
            "obj": kit.checkpoint(d / "obj.pt", classes, 3),
            "image": next((synthetic_scenes / "val2017").glob("*.jpg"))}


# --- usage errors: one line, exit 2 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, text", [
    (["bogus"], "error: scenectl: No such command 'bogus'"),
    (["eval", "--bogus"], "error: scenectl eval: No such option: --bogus"),
    (["eval", "--batch-size", "many"], "error: scenectl eval: Invalid value for '--batch-size'"),
    (["build-shards", "--image-size", "-5"], "error: scenectl build-shards: --image-size must be an integer from 8"),
    (["train", "--lr", "nan"], "error: scenectl train: --lr must be in (0, inf), got nan"),
    (["verify-shards"], "error: scenectl verify-shards: Missing argument"),
])
def test_usage_errors_are_one_line(argv, text):
    r = invoke(*argv)
    assert r.exit_code == 2 and one_line(r).startswith(text), r.output


def test_help_and_version_still_exit_0():
    assert invoke("--version").exit_code == 0 and invoke("eval", "--help").exit_code == 0
    r = invoke()
    assert "Usage:" in r.output and "build-shards" in r.output  # `scenectl` alone: the help, as click gives it


# --- never a traceback ----------------------------------------------------------------------------------------------

def test_an_unexpected_exception_is_one_line_and_debug_shows_the_traceback(monkeypatch, tmp_path):
    import scenectl.data.synthetic as synthetic

    def broken(*a, **k):
        raise KeyError("scene_type")

    monkeypatch.setattr(synthetic, "generate_scenes", broken)
    r = invoke("sample", "--out", tmp_path / "s")
    line = one_line(r)
    assert r.exit_code == 1 and line.startswith("error: scenectl sample: KeyError: 'scene_type' (unexpected; at ")
    assert "tests/test_cli.py" not in line and "--debug" in line  # where: the innermost scenectl frame, if any
    for argv, env in ((["--debug", "sample"], None), (["sample"], {"SCENECTL_DEBUG": "1"})):
        r = invoke(*argv, "--out", tmp_path / "s", env=env)
        assert r.exit_code == 1 and isinstance(r.exception, KeyError), r.output  # the traceback, not a line
    r = invoke("sample", "--out", tmp_path / "s", env={"SCENECTL_DEBUG": "0"})
    assert r.exit_code == 1 and one_line(r)


def test_an_os_error_names_its_path(monkeypatch, tmp_path):
    import scenectl.data.synthetic as synthetic

    def full(out, **kw):
        with atomic_path(Path(out) / "config.json") as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write() fails: no file named

    monkeypatch.setattr(synthetic, "generate_scenes", full)
    (tmp_path / "s").mkdir()
    r = invoke("sample", "--out", tmp_path / "s")
    assert r.exit_code == 2
    assert one_line(r) == f"error: scenectl sample: No space left on device: {tmp_path / 's' / 'config.json'}"
    assert list((tmp_path / "s").iterdir()) == []  # and the temporary file is gone


# --- --workers: 0 is the main process everywhere; build-shards uses every core by default ------------------------

def test_build_shards_workers_default_is_every_core_and_0_the_main_process(monkeypatch, tmp_path, inputs):
    seen = []
    monkeypatch.setattr(build_cli, "build_shards", lambda cfg, echo: seen.append(cfg.workers) or {})
    monkeypatch.setattr(build_cli, "summary", lambda manifest, out: "built")
    base = ["build-shards", "--coco-root", inputs["scenes"], "--split", "val2017", "--out", tmp_path / "o"]
    for extra, want in (([], None), (["--workers", "0"], 0), (["--workers", "3"], 3)):
        assert invoke(*base, *extra).exit_code == 0
        assert seen.pop() == want
    from scenectl.data import shards

    assert shards.BuildConfig().workers is None  # None: one process per core (_write_samples)


# --- validate before creating: a refused run leaves nothing behind ---------------------------------------------------

def _cases(i: dict, tmp: Path, out: Path) -> dict[str, list]:
    """command -> argv with one bad option or input that only the command (not the parser) can find out."""
    missing = tmp / "missing"
    return {
        "quickstart": ["quickstart", "--out", out, "--coco-root", i["scenes"], "--arch", "nosuch", "--device", "cpu"],
        "sample": ["sample", "--out", out, "--train-images", "0"],
        "build-shards": ["build-shards", "--coco-root", i["scenes"], "--split", "val2017", "--split", "nosuch",
                         "--out", out / "{split}", "--workers", "0", "--image-size", "32"],
        "build-shards --shape": ["build-shards", "--coco-root", i["scenes"], "--split", "val2017", "--out", out,
                                 "--shape", "hexagon"],
        "merge-manifests": ["merge-manifests", out],
        "inspect-shards": ["inspect-shards", missing, "--out", out / "sheet.png"],
        "verify-shards": ["verify-shards", missing],
        "train": ["train", "--shards", i["train"], "--val-shards", missing, "--out", out, "--device", "cpu",
                  "--workers", "0"],
        "train --arch": ["train", "--shards", i["train"], "--val-shards", i["val"], "--arch", "nosuch", "--out", out,
                         "--device", "cpu", "--workers", "0"],
        "eval": ["eval", "-c", i["ctx"], "--shards", i["val"], "--shards", missing, "--out", out, "--device", "cpu"],
        "compare": ["compare", i["ctx"], missing / "eval", "--shards", i["val"], "--out", out, "--device", "cpu"],
        "predict": ["predict", i["image"], "-c", i["ctx"], "--box", "5000,5000,10,10", "--out", out / "p.png",
                    "--device", "cpu"],
        "rescore": ["rescore", "--detections", missing, "--images", i["scenes"] / "val2017", "--annotations",
                    i["scenes"] / "annotations" / "instances_val2017.json", "-c", i["ctx"], "--out", out,
                    "--device", "cpu"],
        "cooccurrence": ["cooccurrence", i["train"], "--by", "nope", "--out", out / "c.png"],
        "transfer": ["transfer", "-c", i["ctx"], "--train", i["train"], "--val", missing, "--out", out,
                     "--device", "cpu"],
        "distill": ["distill", "--teacher", missing / "t.pt", "--shards", i["train"], "--val-shards", i["val"],
                    "--out", out, "--device", "cpu"],
        "build-ooc": ["build-ooc", "--coco-root", i["scenes"], "--train-cooccurrence", i["train"], "--out", out,
                      "--shape", "hexagon"],
        "fuse": ["fuse", "--context", i["ctx"], "--object", i["obj"], "--shards", i["val"], "--ooc-shards", missing,
                 "--out", out, "--device", "cpu"],
        "export-imagefolder": ["export-imagefolder", i["val"], out, "--member", "nope"],
    }


def test_every_command_has_a_case():
    from scenectl.cli._app import app as the_app
    import typer

    commands = set(typer.main.get_command(the_app).commands)
    assert {c.split()[0] for c in _cases({k: Path(k) for k in ("scenes", "train", "val", "ctx", "obj", "image")},
                                          Path("t"), Path("o"))} == commands


@pytest.mark.parametrize("command", list(_cases({k: Path(k) for k in ("scenes", "train", "val", "ctx", "obj", "image")},
                                                Path("t"), Path("o"))))
def test_a_refused_run_creates_nothing(command, inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output (data/scenes, runs/...) would land here
    argv = _cases(inputs, tmp_path, tmp_path / "made" / "out")[command]
    r = invoke(*argv)
    assert r.exit_code != 0 and one_line(r), (argv, r.output)
    assert not (tmp_path / "made").exists(), (argv, r.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], (argv, list(tmp_path.iterdir()))


# --- --config FILE for build-shards and eval -------------------------------------------------------------------------

def _tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}


@pytest.mark.slow
def test_build_shards_config_rebuilds_the_same_bytes_and_flags_override(inputs, tmp_path):
    first = tmp_path / "first"
    r = invoke("build-shards", "--coco-root", inputs["scenes"], "--split", "val2017", "--out", first, "--workers",
               "0", "--image-size", "32", "--shape", "circle", "--maxcount", "20", "--seed", "3")
    assert r.exit_code == 0, r.output
    again = tmp_path / "again"
    r = invoke("build-shards", "--config", first / "config.json", "--out", again, "--workers", "2")
    assert r.exit_code == 0, r.output
    assert len(_tars(first)) >= 2 and _tars(again) == _tars(first)
    recorded = json.loads((again / "config.json").read_text())
    assert (recorded["seed"], recorded["shape"], recorded["workers"], recorded["out"]) == (3, "circle", 2, str(again))
    other = tmp_path / "other"
    r = invoke("build-shards", "--config", first / "config.json", "--out", other, "--seed", "4", "--workers", "0")
    assert r.exit_code == 0 and _tars(other) != _tars(first), r.output
    assert json.loads((other / "manifest.json").read_text())["params"]["seed"] == 4
    r = invoke("build-shards", "--config", first / "config.json")  # --out from the file: the first build's folder
    assert r.exit_code == 2 and "holds a shard set" in one_line(r)


def _report(folder: Path) -> dict:
    """report.json without what differs between two runs of the same eval: timings and the output folder."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("out", "seconds", "samples_per_s")}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return strip(json.loads((folder / "report.json").read_text()))


@pytest.mark.slow
def test_eval_config_reproduces_the_report(inputs, tmp_path):
    first = tmp_path / "first"
    r = invoke("eval", "-c", inputs["ctx"], "--shards", inputs["val"], "--out", first, "--device", "cpu",
               "--workers", "0", "--bootstrap", "50", "--seed", "5", "--topk", "3", "--max-samples", "40")
    assert r.exit_code == 0, r.output
    again = tmp_path / "again"
    r = invoke("eval", "--config", first / "config.json", "--out", again)
    assert r.exit_code == 0, r.output
    assert _report(again) == _report(first) and _report(first)["n"] == 40
    recorded = json.loads((again / "config.json").read_text())
    assert (recorded["seed"], recorded["topk"], recorded["out"], recorded["overwrite"]) == (5, [3], str(again), False)


@pytest.mark.slow
def test_a_pipe_command_in_a_config_file_is_not_run(inputs, tmp_path):
    made = tmp_path / "ran"
    command = f"pipe:touch {made}; cat {inputs['val']}/shard-000000.tar"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"checkpoint": str(inputs["ctx"]), "shards": [command], "device": "cpu"}))
    r = invoke("eval", "--config", cfg, "--out", tmp_path / "e")
    assert r.exit_code == 2 and "option 'shards' is the command" in one_line(r) and not made.exists()
    cfg.write_text(json.dumps({"data": {"shards": command}}))
    r = invoke("train", "--config", cfg, "--out", tmp_path / "t")
    assert r.exit_code == 2 and "option 'shards' is the command" in one_line(r) and not made.exists()
    cfg.write_text(json.dumps({"coco_root": f"pipe:touch {made}", "split": "val2017"}))
    r = invoke("build-shards", "--config", cfg, "--out", tmp_path / "b")
    assert r.exit_code == 2 and "option 'coco_root' is the command" in one_line(r)
    assert not made.exists() and not (tmp_path / "e").exists() and not (tmp_path / "b").exists()


def test_a_config_files_urls_and_paths_are_data_and_typed_commands_are_honoured(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"shards": ["https://host/val2017/", "shards/val2017"], "mask_only_train": "pipe:x"}))
    with pytest.raises(ScenectlError, match="option 'mask_only_train' is the command 'pipe:x'"):
        from_command_line(EvalConfig, {"mask_only_train": None}, set(), cfg)
    typed = from_command_line(EvalConfig, {"mask_only_train": "pipe:cat a.tar"}, {"mask_only_train"}, cfg)
    assert typed.shards == ["https://host/val2017/", "shards/val2017"] and typed.mask_only_train == "pipe:cat a.tar"


# --- remote-read options reach the shard reader in eval and transfer ---------------------------------------------

@pytest.mark.slow
def test_eval_and_transfer_pass_retries_timeout_backoff_to_the_reader(inputs, monkeypatch, tmp_path):
    import scenectl.data.imagefolder as imagefolder
    import scenectl.data.loader as loader

    seen = []

    def record(spec, net=None, **kw):
        seen.append(net)
        raise ScenectlError("stop here")

    monkeypatch.setattr(loader, "open_shard_set", record)
    monkeypatch.setattr(imagefolder, "open_shard_set", record)
    net = ["--retries", "2", "--timeout", "3.5", "--backoff", "0"]
    r = invoke("eval", "-c", inputs["ctx"], "--shards", inputs["val"], "--out", tmp_path / "e", "--device", "cpu", *net)
    assert r.exit_code == 2 and "stop here" in r.output
    r = invoke("transfer", "-c", inputs["ctx"], "--train", inputs["train"], "--val", inputs["val"], "--out",
               tmp_path / "t", "--device", "cpu", *net)
    assert r.exit_code == 2 and "stop here" in r.output
    assert [(n.retries, n.timeout, n.backoff) for n in seen] == [(2, 3.5, 0.0)] * 2


def test_help_examples_are_never_wrapped_inside_a_command_line():
    """Every example line of every command's --help (an indented paragraph) comes out whole on a narrow terminal,
    so it can be copied and run; prose still wraps."""
    import typer.main

    group = typer.main.get_command(app)
    examples = 0
    for name, cmd in group.commands.items():
        out = runner.invoke(app, [name, "--help"], terminal_width=60).output
        for para in (cmd.help or "").split("\n\n"):
            if para[:1].isspace() and para.strip().startswith(("scenectl ", "torchrun ")):
                examples += 1
                assert para.strip() in out, (name, para)
    assert examples >= 10
    prose = runner.invoke(app, ["build-ooc", "--help"], terminal_width=60).output
    assert max(len(line) for line in prose.splitlines() if line.startswith("  Paste")) <= 60


@pytest.mark.slow
@pytest.mark.parametrize("command,old", [("distill", "--teacher"), ("fuse", "--context")])
def test_the_context_checkpoint_is_checkpoint_in_every_command_and_the_old_names_still_work(command, old, tmp_path):
    missing = tmp_path / "none.pt"
    extra = ["--object", tmp_path / "obj.pt"] if command == "fuse" else []
    lines = {flag: one_line(invoke(command, flag, missing, *extra, "--out", tmp_path / "o", "--device", "cpu"))
             for flag in ("--checkpoint", "-c", old)}
    assert len(set(lines.values())) == 1 and str(missing) in lines["-c"], lines
