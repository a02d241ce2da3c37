"""Opening the bytes of a shard set where the user said they are: a local file, an http(s) URL (the standard
library's HTTP client) or the user's own `pipe:COMMAND`; remote reads survive the network.

    net = net_options(retries=5, timeout=60, backoff=1)   # None: $SCENECTL_RETRIES / _TIMEOUT / _BACKOFF, else these
    with open_stream("https://host/val2017/shard-000003.tar", net) as f:   # a file object, read front to back
        ...
    data = read_remote("https://host/val2017/manifest.json", net, "manifest")

The retry policy (docs/reliability.md, "Network faults"):
- *Transient* faults are retried: a refused or reset connection, a transfer that ends before its Content-Length
  (or a chunked body cut short), no data for `timeout` seconds or fewer than MIN_BYTES_PER_TIMEOUT in `timeout`
  seconds of waiting (a stalled or dripping transfer), HTTP 5xx, 408 and 429, and a
  `pipe:` command that exits with a non-zero status or goes quiet. Before each new attempt the reader waits
  `backoff * 2**k` seconds (k = 0, 1, ... for the failures in a row; at most MAX_WAIT, longer when the server asks
  with Retry-After), then re-opens the source *at the byte already reached*: an HTTP `Range` request guarded by
  `If-Range` (the first answer's ETag or Last-Modified); a 206 answer must start at that byte and give the same total
  length. A server that answers 200 instead (no range support), and a re-run `pipe:` command, are read from the
  start and the bytes already delivered are skipped after checking that they are the same (crc32). The consumer (the
  tar reader) sees one uninterrupted byte stream, so no sample is read twice or lost.
- `retries` counts failures in a row without new data: a transfer that fails again after delivering at least
  MIN_BYTES_PER_TIMEOUT more bytes starts the count afresh, a dead server is given up after `retries` re-tries.
  Redirects are followed only to http(s).
- *Permanent* faults fail at once: HTTP 401, 403, 404 and every other 4xx, a URL that is not valid, a certificate
  that does not verify, a resource that changed between two attempts. The error (RemoteError, one line) names the
  URL, the attempts made and the last cause; the reader's `--skip-corrupt` then skips and counts the shard like a
  corrupt one.

Only URLs the user typed reach here with a scheme: a name read from a file (a manifest's shard list, its `files`)
must pass `plain_name_problem` before it is joined to the set's location. Local files are opened as they are (a
local fault is not transient).
"""

from __future__ import annotations

import http.client
import io
import itertools
import os
import re
import select
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlparse
from urllib.request import url2pathname

import braceexpand

from scenectl.errors import ScenectlError
from scenectl.io import open_regular, read_regular
from scenectl.options import RANGES, Config, option

MAX_WAIT = RANGES["backoff"].hi  # longest wait between two attempts, seconds
MAX_LOCATIONS = 1_000_000  # shards one spec may name (LAION-scale sets have ~10^5); checked before expanding
MIN_BYTES_PER_TIMEOUT = 4096  # fewer bytes than this in --timeout seconds is a stalled transfer (a server dripping)
_NUMERIC_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?\}")
SCHEMES = ("", "file", "http", "https", "pipe")
# a name read from a file (a manifest's shard list): a plain file name of the set's folder
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
DEFAULTS = {"retries": 5, "timeout": 60.0, "backoff": 1.0}
ENV = {"retries": "SCENECTL_RETRIES", "timeout": "SCENECTL_TIMEOUT", "backoff": "SCENECTL_BACKOFF"}


# SIGINT / SIGTERM (a cluster's time limit, Ctrl-C) end this module's waits and stalled reads at once, in DataLoader
# workers and in a main process that reads itself, instead of after --timeout or a backoff of up to MAX_WAIT.
STOP = threading.Event()
_blocking_depth = [0]  # > 0 while a read or a retry wait of this module may block


class Stopped(Exception):
    """Raised by `on_stop_signal` inside a blocking read or wait of this module."""


def on_stop_signal(signum=None, frame=None) -> None:
    """The SIGINT/SIGTERM handler of processes that read shards: mark the stop; a read or retry wait of this module
    that is blocking right now ends with an error (the engine then saves last.pt), later ones refuse to start."""
    STOP.set()
    if _blocking_depth[0]:
        raise Stopped()


@dataclass
class Net(Config):
    """The options of remote reads that every command reading shard sets has (an option group, scenectl.options);
    unset: the environment's ($SCENECTL_RETRIES, ...), else the default. `options()` resolves them where a set is
    opened (and `check_more`, with its config's check, before anything is read)."""

    retries: int | None = option(None, "Re-tries of a remote shard read (http(s), pipe:) after a transient fault, "
                                       f"counted in a row without new data [default: {DEFAULTS['retries']}, or "
                                       f"${ENV['retries']}].")
    timeout: float | None = option(None, "Seconds without data before a stalled remote transfer is abandoned and "
                                         f"retried [default: {DEFAULTS['timeout']:g}, or ${ENV['timeout']}].")
    backoff: float | None = option(None, "Seconds before the first re-try; doubled for each further one in a row, at "
                                         f"most {MAX_WAIT:g} [default: {DEFAULTS['backoff']:g}, or "
                                         f"${ENV['backoff']}].")

    def options(self) -> NetOptions:
        """The settings of remote reads: each value given, else the environment's, else the default; each checked
        against its option's range (scenectl.options.RANGES), naming the option or variable at fault."""
        out = {}
        for name, value in vars(self).items():
            where, text = f"--{name}", os.environ.get(ENV[name], "").strip()
            if value is None and text:
                where, value = f"${ENV[name]}", RANGES[name].parse(text)
            value = DEFAULTS[name] if value is None else value
            problem = RANGES[name].problem(value)
            if problem:
                raise ScenectlError(f"{where} {problem}")
            out[name] = value
        return NetOptions(**out)

    def check_more(self) -> None:
        self.options()


@dataclass(frozen=True)
class NetOptions:
    """How remote reads behave (see the module docstring), resolved from a Net; carried by the ShardSet to every
    read."""

    retries: int = DEFAULTS["retries"]
    timeout: float = DEFAULTS["timeout"]
    backoff: float = DEFAULTS["backoff"]


def net_options(retries: int | None = None, timeout: float | None = None,
                backoff: float | None = None) -> NetOptions:
    """Net(retries, timeout, backoff).options(): given values, else the environment's, else the defaults."""
    return Net(retries, timeout, backoff).options()


class RemoteError(ScenectlError):
    """A remote read that failed for good: one line naming the URL, the attempts and the last cause."""


class _Transient(Exception):
    """A fault worth another attempt (`wait`: seconds the server asked for, Retry-After)."""

    def __init__(self, cause: str, wait: float = 0.0):
        super().__init__(cause)
        self.wait = wait


class _Permanent(Exception):
    """A fault another attempt cannot cure."""


# --------------------------------------------------------------------------------------------------------------
# where a URL points


def scheme_of(url: str) -> str:
    """The URL's scheme ('' for a plain path; a one-letter scheme is a Windows drive)."""
    scheme = urlparse(url).scheme
    return "" if len(scheme) == 1 else scheme


def is_local(url: str) -> bool:
    return scheme_of(url) in ("", "file")


def local_path(url: str) -> str:
    """The path of a local file URL (`file:` stripped)."""
    return url2pathname(urlparse(url).path) if scheme_of(url) == "file" else url


def check_scheme(spec: str, option: str = "shard set") -> None:
    """Refuse a scheme the reader does not open (only plain paths, file:, http(s):// and pipe: are)."""
    scheme = scheme_of(spec)
    if scheme not in SCHEMES:
        raise ScenectlError(f"{option} {spec}: the scheme '{scheme}:' is not read here; use a folder, file:, "
                            "http(s):// or pipe:COMMAND (e.g. 'pipe:gsutil cat gs://bucket/shard-000000.tar')")


def expand_locations(spec: str, option: str = "shard set") -> list[str]:
    """webdataset's URL-list syntax (`a::b` joins lists, `{000000..000009}` and `{a,b}` expand), bounded before
    anything is expanded, every resulting location's scheme checked (a `::` may not smuggle in a scheme the whole
    spec's check did not see). Environment variables are not substituted (webdataset's $WDS_... is not read)."""
    urls: list[str] = []
    for part in spec.split("::"):
        room = MAX_LOCATIONS - len(urls)
        # braceexpand builds each numeric range whole: bound them first; lists are bounded by the spec's length
        # and their combinations come lazily (islice)
        expanded = list(itertools.islice(braceexpand.braceexpand(part), room + 1)) \
            if _ranges_size(part) <= room else None
        if expanded is None or len(expanded) > room:
            raise ScenectlError(f"{option} {spec}: its brace patterns name more than {MAX_LOCATIONS} shards")
        urls += expanded
    for url in urls:
        check_scheme(url, option)
    return urls


def _ranges_size(pattern: str) -> int:
    """The product of the sizes of `pattern`'s numeric brace ranges ({0..9}: 10), without expanding them."""
    size = 1
    for m in _NUMERIC_RANGE.finditer(pattern):
        start, end, step = int(m.group(1)), int(m.group(2)), abs(int(m.group(3) or 1)) or 1
        size *= abs(end - start) // step + 1
        if size > MAX_LOCATIONS:
            break
    return size


def file_value_problem(value: str, urls: bool) -> str | None:
    """Why `value`, read from a file (a config, a checkpoint's config), may not name a place to read, or None.
    Never a `pipe:` command nor several locations joined by `::` (the second could be a command); with urls=False
    (the training shards a checkpoint records) only a local path: no URL, no brace pattern."""
    if "::" in value:
        return f"joins several locations with '::' ({value!r})"
    if scheme_of(value) == "pipe":
        return f"is the command {value!r}"
    if not urls and scheme_of(value):
        return f"is the URL {value!r}"
    if not urls and re.search(r"\{.*\}", value):
        return f"is the brace pattern {value!r}"
    return None


def plain_name_problem(name: object, suffix: str = "") -> str | None:
    """Why `name` (read from a file) is not a plain file name of a set's folder ending in `suffix`, or None: no URL
    scheme, no path separator, no `..`, no leading dot, no space, NUL, newline or other control character."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or ".." in name or not name.endswith(suffix):
        return f"{name!r}, which is not a plain {suffix + ' ' if suffix else ''}file name of its folder (letters, " \
               "digits, '_', '.', '-'; no scheme, separator or '..')"
    return None


# --------------------------------------------------------------------------------------------------------------
# opening


def open_stream(url: str, net: NetOptions, what: str = "shard") -> BinaryIO:
    """The bytes of `url` as a file object read front to back: a local file as it is; http(s) and pipe: through
    transient faults (see the module docstring). Raises RemoteError (a ScenectlError) for a permanent fault."""
    check_scheme(url)
    if is_local(url):
        return open_regular(local_path(url), what)  # a FIFO or device never blocks the read
    source = _Http(url, net.timeout) if scheme_of(url) in ("http", "https") else _Pipe(url[len("pipe:"):], net.timeout)
    return io.BufferedReader(_Retrying(source, url, net, what), buffer_size=1 << 16)


def read_remote(url: str, net: NetOptions, what: str, limit: int) -> bytes:
    """All the bytes of one file of a set (a manifest, cooccurrence.h5), at most `limit`: a local one as a regular
    file (scenectl.io.read_regular), a remote one through the same retrying reader (an endless answer is refused once
    past the limit)."""
    if is_local(url):
        return read_regular(local_path(url), what, limit)
    data = bytearray()
    with open_stream(url, net, what) as f:
        # in small reads: http.client drops a read's partial bytes when it times out
        while len(data) <= limit and (chunk := f.read(1 << 16)):
            data += chunk
    if len(data) > limit:
        raise ScenectlError(f"{what} {url} is more than the {limit} bytes read for one")
    if not data:
        raise ScenectlError(f"cannot read {what} {url} (missing or empty)")
    return bytes(data)


class _Retrying(io.RawIOBase):
    """One URL's bytes through transient faults: after a fault, wait and re-open the source at the byte reached."""

    def __init__(self, source, url: str, net: NetOptions, what: str):
        self.source, self.url, self.net, self.what = source, url, net, what
        self.pos = 0  # bytes delivered
        self.crc = 0  # crc32 of the bytes delivered (to check a source re-read from the start)
        self.attempts = 0
        self.in_row = 0  # failures in a row without new data
        self.window = (0.0, 0)  # (seconds spent waiting on the source, bytes it gave): the minimum rate's window
        self.since_open = 0  # bytes from the current connection
        self._stoppable(self._connect, None)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._stoppable(self._readinto, b)

    def _readinto(self, b) -> int:
        while True:
            start = time.monotonic()
            try:
                n = self.source.readinto(b)
            except _Transient as e:
                self._connect(e)
                continue
            if n:
                self.crc = zlib.crc32(memoryview(b)[:n], self.crc)
                self.pos, self.since_open = self.pos + n, self.since_open + n
            if self.since_open >= MIN_BYTES_PER_TIMEOUT:  # new data: the count of failures in a row starts afresh
                self.in_row = 0
            slow = self._too_slow(n, time.monotonic() - start)
            if slow is not None:
                self._connect(slow)
            return n

    def _too_slow(self, n: int, waited: float) -> _Transient | None:
        """A source that gives fewer than MIN_BYTES_PER_TIMEOUT bytes in --timeout seconds of waiting on it is
        stalled, even when each byte comes within the timeout (a server dripping a byte per 0.5 s never trips the
        socket's). Only time spent waiting on the source counts: a consumer that pauses (a full DataLoader queue)
        does not make a transfer slow."""
        waited, got = self.window[0] + waited, self.window[1] + n
        if waited < self.net.timeout:
            self.window = (waited, got)
            return None
        self.window = (0.0, 0)
        if got < MIN_BYTES_PER_TIMEOUT:
            return _Transient(f"{got} bytes in {waited:.1f} s, fewer than {MIN_BYTES_PER_TIMEOUT} per --timeout "
                              f"{self.net.timeout:g} s (a stalled transfer)")
        return None

    def _stoppable(self, fn, arg):
        """fn(arg), ended at once by SIGINT/SIGTERM (on_stop_signal) with a one-line error naming the URL."""
        try:
            if STOP.is_set():
                raise Stopped()
            _blocking_depth[0] += 1
            try:
                return fn(arg)
            finally:
                _blocking_depth[0] -= 1
        except Stopped:
            self.source.close()
            raise self._error(f"stopped by a signal (SIGINT/SIGTERM) after {self.pos} bytes") from None

    def close(self) -> None:
        if not self.closed:
            self.source.close()
        super().close()

    def _connect(self, fault: _Transient | None) -> None:
        """(Re-)open the source at self.pos: after `fault`, wait first; give up after net.retries in a row."""
        while True:
            if fault is not None:
                self.in_row += 1
                if self.in_row > self.net.retries:
                    self.source.close()
                    raise self._error(f"{self.attempts} attempts failed (--retries {self.net.retries}); the last: "
                                      f"{fault}")
                time.sleep(min(MAX_WAIT, max(self.net.backoff * 2 ** (self.in_row - 1), fault.wait)))
            self.attempts += 1
            try:
                if not self.source.open(self.pos):  # the source starts again at byte 0: skip what was delivered
                    self._skip_delivered()
                self.window, self.since_open = (0.0, 0), 0
                return
            except _Transient as e:
                fault = e
            except _Permanent as e:
                self.source.close()
                raise self._error(f"{e} (attempt {self.attempts}; not retried)") from None

    def _skip_delivered(self) -> None:
        """Read the bytes already delivered again and check they are the same ones."""
        crc, at, buf = 0, 0, bytearray(1 << 16)
        while at < self.pos:
            n = self.source.readinto(memoryview(buf)[: min(len(buf), self.pos - at)])
            if not n:
                raise _Transient(f"the new transfer ended after {at} bytes, before the {self.pos} already read")
            crc, at = zlib.crc32(memoryview(buf)[:n], crc), at + n
        if crc != self.crc:
            raise _Permanent(f"its first {self.pos} bytes differ from those read before the fault (changed on the "
                             "server during the read?)")

    def _error(self, why: str) -> RemoteError:
        return RemoteError(f"cannot read {self.what} {self.url}: {why}")


class _Http:
    """An http(s) URL through urllib: `open(offset)` asks for the bytes from `offset` on (Range + If-Range)."""

    def __init__(self, url: str, timeout: float):
        self.url, self.timeout = url, timeout
        self.resp: http.client.HTTPResponse | None = None
        self.total: int | None = None  # the whole length, from the first answer
        self.tag: str | None = None  # its strong validator (ETag, else Last-Modified)
        self.left: int | None = None  # bytes this answer still owes (its Content-Length)

    def open(self, offset: int) -> bool:
        """Connect; True when the answer starts at `offset`, False when it starts at byte 0."""
        self.close()
        headers = {"User-Agent": "scenectl", "Accept-Encoding": "identity"}
        if offset and self.tag and self.total:  # without a validator the bytes could be another file's: from 0
            headers.update({"Range": f"bytes={offset}-", "If-Range": self.tag})
        try:
            self.resp = _OPENER.open(urllib.request.Request(self.url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as e:
            e.close()
            raise _http_fault(e) from None
        except (OSError, http.client.HTTPException) as e:  # a URLError (an OSError) names its cause in `reason`
            raise _network_fault(e.reason if isinstance(e, urllib.error.URLError) else e, self.timeout) from None
        except ValueError as e:  # not a valid URL
            raise _Permanent(str(e)) from None
        return self._check_answer(offset)

    def _check_answer(self, offset: int) -> bool:
        h = self.resp.headers
        length = int(h["Content-Length"]) if (h.get("Content-Length") or "").isdigit() else None
        tag = h.get("ETag") if h.get("ETag") and not h["ETag"].startswith("W/") else h.get("Last-Modified")
        self.left = length
        if self.resp.status == 206:
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", (h.get("Content-Range") or "").strip())
            if not m or int(m.group(1)) != offset or int(m.group(3)) != self.total:
                raise _Permanent(f"asked for its bytes from {offset} of {self.total}, the server answered "
                                 f"Content-Range {h.get('Content-Range')!r}")
            return True
        if offset and ((self.tag and tag != self.tag) or (length is not None and length != self.total)):
            raise _Permanent(f"it changed on the server during the read ({self.tag!r}, {self.total} bytes before; "
                             f"{tag!r}, {length} bytes now)")
        if not offset:
            self.total, self.tag = length, tag
        return offset == 0

    def readinto(self, b) -> int:
        try:  # read1: what one receive gives (readinto would wait to fill `b`, a dripping server unseen meanwhile)
            data = self.resp.read1(len(b))
            n = len(data)
            b[:n] = data
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise _network_fault(e, self.timeout) from None
        if not n and self.left:
            raise _Transient(f"partial transfer: the connection ended {self.left} bytes before its Content-Length")
        if self.left is not None:
            self.left -= n
        return n

    def close(self) -> None:
        if self.resp is not None:
            self.resp.close()
            self.resp = None


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to http(s) (urllib's own handler also follows ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlparse(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(req.full_url, code, f"redirect to {scheme}: {newurl} refused (only http(s) is "
                                         "followed)", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _http_fault(e: urllib.error.HTTPError) -> Exception:
    cause = f"HTTP {e.code} {e.reason}"
    if e.code >= 500 or e.code in (408, 429):
        after = (e.headers.get("Retry-After") or "").strip() if e.headers else ""
        return _Transient(cause, float(after) if after.isdigit() else 0.0)
    return _Permanent(cause)


def _network_fault(e, timeout: float) -> Exception:
    if not isinstance(e, Exception):  # urllib's own reasons ('unknown url type', 'no host given')
        return _Permanent(str(e))
    if isinstance(e, ssl.SSLCertVerificationError):
        return _Permanent(f"{type(e).__name__}: {e}")
    if isinstance(e, TimeoutError):  # socket.timeout: no data within the timeout
        return _Transient(f"no data for {timeout:g} s (--timeout)")
    if isinstance(e, http.client.IncompleteRead):
        return _Transient(f"partial transfer: the connection ended {e.expected} bytes early")
    return _Transient(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)


class _Pipe:
    """The user's own `pipe:COMMAND` (typed on the command line): each attempt runs it again from the start."""

    def __init__(self, command: str, timeout: float):
        self.command, self.timeout = command, timeout
        self.proc: subprocess.Popen | None = None

    def open(self, offset: int) -> bool:
        self.close()
        try:  # a shell runs it, as webdataset's pipe: does: the user typed this command
            self.proc = subprocess.Popen(self.command, shell=True, stdout=subprocess.PIPE, bufsize=0,
                                         start_new_session=True)  # its own group: closing ends its children too
        except OSError as e:
            raise _Transient(f"cannot start `{self.command}`: {e}") from None
        return False

    def readinto(self, b) -> int:
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], self.timeout)[0]:
            raise _Transient(f"no data for {self.timeout:g} s (--timeout) from `{self.command}`")
        data = os.read(fd, len(b))
        if not data:
            try:
                status = self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise _Transient(f"`{self.command}` closed its output but did not exit") from None
            if status:
                raise _Transient(f"`{self.command}` exited with status {status}")
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdout.close()
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None
