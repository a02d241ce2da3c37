"""Result tables for the terminal and for Markdown reports (percentages), shared by every command that reports."""

from __future__ import annotations

import math


def pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}"


def format_table(rows: dict[str, dict], columns: list[str], markdown: bool = False) -> str:
    """A fixed-width (terminal) or Markdown table of percentages; rows = name → {column: fraction}."""
    cells = [[name] + [pct(r.get(c)) for c in columns] for name, r in rows.items()]
    head = ["", *columns]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(str(r[i])) for r in [head, *cells]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head), "-" * len(fmt(head)), *map(fmt, cells)])
