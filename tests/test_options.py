"""Every numeric option of every command has a stated range that the command enforces (issue 12), and every option
that several commands share keeps one meaning, listed in docs/options.md (issue 16).

The tests read each command's --help as a user would: a numeric option (metavar int/float) must state
"Range: [lo, hi]." there, and every value outside it (below, above, nan, inf, huge) must be refused while parsing,
in one `error:` line naming the option, exit status 2, with nothing created. The same ranges (scenectl.options.RANGES)
hold for a config file (--config) and for a config built in Python.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest
import typer

from scenectl.cli import app
from scenectl.config import EvalConfig, TrainConfig, check, load_config
from scenectl.errors import ScenectlError
from scenectl.options import RANGES

CLI = typer.main.get_command(app)  # built once: each case below is a parse, a few milliseconds
COMMANDS = sorted(CLI.commands)
DOC = Path(__file__).resolve().parents[1] / "docs" / "options.md"


def run(argv: list[str]) -> tuple[int, str]:
    """(exit status, stdout + stderr) of `scenectl ARGV`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            CLI.main(args=[str(a) for a in argv], prog_name="scenectl")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue()


def help_options(command: str) -> dict[str, tuple[str, str]]:
    """{--flag: (its names and metavar, its whole --help entry on one line)} for every option of `scenectl COMMAND
    --help`."""
    code, text = run([command, "--help"])
    assert code == 0, text
    entries: list[list[str]] = []
    for line in text.split("\nOptions:\n", 1)[1].splitlines():
        if re.match(r"^  -", line):
            entries.append([re.split(r"\s{2,}", line.strip())[0], line.strip()])
        elif entries:
            entries[-1][1] += " " + line.strip()
    return {f: (head, entry) for head, entry in entries for f in re.findall(r"(--[a-z][\w-]*)", head)}


NUMERIC = re.compile(r"<(?:list\[)?(int|float)\]?>|\b(INTEGER|FLOAT)\b")
RANGE = re.compile(r"Range: ([\[(])(\S+), (\S+?)([\])])\.")


def numeric_options(command: str) -> list[tuple[str, bool, tuple]]:
    """[(--flag, is an integer, (lo, hi, lo open, hi open))] of the numeric options in `command`'s --help."""
    out = []
    for f, (head, entry) in help_options(command).items():
        m = NUMERIC.search(head)
        if m is None:
            continue
        r = RANGE.search(entry)
        assert r, f"scenectl {command} {f}: --help states no range: {entry}"
        out.append((f, (m[1] or m[2]).lower() in ("int", "integer"),
                    (float(r[2]), float(r[3]), r[1] == "(", r[4] == ")")))
    return out


def bad_values(integer: bool, rng: tuple) -> list[str]:
    """Values outside the range: below, at an open end, above, nan, inf, -inf and huge."""
    lo, hi, lo_open, hi_open = rng
    vals = ["nan", "inf", "-inf"]
    if integer:
        vals += [str(int(lo) - 1), str(10**30)] + ([str(int(hi) + 1)] if math.isfinite(hi) else [])
        vals += ["-1"] if lo >= 0 else []
    else:
        vals += [repr(lo) if lo_open else repr(lo - 1), "1e400"]
        vals += [repr(hi) if hi_open else repr(hi * 2 + 1)] if math.isfinite(hi) else []
        vals += ["-1e30"] + (["0"] if lo > 0 or lo_open else [])
    return vals


# what each command needs besides the option under test to get past parsing; OUT is where it would write
def base_argv(command: str, out: Path) -> list:
    return {
        "compare": ["compare", "a/eval", "b/eval", "--out", out],
        "cooccurrence": ["cooccurrence", "shards/train2017", "--out", out / "c.png"],
        "export-imagefolder": ["export-imagefolder", "shards/val2017", out],
        "fuse": ["fuse", "--object", "o.pt", "--out", out],
        "build-ooc": ["build-ooc", "--coco-root", "coco", "--train-cooccurrence", "c.h5", "--out", out],
        "inspect-shards": ["inspect-shards", "shards/val2017", "--out", out / "s.png"],
        "merge-manifests": ["merge-manifests", out],
        "predict": ["predict", "image.jpg", "--box", "1,1,2,2", "--out", out / "p.png"],
        "verify-shards": ["verify-shards", "shards/val2017"],
    }.get(command, [command, "--out", out])


def test_every_command_lists_its_options_and_the_parser_finds_them():
    assert len(COMMANDS) == 17
    assert {"--seed", "--workers", "--image-size"} <= set(help_options("build-shards"))
    assert [f for f, *_ in numeric_options("predict")] == ["--margin", "--top", "--seed"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_numeric_option_refuses_values_out_of_its_range(command, tmp_path):
    out = tmp_path / "made" / "out"
    for f, integer, rng in numeric_options(command):
        for value in bad_values(integer, rng):
            code, text = run(base_argv(command, out) + [f, value])
            lines = text.strip().splitlines()
            assert code == 2 and len(lines) == 1, (command, f, value, text)
            assert lines[0].startswith(f"error: scenectl {command}: ") and f in lines[0], (command, f, value, text)
            assert "Traceback" not in text and not (tmp_path / "made").exists(), (command, f, value)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_range_in_help_is_the_declared_one_and_its_ends_are_accepted(command):
    """--help states scenectl.options.RANGES (one range per option name), and both ends parse (the refusals above
    are refusals of the values, not of the option)."""
    for f, integer, rng in numeric_options(command):
        declared = RANGES[f[2:].replace("-", "_")]
        assert (declared.lo, declared.hi, declared.lo_open, declared.hi_open, declared.integer) == (*rng, integer), f
        for end, is_open in ((rng[0], rng[2]), (rng[1], rng[3])):
            if not is_open:
                value = str(int(end)) if integer else repr(end)
                assert declared.problem(int(end) if integer else end) is None, (f, value)


def test_hidden_numeric_options_have_ranges_too():
    hidden = [p for p in CLI.commands["quickstart"].params if getattr(p, "hidden", False)]
    assert {p.name for p in hidden} == {"train_images", "val_images", "batch_size"}
    for p in hidden:
        code, text = run(["quickstart", f"--{p.name.replace('_', '-')}", "0"])
        assert code == 2 and "must be an integer from 1" in text, text


# --- one meaning per option name: docs/options.md lists every shared option ------------------------------------------

def shared_options() -> dict[str, list[str]]:
    """{--flag: the commands whose --help lists it} for every option of two or more commands."""
    uses: dict[str, list[str]] = {}
    for command in COMMANDS:
        for f in help_options(command):
            if f != "--help" and not f.startswith("--no-"):
                uses.setdefault(f, []).append(command)
    return {f: cs for f, cs in uses.items() if len(cs) > 1}


def documented() -> dict[str, list[str]]:
    """{--flag: commands} from the table of docs/options.md (rows `| `--flag` | commands | meaning |`)."""
    table = DOC.read_text().split("## Options that several commands share", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(--[\w-]+)` \| ([^|]+) \|", table, flags=re.M)
    return {f: sorted(c.strip() for c in cmds.split(",")) for f, cmds in rows}


def test_docs_options_table_lists_every_shared_option_and_its_commands():
    want = {f: sorted(cs) for f, cs in shared_options().items()}
    rows = "\n".join(f"| `{f}` | {', '.join(cs)} | ... |" for f, cs in sorted(want.items()))
    assert documented() == want, f"docs/options.md is out of date; its rows should name:\n{rows}"


def test_docs_range_table_is_the_declared_one():
    table = DOC.read_text().split("## The range of every numeric option", 1)[1]
    rows = dict(re.findall(r"^\| `(--[\w-]+)` \| ([\[(]\S+, \S+?[\])])", table, flags=re.M))
    want = {"--" + n.replace("_", "-"): r.interval() for n, r in RANGES.items()}
    assert rows == want


def test_workers_means_the_same_everywhere():
    """0 is the main process in every command (build-shards once took 0 for all cores)."""
    for command in shared_options()["--workers"]:
        entry = help_options(command)["--workers"][1]
        assert "0: " in entry and "main process" in entry, (command, entry)
    assert "one per core" in help_options("build-shards")["--workers"][1]


# --- the same ranges for config files and for configs built in Python ----------------------------------------------

@pytest.mark.parametrize("content, text", [
    ({"loop": {"seed": -1}}, "option 'loop.seed' must be an integer from 0 to 4294967295, got -1"),
    ({"optim": {"lr": float("nan")}}, "option 'optim.lr' must be in (0, inf), got nan"),
    ({"data": {"image_size": 10**9}}, "option 'data.image_size' must be an integer from 8 to 4096"),
    ({"epochs": 0}, "option 'epochs' must be an integer from 1"),
])
def test_a_config_file_is_range_checked_when_read(content, text, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))  # (json writes nan as NaN, which Python's reader accepts)
    with pytest.raises(ScenectlError, match=re.escape(text)):
        load_config(TrainConfig, path)


def test_configs_built_in_python_are_range_checked():
    from scenectl.config import CompareConfig, CooccurrenceConfig, FuseConfig, PredictConfig
    from scenectl.data.configs import OOCConfig
    from scenectl.data.shards import BuildConfig
    from scenectl.data.synthetic import SampleConfig
    from scenectl.data.verify import VerifyConfig
    from scenectl.quickstart import QuickstartConfig

    for cfg, text in [(BuildConfig(image_size=-1), "--image-size"), (BuildConfig(seed=2**32), "--seed"),
                      (BuildConfig(maxsize=float("inf")), "--maxsize"), (EvalConfig(bootstrap=-1), "--bootstrap"),
                      (EvalConfig(timeout=float("nan")), "--timeout"),
                      (FuseConfig(weights=[float("nan")]), "--weight"),
                      (CompareConfig(topk=[0]), "--topk"), (OOCConfig(margin=-1), "--margin"),
                      (PredictConfig(top=0), "--top"), (CooccurrenceConfig(min_count=0), "--min-count"),
                      (QuickstartConfig(epochs=0), "--epochs"), (SampleConfig(n_train=0), "--train-images"),
                      (VerifyConfig(workers=-1), "--workers")]:
        with pytest.raises(ScenectlError, match=f"^{text} must be"):
            cfg.check()
    with pytest.raises(ScenectlError, match="^--shuffle-buffer must be"):
        check(TrainConfig(shuffle_buffer=0))


# --- one mechanism: every option is a config field, made into a command line option by scenectl/cli/_config.py -------

def test_only_the_generator_writes_options():
    """No command module declares an option by hand: each is a field of its command's config (issue 21)."""
    cli = Path(__file__).resolve().parents[1] / "scenectl" / "cli"
    by_hand = [f"{p.name}: {line.strip()}" for p in sorted(cli.glob("*.py")) if p.name != "_config.py"
               for line in p.read_text().splitlines() if re.search(r"typer\.(Option|Argument)\(", line)]
    assert by_hand == []


def test_config_file_works_for_a_command_that_had_none(tmp_path):
    """sample had no --config: the file's options are used, those typed override them, ranges hold for both."""
    out = tmp_path / "scenes"
    path = tmp_path / "options.json"
    path.write_text(json.dumps({"out": str(out), "n_train": 3, "n_val": 2, "seed": 1}))
    code, text = run(["sample", "--config", path, "--val-images", "1"])
    assert code == 0, text
    assert "train2017: 3 images" in text and "val2017: 1 images" in text, text
    written = json.loads((out / "config.json").read_text())
    assert (written["n_train"], written["n_val"], written["seed"]) == (3, 1, 1)
    path.write_text(json.dumps({"n_train": 0}))
    code, text = run(["sample", "--config", path])
    assert code == 2 and "option 'n_train' must be an integer from 1" in text, text


def test_environment_values_are_checked_by_the_same_ranges(monkeypatch):
    from scenectl.data.remote import Net

    monkeypatch.setenv("SCENECTL_TIMEOUT", "0")
    with pytest.raises(ScenectlError, match=re.escape(f"$SCENECTL_TIMEOUT {RANGES['timeout'].problem(0.0)}")):
        Net().options()
    monkeypatch.setenv("SCENECTL_TIMEOUT", "30")
    assert Net().options().timeout == 30.0 and Net(timeout=5).options().timeout == 5
