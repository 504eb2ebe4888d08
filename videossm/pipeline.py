"""VideoSSMPipeline: text encoder + causal transformer + streaming decoder behind one object.

    pipe = VideoSSMPipeline.from_pretrained("tiny", device="cpu", memory="hybrid")
    handle = pipe.stream(timeline, seconds=30, seed=0)
    for chunk in handle:              # one chunk per generated block
        chunk.frames                   # uint8 [n, H, W, 3]
    handle.stats                       # first_frame_s, fps, frames, peak_rss_mb, per_block, ...

`handle.timeline` is a LiveTimeline: edits made from another thread while the stream runs take effect
at the next block.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from .config import ConfigError, ModelConfig, StreamConfig, first_pixel_frame, latent_frames_for
from .models.text_encoder import TextEncoder
from .models.transformer import VideoSSMTransformer
from .models.vae import StreamingDecoder, to_uint8_frames
from .sampling.stream import StreamingGenerator, StreamState
from .timeline import LiveTimeline, Timeline

logger = logging.getLogger(__name__)


WARMUP_PROMPT = "a red circle moving right on a gray background"  # in the world grammar, so every model reads it


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} requested, but CUDA is not available on this machine; use 'cpu'")
    return device


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


@dataclass
class StreamChunk:
    frames: np.ndarray | None  # uint8 [n, H, W, 3]; None when decoding is off
    latents: torch.Tensor  # [B, C, F, h, w] clean latents of the block
    block_index: int
    start_frame: int  # first pixel frame of this chunk in the video
    prompt: str
    seconds: float  # wall time spent on this block (generation + decode)
    recached: bool = False

    @property
    def num_frames(self) -> int:
        return 0 if self.frames is None else len(self.frames)


@dataclass
class StreamStats:
    started: float = field(default_factory=time.perf_counter)
    first_frame_s: float | None = None
    frames: int = 0
    per_block: list[dict] = field(default_factory=list)
    prompt_switches: list[dict] = field(default_factory=list)
    finished: float | None = None

    def as_dict(self, extra: dict | None = None) -> dict[str, Any]:
        end = self.finished or time.perf_counter()
        elapsed = end - self.started
        out = {
            "first_frame_s": self.first_frame_s, "frames": self.frames,
            "fps": self.frames / elapsed if elapsed > 0 else 0.0, "elapsed_s": elapsed,
            "peak_rss_mb": peak_rss_mb(), "per_block": self.per_block, "prompt_switches": self.prompt_switches,
        }
        if torch.cuda.is_available():
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out.update(extra or {})
        return out


def stream_length(seconds: float, fps: int, model_config: ModelConfig, stream_config: StreamConfig
                  ) -> tuple[int, int]:
    """(pixel frames, blocks) of a `seconds`-long stream."""
    total_frames = max(1, round(seconds * fps))
    latent_total = latent_frames_for(total_frames, model_config.vae_scale_temporal)
    return total_frames, math.ceil(latent_total / stream_config.block_frames)


class StreamHandle:
    """One running stream: iterate it for chunks; edit `timeline` from anywhere; `cancel()` to stop."""

    def __init__(self, pipe: "VideoSSMPipeline", timeline: Timeline, seconds: float, seed: int,
                 generator: StreamingGenerator, decode: bool, trace: bool = False):
        self.pipe = pipe
        self.seconds = seconds
        self.seed = seed
        self.generator = generator
        self.fps = timeline.fps
        self.total_frames, self.num_blocks = stream_length(seconds, self.fps, pipe.model_config,
                                                          generator.stream_config)
        self.timeline = LiveTimeline(timeline, max_seconds=seconds)
        self._cancel = threading.Event()
        self.decode = decode and pipe.decoder is not None
        self.state: StreamState = generator.new_state(
            seed, decoder=pipe.decoder.new_state() if self.decode else None)
        if trace:
            self.state.trace = []
        self._stats = StreamStats()
        self._iterated = False

    @property
    def memory(self) -> str:
        return self.generator.stream_config.memory

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def update_timeline(self, timeline: Timeline | dict | str) -> None:
        self.timeline.replace(_as_timeline(timeline, self.fps))

    @property
    def stats(self) -> dict[str, Any]:
        sc = self.generator.stream_config
        return self._stats.as_dict({
            "model": self.pipe.name, "trained": self.pipe.trained, "memory": sc.memory,
            "device": str(self.pipe.device), "seconds": self.seconds, "seed": self.seed,
            "blocks": len(self._stats.per_block), "cache_mb": self.state.cache.nbytes() / 2**20,
        })

    def _first_pixel_frame(self, latent_frame: int) -> int:
        return first_pixel_frame(latent_frame, self.pipe.model_config.vae_scale_temporal)

    def __iter__(self) -> Iterator[StreamChunk]:
        if self._iterated:
            raise RuntimeError("a StreamHandle can be iterated once; call pipe.stream() again")
        self._iterated = True
        state, gen, stats = self.state, self.generator, self._stats
        stats.started = time.perf_counter()
        try:
            for b in range(self.num_blocks):
                if self.cancelled:
                    logger.info("stream cancelled after %d blocks", b)
                    break
                t0 = time.perf_counter()
                start = self._first_pixel_frame(state.frame_index)
                block_time = start / self.fps
                prompt = self.timeline.snapshot().prompt_at(block_time)
                recached = gen.set_prompt(state, prompt, self.pipe.encode_prompt(prompt))
                if recached or (b > 0 and stats.per_block[-1]["prompt"] != prompt):
                    stats.prompt_switches.append({"block": b, "seconds": block_time, "prompt": prompt,
                                                  "recached": recached})
                latents = gen.generate_block(state)
                if latents.is_cuda:  # time the GPU's work, not its queueing
                    torch.cuda.synchronize(latents.device)
                end = self._first_pixel_frame(state.frame_index)
                self.timeline.lock_until(min(end / self.fps, self.seconds))
                num_frames = max(0, min(self.total_frames, end) - start)
                frames = None
                if self.decode:
                    pixels = self.pipe.decoder.decode(state.decoder, latents)
                    frames = to_uint8_frames(pixels)[:num_frames]
                # without decoding, frames count the video frames the block's latents stand for
                if stats.first_frame_s is None and num_frames:
                    stats.first_frame_s = time.perf_counter() - stats.started
                stats.frames += num_frames
                seconds = time.perf_counter() - t0
                stats.per_block.append({"index": b, "seconds": seconds, "frames": num_frames, "prompt": prompt})
                yield StreamChunk(frames, latents, b, start, prompt, seconds, recached)
        finally:
            stats.finished = time.perf_counter()


def _as_timeline(timeline: Timeline | dict | str, fps: int) -> Timeline:
    if isinstance(timeline, Timeline):
        return timeline
    if isinstance(timeline, dict):
        return Timeline.from_dict(timeline)
    if isinstance(timeline, str):
        return Timeline.single(timeline, fps=fps)
    raise TypeError(f"timeline must be a Timeline, a Timeline JSON dict or a prompt string, got {type(timeline).__name__}")


class VideoSSMPipeline:
    def __init__(self, transformer: VideoSSMTransformer, text_encoder: TextEncoder, decoder: StreamingDecoder | None,
                 stream_config: StreamConfig, *, name: str, trained: bool, description: str = "",
                 trained_frames: int | None = None, loaded: list[dict] | None = None):
        self.transformer = transformer.eval()
        self.text_encoder = text_encoder
        self.decoder = decoder
        self.stream_config = stream_config.validate()
        self.name = name
        self.trained = trained
        self.description = description
        self.trained_frames = trained_frames  # global-attention training horizon (latent frames), if any
        self.loaded = loaded or []  # what was loaded from where, onto which device (describe())

    @property
    def model_config(self) -> ModelConfig:
        return self.transformer.config

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @classmethod
    def from_pretrained(cls, name_or_path: str = "tiny", device: str | torch.device | None = None,
                        memory: str | None = None, dtype: torch.dtype | None = None, seed: int = 0,
                        random_text: bool = False, **stream_overrides) -> "VideoSSMPipeline":
        """A model name (wan2.1-t2v-1.3b, self-forcing, longlive: downloaded through huggingface_hub), a hub
        repo id or local folder (our checkpoint format, or a Wan2.1 folder in the original or diffusers
        layout), or a preset name (`tiny`, `test`, `random:wan2.1-t2v-1.3b`) for fresh untrained weights.
        Real-weight options: text_encoder ("auto", "gpu", "cpu", "offload"), cache_dir (hub cache),
        embedding_cache_dir ('' disables the prompt-embedding disk cache), height / width.
        random_text (presets only): random prompt embeddings of the right shape, no text encoder (benchmarks)."""
        from .weights.loading import load_pipeline

        pipe = load_pipeline(cls, name_or_path, resolve_device(device), memory=memory, dtype=dtype, seed=seed,
                             random_text=random_text, **stream_overrides)
        pipe.warmup_ops()
        return pipe

    def warmup_ops(self) -> str | None:
        """Compile and autotune the memory-path GPU kernels now (once per process), not in the first request.

        On every device it first checks VIDEOSSM_OPS against this device, so a bad value fails at load with a
        one-line error. Kernels run on CUDA only; elsewhere no GPU module is imported. Returns the ops backend in
        use (None off CUDA). Any memory mode may be chosen per stream, so this runs whatever the default mode is.
        """
        from . import ops

        try:
            ops.selected_backend(self.device, needs_grad=False)  # BackendUnavailableError if it cannot run here
        except ValueError as e:  # an unknown VIDEOSSM_OPS value
            raise ConfigError(str(e)) from None
        if self.device.type != "cuda":
            return None
        config = self.model_config
        tokens = self.stream_config.block_frames * config.tokens_per_frame  # evicted per block = queries per block
        return ops.warmup(self.device, num_heads=config.num_attention_heads, key_dim=config.attention_head_dim,
                          value_dim=config.attention_head_dim, evicted_tokens=tokens, query_tokens=tokens,
                          dtype=self.transformer.dtype)

    def warmup(self) -> float:
        """Stream one throwaway block, decoded, so that a stream's first block does not pay for lazy
        initialisation (allocator pools, oneDNN/cuDNN primitives, the text encoder's first call): on the
        2-core CPU the first block of a process takes ~0.6 s, a warm one ~0.3 s. Returns the seconds spent."""
        started = time.perf_counter()
        for _ in self.stream(WARMUP_PROMPT, seconds=1 / self.model_config.fps, seed=0):
            pass
        return time.perf_counter() - started

    def save_pretrained(self, path: str) -> None:
        from .weights.loading import save_pipeline

        save_pipeline(self, path)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        return self.text_encoder.encode(prompt).to(self.device)

    def check_seconds(self, seconds: float, stream_config: StreamConfig) -> float:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
            raise ConfigError(f"seconds must be a number, got {seconds!r}")
        if not 0 < seconds <= stream_config.max_seconds:
            raise ConfigError(f"seconds must be in (0, {stream_config.max_seconds:g}], got {seconds:g} "
                              f"(raise max_seconds to allow longer streams)")
        return float(seconds)

    def stream(self, timeline: Timeline | dict | str, seconds: float, seed: int = 0, memory: str | None = None,
               decode: bool = True, trace: bool = False, **stream_overrides) -> StreamHandle:
        stream_config = self.stream_config.with_overrides(memory=memory, **stream_overrides)
        seconds = self.check_seconds(seconds, stream_config)
        timeline = _as_timeline(timeline, self.model_config.fps)
        # the handle's LiveTimeline checks that every segment starts inside the video
        handle = StreamHandle(self, timeline, seconds, seed, StreamingGenerator(self.transformer, stream_config),
                              decode, trace)
        for prompt in timeline.prompts():
            self.text_encoder.check(prompt)  # fail before the first block, not in the middle
        latent_total = handle.num_blocks * stream_config.block_frames
        if self.trained_frames and stream_config.memory != "full" and latent_total > self.trained_frames:
            logger.warning("%s was trained with global attention over %d latent frames; streaming %d latent frames "
                           "with memory=%s goes past what it was trained for (expect drift)", self.name,
                           self.trained_frames, latent_total, stream_config.memory)
        return handle

    def generate(self, timeline: Timeline | dict | str, seconds: float, seed: int = 0, **kwargs
                 ) -> tuple[np.ndarray, dict]:
        """Whole video at once: uint8 [n, H, W, 3] and the stats."""
        handle = self.stream(timeline, seconds, seed, **kwargs)
        frames = [chunk.frames for chunk in handle if chunk.frames is not None]
        empty = np.zeros((0, self.model_config.height, self.model_config.width, 3), np.uint8)
        return (np.concatenate(frames) if frames else empty), handle.stats

    def describe(self) -> str:
        n = sum(p.numel() for p in self.transformer.parameters())
        status = "trained" if self.trained else "UNTRAINED (random weights: the output is noise, not a trained model)"
        return (f"model {self.name!r}: {n / 1e6:.1f}M parameters, {status}, "
                f"{self.model_config.width}x{self.model_config.height} @ {self.model_config.fps} fps, "
                f"memory={self.stream_config.memory}, device={self.device}, dtype={self.transformer.dtype}"
                + "".join(f"\n  {part['component']}: " + ", ".join(f"{k}={v}" for k, v in part.items() if k != "component")
                          for part in self.loaded))

