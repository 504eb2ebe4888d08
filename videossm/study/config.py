"""Study settings: the systems compared, the clips, and the integrity rules. Every study number lives here.

A study lives in one folder (`StudyConfig.root`):

    study.json          this config (written by `study build-pool`, read by the app and the CLI)
    pool.json           the clip pool: items (prompt script + seed) and one random-named clip per system
    clips/<hex>.mp4     the clips; names are random so nothing about the system leaks
    study.db            SQLite (WAL): issued comparisons and votes, UNIQUE(comparison, voter)
    journal/votes.jsonl fsynced append-only copy of every accepted vote (the source of truth on restart)
    secret.key          HMAC key for comparison tokens and IP hashes (0600; or VIDEOSSM_STUDY_SECRET)
    admin.sha256        hash of the admin token that `study export` and `study reset` require
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

from ..config import MEMORY_MODES, ConfigError

LETTERS = "ABCD"
CONFIG_FILE = "study.json"


@dataclass(frozen=True)
class SystemSpec:
    """One compared system: a model (preset name or checkpoint folder) run under one memory mode."""

    name: str
    model: str
    memory: str

    def validate(self) -> "SystemSpec":
        if self.memory not in MEMORY_MODES:
            raise ConfigError(f"system {self.name!r}: unknown memory mode {self.memory!r}; "
                              f"accepted: {', '.join(MEMORY_MODES)}")
        if not self.name or len(self.name) > 64 or any(c in self.name for c in ",>\n"):
            raise ConfigError(f"system name must be 1-64 characters without ',', '>' or newlines, got {self.name!r}")
        return self

    @classmethod
    def parse(cls, spec: str) -> "SystemSpec":
        """`[NAME=]MODEL:MEMORY`, e.g. `tiny:hybrid` (named `tiny-hybrid`) or `ours=assets/videossm:hybrid`."""
        name, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
        model, sep, memory = rest.rpartition(":")
        if not sep or not model:
            raise ConfigError(f"system spec must look like [NAME=]MODEL:MEMORY (e.g. tiny:hybrid), got {spec!r}")
        return cls(name or f"{os.path.basename(model.rstrip('/'))}-{memory}", model, memory).validate()


@dataclass(frozen=True)
class StudyConfig:
    root: str = "study"
    systems: tuple[SystemSpec, ...] = ()
    # The prompt scripts: a prompt string or a Timeline JSON dict each. Every item is one script + one seed.
    scripts: tuple = ()
    seconds: float = 5.0  # clip length
    videos_per_comparison: int = 4  # 2..4, capped by the number of systems
    # Integrity.
    min_watch_s: float | None = None  # seconds between issuing a comparison and accepting its vote (None: clip length)
    token_ttl_s: float = 1800.0
    votes_per_session: int = 30  # per rate window
    votes_per_ip: int = 120  # per rate window, counted per salted IP hash
    rate_window_s: float = 3600.0
    attention_check_rate: float = 0.0  # share of comparisons that carry an obviously broken clip (0: off)
    trust_forwarded_for: bool = False  # take the client IP from X-Forwarded-For (behind a proxy, e.g. a Space)
    # Pool top-up: when every item has been shown this often, generate `top_up_items` new items in the background.
    max_shows_per_item: int = 50
    top_up_items: int = 2
    # Statistics.
    bootstrap_samples: int = 2000
    bootstrap_seed: int = 0
    bt_prior: float = 0.5  # virtual wins each way per pair that met, so Bradley-Terry stays finite
    # Hub backup of the journal (both needed; the token comes from HF_TOKEN).
    hub_repo: str | None = None
    hub_every_minutes: float = 10.0  # commits at most every 10 min: far below the hub's ~128 commits per hour
    # Payload limits.
    max_token_chars: int = 512
    max_ranking_chars: int = 32

    @property
    def k(self) -> int:
        return min(self.videos_per_comparison, len(self.systems))

    @property
    def watch_s(self) -> float:
        return self.seconds if self.min_watch_s is None else self.min_watch_s

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def validate(self) -> "StudyConfig":
        names = [s.validate().name for s in self.systems]
        if len(set(names)) != len(names):
            raise ConfigError(f"system names must be unique, got {names}")
        if len(self.systems) < 2:
            raise ConfigError(f"a study needs at least 2 systems, got {len(self.systems)}: {names}")
        if not 2 <= self.videos_per_comparison <= len(LETTERS):
            raise ConfigError(f"videos_per_comparison must be in [2, {len(LETTERS)}], got {self.videos_per_comparison}")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ConfigError(f"seconds must be > 0, got {self.seconds}")
        if not 0 <= self.attention_check_rate <= 1:
            raise ConfigError(f"attention_check_rate must be in [0, 1], got {self.attention_check_rate}")
        for name in ("token_ttl_s", "rate_window_s", "votes_per_session", "votes_per_ip", "max_shows_per_item",
                     "bootstrap_samples"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.watch_s < 0:
            raise ConfigError(f"min_watch_s must be >= 0, got {self.min_watch_s}")
        return self

    def replace(self, **changes) -> "StudyConfig":
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("root")
        d["systems"] = [dataclasses.asdict(s) for s in self.systems]
        d["scripts"] = list(self.scripts)
        return d

    @classmethod
    def from_dict(cls, d: dict, root: str) -> "StudyConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"root"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown study config keys {unknown}; accepted: {sorted(known)}")
        d = dict(d)
        d["systems"] = tuple(SystemSpec(**s) for s in d.get("systems", ()))
        d["scripts"] = tuple(d.get("scripts", ()))
        return cls(root=root, **d).validate()

    def save(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        write_atomic(self.path(CONFIG_FILE), json.dumps(self.to_dict(), indent=2).encode())

    @classmethod
    def load(cls, root: str, **overrides) -> "StudyConfig":
        path = os.path.join(root, CONFIG_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no study in {root!r} ({CONFIG_FILE} missing); create one with "
                                    f"`python -m videossm study build-pool --root {root} ...`")
        with open(path) as f:
            d = json.load(f)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(d, root)


def write_atomic(path: str, data: bytes, mode: int | None = None) -> None:
    """Write a whole file so that a crash leaves either the old or the new content, never half."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is None else mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
