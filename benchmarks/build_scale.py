"""build-shards at full COCO train2017 scale: time to first shard, peak memory per process, samples/s.

    python benchmarks/build_scale.py --limit 2000 --workers 1 2 4

Generates (once, cached under --tmp) an annotation file the size of instances_train2017.json: 118,287 images and
860,001 instances (~450 MB of JSON). Every image record points at one of coco-sample's real train2017 JPEGs and
carries that image's real annotations (polygons and crowd RLEs), thinned at random to the target count, with new
ids. Each run is a real `python -m scenectl build-shards` process: its parent loads the whole file, and
`--part 0/K` (K = images // limit) makes it build only ~limit images, so a run takes minutes, not hours.

Peak memory is read from /proc (VmHWM of the parent, the forkserver and each worker, polled until they exit);
it shows whether memory multiplies with --workers (it must not: workers get one image's annotations at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"
N_IMAGES, N_INSTANCES = 118_287, 860_001  # COCO train2017


def generate(path: Path, images: Path, n_images: int, n_instances: int, seed: int = 0) -> None:
    """Write a COCO-format file of n_images records over coco-sample's train2017 JPEGs (cached by name)."""
    src = json.loads((SHARED / "annotations" / "instances_train2017.json").read_text())
    by_image: dict[int, list] = {}
    for a in src["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    templates = sorted(src["images"], key=lambda im: im["id"])
    per_image = sum(len(by_image.get(t["id"], [])) for t in templates) / len(templates)
    keep = min(1.0, n_instances / (per_image * n_images))
    rng = random.Random(seed)
    out_images, out_anns = [], []
    for i in range(n_images):
        t = templates[i % len(templates)]
        image_id = i + 1
        out_images.append({**t, "id": image_id})
        for a in by_image.get(t["id"], []):
            if rng.random() < keep:
                out_anns.append({**a, "id": len(out_anns) + 1, "image_id": image_id})
    data = {"info": {"description": "scenectl build_scale benchmark"}, "licenses": src["licenses"],
            "images": out_images, "annotations": out_anns, "categories": src["categories"]}
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)
    print(f"# generated {path} ({path.stat().st_size / 1e6:.0f} MB): {len(out_images)} images, "
          f"{len(out_anns)} annotations over {len(templates)} real JPEGs in {images}", flush=True)


def children(pid: int) -> list[int]:
    try:
        return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def status(pid: int) -> dict:
    """VmHWM (peak resident) and VmRSS in MB, and the process's command line."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return {}
    mb = lambda k: int(fields[k].split()[0]) / 1024 if k in fields else 0.0  # noqa: E731
    return {"hwm": mb("VmHWM"), "rss": mb("VmRSS"), "cmd": cmd}


def run(ann: Path, images: Path, out: Path, workers: int, part: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "scenectl", "build-shards", "--annotations", str(ann), "--images", str(images),
           "--out", str(out), "--workers", str(workers), "--part", part]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peaks: dict[int, dict] = {}
    first_shard = None
    role = {proc.pid: "parent"}
    while proc.poll() is None:
        for kid in children(proc.pid):  # the forkserver (and the resource tracker) are the parent's children ...
            role.setdefault(kid, "other")
            if "forkserver" in status(kid).get("cmd", ""):
                role[kid] = "forkserver"
                for w in children(kid):  # ... and the pool's workers are forked by the forkserver
                    role[w] = "worker"
        for pid in role:
            s = status(pid)
            if s and s["hwm"] >= peaks.get(pid, {}).get("hwm", 0):
                peaks[pid] = {**s, "role": role[pid]}
        if first_shard is None and any(out.glob("shard-*.tar")):
            first_shard = time.time() - t0
        time.sleep(0.1)
    wall = time.time() - t0
    output = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"build failed ({proc.returncode}): {output}")
    manifest = json.loads(next(out.glob("manifest*.json")).read_text())
    first = manifest["shards"][0]["samples"]
    parent = peaks.pop(proc.pid)
    server = [p for p in peaks.values() if p["role"] == "forkserver"]
    workers_ = [p for p in peaks.values() if p["role"] == "worker"]
    return {"workers": workers, "wall_s": wall, "first_shard_s": first_shard, "samples": manifest["totals"]["samples"],
            "images": manifest["totals"]["images"],
            "steady_samples_per_s": (manifest["totals"]["samples"] - first) / (wall - first_shard) if first_shard else None,
            "parent_peak_mb": parent["hwm"], "forkserver_peak_mb": [round(p["hwm"]) for p in server],
            "worker_peak_mb": sorted(round(p["hwm"]) for p in workers_)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=N_IMAGES)
    ap.add_argument("--instances", type=int, default=N_INSTANCES)
    ap.add_argument("--limit", type=int, default=2000, help="build about this many images (via --part 0/K)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/scenectl-build-scale"))
    a = ap.parse_args()
    a.tmp.mkdir(parents=True, exist_ok=True)
    images = SHARED / "train2017"
    ann = a.tmp / f"instances_scale_{a.images}_{a.instances}.json"
    if not ann.exists():
        t = time.time()
        generate(ann, images, a.images, a.instances)
        print(f"# generation took {time.time() - t:.0f} s", flush=True)
    k = max(1, a.images // a.limit)
    print(f"# {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; {ann.name} "
          f"({ann.stat().st_size / 1e6:.0f} MB); building part 0/{k} (~{a.images // k} images) with default options")
    for w in a.workers:
        print(json.dumps(run(ann, images, a.tmp / f"out-w{w}", w, f"0/{k}")), flush=True)


if __name__ == "__main__":
    main()
