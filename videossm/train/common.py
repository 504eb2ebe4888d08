"""Training pieces shared by every stage (vae, teacher, causal, dmd, long). Deliberately small.

    acc = Accelerator()                                   # one CPU process here, many GPUs elsewhere
    model, opt = acc.prepare(model, opt)
    ema = EMA(acc.unwrap_model(model))
    ckpt = Checkpointer(out, config={"arch": ...})        # config must match on resume
    state = ckpt.resume(acc, model, opt, ema)             # TrainState() or the latest checkpoint in `out`
    log = CSVLogger(f"{out}/log.csv", resume_step=state.step)
    for step in progress(acc, range(state.step, steps), initial=state.step, total=steps):
        ... acc.backward(loss); opt.step(); ema.update(acc.unwrap_model(model))
        state.step = step + 1
        log.log(step=state.step, loss=..., lr=..., seconds=state.seconds(), main=acc.is_main_process)
        if state.step % every == 0: ckpt.save(acc, state, model, opt, ema)
    plot_losses(f"{out}/log.csv", f"{out}/loss.png")

Checkpoints are `ckpt-STEP.pt` files (model, optimizer, EMA, step, wall seconds, RNG states, config),
written to a temporary name and moved into place with os.replace, so a kill never leaves a torn file;
the newest `keep` are kept. Stages should draw their data from RNGs seeded by (seed, rank, step) so that
a resumed run sees exactly the batches it would have seen; the global RNG states are saved as well.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import platform
import random
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..config import ConfigError


class CheckpointMismatch(ConfigError):
    """The run folder holds a checkpoint of a different configuration."""


@dataclass
class TrainState:
    step: int = 0
    elapsed: float = 0.0  # wall seconds spent in earlier sessions of this run
    extra: dict = field(default_factory=dict)  # anything a stage wants to keep (best metric, ...)
    started: float = field(default_factory=time.perf_counter, repr=False)

    def seconds(self) -> float:
        """Total wall seconds of the run, over all resumed sessions."""
        return self.elapsed + time.perf_counter() - self.started


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_counts(args, *names: str) -> None:
    """Each named option (argparse dest) must be >= 1; the error names the flag and its value."""
    for name in names:
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. seed, rank, step), for per-step torch.Generators."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0]
               >> np.uint64(1))


def lr_at(step: int, base_lr: float, warmup: int, total: int, final_frac: float = 0.1) -> float:
    """Linear warmup, then cosine decay to `final_frac * base_lr` at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(acc, parameters, optimizer, max_norm: float = 1.0) -> float:
    """Clip the gradients of `parameters` to `max_norm`, step and clear `optimizer`; returns the gradient norm
    before clipping. The caller has run `acc.backward`."""
    grad_norm = acc.clip_grad_norm_(parameters, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)


class RunningMeans:
    """Per-column means of the values added since the last `take()`: the rows a stage logs every N steps.
    A column only added on some steps (e.g. the generator loss of DMD) is averaged over those steps."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def take(self) -> dict[str, float]:
        """The means, in the order the columns were first added; then start over."""
        means = {k: v / self.counts[k] for k, v in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers (kept in fp32).

    The decay warms up as min(decay, (1 + n) / (10 + n)) so that short runs are not dominated by the
    random initialisation.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1 - d)
        self.updates += 1

    def averaged_copy(self, model: torch.nn.Module) -> torch.nn.Module:
        """A deep copy of `model` in eval mode holding the averaged weights (the model itself is untouched)."""
        import copy

        shadow = copy.deepcopy(model).eval()
        self.copy_to(shadow)
        return shadow

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        sd = model.state_dict()
        for k, v in self.shadow.items():
            sd[k].copy_(v.to(sd[k].dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise CheckpointMismatch(f"EMA keys differ from the model's: {sorted(missing)[:5]}")
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.float().clone() for k, v in state["shadow"].items()}


def _optimizer_states(optimizer):
    """One optimizer's state dict, or a list of them (stages with a generator and a critic)."""
    if isinstance(optimizer, (list, tuple)):
        return [opt.state_dict() for opt in optimizer]
    return optimizer.state_dict()


class Checkpointer:
    """Saves and resumes (model, optimizer(s), EMA, step, RNG states, config) in `out_dir` as ckpt-STEP.pt."""

    def __init__(self, out_dir: str, config: dict, keep: int = 2):
        self.out_dir, self.config, self.keep = out_dir, json.loads(json.dumps(config)), keep

    def checkpoints(self) -> list[str]:
        paths = glob.glob(os.path.join(self.out_dir, "ckpt-*.pt"))
        return sorted((p for p in paths if re.fullmatch(r"ckpt-\d+\.pt", os.path.basename(p))),
                      key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))

    def latest(self) -> str | None:
        paths = self.checkpoints()
        return paths[-1] if paths else None

    def save(self, acc, state: TrainState, model, optimizer, ema: EMA | None = None, **extra) -> str:
        path = os.path.join(self.out_dir, f"ckpt-{state.step:07d}.pt")
        if acc.is_main_process:
            os.makedirs(self.out_dir, exist_ok=True)
            payload = {"config": self.config, "step": state.step, "elapsed": state.seconds(), "extra": state.extra,
                       "model": acc.unwrap_model(model).state_dict(), "optimizer": _optimizer_states(optimizer),
                       "ema": ema.state_dict() if ema is not None else None, "rng": rng_state(), **extra}
            tmp = f"{path}.tmp{os.getpid()}"
            torch.save(payload, tmp)
            os.replace(tmp, path)
            for old in self.checkpoints()[:-self.keep]:
                os.remove(old)
        acc.wait_for_everyone()
        return path

    def load(self, acc, path: str, model, optimizer=None, ema: EMA | None = None) -> TrainState:
        # Our own files: they hold numpy/python RNG states, hence weights_only=False.
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if payload["config"] != self.config:
            diff = sorted(k for k in set(payload["config"]) | set(self.config)
                          if payload["config"].get(k) != self.config.get(k))
            values = []  # what differs, with both values, e.g. stream.window_frames: 12 in the checkpoint, 24 now
            for k in diff:
                was, now = payload["config"].get(k), self.config.get(k)
                if isinstance(was, dict) and isinstance(now, dict):
                    values += [f"{k}.{sub}: {was.get(sub)!r} in the checkpoint, {now.get(sub)!r} now"
                               for sub in sorted(set(was) | set(now)) if was.get(sub) != now.get(sub)]
                else:
                    values.append(f"{k}: {was!r} in the checkpoint, {now!r} now")
            raise CheckpointMismatch(f"{path} was trained with a different configuration (differs in {diff}: "
                                     f"{'; '.join(values)[:600]}); use another --out folder or the same settings")
        acc.unwrap_model(model).load_state_dict(payload["model"])
        if optimizer is not None:
            optimizers = optimizer if isinstance(optimizer, (list, tuple)) else [optimizer]
            saved = payload["optimizer"] if isinstance(payload["optimizer"], list) else [payload["optimizer"]]
            if len(saved) != len(optimizers):
                raise CheckpointMismatch(f"{path} holds {len(saved)} optimizer states, this stage has {len(optimizers)}")
            for opt, opt_state in zip(optimizers, saved):
                opt.load_state_dict(opt_state)
        if ema is not None and payload["ema"] is not None:
            ema.load_state_dict(payload["ema"])
        set_rng_state(payload["rng"])
        return TrainState(step=payload["step"], elapsed=payload["elapsed"], extra=payload.get("extra", {}))

    def resume(self, acc, model, optimizer=None, ema: EMA | None = None, require: bool = False) -> TrainState:
        """The latest checkpoint's state (loaded into model/optimizer/EMA), or a fresh TrainState."""
        path = self.latest()
        if path is None:
            if require:
                raise FileNotFoundError(f"--resume: no checkpoint (ckpt-*.pt) in {self.out_dir}")
            return TrainState()
        state = self.load(acc, path, model, optimizer, ema)
        acc.print(f"resumed from {path} (step {state.step})")
        return state


class CSVLogger:
    """Appends one row per call to a CSV file and flushes it. The header is fixed by the first row.

    On resume (resume_step given), rows logged after that step by the interrupted session are dropped
    so the file never repeats a step; without resume_step an existing file is replaced.
    """

    def __init__(self, path: str, resume_step: int | None = None, main: bool = True):
        self.path, self.main, self.fields = path, main, None
        if not main:
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        rows: list[dict] = []
        if resume_step and os.path.exists(path):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                rows = [r for r in reader if float(r["step"]) <= resume_step]
        self.file = open(path, "w", newline="")
        if self.fields:
            self.writer = csv.DictWriter(self.file, self.fields)
            self.writer.writeheader()
            self.writer.writerows(rows)
            self.file.flush()

    def log(self, **row) -> None:
        if not self.main:
            return
        if self.fields is None:
            self.fields = list(row)
            self.writer = csv.DictWriter(self.file, self.fields)
            self.writer.writeheader()
        unknown = set(row) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.path}: columns {sorted(unknown)} are not in the header {self.fields}")
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        if self.main:
            self.file.close()


def read_csv(path: str) -> dict[str, np.ndarray]:
    """Columns of a CSV written by CSVLogger as float arrays (blank cells are NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def final_mean(cols: dict[str, np.ndarray], column: str, last: int = 10) -> float | None:
    """The mean of a logged column's last `last` finite values, rounded; None when it logged none (a call
    that ran no step after resuming, e.g. to export a checkpoint copied into a new folder)."""
    values = cols.get(column, np.array([]))
    values = values[np.isfinite(values)]
    return round(float(np.mean(values[-last:])), 5) if len(values) else None


def plot_losses(csv_path: str, png_path: str, title: str | None = None, skip=("step", "lr", "seconds")) -> None:
    """One panel per logged column (raw, and smoothed when long) against the step; log scale for
    positive columns spanning more than 5x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = read_csv(csv_path)
    names = [k for k in cols if k not in skip]
    if not names:
        return
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 2.2 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        ok = np.isfinite(cols[name])
        x, y = cols["step"][ok], cols[name][ok]
        ax.plot(x, y, lw=0.8, alpha=0.4)
        w = min(0.95, 1 - 20 / len(y)) if len(y) > 20 else 0.0  # about 20 independent points across the plot
        if w > 0:  # debiased exponential smoothing, as TensorBoard does
            s, sm = 0.0, []
            for i, v in enumerate(y):
                s = w * s + (1 - w) * v
                sm.append(s / (1 - w ** (i + 1)))
            ax.plot(x, sm, lw=1.5)
        if len(y) and (y > 0).all() and y.max() > 5 * y.min():
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    tmp = f"{png_path}.tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)


def log_and_checkpoint(args, acc, state: TrainState, means: "RunningMeans", log: "CSVLogger", bar, save,
                       title: str, lr: float) -> dict | None:
    """The end of a step of a one-optimiser stage: every --log-every steps and at the last, the running means
    go to log.csv (step, means, lr, seconds) and the bar; every --save-every steps and at the last, `save()`
    writes a checkpoint and loss.png is redrawn. Returns the logged row, if one was."""
    row = None
    last = state.step == args.steps
    if state.step % args.log_every == 0 or last:
        row = means.take()
        log.log(step=state.step, **row, lr=lr, seconds=round(state.seconds(), 2))
        bar.set_postfix(loss=f"{row['loss']:.4f}")
    if state.step % args.save_every == 0 or last:
        save()
        if acc.is_main_process:
            plot_losses(log.path, os.path.join(args.out, "loss.png"), title=title)
    return row


def progress(acc, iterable, **kw):
    """tqdm on the main process only."""
    return tqdm(iterable, disable=not acc.is_main_process, dynamic_ncols=True, **kw)


def hardware(acc=None) -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if acc is not None:
        info.update(device=str(acc.device), num_processes=acc.num_processes)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    return info


def write_stage_metrics(args, acc, state, stage: str, **fields) -> dict:
    """A finished stage's `out/metrics.json`: what it measured plus the record every stage keeps and
    `train card` reads (stage, steps, wall time, hardware, the command that ran it). Returns the dict."""
    result = {"stage": stage, **fields, "steps": state.step, "wall_seconds": round(state.seconds(), 1),
              "hardware": hardware(acc), "command": getattr(args, "command_line", None)}
    write_json(os.path.join(args.out, "metrics.json"), result)
    return result


def write_json(path: str, obj) -> None:
    """Write JSON atomically (temp file, then os.replace)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
