"""The clip pool: items (one prompt script + one seed) with one clip per system, under random file names.

`pool.json` (replaced atomically) maps each item to its clips; `clips/<32 hex>.mp4` hold the videos. Nothing
in a clip's name or file says which system made it: only pool.json, on the server, knows.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field

import numpy as np

from .config import StudyConfig, write_atomic

logger = logging.getLogger(__name__)

POOL_FILE = "pool.json"
CLIP_DIR = "clips"
# The attention check's broken clip: the first frame, pixelated to blocks of this many pixels, frozen, upside down.
BROKEN_BLOCK_PX = 8


@dataclass
class PoolItem:
    id: str
    script: str | dict  # a prompt, or a Timeline JSON dict
    seed: int
    seconds: float
    clips: dict[str, str] = field(default_factory=dict)  # system name -> clip id
    broken: str | None = None  # clip id of the attention-check clip

    @property
    def prompt_text(self) -> str:
        """What the voter is shown: the prompt, or the timeline's prompts with their start times."""
        if isinstance(self.script, str):
            return self.script
        return " → ".join(f"[{s['start']:g}s] {s['prompt']}" for s in self.script.get("segments", []))


def broken_clip(frames: np.ndarray, block: int = BROKEN_BLOCK_PX) -> np.ndarray:
    """An obviously broken version of a clip: its first frame pixelated, upside down, frozen for the whole clip."""
    n, h, w, _ = frames.shape
    first = frames[0, : h - h % block or h, : w - w % block or w].astype(np.float32)
    hb, wb = max(first.shape[0] // block, 1), max(first.shape[1] // block, 1)
    coarse = first[: hb * block, : wb * block].reshape(hb, block, wb, block, 3).mean(axis=(1, 3))  # [hb, wb, 3]
    pixelated = np.repeat(np.repeat(coarse, block, 0), block, 1)
    still = np.zeros((h, w, 3), np.float32)
    still[: pixelated.shape[0], : pixelated.shape[1]] = pixelated
    return np.repeat(still[::-1][None].round().astype(np.uint8), n, axis=0)


class Pool:
    def __init__(self, config: StudyConfig):
        self.config = config
        self.path = config.path(POOL_FILE)
        self.clip_dir = os.path.abspath(config.path(CLIP_DIR))
        self._lock = threading.Lock()
        self.items: dict[str, PoolItem] = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                for d in json.load(f)["items"]:
                    self.items[d["id"]] = PoolItem(**d)

    def clip_path(self, clip_id: str) -> str:
        if not (len(clip_id) == 32 and all(c in "0123456789abcdef" for c in clip_id)):
            raise ValueError(f"bad clip id {clip_id!r}")
        return os.path.join(self.clip_dir, f"{clip_id}.mp4")

    def available(self, systems: list[str]) -> dict[str, set[str]]:
        """item id -> the systems (of `systems`) with a clip on disk for it."""
        with self._lock:
            return {i: {s for s in item.clips if s in systems} for i, item in self.items.items()}

    def save(self) -> None:
        with self._lock:
            data = {"items": [vars(item) for item in self.items.values()]}
            write_atomic(self.path, json.dumps(data, indent=1).encode())

    def add(self, item: PoolItem) -> None:
        with self._lock:
            self.items[item.id] = item
        self.save()

    def new_clip_id(self) -> str:
        return secrets.token_hex(16)

    def build(self, num_items: int, pipelines: dict | None = None, device: str = "auto",
              progress: bool = True) -> list[PoolItem]:
        """Generate `num_items` new items, each with a clip for every system (and a broken clip when attention
        checks are on). An item is added to pool.json only once all its clips are written."""
        from tqdm import tqdm

        from ..video.mp4 import Mp4Writer

        cfg = self.config
        if not cfg.scripts:
            raise ValueError("the study has no prompt scripts; pass --prompt or --prompts-file to build-pool")
        os.makedirs(self.clip_dir, exist_ok=True)
        pipelines = {} if pipelines is None else pipelines
        built = []
        bar = tqdm(total=num_items * len(cfg.systems), unit="clip", desc="study pool", disable=not progress)
        for _ in range(num_items):
            with self._lock:
                index = len(self.items)
            item = PoolItem(secrets.token_hex(8), cfg.scripts[index % len(cfg.scripts)], seed=index,
                            seconds=cfg.seconds)
            first_frames = None
            for system in cfg.systems:
                pipe = pipelines.get(system.model)
                if pipe is None:
                    from ..pipeline import VideoSSMPipeline

                    pipe = pipelines[system.model] = VideoSSMPipeline.from_pretrained(system.model, device=device)
                frames, _ = pipe.generate(item.script, cfg.seconds, seed=item.seed, memory=system.memory)
                clip_id = self.new_clip_id()
                with Mp4Writer(self.clip_path(clip_id), fps=pipe.model_config.fps) as writer:
                    writer.write(frames)
                item.clips[system.name] = clip_id
                first_frames = frames if first_frames is None else first_frames
                bar.update(1)
            if cfg.attention_check_rate > 0:
                item.broken = self.new_clip_id()
                with Mp4Writer(self.clip_path(item.broken), fps=pipe.model_config.fps) as writer:
                    writer.write(broken_clip(first_frames))
            self.add(item)
            built.append(item)
            logger.info("study pool: item %s (seed %d) with %d clips", item.id, item.seed, len(item.clips))
        bar.close()
        return built
