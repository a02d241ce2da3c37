"""The shard-set format (docs/shard-format.md) in one place: what a set's folder holds, how its manifest and its tars
are checked, and the one writer of shards.

Every side of the format uses this module, so they cannot drift apart:
  - writing: `ShardSink` (webdataset's ShardWriter, shards hashed, renamed from `.partial` and journalled) and
    `seal_set` (the manifest's `files` map, `_info.json`, the manifest written last) for build-shards and build-ooc;
  - reading: the reader (scenectl.data.loader) and verify-shards take the manifest from `manifest_problems` /
    `parse_manifest`, a shard's samples from `shard_samples` (a plain tar read member by member with the limits of
    `SampleSpec`) and each sample's problems from `sample_problems`: the reader refuses what verify-shards reports;
  - locations: `join`, `basename` and `parent` place a set's files beside its shards (a folder, a URL prefix or a
    `pipe:` command with a hole for the file name); `SET_FILES` is the set's file list (the output guard's too).

Problems are returned (`Problem`), never raised here: the reader turns the first into a one-line ScenectlError,
verify-shards lists them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
from PIL import Image

from scenectl.data.remote import NetOptions, plain_name_problem, read_remote
from scenectl.errors import OutOfMemory, ScenectlError, out_of_memory
from scenectl.io import MAX_JSON_BYTES, file_sha256, parse_json, write_json_atomic

FORMAT = "scenectl-shards/1"
TASKS = ("masked", "object", "ooc")  # a manifest's `task`: build-shards' two, build-ooc's
MEMBERS = ("jpg", "mask.png", "cls", "json", "object.jpg")  # the only members a sample may hold (and that are decoded)
JPEG_QUALITY = 90  # jpg and object.jpg; mask.png is lossless
IMAGE_MEMBERS = ("jpg", "mask.png", "object.jpg")
SHARD_PATTERN = "shard-%06d.tar"  # ShardWriter pattern of a whole build (a part's: SetNames.pattern)
MANIFEST, CONFIG = "manifest.json", "config.json"
COOCCURRENCE, TIMM_INFO = "cooccurrence.h5", "_info.json"
# every file a build writes into its folder (a part's files included): what --overwrite may remove
SET_FILES = ("shard-*.tar", "shard-*.tar.partial", "manifest*.json", "progress*.json", "config*.json", COOCCURRENCE,
             TIMM_INFO)
# what an unfinished build leaves beside (or instead of) the manifest
PARTIAL_GLOB, JOURNAL_GLOB, PART_MANIFEST_GLOB = "*.partial", "progress*.json", "manifest.part-*-of-*.json"
KEY = re.compile(r"[0-9]{12,19}_[0-9]{12,19}")  # {image_id:012d}_{annotation_id:012d}
_MEMBER_NAME = re.compile(r"([^.]*)\.(.*)", re.S)  # webdataset's grouping: the key is the name up to its first dot
_CLS = re.compile(rb"0|[1-9][0-9]{0,8}")  # ASCII decimal, nothing else (no sign, space, '_' or newline)
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_IMAGE_SIZE = 8192  # params.image_size above this is refused (a side, pixels)
DEFAULT_MEMBER_CAP = 64 << 20  # bytes per member when the manifest records no image size


# --------------------------------------------------------------------------------------------------------------
# Locations: a set's files beside its shards


def join(location: str, name: str) -> str:
    """The file `name` of the set at `location` (a folder, a URL prefix, or a pipe: command with a NUL where the
    file's path goes: `parent`)."""
    if "\0" in location:
        prefix, suffix = location.split("\0", 1)
        return f"{prefix}/{name}{suffix}"
    return f"{location.rstrip('/')}/{name}" if location else name


def basename(url: str) -> str:
    """The shard file name a URL (or pipe: command) names."""
    m = re.search(r"([^/\s]+\.tar)\b", url)
    return m.group(1) if m else url.rsplit("/", 1)[-1]


def parent(pattern: str) -> str:
    """The folder / URL prefix of a shard pattern (for pipe: commands: the command with a NUL hole in place)."""
    m = list(re.finditer(r"[^/\s]*\.tar\b", pattern))[-1]
    head = pattern[: m.start()].rstrip("/")
    return head + "\0" + pattern[m.end():] if pattern.startswith("pipe:") else head


def no_manifest(folder: Path) -> str:
    """Why a local `folder` without manifest.json is no shard set yet, and what finishes it (the reader's error,
    verify-shards' problem)."""
    parts = sorted(p.name for p in folder.glob(PART_MANIFEST_GLOB))
    if parts:
        return f"a build in parts, not merged ({parts[0]}, ...): run `scenectl merge-manifests {folder}`"
    left = sorted(p.name for g in (PARTIAL_GLOB, JOURNAL_GLOB) for p in folder.glob(g))
    if left:
        return f"is incomplete (no manifest.json, found {left[0]}): finish it with `scenectl build-shards --resume`"
    return "has no manifest.json: not a shard set written by scenectl build-shards"


@dataclass(frozen=True)
class SetNames:
    """File names of a whole build (part None) or of part (i, n)."""

    part: tuple[int, int] | None = None

    @property
    def tag(self) -> str:
        return "" if self.part is None else f".part-{self.part[0]}-of-{self.part[1]}"

    @property
    def pattern(self) -> str:  # ShardWriter pattern
        return SHARD_PATTERN if self.part is None else f"shard-p{self.part[0]}of{self.part[1]}-%06d.tar"

    @property
    def shard_glob(self) -> str:
        return self.pattern.replace("%06d", "*")

    manifest = property(lambda self: f"manifest{self.tag}.json")
    progress = property(lambda self: f"progress{self.tag}.json")
    config = property(lambda self: f"config{self.tag}.json")


# --------------------------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a set: `kind` (docs/shard-format.md, verify-shards), a message without the place, and
    the sample key / member it concerns."""

    kind: str
    message: str
    sample: str | None = None
    member: str | None = None


# --------------------------------------------------------------------------------------------------------------
# Member encodings (build-shards, build-ooc, and scenectl.hiding's JPEG round trip)


def encode_jpeg(arr: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as the `jpg` / `object.jpg` member."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def encode_png(arr: np.ndarray) -> bytes:
    """An (H, W) uint8 mask (255 = hidden) as the `mask.png` member."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)  # 2-3x faster than the default 6; masks stay ~0.5 kB
    return buf.getvalue()


def encode_sample(record: dict, ann: dict, cls: int, params: dict, **meta) -> dict:
    """The key `{image_id:012d}_{annotation_id:012d}` and the `cls` and `json` members of the sample of instance
    `ann` in the image of `record` (its COCO records) with class index `cls`: the json records the image, the
    instance, the class, the build's hiding `params` and the sample's own `meta` (docs/shard-format.md)."""
    meta = {"image_id": record["id"], "annotation_id": ann["id"], "category_id": ann["category_id"], "cls": cls,
            "license": record.get("license"), "file_name": record["file_name"],
            **{k: params[k] for k in ("shape", "fill", "margin", "max_area", "min_area", "hide_same_class")}, **meta}
    return {"__key__": f"{record['id']:012d}_{ann['id']:012d}", "cls": str(cls).encode(),
            "json": json.dumps(meta, sort_keys=True).encode()}


# --------------------------------------------------------------------------------------------------------------
# The manifest


def manifest_problems(data: bytes) -> tuple[dict | None, list[Problem]]:
    """The manifest from its bytes and its problems; None when it cannot be used at all (not JSON, not a scenectl
    manifest). A usable manifest may still have problems (a shard entry, a `files` name): every one is listed."""
    try:  # the one hardened JSON reader: size, depth and number-length limits
        manifest = parse_json(data, "manifest", expect=None)
    except ScenectlError as e:
        return None, [Problem("manifest", str(e).removeprefix("manifest ")[:200])]
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("scenectl-shards/"):
        return None, [Problem("manifest", "is not a scenectl shard manifest (no 'scenectl-shards/...' format tag)")]
    for k in ("classes", "shards"):
        if not isinstance(manifest.get(k), list):
            return None, [Problem("manifest", f"has no '{k}' list")]
    problems = _classes_problems(manifest["classes"]) + _params_problems(manifest) + _counts_problems(manifest)
    if not isinstance(manifest.get("files", {}), dict):
        problems.append(Problem("manifest", "'files' is not a mapping of file names to sha256"))
    if problems:
        return None, problems
    return manifest, _shard_entry_problems(manifest["shards"]) + _files_problems(manifest.get("files", {}))


def parse_manifest(data: bytes, where: str) -> dict:
    """The manifest from its bytes; its first problem raised as a one-line ScenectlError naming `where`."""
    manifest, problems = manifest_problems(data)
    if problems:
        raise ScenectlError(f"manifest {where} {problems[0].message}")
    return manifest


def read_set_file(location: str, manifest: dict, name: str, what: str, limit: int,
                  net: NetOptions | None = None) -> bytes:
    """File `name` of the set beside its manifest (`what` names it in errors), read within `limit` through the reader's
    opener and checked against the manifest's `files` sha256 when it records one (sets built before that field are
    taken as they are)."""
    where = join(location, name)
    data = read_remote(where, net or NetOptions(), what, limit)
    want = manifest.get("files", {}).get(name)
    if want is not None and (got := hashlib.sha256(data).hexdigest()) != want:
        raise ScenectlError(f"{where}: sha256 {got[:12]}... differs from the manifest's {want[:12]}... (a file of "
                            "another build, or changed since: the set is not whole)")
    return data


def read_manifest(where: str | os.PathLike, net: NetOptions | None = None, what: str = "manifest") -> dict:
    """The manifest at `where` (a local file, or a URL read through the retrying reader), read within the JSON
    size cap and checked (parse_manifest): the one way a command reads a manifest it relies on."""
    return parse_manifest(read_remote(str(where), net or NetOptions(), what, MAX_JSON_BYTES), str(where))


MAX_CLASSES = 100_000  # a class list longer than this is refused (COCO has 80, LVIS 1203)


def _classes_problems(classes: list) -> list[Problem]:
    """Every class {index: its position, coco_id: int, name: str, supercategory?: str}, names and ids unique."""
    def bad(i: int, c) -> bool:
        return not (isinstance(c, dict) and isinstance(c.get("name"), str) and 0 < len(c["name"]) <= 200
                    and type(c.get("coco_id")) is int and c.get("index", i) == i
                    and isinstance(c.get("supercategory", ""), str))
    if not classes or len(classes) > MAX_CLASSES:
        return [Problem("manifest", f"has a 'classes' list that is empty or longer than {MAX_CLASSES}")]
    wrong = next((i for i, c in enumerate(classes) if bad(i, c)), None)
    if wrong is not None:
        return [Problem("manifest", f"has classes[{wrong}] that is not {{'index': {wrong}, 'coco_id': int, 'name': "
                                    "str}")]
    if len({c["name"] for c in classes}) < len(classes) or len({c["coco_id"] for c in classes}) < len(classes):
        return [Problem("manifest", "has a 'classes' list that names a class or COCO id twice")]
    return []


def _params_problems(manifest: dict) -> list[Problem]:
    params, task = manifest.get("params", {}), manifest.get("task", "masked")
    if not isinstance(params, dict):
        return [Problem("manifest", "has 'params' that are not an object")]
    if task not in TASKS:
        return [Problem("manifest", f"has task {str(task)[:40]!r}, not one of {', '.join(TASKS)}")]
    size = params.get("image_size")
    if size is not None and (type(size) is not int or not 8 <= size <= MAX_IMAGE_SIZE):
        return [Problem("manifest", f"has params.image_size {str(size)[:40]!r} (an integer 8..{MAX_IMAGE_SIZE})")]
    return []


def _counts_problems(manifest: dict) -> list[Problem]:
    """`totals`, `skipped` and `seconds` where present (every build writes them; inspect and merge read them):
    counts are whole numbers >= 0, per_class names the set's classes, the histogram has one edge more than counts."""
    totals, skipped = manifest.get("totals", {}), manifest.get("skipped", {})
    if not isinstance(totals, dict) or not isinstance(skipped, dict):
        return [Problem("manifest", "has 'totals' or 'skipped' that are not objects")]
    per_class, hist = totals.get("per_class", {}), totals.get("area_fraction_histogram", {"edges": [0], "counts": []})
    if not isinstance(per_class, dict) or not set(per_class) <= {c["name"] for c in manifest["classes"]}:
        return [Problem("manifest", "has totals.per_class that is not a mapping of the set's class names to counts")]
    edges, counts = (hist.get("edges"), hist.get("counts")) if isinstance(hist, dict) else (None, None)
    if not (isinstance(edges, list) and isinstance(counts, list) and len(edges) == len(counts) + 1 <= 1001
            and all(type(e) in (int, float) and 0 <= e <= 1 for e in edges)):
        return [Problem("manifest", "has a totals.area_fraction_histogram that is not {'edges': [n + 1 fractions], "
                                    "'counts': [n counts]}")]
    named = {**{f"totals.{k}": v for k, v in totals.items() if k not in ("per_class", "area_fraction_histogram")},
             **{f"skipped.{k}": v for k, v in skipped.items()},
             **{f"totals.per_class[{k!r}]": v for k, v in per_class.items()},
             **{f"totals.area_fraction_histogram.counts[{i}]": v for i, v in enumerate(counts)}}
    bad = next((k for k, v in named.items() if type(v) is not int or v < 0), None)
    if bad:
        return [Problem("manifest", f"has {bad[:80]} = {repr(named[bad])[:40]} (a count: a whole number >= 0)")]
    seconds = manifest.get("seconds", 0)
    if type(seconds) not in (int, float) or not 0 <= seconds < 1e9:
        return [Problem("manifest", f"has seconds = {repr(seconds)[:40]} (a duration: a number >= 0)")]
    return []


def _shard_entry_problems(entries: list) -> list[Problem]:
    """Each listed shard once, as a plain `.tar` file name of its folder with a positive sample count."""
    problems, seen = [], set()
    for s in entries:
        name, n = (s.get("name"), s.get("samples")) if isinstance(s, dict) else (None, None)
        bad = plain_name_problem(name, ".tar")
        if bad:
            problems.append(Problem("manifest", f"lists shard {bad}"))
        elif type(n) is not int or n < 1:
            problems.append(Problem("manifest", f"lists shard {name} with {repr(n)[:40]} samples (a shard holds "
                                                "at least one)"))
        elif name in seen:
            problems.append(Problem("manifest", f"lists shard {name} twice"))
        seen.add(name if isinstance(name, str) else None)
    return problems


def _files_problems(files: dict) -> list[Problem]:
    """`files` (written by newer builds): the set's other files, each a plain file name with its sha256."""
    problems = []
    for name, digest in files.items():
        bad = plain_name_problem(name)
        if bad:
            problems.append(Problem("manifest", f"'files' names {bad}"))
        elif not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            problems.append(Problem("manifest", f"'files' gives {name} the sha256 {str(digest)[:80]!r} (64 hex "
                                                "digits expected)"))
    return problems


def usable_shards(manifest: dict) -> list[dict]:
    """The manifest's shard entries that name a plain `.tar` file (the others are problems, never opened)."""
    return [s for s in manifest["shards"] if isinstance(s, dict) and not plain_name_problem(s.get("name"), ".tar")]


# --------------------------------------------------------------------------------------------------------------
# Samples


@dataclass(frozen=True)
class SampleSpec:
    """What every sample of a set must look like, from its manifest."""

    required: tuple[str, ...]  # the members each sample holds, no more, no fewer
    image_size: int | None  # every image member is image_size x image_size (None: a manifest without the param)
    names: tuple[str, ...]  # the class list's names: cls is an index of it

    @classmethod
    def of(cls, manifest: dict) -> SampleSpec:
        params = manifest.get("params") or {}
        task = manifest.get("task", params.get("task", "masked"))
        required = ("jpg", "cls", "json") if task == "object" else \
            ("jpg", "mask.png", "cls", "json") + (("object.jpg",) if params.get("with_object") else ())
        return cls(required, params.get("image_size"), tuple(str(c.get("name")) for c in manifest["classes"]))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def member_cap(self) -> int:
        """Bytes a member may hold: an image of image_size² pixels never needs more than 8 bytes a pixel (a JPEG at
        quality 90 takes well under 3), plus 1 MiB for headers and the json."""
        return DEFAULT_MEMBER_CAP if self.image_size is None else 8 * self.image_size ** 2 + (1 << 20)


def shard_samples(stream: BinaryIO, spec: SampleSpec) -> Iterator[tuple[str, dict] | Problem]:
    """The samples of one shard in tar order, `(key, {member suffix: bytes})`, members grouped by key as webdataset
    does, and a Problem for each member that is refused (and not read): not a regular file (links, devices, GNU or
    PAX sparse files), a name that is not UTF-8 `KEY.SUFFIX` of a format member, larger than `spec.member_cap`, or
    a member a sample already holds. The stream is read as a plain POSIX tar (never decompressed: a gzipped shard
    fails on its first header); a tar that cannot be read to its end raises tarfile.TarError / OSError / EOFError."""
    key, members = None, {}
    try:
        tar = tarfile.open(fileobj=stream, mode="r|", encoding="utf-8")  # reads the first header
    except tarfile.ReadError as e:
        raise tarfile.ReadError(f"not a plain POSIX tar (a compressed shard is refused): {e}") from None
    with tar:
        for info in tar:
            problem = _member_problem(info, spec.member_cap)
            if problem is not None:
                yield problem
                continue
            k, suffix = _MEMBER_NAME.fullmatch(info.name).groups()
            if k != key and key is not None:
                yield key, members
                members = {}
            key = k
            if suffix in members:
                yield Problem("duplicate_member", f"member {suffix!r} appears twice", k, suffix)
                continue
            data = tar.extractfile(info).read()
            if len(data) != info.size:
                raise EOFError(f"member {info.name!r} cut short")
            members[suffix] = data
    if key is not None:
        yield key, members


def _member_problem(info: tarfile.TarInfo, cap: int) -> Problem | None:
    name = info.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # tarfile keeps undecodable bytes as surrogates
        return Problem("bad_name", f"member {ascii(name)[1:-1][:120]} has a name that is not UTF-8", member=ascii(name))
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.sparse is not None:
        return Problem("unsafe_member", f"member {name!r} is not a regular file (type {info.type!r})", member=name)
    if name.startswith("/") or ".." in Path(name).parts:
        return Problem("unsafe_member", f"member {name!r} has an absolute or '..' path", member=name)
    m = _MEMBER_NAME.fullmatch(name)
    if not m or not KEY.fullmatch(m[1]):
        return Problem("unexpected_member", f"member {name[:120]!r} is not named KEY.SUFFIX with KEY "
                                            "{image_id:012d}_{annotation_id:012d}", member=name)
    if m[2] not in MEMBERS:
        return Problem("unexpected_member", f"unexpected member {m[2][:40]!r} (never decoded)", m[1], m[2])
    if info.size > cap:
        return Problem("too_large", f"member {name!r} declares {info.size} bytes, more than the {cap} an image of "
                                    "the manifest's image_size needs", m[1], m[2])
    return None


def parse_cls(data: bytes) -> int | None:
    """The `cls` member's class index: ASCII decimal digits only (" 1_0\\n" is not 10), else None."""
    return int(data) if _CLS.fullmatch(data) else None


def sample_problems(key: str, members: dict, spec: SampleSpec, decode: bool = False) -> list[Problem]:
    """Everything wrong with one sample (none: it is what the format says): the members are exactly
    `spec.required`; image headers declare image_size x image_size (checked before any pixel is decoded; with
    `decode` the pixels are decoded too, and the mask must be 0/255); `cls` is strict ASCII decimal below the class
    count and equals the json's `cls`; the json is an object whose `visible_categories` are class indices and whose
    ids make the key."""
    problems = [Problem("unexpected_member", f"unexpected member {m!r} (never decoded)", key, m)
                for m in members if m not in spec.required]
    problems += [Problem("missing_member", f"member {m!r} is missing", key, m)
                 for m in spec.required if m not in members]
    for m in IMAGE_MEMBERS:
        if m in members and m in spec.required:
            problems += _image_problems(key, m, members[m], spec.image_size, decode)
    return problems + label_problems(key, members, spec.num_classes, spec.names)[2]


def _image_problems(key: str, member: str, data: bytes, size: int | None, decode: bool) -> list[Problem]:
    """The image's header (its declared size: a 20000² image is refused before decoding); with `decode`, its pixels."""
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            if size and im.size != (size, size):
                return [Problem("bad_value", f"member {member!r} is {im.size[0]}x{im.size[1]}, not the manifest's "
                                             f"image_size {size}", key, member)]
            if decode:
                im.load()
                arr = np.asarray(im)
    except Image.DecompressionBombError:  # a header declaring over 2 x Image.MAX_IMAGE_PIXELS (PIL refuses it)
        return [Problem("bad_value", f"member {member!r} declares over {2 * Image.MAX_IMAGE_PIXELS} pixels, not the "
                                     f"manifest's image_size {size} (refused before decoding)", key, member)]
    except Exception as e:  # PIL raises many types for bad bytes
        if out_of_memory(e):
            raise OutOfMemory(f"decoding member {member!r} ({len(data)} bytes) of sample {key}") from None
        return [Problem("undecodable", f"member {member!r} is not a readable image ({type(e).__name__}: "
                                       f"{str(e)[:120]})", key, member)]
    if decode and member == "mask.png" and (arr.ndim != 2 or not np.isin(arr, (0, 255)).all()):
        return [Problem("bad_value", "member 'mask.png' is not a binary greyscale mask (0/255)", key, member)]
    return []


def label_problems(key: str, members: dict, num_classes: int | None,
                   names: tuple[str, ...] = ()) -> tuple[int | None, dict | None, list[Problem]]:
    """A sample's label and metadata, `(cls, meta, problems)`, from its `cls` and `json` members (those present):
    `cls` strict ASCII decimal below `num_classes` (when given) and equal to the json's `cls`; the json an object
    whose `visible_categories` are class indices, whose `category_name` is the class's (when `names` are given) and
    whose ids make the key. cls / meta are None where they cannot be used."""
    problems, cls, meta = [], None, None
    if "cls" in members:
        cls = parse_cls(members["cls"])
        if cls is None:
            problems.append(Problem("undecodable", "member 'cls' is not an ASCII integer", key, "cls"))
        elif num_classes is not None and cls >= num_classes:
            problems.append(Problem("bad_value", f"member 'cls' is {cls}, outside the manifest's {num_classes} "
                                                 "classes", key, "cls"))
            cls = None
    if "json" in members:
        with contextlib.suppress(ScenectlError):  # not UTF-8 JSON, not an object, nested too deep
            meta = parse_json(members["json"], "member 'json'")
        if meta is None:
            problems.append(Problem("undecodable", "member 'json' is not valid metadata JSON (a UTF-8 JSON object)",
                                    key, "json"))
        else:
            problems += _meta_problems(key, meta, cls, num_classes, names)
    return cls, meta, problems


def _meta_problems(key: str, meta: dict, cls: int | None, num_classes: int | None,
                   names: tuple[str, ...]) -> list[Problem]:
    problems = []
    if cls is not None and (type(meta.get("cls")) is not int or meta["cls"] != cls):
        problems.append(Problem("inconsistent", f"member 'cls' is {cls} but the json metadata says cls "
                                                f"{str(meta.get('cls'))[:40]}", key, "json"))
    if cls is not None and names and "category_name" in meta and meta["category_name"] != names[cls]:
        problems.append(Problem("inconsistent", f"json category_name {str(meta['category_name'])[:80]!r} but class "
                                                f"{cls} is {names[cls]!r}", key, "json"))
    visible = meta.get("visible_categories", [])
    limit = num_classes if num_classes is not None else float("inf")
    if not isinstance(visible, list) or not all(type(v) is int and 0 <= v < limit for v in visible):
        problems.append(Problem("bad_value", f"json visible_categories {str(visible)[:80]} are not class indices"
                                             + (f" of the manifest's {num_classes} classes" if num_classes else ""),
                                key, "json"))
    ids = meta.get("image_id"), meta.get("annotation_id")
    if not all(type(i) is int and i >= 0 for i in ids):
        problems.append(Problem("inconsistent", "json has no integer image_id / annotation_id", key, "json"))
    elif key != f"{ids[0]:012d}_{ids[1]:012d}":
        problems.append(Problem("inconsistent", f"key does not match the json's ids ({ids[0]:012d}_{ids[1]:012d})",
                                key, "json"))
    return problems


# --------------------------------------------------------------------------------------------------------------
# Writing: the one sink of shards, and the sealing of a set


@dataclass(frozen=True)
class SinkTarget:
    """Where a sink writes: the folder, its file names, and when ShardWriter starts a new shard."""

    out: Path
    names: SetNames = SetNames()
    maxcount: int = 1000
    maxsize: float = 1e9


class ShardSink:
    """webdataset's ShardWriter writing `*.tar.partial`; each finished shard is fsynced, hashed, renamed to `*.tar`
    and listed in `journal["shards"]` ({name, samples, sha256}), and the journal saved to the target's progress
    file (atomically) with `fill(journal)` first adding what the caller journals. A `.tar` is therefore always
    whole and listed; an interrupted build leaves a journal that says which shards are done.

    Tar headers carry mtime 0 (an int: a float makes tarfile add a PAX header to every member) and no wall-clock
    time, so a rebuild is byte-identical; members are written as given (bytes, `encoder=False`)."""

    def __init__(self, target: SinkTarget, journal: dict, fill: Callable[[dict], None] = lambda journal: None):
        import webdataset as wds  # here, not at the top: it imports torch, which build workers never need

        self.target, self.journal, self.fill = target, journal, fill
        self.in_shard = 0
        self.writer = wds.ShardWriter(str(target.out / (target.names.pattern + ".partial")), maxcount=target.maxcount,
                                      maxsize=target.maxsize, post=self._post, start_shard=len(journal["shards"]),
                                      verbose=0, mtime=0, encoder=False)

    def write(self, sample: dict) -> None:
        with self._naming_the_shard():
            self.writer.write(sample)
        self.in_shard += 1

    def close(self) -> None:
        with self._naming_the_shard():
            self.writer.close()
        self.save()  # also when the last shard was empty

    def abort(self) -> None:
        """Drop the shard being written (an error or interrupt: the journal still says where to restart)."""
        stream = getattr(self.writer, "tarstream", None)
        if stream is not None:
            with contextlib.suppress(OSError):  # flushing a full disk's shard fails again; it is deleted anyway
                stream.close()
            Path(self.writer.fname).unlink(missing_ok=True)

    def save(self) -> None:
        self.fill(self.journal)
        write_json_atomic(self.target.out / self.target.names.progress, self.journal)

    @contextlib.contextmanager
    def _naming_the_shard(self) -> Iterator[None]:
        """A failed write (a full disk) names the shard being written: a file object's OSError carries no path."""
        try:
            yield
        except OSError as e:
            if not e.filename and getattr(self.writer, "fname", None):
                e.filename = self.writer.fname
            raise

    def _post(self, fname: str) -> None:
        partial = Path(fname)
        if self.in_shard == 0:  # nothing written since the last shard (only at close)
            partial.unlink(missing_ok=True)
            return
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        final = partial.with_name(partial.name[: -len(".partial")])
        sha = file_sha256(partial)
        os.replace(partial, final)  # rename first: a journalled shard always exists under its final name
        self.journal["shards"].append({"name": final.name, "samples": self.in_shard, "sha256": sha})
        self.in_shard = 0
        self.save()


def seal_set(out: Path, manifest: dict, names: SetNames = SetNames()) -> dict:
    """Finish a set: the manifest's `files` (sha256 of cooccurrence.h5 and the build's config), `_info.json` for a
    whole set, then the manifest itself, written last (atomically: its presence means the set is complete), and the
    journal removed. Returns the manifest."""
    manifest["files"] = {name: file_sha256(out / name) for name in (COOCCURRENCE, names.config)
                         if (out / name).is_file()}
    if names.part is None:  # a part's shards are not a set yet: merge-manifests writes the index of the whole
        manifest["files"][TIMM_INFO] = write_timm_info(out, manifest)
    write_json_atomic(out / names.manifest, manifest)
    (out / names.progress).unlink(missing_ok=True)
    return manifest


def write_timm_info(out: Path, manifest: dict) -> str:
    """Write `_info.json`, the index timm's webdataset reader needs (`timm.data.create_dataset("wds/NAME",
    root=out, split=SPLIT)`: the split's shard file names and sample counts; it reads `jpg` and the `cls` integer
    itself), atomically; return its sha256 for the manifest's `files`. SPLIT is the split the set was built from."""
    split = manifest["params"]["split"]
    shards = manifest["shards"]
    write_json_atomic(out / TIMM_INFO, {"name": f"scenectl-{split}", "splits": {split: {
        "name": split, "num_samples": sum(s["samples"] for s in shards),
        "filenames": [s["name"] for s in shards], "shard_lengths": [s["samples"] for s in shards]}}})
    return file_sha256(out / TIMM_INFO)
