"""Result tables for the terminal and for Markdown reports (percentages, with 95% intervals where there are some),
shared by every command that reports (eval, compare, transfer, distill, fuse), and the report of an experiment's
training runs side by side (transfer, distill).

    cells = metric_cells(summary, ks)          # {"top-1": "22.0 [19.1, 25.0]", ...} of a summarize()-layout dict
    print(format_table(by_metric({"model": cells, "prior": ...}), ["model", "prior"]))
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from scenectl import metrics
from scenectl.checkpoint import Checkpoint, SampleSet, optimistic_note
from scenectl.config import provenance
from scenectl.io import file_sha256, write_bytes_atomic, write_json_atomic


def pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}"


def pct_ci(x, ci=None) -> str:
    """A percentage with its interval, "22.0 [19.1, 25.0]" (the value alone without one)."""
    if ci is None or x is None:
        return pct(x).strip()
    return f"{pct(x).strip()} [{pct(ci[0]).strip()}, {pct(ci[1]).strip()}]"


def signed_ci(d: dict | None) -> str:
    """A paired difference {"difference", "ci", "verdict"} in percentage points: "+2.1 [-0.5, +4.7] inconclusive"."""
    if not d:
        return "—"
    text = f"{100 * d['difference']:+.1f}"
    if d.get("ci") is not None:
        text += f" [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}] {d['verdict']}"
    return text


def _cell(v) -> str:
    return v if isinstance(v, str) else pct(v)


def format_table(rows: dict[str, dict], columns: list[str], markdown: bool = False) -> str:
    """A fixed-width (terminal) or Markdown table; rows = name → {column: fraction or text} (fractions shown as
    percentages, missing cells as —)."""
    cells = [[name] + [_cell(r.get(c)) for c in columns] for name, r in rows.items()]
    head = ["", *columns]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(str(r[i])) for r in [head, *cells]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), "-" * len(fmt(head)), *map(fmt, cells)])


def flat(summary: dict, ks: list[int], suffix: str = "") -> dict[str, object]:
    """summarize()'s nested layout (or its `_ci` twins with suffix="_ci") -> {"top-1": ..., "bal top-1": ...,
    "plaus@10": ...}; missing entries are None. Keys may be ints or (read back from JSON) strings."""
    def get(group: str, k: int):
        g = summary.get(group + suffix) or {}
        return g.get(k, g.get(str(k)))

    out = {f"top-{k}": get("topk", k) for k in ks}
    out.update({f"bal top-{k}": get("topk_balanced", k) for k in ks})
    out["plaus@10"] = summary.get("plausibility@10" + suffix)
    return out


def outside_interval(summary: dict, ks: list[int]) -> list[str]:
    """The metrics of a summarize()-layout dict whose point estimate lies outside its own interval (by more than
    float32 rounding of the resampled sums: 1e-6, far below the 0.1 points shown)."""
    values, cis = flat(summary, ks), flat(summary, ks, "_ci")
    return [m for m, v in values.items() if v is not None and cis[m] is not None
            and not cis[m][0] - 1e-6 <= v <= cis[m][1] + 1e-6]


def metric_cells(summary: dict, ks: list[int]) -> dict[str, str]:
    """{metric: "value [lo, hi]"} of one summarize()-layout dict (intervals where it has `_ci` keys)."""
    values, cis = flat(summary, ks), flat(summary, ks, "_ci")
    return {m: pct_ci(values[m], cis[m]) for m in values}


def with_super_rows(rows: dict[str, dict[str, str]], summaries: dict[str, dict]) -> dict[str, dict[str, str]]:
    """by_metric's rows with the supercategory top-k rows of each column's summary added below: "super top-k" ->
    "value [lo, hi]" (metrics.supercategory_fields; none without supercategories)."""
    for c, s in summaries.items():
        values, cis = s.get("supercategory_topk") or {}, s.get("supercategory_topk_ci") or {}
        for k, v in values.items():
            rows.setdefault(f"super top-{k}", {})[c] = pct_ci(v, cis.get(k, cis.get(str(k))))
    return rows


def difference_cells(diffs: dict, ks: list[int]) -> dict[str, str]:
    """{metric: "+2.1 [-0.5, +4.7] inconclusive"} of a nested paired-difference dict (metrics.nest layout)."""
    return {m: signed_ci(d) for m, d in flat(diffs, ks).items()}


def bootstrap_text(b: dict, also: str = "the instances of one image are resampled together") -> str:
    """How a report's intervals were made, from its `bootstrap` record."""
    if not b["resamples"]:
        return "no intervals (--bootstrap 0)"
    return (f"[lo, hi] = 95 % percentile-bootstrap interval, {b['resamples']} resamples of the {b['images']} images "
            f"(seed {b['seed']}; {also})")


def provenance_record(checkpoints: list[str | Path], data, n) -> dict:
    """The one shape of a report's `provenance`: scenectl's version and git commit (None outside a checkout), each
    checkpoint's path and sha256, the data as the command fingerprints it, and n."""
    prov = provenance()
    return {"scenectl": prov["version"], "git_commit": prov.get("git_commit"),
            "checkpoints": [{"path": str(c), "sha256": file_sha256(c)} for c in checkpoints], "data": data, "n": n}


def report_provenance(checkpoints: list[str | Path], data: list[SampleSet]) -> dict:
    """A report of checkpoints scored on shard sets: each set's location and fingerprint, n the samples scored."""
    return provenance_record(checkpoints, [asdict(d) for d in data], sum(d.n or 0 for d in data))


def what_was_scored(ckpt: Checkpoint, shard_sets: list, outs: list) -> dict:
    """A checkpoint scored on shard sets (eval, compare; `outs`: inference.Outputs, one per set): the report's
    provenance and its selection record, whether the checkpoint was selected on the samples scored (then the report
    is marked optimistic)."""
    scored = [SampleSet.of(ss.location, ss.manifest, o.keys) for ss, o in zip(shard_sets, outs)]
    note = optimistic_note(ckpt.path, ckpt.selected_on, scored)
    return {"provenance": report_provenance([ckpt.path], scored),
            "selection": {"selected_on": asdict(ckpt.selected_on) if ckpt.selected_on else None,
                          "optimistic": note is not None, "note": note}}


def figure_source(prov: dict) -> dict:
    """plots.source's arguments from a report_provenance record: the checkpoint(s), data set(s) and n."""
    ckpts = prov["checkpoints"]
    return {"checkpoint": ", ".join(c["path"] for c in ckpts) or None,
            "sha256": ckpts[0]["sha256"] if len(ckpts) == 1 else None,
            "data": ", ".join(dict.fromkeys(d["location"] for d in prov["data"])) or None, "n": prov["n"]}


def jsonable(x):
    """A report as JSON takes it: int keys (k of top-k) -> str, recursively."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [jsonable(v) for v in x]
    return x


def by_metric(columns: dict[str, dict[str, str]], ks: list[int]) -> dict[str, dict[str, str]]:
    """Transpose {column: {metric: cell}} into table rows {metric: {column: cell}} in metric order."""
    return {m: {c: cells[m] for c, cells in columns.items() if m in cells} for m in metrics.metric_names(ks)}


# --- an experiment's runs side by side (transfer, distill: each run's last validation, inference.validate) -------
RUN_COLUMNS = {"top-1": "val_top1", "top-5": "val_top5", "bal top-1": "val_bal_top1", "bal top-5": "val_bal_top5"}


def runs_table(runs: dict[str, dict], markdown: bool = False) -> str:
    """One row per run: its validation top-1/top-5, micro and class-balanced."""
    rows = {name: {col: r[key] for col, key in RUN_COLUMNS.items()} for name, r in runs.items()}
    return format_table(rows, list(RUN_COLUMNS), markdown)


def write_runs_report(out: Path, report: dict, title: str, notes: list[str]) -> None:
    """report.md (beside the experiment's curves.png), then report.json (last: its presence marks a complete
    report)."""
    lines = [f"# {title}", "", *[f"- {n}" for n in notes], "",
             "Validation accuracy (percent) after the same budget; `bal` = class-balanced.", "",
             runs_table(report["runs"], markdown=True), "", "![curves](curves.png)", ""]
    write_bytes_atomic(out / "report.md", ("\n".join(lines) + "\n").encode())
    write_json_atomic(out / "report.json", {**report, "provenance": runs_provenance(report)})


def runs_provenance(report: dict) -> dict:
    """What a transfer or distill report is of: scenectl's version and commit, the context checkpoint (transfer's
    `checkpoint`, distill's `teacher`) with its sha256, the training and validation data as given, and n (each
    run's validation samples)."""
    ckpt = report.get("checkpoint") or report.get("teacher")
    data = {k: report[k] for k in ("train", "val", "shards", "val_shards") if isinstance(report.get(k), str)}
    return provenance_record([ckpt] if ckpt and Path(ckpt).is_file() else [], data,
                             {name: r.get("val_samples") for name, r in report.get("runs", {}).items()})


def runs_summary(report: dict) -> str:
    """What the CLI prints after transfer or distill: the runs table and where the files are."""
    return "\n".join([runs_table(report["runs"]), f"wrote {report['out']}/{{report.json, report.md, curves.png, "
                                                   f"{', '.join(report['runs'])}/}}"])
