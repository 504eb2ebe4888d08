"""Serving: one worker per device, each loading every model once; requests go to the least busy worker.

    pool = WorkerPool(AppConfig(models=("tiny",), devices=("auto",)))   # loads + warms up, before launch
    with pool.acquire("tiny") as pipe:                                   # a pipeline on the least busy device
        handle = pipe.stream(...)

`Sessions` maps a browser session (Gradio's `request.session_hash`) to its running streams, so the
`update_timeline` and `stop` events (which run beside the stream) reach the stream's handle in place.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import threading
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..config import MEMORY_MODES, ConfigError, shipped_model
from ..pipeline import StreamHandle, VideoSSMPipeline
from .config import AppConfig

logger = logging.getLogger(__name__)



def expand_devices(devices: tuple[str, ...]) -> list[str]:
    """'auto' becomes every visible CUDA GPU (one worker each), or 'cpu' without one."""
    out: list[str] = []
    for d in devices:
        if d == "auto":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            out += [f"cuda:{i}" for i in range(n)] or ["cpu"]
        else:
            out.append(d)
    return list(dict.fromkeys(out))


@dataclass
class Worker:
    """One device and its pipelines (one per model), loaded once."""

    device: str
    pipelines: dict[str, VideoSSMPipeline]
    active: int = 0


class WorkerPool:
    def __init__(self, config: AppConfig, pipelines: dict[str, dict[str, VideoSSMPipeline]] | None = None):
        """Load `config.models` on every device of `config.devices` (or take already loaded `pipelines`,
        {device: {model: pipe}}), then warm each one up."""
        self.config = config.validate()
        self._lock = threading.Lock()
        if pipelines is None:
            pipelines = {}
            for device in expand_devices(config.devices):
                # from_pretrained compiles and autotunes the memory-path kernels on CUDA (pipe.warmup_ops);
                # on a CPU nothing GPU-only is imported.
                pipelines[device] = {m: VideoSSMPipeline.from_pretrained(m, device=device) for m in config.models}
        self.workers = [Worker(device, pipes) for device, pipes in pipelines.items()]
        if not self.workers:
            raise ConfigError("WorkerPool has no workers; give at least one device")
        self.models = list(self.workers[0].pipelines)
        if config.warmup:
            self.warmup()

    @property
    def default_model(self) -> str:
        return self.models[0]

    @property
    def concurrency_limit(self) -> int:
        """How many streams run at once in this process (the rest wait in Gradio's queue)."""
        return len(self.workers) * self.config.concurrency_per_worker

    def pipeline(self, model: str | None = None) -> VideoSSMPipeline:
        """The first worker's pipeline (for descriptions and checks, not for generating)."""
        return self.workers[0].pipelines[self.check_model(model)]

    def model_for(self, model: str | None, memory: str | None) -> str:
        """The model that serves `memory`: when `model` is a shipped checkpoint and the one trained for
        `memory` (assets/videossm-MEMORY) is served too, that one, so the memory radio shows the trained
        sink and window baselines rather than the hybrid weights run in their mode."""
        model = model or self.default_model
        own = shipped_model(memory) if memory else None
        if own in self.models and self.memory_of(model) is not None:
            return own
        return model

    def memory_of(self, model: str | None) -> str | None:
        """The memory mode a shipped checkpoint (assets/videossm-MEMORY) was trained for; None for others."""
        model = model or self.default_model
        return next((m for m in MEMORY_MODES if model == shipped_model(m)), None)

    def check_model(self, model: str | None) -> str:
        model = model or self.default_model
        if model not in self.models:
            raise ConfigError(f"model {model!r} is not served here; available: {', '.join(self.models)}")
        return model

    def warmup(self) -> None:
        """One short stream per worker and model, so the first visitor does not pay for lazy init."""
        for worker in self.workers:
            for name, pipe in worker.pipelines.items():
                seconds = pipe.warmup()  # one block, decoded: text encoder, transformer and decoder all run once
                logger.info("warmed up %s on %s in %.2f s", name, worker.device, seconds)

    @contextlib.contextmanager
    def acquire(self, model: str | None = None) -> Iterator[VideoSSMPipeline]:
        """The pipeline for `model` on the least busy worker, counted as busy until the block exits."""
        model = self.check_model(model)
        with self._lock:
            worker = min(self.workers, key=lambda w: w.active)
            worker.active += 1
        try:
            yield worker.pipelines[model]
        finally:
            with self._lock:
                worker.active -= 1
            if worker.active == 0 and worker.device.startswith("cuda"):
                gc.collect()
                torch.cuda.empty_cache()  # hand freed stream state back to the device


@dataclass
class Session:
    handles: list[StreamHandle] = field(default_factory=list)
    last_stats: dict | None = None  # stats of the most recent finished stream (the stream itself is freed)


class Sessions:
    """Running streams per browser session; thread-safe."""

    def __init__(self, max_streams_per_session: int):
        self.max_streams = max_streams_per_session
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self.finished: collections.deque = collections.deque(maxlen=64)  # (session, stats) of recent streams

    def add(self, session_id: str, handle: StreamHandle) -> None:
        with self._lock:
            session = self._sessions.setdefault(session_id, Session())
            if len(session.handles) >= self.max_streams:
                raise ConfigError(f"this session already runs {len(session.handles)} stream(s); at most "
                                  f"{self.max_streams} at once: press Stop or wait for it to finish")
            session.handles.append(handle)

    def finish(self, session_id: str, handle: StreamHandle, extra: dict | None = None) -> None:
        """The stream ended (done, stopped or failed): keep its stats, drop the handle and its state."""
        stats = {**handle.stats, **(extra or {})}
        with self._lock:
            session = self._sessions.get(session_id)
            if session and handle in session.handles:
                session.handles.remove(handle)
                session.last_stats = stats
            self.finished.append((session_id, stats))
        handle.state = None  # the KV cache, memory state and decoder cache go now, not when the handle is collected

    def running(self, session_id: str) -> list[StreamHandle]:
        with self._lock:
            session = self._sessions.get(session_id)
            return list(session.handles) if session else []

    def last_stats(self, session_id: str) -> dict | None:
        with self._lock:
            session = self._sessions.get(session_id)
            return session.last_stats if session else None

    def stop(self, session_id: str) -> int:
        """Cancel every stream of the session; returns how many were running."""
        handles = self.running(session_id)
        for h in handles:
            h.cancel()
        return len(handles)

    def forget(self, session_id: str) -> None:
        """The browser went away: cancel its streams and drop its record."""
        self.stop(session_id)
        with self._lock:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s.handles) for s in self._sessions.values())
