"""What `scenectl rescore` writes for people: report.md, delta_ap.png (per-class AP changes) and changed.png (a
contact sheet of boxes whose label or rank the context changed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from scenectl import plots
from scenectl.boxap import METRICS
from scenectl.io import write_bytes_atomic

SHOWN = 15  # largest gains and largest losses on the per-class plot, each


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def class_changes(ev: dict) -> list[tuple[str, float]]:
    """[(class, after - before AP)] of every class with ground truth on the evaluation images, largest first."""
    b, a = ev["before"]["per_class"], ev["after"]["per_class"]
    out = [(n, a[n] - b[n]) for n in b if b[n] is not None and a.get(n) is not None]
    return sorted(out, key=lambda t: (-t[1], t[0]))


@plots.styled
def plot_class_changes(changes: list[tuple[str, float]], path: Path, title: str) -> None:
    """Horizontal bars of per-class ΔAP (AP points), the SHOWN largest gains and losses, each labelled."""
    shown = changes if len(changes) <= 2 * SHOWN else changes[:SHOWN] + changes[-SHOWN:]
    names, vals = [n for n, _ in shown], [100 * d for _, d in shown]
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, plots.CELL_IN * 1.6 * len(names) + 1.2)), layout="constrained")
    y = np.arange(len(names))[::-1]
    ax.barh(y, vals, color=["tab:green" if v > 0 else "tab:red" for v in vals])
    for yi, v in zip(y, vals):
        ax.text(v, yi, f" {v:+.1f} ", va="center", ha="left" if v >= 0 else "right", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, names)
    lim = max([abs(v) for v in vals] + [1e-3]) * 1.35
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("AP after − AP before (points)")
    ax.set_ylabel("class")
    ax.set_title(title)
    plots.save(fig, path)


def write(out: Path, rep: dict, sheet: list[dict]) -> None:
    ev = rep["evaluation"]
    changes = class_changes(ev)
    kept = "" if len(changes) <= 2 * SHOWN else f", the {SHOWN} largest gains and losses of {len(changes)} classes"
    plot_class_changes(changes, out / "delta_ap.png",
                       f"per-class ΔAP on {ev['images']} evaluation images (w = {rep['w']}{kept})")
    if sheet:
        plots.plot_contact_sheet(sheet, out / "changed.png",
                                 f"{len(sheet)} boxes whose label or rank the context changed (before -> after: "
                                 "class, score, rank in its image); outline: the hidden box")
    write_bytes_atomic(out / "report.md", ("\n".join(markdown(rep, changes, bool(sheet))) + "\n").encode())


def markdown(rep: dict, changes: list[tuple[str, float]], sheet: bool) -> list[str]:
    ev, rows, sp = rep["evaluation"], rep["rows"], rep["split"]
    ci = ev["delta_AP_ci"]
    ci_txt = f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]" if ci else "(no bootstrap)"
    lines = ["# rescore: detector × context model", "",
             f"- detections `{rep['detections_file']}`: {rows['read']} rows read, {rows['kept']} kept, skipped "
             f"{rows['skipped'] or 'none'}; {rows['relabel_rows']} relabel rows added (--relabel {rep['relabel']})",
             f"- context model `{rep['checkpoint']}`; boxes hidden as its training shards: "
             f"{', '.join(f'{k} {v}' for k, v in rep['hiding'].items() if k != 'source')} ({rep['hiding']['source']})",
             f"- score' = score · (p_ctx(c) / prior(c))^w, prior: {rep['prior']}",
             f"- w = {rep['w']}, chosen on: {rep['w_chosen_on']} "
             f"({len(sp['calibration_image_ids'])} calibration images, seed {sp['seed']}); "
             f"reported on the other {ev['images']} images only", ""]
    if rep["weight_curve"]:
        lines += ["| w | calibration AP |", "|---:|---:|"]
        lines += [f"| {r['w']} | {_pct(r['AP'])} |" for r in rep["weight_curve"]] + [""]
    lines += [f"## COCOeval (bbox) on the {ev['images']} evaluation images ({ev['detections']} detections)", "",
              "| | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for name in ("before", "after"):
        lines.append(f"| {name} | " + " | ".join(_pct(ev[name][m]) for m in METRICS) + " |")
    lines.append("| Δ | " + " | ".join("—" if ev["delta"][m] is None else f"{100 * ev['delta'][m]:+.2f}"
                                      for m in METRICS) + " |")
    lines += ["", f"ΔAP {100 * (ev['delta']['AP'] or 0):+.2f} points, 95% interval {ci_txt} "
                  f"({ev['bootstrap']} image resamples): **{ev['verdict'] or 'no interval'}** "
                  "(an interval holding 0 is inconclusive).", ""]
    if changes:
        lines += ["Largest per-class changes (AP points): "
                  + ", ".join(f"{n} {100 * d:+.1f}" for n, d in changes[:5]) + " … "
                  + ", ".join(f"{n} {100 * d:+.1f}" for n, d in changes[-5:]), "", "![per-class ΔAP](delta_ap.png)", ""]
    if sheet:
        lines += ["![changed boxes](changed.png)", ""]
    lines.append(f"Context model speed: {rep['speed']['detections_per_s']:.1f} detections/s on {rep['speed']['device']}.")
    return lines
