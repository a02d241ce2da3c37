"""Progress of every long loop, one mechanism: tqdm bars on a terminal, plain log lines anywhere else.

    for shard in progress(jobs, desc="verify val2017", unit="shard"):      # total: len(jobs)
        ...
    bar = progress(desc="build-shards train2017", total=len(ids), unit="img")   # .update(n), .close()

When standard error is a terminal this is tqdm's own bar. When it is not (a cluster job, `2> log`, a pipe) the same
object writes one line every `interval` seconds (30 by default) and one at the end, each ended by a newline and
never a carriage return, so a redirected log reads top to bottom:

    2026-12-06 02:41:07 eval val2017: 1200/4096 samples (29%), 310 samples/s, ETA 9 s
    2026-12-06 02:41:11 eval val2017: 4096/4096 samples (100%), 305 samples/s, done in 13 s

With a known total (pass `total=`: a manifest's sample count, a list's length) the line has the share done and an
ETA; without one, the count and the rate. `SCENECTL_PROGRESS=bar|log|off` forces a style; `SCENECTL_PROGRESS_EVERY`
sets the seconds between log lines. `write(msg)` prints a message between bars (tqdm.write) without breaking them;
`note(msg)` does so with the time in front, as the log lines have it (a run's start-up summary and epoch lines).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, TextIO

from tqdm import tqdm

from scenectl.errors import ScenectlError
from scenectl.options import Range

STYLE_ENV = "SCENECTL_PROGRESS"  # bar | log | off; unset: bar on a terminal, log otherwise
EVERY_ENV = "SCENECTL_PROGRESS_EVERY"  # seconds between log lines
DEFAULT_EVERY = 30.0
EVERY_RANGE = Range(0, 86400, integer=False)  # checked as an option's environment value is (scenectl.options)


def duration(seconds: float) -> str:
    """`9 s`, `4 min 05 s`, `2 h 07 min`: short enough for a log line, exact enough for an ETA."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def log_line(desc: str, n: float, total: float | None, unit: str, elapsed: float, rate: float | None,
             postfix: str = "", done: bool = False) -> str:
    """One progress line: `desc: n/total unit (pct%), rate unit/s, ETA t` (at the end `done in t`, or `stopped after t`
    when a known total was not reached: an error or a signal ended the work, and the line must not say it finished)."""
    n_txt = f"{n:g}/{total:g} {unit} ({100 * n / total:.0f}%)" if total else f"{n:g} {unit}"
    parts = [f"{desc}: {n_txt}" if desc else n_txt]
    if rate:
        parts.append(f"{rate:.3g} {unit}/s" if rate < 100 else f"{rate:.0f} {unit}/s")
    if done:
        parts.append(f"stopped after {duration(elapsed)}" if total and n < total else f"done in {duration(elapsed)}")
    elif total and rate:
        parts.append(f"ETA {duration(max(0.0, total - n) / rate)}")
    else:
        parts.append(f"{duration(elapsed)} so far")
    return ", ".join(parts + ([postfix] if postfix else []))


class LogBar(tqdm):
    """tqdm that prints whole lines (every `interval` seconds and at the end) instead of redrawing one: for logs.
    Counting, totals, iteration, `set_postfix` and `tqdm.write` are tqdm's; only the display differs."""

    monitor_interval = 0  # no monitor thread: lines are written from update() and close() only

    def __init__(self, *args, interval: float = DEFAULT_EVERY, **kwargs):
        self._interval = float(interval)
        self._last_line: float | None = None  # time of the last line written
        kwargs.update(mininterval=min(self._interval, 1.0), miniters=1)  # display() itself keeps the pace
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None) -> bool:
        if msg == "" or not hasattr(self, "start_t"):  # tqdm clearing its line, or drawing at start: nothing to say
            return False
        now = self._time()
        final = msg == "final"
        if not final and now - (self._last_line or self.start_t) < self._interval:
            return False
        self._last_line = now
        elapsed = now - self.start_t
        done_here = self.n - self.initial  # a resumed count (tqdm's `initial`): the rate covers this run's items
        rate = done_here / elapsed if elapsed > 0 and done_here > 0 else None
        self.fp.write(f"{timestamp()} " + log_line(self.desc.rstrip(": "), self.n, self.total, self.unit, elapsed,
                                                   rate, self.postfix or "", final) + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if not self.disable and hasattr(self, "start_t"):
            self.display(msg="final")
        self.leave = False  # tqdm would then redraw (leave) or clear its line with '\r': the line is written
        super().close()

    def clear(self, nolock=False) -> None:  # tqdm.write clears bars with '\r': a log has none to clear
        pass


def style(stream: TextIO) -> str:
    """bar, log or off: $SCENECTL_PROGRESS, else bar when `stream` is a terminal and log when it is not."""
    forced = os.environ.get(STYLE_ENV, "").strip().lower()
    if forced:
        if forced not in ("bar", "log", "off"):
            raise ScenectlError(f"${STYLE_ENV} must be bar, log or off, got {forced!r}")
        return forced
    try:
        return "bar" if stream.isatty() else "log"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "log"


def every() -> float:
    """Seconds between log lines: $SCENECTL_PROGRESS_EVERY, else 30."""
    text = os.environ.get(EVERY_ENV, "").strip()
    value = EVERY_RANGE.parse(text) if text else DEFAULT_EVERY
    problem = EVERY_RANGE.problem(value)
    if problem:
        raise ScenectlError(f"${EVERY_ENV} {problem}")
    return value


def progress(iterable: Iterable | None = None, *, desc: str = "", total: float | None = None, unit: str = "it",
             disable: bool = False, file: TextIO | None = None, **kwargs) -> tqdm:
    """A progress counter on standard error (or `file`): a tqdm bar on a terminal, periodic lines elsewhere.
    Wraps `iterable` like tqdm (its len() is the total unless `total` is given), or counts `.update(n)` calls;
    other keyword arguments (initial, leave, position, dynamic_ncols, ...) are tqdm's. Close it (or use `with`)."""
    stream = file if file is not None else sys.stderr
    kind = style(stream)
    cls, extra = (LogBar, {"interval": every()}) if kind == "log" else (tqdm, {})
    return cls(iterable, desc=desc, total=total, unit=unit, disable=disable or kind == "off", file=stream,
               **extra, **kwargs)


def write(message: str, file: TextIO | None = None) -> None:
    """Print a message between progress bars without breaking them (tqdm.write; standard output by default)."""
    tqdm.write(message, file=file)


def timestamp() -> str:
    """The local time in front of every log line: `2026-12-06 02:41:07`."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def note(message: str, file: TextIO | None = None) -> None:
    """`write` with the time in front: a line of a long run's log."""
    write(f"{timestamp()} {message}", file=file)
