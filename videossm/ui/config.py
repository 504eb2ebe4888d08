"""Every limit and default of the Gradio app, in one dataclass.

The default model is `DEFAULT_MODEL`: the shipped checkpoint when present (videossm.config.default_model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import ConfigError, default_model, shipped_model

# The model `python app.py` serves when neither --model nor VIDEOSSM_MODEL is given: the shipped
# assets/videossm-hybrid once it exists, else the UNTRAINED "tiny" preset (random weights). The shipped
# sink and window baselines are served beside it, for the memory radio (WorkerPool.model_for).
DEFAULT_MODEL = default_model()
DEFAULT_MODELS = tuple(dict.fromkeys(m for m in (DEFAULT_MODEL, shipped_model("sink"), shipped_model("window")) if m))
EDIT_CHANNELS = ("memory", "file")


@dataclass(frozen=True)
class AppConfig:
    """Limits, queue sizes and streaming behaviour of the app (see README, "The app")."""

    models: tuple[str, ...] = DEFAULT_MODELS  # preset names or checkpoint folders; the first is the default
    devices: tuple[str, ...] = ("auto",)  # one worker per device; "auto" = every CUDA GPU, else one CPU worker
    # Limits, each refused with a message that names it.
    max_seconds: float = 60.0  # length of one generation
    default_seconds: float = 8.0
    max_prompt_chars: int = 300
    max_segments: int = 16
    max_streams_per_session: int = 1
    # Queue: requests beyond the running ones wait in line (with their position shown), up to this many.
    queue_max_size: int = 16
    concurrency_per_worker: int = 2  # streams one worker (one GPU, or the CPU) runs at once
    # Streaming.
    max_lead_seconds: float | None = 3.0  # generation pauses when this far ahead of the viewer (None: never)
    preroll_margin: float = 1.15  # buffer remaining * (1/speed - 1) * margin ahead of the viewer when slower
    speed_window_blocks: int = 4  # the speed that decides pre-roll is measured over this many recent blocks
    chunk_queue_blocks: int = 4  # generated blocks waiting for the encoder before generation waits
    warmup: bool = True  # run one short stream per worker and model before serving
    # Where generation runs and how timeline edits reach it (see videossm/ui/zerogpu.py):
    #   "memory": in this process; edits mutate the stream's LiveTimeline in place.
    #   "file":   through `gpu_stream`, which reads edits from a per-stream file at each block boundary
    #             (ZeroGPU runs it in another process; without ZeroGPU it runs here, same channel).
    edit_channel: str = "memory"
    edit_dir: str | None = None  # folder for the edit-channel files (None: the system temp folder)
    zerogpu: bool = False  # wrap the generating function with @spaces.GPU (needs edit_channel="file")
    gpu_duration_s: int = 120  # @spaces.GPU(duration=...): the longest one stream may hold the GPU

    def validate(self) -> "AppConfig":
        if not self.models:
            raise ConfigError("AppConfig.models is empty; give at least one preset name or checkpoint folder")
        if not self.devices:
            raise ConfigError("AppConfig.devices is empty; give at least one device, e.g. 'auto' or 'cpu'")
        if not 0 < self.default_seconds <= self.max_seconds:
            raise ConfigError(f"default_seconds must be in (0, max_seconds={self.max_seconds:g}], "
                              f"got {self.default_seconds:g}")
        for name in ("max_prompt_chars", "max_segments", "max_streams_per_session", "queue_max_size",
                     "concurrency_per_worker", "chunk_queue_blocks", "speed_window_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"AppConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_lead_seconds is not None and not self.max_lead_seconds > 0:
            raise ConfigError(f"max_lead_seconds must be > 0 or None, got {self.max_lead_seconds}")
        if self.edit_channel not in EDIT_CHANNELS:
            raise ConfigError(f"edit_channel must be one of {', '.join(EDIT_CHANNELS)}, got {self.edit_channel!r}")
        if self.zerogpu and self.edit_channel != "file":
            raise ConfigError("zerogpu=True runs generation in another process, so it needs edit_channel='file', "
                              f"got {self.edit_channel!r}")
        if self.gpu_duration_s < 1:
            raise ConfigError(f"gpu_duration_s must be >= 1 second, got {self.gpu_duration_s}")
        if not self.preroll_margin >= 1:
            raise ConfigError(f"preroll_margin must be >= 1, got {self.preroll_margin}")
        return self

    def replace(self, **changes) -> "AppConfig":
        return dataclasses.replace(self, **changes).validate()
