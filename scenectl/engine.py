"""The training engine: every training run of scenectl (`train`, `transfer`, `distill`) goes through `fit`.

    run = Run(name="train", out=Path("runs/train"), kind="run", net=model, classes=classes,
              groups=decay_groups(model.parameters(), cfg.optim.weight_decay),
              loss_fn=cross_entropy(cfg.optim.label_smoothing),        # loss_fn(model, batch) -> loss tensor
              batches=lambda epoch, start_step: loader,                 # the rest of epoch `epoch`
              validate=lambda net: {"val_loss": ..., "val_top1": ..., "val_top5": ...},
              config=asdict(cfg), facts={"kind": "context", "arch": ..., ...})
    metrics = fit(run, cfg, dev, resume=cfg.loop.resume, overwrite=cfg.loop.overwrite)

A command says what is trained (the model, its parameter groups, its loss as a function of the model and a batch,
its data, its validation); the engine owns everything else, the same for every command:
- the run folder, claimed with scenectl.folders.claim (ownership marker, --resume/--overwrite, one writer, and a
  resume with a changed option refused, naming it, before anything is deleted); config.json (the options and the
  scenectl version / git commit that ran them);
- the epoch loop (`train_one_epoch`): AMP (bf16, or fp16 with a GradScaler), DistributedDataParallel under
  torchrun, a NaN loss stopping before the update, metrics.jsonl (one line per logged step and per epoch);
- last.pt (every epoch, every --checkpoint-every steps, on SIGINT/SIGTERM, and when the data stream fails),
  best.pt (best validation top-1), curves.png after every epoch;
- resume: model, optimiser, scheduler, scaler and the position (epoch, step inside the epoch, step, best).
`fit_experiment` runs several such runs side by side in OUT/<name>/ under one claimed folder (transfer, distill).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from scenectl.data.transforms import batch_to_device
from scenectl import distributed as D
from scenectl import folders, plots, progress
from scenectl.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from scenectl.data.coco import classes_match
from scenectl.config import RESUMABLE, Optim, Options, provenance
from scenectl.data import remote
from scenectl.devices import set_cpu_threads
from scenectl.plots import plot_training_curves
from scenectl.errors import ScenectlError
from scenectl.io import parse_json, remove_stale_tmp, write_json_atomic

LossFn = Callable[[nn.Module, dict], torch.Tensor]
WARM_STEPS = 5  # steps timed before the first measured speed and the whole run's ETA are printed (start-up excluded)
SLOW_CPU_RUN_S = 3600.0  # a CPU run projected longer than this gets a notice with smaller flags


@dataclass
class Run:
    """One training run: what is trained and how; everything the engine cannot know."""

    name: str  # names the run in log lines and plots ("train", "context", "kd", ...)
    out: Path  # its run folder
    kind: str  # the folders.KINDS kind that owns the folder
    net: nn.Module  # the plain model: saved, validated, resumed
    classes: list[dict]  # its head's classes (a resume must have the same)
    groups: list[dict]  # optimiser parameter groups (decay_groups)
    loss_fn: LossFn  # (model, batch on the device) -> scalar loss; called under autocast
    batches: Callable[[int, int], Iterable[dict]]  # (epoch, start_step) -> the rest of that epoch's batches
    validate: Callable[[nn.Module], dict]  # net -> {"val_loss", "val_top1", "val_top5", ...}; under no_grad, autocast
    config: dict  # the options (asdict), recorded in config.json, the folder's marker and every checkpoint
    facts: dict  # checkpoint fields beside the training state: kind, arch, classes, in_chans, image_size, ...
    trained: nn.Module | None = None  # what the loss sees when it is not `net` (e.g. a frozen-backbone wrapper)
    tensorboard: bool = False
    title: str = ""  # curves.png's title
    # fields saved in best.pt only, read when it is saved (train: "selected_on", the validation samples that pick it,
    # filled in by its validation)
    best_facts: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)  # plots.source's arguments for curves.png (data, n)


def cross_entropy(label_smoothing: float = 0.0, aux_visible: float = 0.0) -> LossFn:
    """The classifier loss: cross-entropy of model(batch['input']) (B, C) against batch['label'] (B,).

    aux_visible > 0 adds aux_visible x the binary cross-entropy of the model's auxiliary head (B, C) against the
    classes still visible in each scene (batch['visible'], B lists of class indices; multi-hot (B, C)), averaged over
    classes and samples: the model is taught to see the other objects from the same features (train --aux-visible).
    """
    if not aux_visible:
        return lambda model, batch: F.cross_entropy(model(batch["input"]), batch["label"],
                                                    label_smoothing=label_smoothing)

    def loss(model: nn.Module, batch: dict) -> torch.Tensor:
        logits, aux = model(batch["input"], aux=True)  # (B, C), (B, C)
        target = torch.zeros_like(aux, dtype=torch.float32)  # (B, C) multi-hot
        for i, classes in enumerate(batch["visible"]):
            target[i, list(classes)] = 1.0
        return (F.cross_entropy(logits, batch["label"], label_smoothing=label_smoothing)
                + aux_visible * F.binary_cross_entropy_with_logits(aux.float(), target))
    return loss


# --------------------------------------------------------------------------------------------------------------
# optimiser, schedule, mixed precision


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float, lr: float | None = None) -> list[dict]:
    """Parameter groups: weight decay on weights, none on norms and biases (1-d), as the torchvision references;
    `lr` sets the groups' own rate (default: the optimiser's). Empty groups are left out."""
    params = list(params)
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return [{**g, **({"lr": lr} if lr is not None else {})} for g in groups if g["params"]]


def param_groups(net: nn.Module, optim: Optim, backbone_scale: float, linear: bool) -> list[dict]:
    """transfer / distill: the backbone at lr * backbone_scale (none when linear), the head at lr; no weight decay
    on 1-d parameters (decay_groups)."""
    backbone = [] if linear else net.backbone_parameters()
    return (decay_groups(backbone, optim.weight_decay, optim.lr * backbone_scale)
            + decay_groups(net.get_classifier().parameters(), optim.weight_decay, optim.lr))


def build_optimizer(groups: list[dict], optim: Optim) -> torch.optim.Optimizer:
    """The one optimiser factory: SGD (Nesterov when momentum > 0) or AdamW over `groups`."""
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.momentum > 0)
    return torch.optim.AdamW(groups, lr=optim.lr)


def build_scheduler(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up then cosine decay to zero, stepped once per optimisation step."""
    warm = min(warmup_steps, total_steps - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps - warm))
    if warm <= 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warm])


def amp_setup(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """bf16 autocast where the GPU supports it (no scaler needed), else fp16 with a GradScaler; off on CPU."""
    if device.type != "cuda" or not enabled:
        return None, torch.amp.GradScaler("cuda", enabled=False)
    bf16 = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16 else torch.float16, torch.amp.GradScaler("cuda", enabled=not bf16)


def require_tensorboard() -> None:
    """--tensorboard needs the package: checked before any folder is created."""
    try:
        importlib.import_module("torch.utils.tensorboard")  # needs the tensorboard package
    except ImportError:
        raise ScenectlError("--tensorboard needs the tensorboard package: pip install 'scenectl[tensorboard]'") \
            from None


# --------------------------------------------------------------------------------------------------------------
# the run folder


class RunLog:
    """metrics.jsonl (rank 0 only), written and flushed one line at a time; optional TensorBoard mirror."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, fresh: bool = False):
        # a fresh run starts its own log; a resumed one continues it. Line-buffered: each line is flushed as written
        self.f = open(out / "metrics.jsonl", "w" if fresh else "a", buffering=1) if enabled else None
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, record: dict) -> None:
        if self.f is None:
            return
        self.f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def close(self) -> None:
        if self.f:
            self.f.close()
        if self.tb is not None:
            self.tb.close()


@contextlib.contextmanager
def claimed(out: Path, kind: str, dev: D.DistInfo, *, resume: bool, overwrite: bool, config: dict) -> Iterator[bool]:
    """`out` claimed (folders.claim) by rank 0 for the whole block, which gets whether the folder is fresh (new,
    empty or overwritten); every rank learns the verdict, so none is left waiting on the others. Options in
    config.RESUMABLE may change on --resume; a change of any other is refused, naming it, before anything is deleted."""
    with contextlib.ExitStack() as stack:
        verdict = None
        if dev.is_main:
            try:
                folder = stack.enter_context(folders.claim(out, kind, resume=resume, overwrite=overwrite,
                                                           config=config, keep=RESUMABLE))
                verdict = ("", folder.fresh)
            except ScenectlError as e:
                verdict = (str(e), False)
        error, fresh = D.broadcast_object(verdict)
        if error:
            raise ScenectlError(error)
        yield fresh


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(step records, epoch records) of run_dir/metrics.jsonl in step order. After a resume the latest record of a
    step wins; a line that does not parse (cut short by a kill) is passed over."""
    steps: dict[int, dict] = {}
    epochs: dict[int, dict] = {}
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            r = parse_json(line, "metrics.jsonl line")
        except ScenectlError:
            continue
        if type(r.get("step")) is int and r.get("kind") in ("step", "epoch", "partial_epoch"):
            (steps if r["kind"] == "step" else epochs)[r["step"]] = r
    return [steps[k] for k in sorted(steps)], [epochs[k] for k in sorted(epochs)]


def plot_curves(runs: dict[str, Path], path: Path, title: str) -> None:
    """curves.png of the runs in these folders (their metrics.jsonl), side by side."""
    plot_training_curves({name: read_metrics(d) for name, d in runs.items()}, path, title)


def write_config(out: Path, config: dict) -> None:
    """config.json: the run's options (nested, as asdict) and which scenectl ran them (`--config FILE` reads it)."""
    write_json_atomic(out / "config.json", {**config, "scenectl": provenance()})


def resume_point(run: Run, dev: D.DistInfo) -> Checkpoint:
    """The run's last.pt, which must hold the same architecture and classes."""
    path = run.out / "last.pt"
    if not path.is_file():
        raise ScenectlError(f"--resume: no last.pt in {run.out} to resume from")
    if dev.is_main:
        remove_stale_tmp(run.out)  # a checkpoint half-written when the run was killed
    ckpt = read_checkpoint(path)
    if ckpt.arch != run.net.arch:
        raise ScenectlError(f"--resume: {path} holds a {ckpt.arch} model, not {run.net.arch}")
    if not classes_match(ckpt.classes, run.classes):
        raise ScenectlError(f"--resume: {path} was trained on another class list than this run's data")
    return ckpt


# --------------------------------------------------------------------------------------------------------------
# where a run stands, stop signals, the data stream


@dataclass
class State:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # steps done within the current epoch
    step: int = 0  # steps done in all
    best_top1: float = -1.0
    metrics: dict | None = None


class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop finishes its step, saves last.pt and stops (no half-applied step).
    A remote read this process is blocked in (a loader without workers) ends at once: remote.on_stop_signal."""

    def __init__(self):
        self.flag = False
        self._old = {}

    def __enter__(self):
        remote.STOP.clear()
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _set(self, signum, frame):
        self.flag = True
        remote.on_stop_signal(signum, frame)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        remote.STOP.clear()  # a later run in this process reads again


def resume_state(ckpt: Checkpoint) -> State:
    """Where a checkpoint's run stands, each field checked (it is read from a file) before the run relies on it."""
    raw = ckpt.state

    def bad(field: str) -> ScenectlError:
        return ScenectlError(f"--resume: {ckpt.path}: field '{field}' is missing or malformed; not a resumable "
                             "scenectl checkpoint")

    for field in ("optimizer", "scheduler"):
        if not isinstance(raw.get(field), dict):
            raise bad(field)
    ints = [raw.get("epoch"), raw.get("epoch_step", 0), raw.get("step")]
    for field, v in zip(("epoch", "epoch_step", "step"), ints):
        if type(v) is not int or v < 0:
            raise bad(field)
    best, metrics = raw.get("best_top1", -1.0), raw.get("metrics")
    if type(best) not in (int, float):
        raise bad("best_top1")
    if metrics is not None and not isinstance(metrics, dict):
        raise bad("metrics")
    return State(*ints, float(best), metrics)


def guarded(batches: Iterable[dict], failed: Callable[[Exception], None]) -> Iterator[dict]:
    """`batches`, with an error of the data stream itself (a shard that cannot be read, a dropped connection)
    handed to `failed` (which saves last.pt and raises) before it ends the run; errors of the step are not."""
    try:
        it = iter(batches)
    except Exception as e:
        failed(e)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as e:
            failed(e)
        yield batch


# --------------------------------------------------------------------------------------------------------------
# one run


def _same_layout(a, b) -> bool:
    """Whether `a` (read from a checkpoint) has the layout of `b` (this run's own state): the same keys, lengths and
    kinds of value all the way down (numbers of either kind, lists and tuples alike)."""
    if isinstance(b, dict):
        return isinstance(a, dict) and set(a) == set(b) and all(_same_layout(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(map(_same_layout, a, b))
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return type(a) in (int, float) and math.isfinite(a)
    return type(a) is type(b)  # bool, None, str, a tensor (the scaler's: its values are checked by load_state_dict)


def load_training_state(session: "Session", ckpt: Checkpoint) -> None:
    """The optimiser, schedule and scaler of a resumed run, each checked to fit this run before it is trusted
    (a crafted-but-loadable checkpoint otherwise crashes mid-way, at the first step): a one-line error naming the
    file and the field."""
    for field, target in (("optimizer", session.optimizer), ("scheduler", session.scheduler),
                          ("scaler", session.scaler)):
        given, own = ckpt.state.get(field), target.state_dict()
        if field == "scaler" and not given:
            continue  # no scaler state saved (CPU, bf16): this run's own is kept
        if field == "optimizer" and isinstance(given, dict):  # its per-parameter state is checked below
            given_layout, own_layout = given.get("param_groups"), own["param_groups"]
        else:
            given_layout, own_layout = given, own
        if not _same_layout(given_layout, own_layout):
            raise ScenectlError(f"{ckpt.path}: field '{field}' does not fit this run's {field} (its entries differ)")
        try:
            target.load_state_dict(given)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ScenectlError(f"{ckpt.path}: field '{field}' does not fit this run's {field} ({first})") from None
    for group in session.optimizer.param_groups:
        for p in group["params"]:
            for name, v in session.optimizer.state.get(p, {}).items():
                if not (torch.is_tensor(v) and v.layout == torch.strided
                        and (v.numel() == 1 if name == "step" else v.shape == p.shape)):
                    raise ScenectlError(f"{ckpt.path}: field 'optimizer' holds a '{name}' state that does not fit "
                                        f"a parameter of shape {tuple(p.shape)}")


class Session:
    """A run in progress: its model (DDP-wrapped under torchrun), optimiser, schedule, scaler, state and log."""

    def __init__(self, run: Run, cfg: Options, dev: D.DistInfo, ckpt: Checkpoint | None, fresh: bool):
        self.run, self.cfg, self.dev = run, cfg, dev
        trained = run.trained or run.net
        trained.to(dev.device)  # before the optimiser: a resumed optimiser state follows its parameters' device
        if dev.device.type == "cuda":  # as batch_to_device lays out the input: cuDNN's fast NHWC convolutions
            trained.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(run.groups, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.loop.epochs * cfg.loop.steps_per_epoch,
                                         cfg.optim.warmup_steps)
        self.amp_dtype, self.scaler = amp_setup(dev.device, cfg.loop.amp)
        self.state = State() if ckpt is None else resume_state(ckpt)
        if ckpt is not None:
            run.net.load_state_dict(ckpt.model_state())
            load_training_state(self, ckpt)
        self.model = nn.parallel.DistributedDataParallel(
            trained, device_ids=[dev.device.index] if dev.device.type == "cuda" else None) if dev.distributed else trained
        self.log = RunLog(run.out, dev.is_main, run.tensorboard, fresh)
        self.threads = set_cpu_threads(dev.device, cfg.loop.workers)  # before the first step: torch's pool is fixed then
        self.announced = False  # the first measured rate and the whole run's ETA are said once per session

    def start_line(self) -> str:
        """The start-up summary: where and how the run computes, and how much there is to do."""
        loop, st = self.cfg.loop, self.state
        where = f"{self.dev.device}" + (f" x {self.dev.world_size} processes" if self.dev.world_size > 1 else "")
        todo = loop.total_steps() - st.step
        return (f"[{self.run.name}] {where}, {self.threads}; {loop.epochs} epochs x {loop.steps_per_epoch} steps of "
                f"{loop.batch_size * self.dev.world_size} samples: {todo} steps to go"
                + (f" (from step {st.step})" if st.step else "") + f"; measuring speed over {WARM_STEPS} steps")

    def rate_line(self, steps_per_s: float) -> str:
        """After WARM_STEPS steps: the measured speed and the whole run's ETA (training steps; validation adds a
        little), with a notice and smaller flags where GPU-sized defaults project hours on a CPU."""
        loop = self.cfg.loop
        eta = (loop.total_steps() - self.state.step) / steps_per_s
        line = (f"[{self.run.name}] first measured: {steps_per_s * loop.batch_size * self.dev.world_size:.1f} "
                f"samples/s; whole run ETA {progress.duration(eta)}")
        if self.dev.device.type == "cpu" and eta > SLOW_CPU_RUN_S:
            line += (f"\nnotice: on this CPU the run projects {progress.duration(eta)}: train's defaults are sized for a "
                     "GPU. For a first look try --image-size 64 --epochs 2 --batch-size 32 (minutes on 2 cores; "
                     "docs/training.md), or run on a GPU")
        return line

    @property
    def lr(self) -> float:
        return max(g["lr"] for g in self.optimizer.param_groups)  # the head's, where the backbone's is scaled down

    def autocast(self):
        return torch.autocast(self.dev.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def step(self, batch: dict, stop: bool) -> tuple[float, float]:
        """One optimisation step on `batch`; returns (loss averaged over ranks, ranks asking to stop)."""
        batch = batch_to_device(batch, self.dev.device)  # uint8 `input` made float there
        with self.autocast():
            loss = self.run.loss_fn(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # the loss and the stop flag travel together: all ranks agree on NaN and on stopping at the same step
        flags = torch.stack([loss.detach().float(), torch.tensor(float(stop), device=self.dev.device)])
        loss_sum, votes = D.all_reduce_sum(flags).tolist()
        mean_loss = loss_sum / self.dev.world_size
        if not math.isfinite(mean_loss):
            st = self.state
            raise ScenectlError(f"loss is {mean_loss} at step {st.step + 1} (epoch {st.epoch + 1}): stopped; "
                                f"the last good checkpoint stays in {self.run.out / 'last.pt'} (try a lower --lr)")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return mean_loss, votes

    def save(self, name: str) -> None:
        if not self.dev.is_main:
            return
        st = self.state
        facts = {**self.run.facts, **(self.run.best_facts if name == "best.pt" else {})}
        save_checkpoint(self.run.out / name, {
            **facts, "model": self.run.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": st.epoch,
            "epoch_step": st.epoch_step, "step": st.step, "best_top1": st.best_top1, "config": self.run.config,
            "metrics": st.metrics or {},
        })

    def stream_failed(self, e: Exception) -> None:
        """The data stream failed mid-epoch: keep the steps done (last.pt), then let the error end the run."""
        self.save("last.pt")
        note = f"saved {self.run.out / 'last.pt'} at step {self.state.step}; continue with --resume"
        if isinstance(e, ScenectlError):
            raise ScenectlError(f"{e} ({note})") from None
        e.add_note(note)
        raise e

    def end_epoch(self, result: dict, t0: float) -> None:
        """Validate, log, keep best.pt / last.pt and redraw curves.png (the epoch may be cut short by --max-steps)."""
        st, loop = self.state, self.cfg.loop
        epoch_done = st.epoch_step >= loop.steps_per_epoch
        if epoch_done:
            st.epoch, st.epoch_step = st.epoch + 1, 0
        with torch.no_grad(), self.autocast():
            val = self.run.validate(self.run.net)  # the plain module: DDP's forward would sync buffers
        st.metrics = {"epoch": st.epoch, "step": st.step, "train_loss": result["loss"], **val,
                      "train_samples_per_s": result["samples_per_s"], "seconds": time.perf_counter() - t0}
        self.log.write({"kind": "epoch" if epoch_done else "partial_epoch", **st.metrics, "lr": self.lr})
        if self.dev.is_main:
            progress.note(epoch_line(self.run.name, st.epoch if epoch_done else st.epoch + 1, epoch_done, st.step,
                                     result, val))
        if val["val_top1"] > st.best_top1:
            st.best_top1 = val["val_top1"]
            self.save("best.pt")
        self.save("last.pt")
        if self.dev.is_main:
            with plots.source(**self.run.source):
                plot_curves({self.run.name: self.run.out}, self.run.out / "curves.png", self.run.title or self.run.name)

    def loop(self, resumed: bool) -> dict:
        st, loop = self.state, self.cfg.loop
        if resumed:
            self.log.write({"kind": "resume", "epoch": st.epoch, "step": st.step, "epoch_step": st.epoch_step})
        if self.dev.is_main:
            progress.note(self.start_line())
        with StopRequest() as stop:
            while st.epoch < loop.epochs and not (loop.max_steps and st.step >= loop.max_steps):
                t0 = time.perf_counter()
                result = train_one_epoch(self, self.run.batches(st.epoch, st.epoch_step), stop)
                if result["stopped"] == "signal":
                    self.save("last.pt")
                    raise ScenectlError(f"interrupted at step {st.step}: saved {self.run.out / 'last.pt'}; "
                                        "continue with --resume")
                self.end_epoch(result, t0)
        if not st.metrics:
            raise ScenectlError(f"{self.run.out}: nothing left to train (step {st.step} reached) and no validation "
                                "recorded; raise --max-steps, or start afresh with --overwrite")
        return {**st.metrics, "best_top1": st.best_top1}


def epoch_line(name: str, epoch: int, done: bool, step: int, result: dict, val: dict) -> str:
    """An epoch's line, epochs counted from 1 (a cut-short one says so), accuracies in percent."""
    pct = lambda key: f"{100 * val[key]:.1f}%"  # noqa: E731
    return (f"[{name}] epoch {epoch}{'' if done else ' (partial)'} step {step}: train loss {result['loss']:.3f}, "
            f"val loss {val['val_loss']:.3f}, top-1 {pct('val_top1')}, top-5 {pct('val_top5')}"
            + (f", balanced top-1 {pct('val_bal_top1')}" if "val_bal_top1" in val else ""))


def train_one_epoch(s: Session, batches: Iterable[dict], stop: StopRequest) -> dict:
    """Train over `batches` (the rest of epoch s.state.epoch). Returns {'loss', 'stopped', 'samples_per_s'}."""
    loop, st, dev = s.cfg.loop, s.state, s.dev
    s.model.train()
    total_loss, n_steps, t0, seen, stopped = 0.0, 0, time.perf_counter(), 0, None
    t_warm = t0
    bar = progress.progress(total=loop.steps_per_epoch, initial=st.epoch_step, unit="steps", leave=False,
                            desc=f"{s.run.name} epoch {st.epoch + 1}/{loop.epochs}", disable=not dev.is_main,
                            dynamic_ncols=True)
    for batch in guarded(batches, s.stream_failed):
        mean_loss, stop_votes = s.step(batch, stop.flag)
        st.step, st.epoch_step, n_steps = st.step + 1, st.epoch_step + 1, n_steps + 1
        total_loss += mean_loss
        seen += len(batch["label"]) * dev.world_size
        rate = seen / (time.perf_counter() - t0)
        if n_steps == 1:
            t_warm = time.perf_counter()  # the first step (start-up, loader spin-up) is not counted in the speed
        steps_per_s = (n_steps - 1) / max(1e-9, time.perf_counter() - t_warm) if n_steps > 1 else None
        warm = n_steps == WARM_STEPS + 1 or st.epoch_step == loop.steps_per_epoch  # or a short epoch's end
        if steps_per_s and warm and not s.announced and dev.is_main:
            s.announced = True
            progress.note(s.rate_line(steps_per_s))
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.3f}", samples_s=f"{rate:.0f}", run_eta=progress.duration(
            (loop.total_steps() - st.step) / steps_per_s) if steps_per_s else "?")
        if loop.log_every and st.step % loop.log_every == 0:
            s.log.write({"kind": "step", "epoch": st.epoch, "step": st.step, "loss": mean_loss, "lr": s.lr,
                         "samples_per_s": rate})
        if stop_votes > 0:
            stopped = "signal"
        elif loop.max_steps and st.step >= loop.max_steps:
            stopped = "max_steps"
        elif loop.checkpoint_every and st.step % loop.checkpoint_every == 0 and st.epoch_step < loop.steps_per_epoch:
            s.save("last.pt")
        if stopped:
            break
    bar.close()
    return {"loss": total_loss / max(1, n_steps), "stopped": stopped,
            "samples_per_s": seen / max(1e-9, time.perf_counter() - t0)}


def fit(run: Run, cfg: Options, dev: D.DistInfo, *, resume: bool, overwrite: bool) -> dict:
    """Run (or resume) `run` in its folder; returns the last validation metrics and best_top1."""
    with claimed(run.out, run.kind, dev, resume=resume, overwrite=overwrite, config=run.config) as fresh:
        ckpt = resume_point(run, dev) if resume else None
        if dev.is_main:
            write_config(run.out, run.config)
        session = Session(run, cfg, dev, ckpt, fresh)
        try:
            return session.loop(resumed=ckpt is not None)
        finally:
            session.log.close()


def fit_experiment(cfg: Options, kind: str, dev: D.DistInfo, runs: dict[str, Callable[[], Run]],
                   finish: Callable[[dict[str, dict]], dict], title: str) -> dict:
    """transfer / distill: the runs side by side in OUT/<name>/ (each a run folder of `kind`) under OUT, claimed as
    a whole; OUT/curves.png (`title`) draws them together, then `finish(results)` writes the comparison (report.json
    last) while the folder is still held."""
    out = Path(cfg.out)
    with claimed(out, kind, dev, resume=cfg.loop.resume, overwrite=cfg.loop.overwrite, config=asdict(cfg)):
        (out / "report.json").unlink(missing_ok=True)  # until the new one is whole, the folder must not look complete
        write_config(out, asdict(cfg))
        results, sources = {}, []
        for name, make in runs.items():
            run = make()  # built here, in order: each run seeds its own initial weights
            sources.append(run.source)
            resume = cfg.loop.resume and (run.out / "last.pt").is_file()
            results[name] = fit(run, cfg, dev, resume=resume, overwrite=not resume)
        # the runs share their data; the checkpoint named is the one a run starts from or learns from, if any
        source = {**sources[0], "checkpoint": next((s["checkpoint"] for s in sources if s.get("checkpoint")), None)}
        with plots.source(**source):
            plot_curves({name: out / name for name in results}, out / "curves.png", title)
        return finish(results)


__all__ = ["Run", "State", "Session", "fit", "fit_experiment", "train_one_epoch", "cross_entropy", "decay_groups",
           "param_groups", "read_metrics", "plot_curves", "build_optimizer", "build_scheduler", "amp_setup",
           "require_tensorboard", "RunLog", "StopRequest", "guarded", "write_config"]
