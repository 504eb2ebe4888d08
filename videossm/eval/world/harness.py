"""The world-metric table: generate videos for each system, measure them, aggregate with bootstrap CIs.

    python -m videossm eval-world --systems hybrid=tiny:hybrid sink=tiny:sink window=tiny:window \
        --videos 16 --seconds 60 --out-dir runs/world_eval

A *system* is a model (checkpoint folder or preset) under one memory mode: `LABEL=MODEL:MEMORY`,
`MODEL:MEMORY`, or just `MEMORY` (model from --world-model). The memory mode may carry stream settings
other than the checkpoint's, e.g. `hybrid,window=24` or `sink,window=24,sink=6` (the local window and the
sink, in latent frames, as `generate --window --sink`). Two reference systems bound the table:
`renderer` (the world's perfect video of each job: the metrics' ceiling) and `vae:VAE_DIR` (that video
encoded and decoded by a VAE: the ceiling of any generator decoded by it). A third, `teacher:DIR`, is the
bidirectional teacher of the recipe (`train teacher`'s OUT/teacher) sampling each job's clip whole with
its many-step ODE: what the students are distilled from, so roughly their ceiling; it takes single-prompt
scenarios only (--scenarios plain pan_and_return wraparound long_static), and videos about as long as
its training clips (5 s). Every system generates the same *jobs*: job i
has a generation seed (`--seed` + i, beyond any training seed), a scenario (cycling over
`--scenarios`), a split (held-out combinations for even i, train for odd) and the timeline the
renderer makes for that scenario (for `prompt_switch`, one switch at mid-video). So systems are
compared on paired videos, and the difference hybrid - window is bootstrapped over the pairs.

Resumable: each video's metrics are written to `OUT/videos/LABEL/JOB.json` as soon as they are
measured (atomically); a rerun skips what exists, and refuses a record of another length or stream
settings. Outputs: `OUT/results.json` (every video's metrics
and the aggregates), `OUT/table.md`, `OUT/curves.png` (metric vs time, mean per system).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from ...config import MEMORY_MODES, TEACHER_GUIDANCE, TEACHER_SAMPLE_STEPS, ConfigError, StreamConfig
from ...config import default_model as config_default_model
from ...world import SCENARIOS, render_clip, sample_spec
from ...world.scenarios import WRAPPING_MOTIONS
from .cli import DEFAULT_SCENARIOS
from .metrics import WorldMetricConfig, video_metrics
from .probe import load_probe

logger = logging.getLogger(__name__)

# (row label, scalar key, which jobs, higher is better)
TABLE_ROWS = (
    ("colour adherence, first 10 s, held-out", "color_adherence_10s", "heldout", True),
    ("colour adherence, first 10 s, train", "color_adherence_10s", "train", True),
    ("shape adherence, first 10 s, held-out", "shape_adherence_10s", "heldout", True),
    ("shape adherence, first 10 s, train", "shape_adherence_10s", "train", True),
    ("direction adherence, first 10 s, held-out", "direction_adherence_10s", "heldout", True),
    ("direction adherence, first 10 s, train", "direction_adherence_10s", "train", True),
    ("colour adherence, whole video", "color_adherence", "all", True),
    ("object presence, whole video", "presence", "all", True),
    ("object presence, gap to the world's", "presence_gap", "all", False),
    ("switch: new attribute within 1 s", "switch_within_limit", "all", True),
    ("switch: response time (s), if it responded", "switch_response_s", "all", False),
    ("switch: background survived", "switch_background_survived", "all", True),
    ("background drift, last 10 s (MAE)", "drift_end", "all", False),
    ("revisit inconsistency (MAE)", "revisit_mae", "all", False),
    ("revisits found (frames)", "revisits", "all", True),
    ("dynamics: moving fraction", "moving_fraction", "all", True),
    ("dynamics: longest freeze (s)", "max_frozen_s", "all", False),
    ("flicker (VBench)", "flicker", "all", True),
)
CURVES = ("color_adherence", "shape_adherence", "direction_adherence", "presence", "moving_fraction", "drift",
          "flicker")


STREAM_OVERRIDES = {"window": "window_frames", "sink": "sink_frames"}  # MEMORY,KEY=N -> StreamConfig field
WORLD_LABEL = "world"  # the records of the world's own videos, measured for the presence gap (a reserved label)


@dataclass(frozen=True)
class System:
    label: str
    model: str
    memory: str
    window: int | None = None  # local window in latent frames; None: the checkpoint's
    sink: int | None = None  # sink frames; None: the checkpoint's

    def stream_overrides(self) -> dict[str, int]:
        """The StreamConfig fields this system sets over its checkpoint's (from_pretrained keywords)."""
        return {STREAM_OVERRIDES[k]: getattr(self, k) for k in STREAM_OVERRIDES if getattr(self, k) is not None}


def window_and_sink(stream: StreamConfig) -> dict[str, int]:
    """What a video record keeps of the stream it was made with (`window` mode's sink counts as 0)."""
    return {"window_frames": stream.window_frames, "sink_frames": stream.effective_sink_frames}


def stream_settings(system: System) -> dict[str, int] | None:
    """The window and sink a generator system streams with: its checkpoint folder's config under the
    system's settings. None where that is not on disk to read (references, presets, hub names)."""
    from ...weights.checkpoint import CONFIG_NAME, read_config

    if system.memory not in MEMORY_MODES or not os.path.isfile(os.path.join(system.model, CONFIG_NAME)):
        return None
    return window_and_sink(StreamConfig(**read_config(system.model).get("stream", {})).with_overrides(
        memory=system.memory, **system.stream_overrides()))


REFERENCE_SIZE = 128  # frame size of the reference systems' videos (the shipped default)


def parse_system(text: str, default_model: str | None = None) -> System:
    """`LABEL=MODEL:MEMORY`, `MODEL:MEMORY` or `MEMORY`, each optionally followed by stream settings
    (`,window=N`, `,sink=N`: latent frames, over the checkpoint's); or a reference system: `renderer` (the world's own
    perfect video of each job: the metrics' ceiling) or `vae:VAE_DIR` (that video through a diffusers
    AutoencoderKLWan folder and back: the ceiling a generator decoded by that VAE can reach). Without a
    MODEL, `default_model` or, when that is None, the shipped checkpoint of MEMORY (config.default_model)."""
    head, *settings = text.split(",")
    label, _, spec = head.rpartition("=")
    if label == WORLD_LABEL:
        raise ConfigError(f"system {text!r}: the label {WORLD_LABEL!r} is reserved for the world's own videos "
                          f"(the presence gap's reference); pick another")
    if spec == "renderer" or spec.startswith(("vae:", "teacher:")):
        if settings:
            raise ConfigError(f"system {text!r}: stream settings apply to generators, not to {spec.split(':')[0]}")
        kind, _, path = spec.partition(":")
        if kind != "renderer" and not os.path.isdir(path):
            raise ConfigError(f"system {text!r}: {kind} folder {path!r} not found")
        return System(label or kind, path or "renderer", kind)
    model, _, memory = spec.rpartition(":")
    overrides = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in STREAM_OVERRIDES or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"system {text!r}: bad stream setting {setting!r}; accepted: "
                              f"{', '.join(k + '=N' for k in STREAM_OVERRIDES)} with N a positive integer "
                              f"(e.g. hybrid,window=24)")
        overrides[key] = int(value)
    if memory not in MEMORY_MODES:
        raise ConfigError(f"system {text!r}: unknown memory mode {memory!r}; accepted: {', '.join(MEMORY_MODES)} "
                          f"(write LABEL=MODEL:MEMORY, MODEL:MEMORY or MEMORY; or renderer, vae:VAE_DIR, teacher:DIR)")
    default_model = default_model or config_default_model(memory)
    model = model or default_model
    if not label:
        label = memory if model == default_model else f"{os.path.basename(model.rstrip('/'))}:{memory}"
        label += "".join(f",{k}={v}" for k, v in overrides.items())
    return System(label, model, memory, **overrides)


class ReferenceVideos:
    """The `renderer` and `vae:DIR` systems: the world's own video of a job, optionally VAE round-tripped."""

    trained = True
    fps = 16

    def __init__(self, system: System, device: str = "auto"):
        self.system, self.vae = system, None
        if system.memory == "vae":
            import torch
            from diffusers import AutoencoderKLWan

            from ...pipeline import resolve_device

            self.vae = AutoencoderKLWan.from_pretrained(system.model).to(resolve_device(device)).eval()
            self.torch = torch

    def generate(self, job: "VideoJob", seconds: float, fps: int = 16) -> tuple[np.ndarray, dict]:
        clip = render_clip(job.segments[0][1], seconds, job.seed, REFERENCE_SIZE, fps, job.scenario)
        if tuple((float(t), p) for t, p in clip.segments) != job.segments:  # e.g. other --seconds than the jobs'
            raise ConfigError(f"job {job.name}: the renderer's timeline {clip.segments} is not the job's {job.segments}")
        frames = clip.frames
        if self.vae is not None:
            from ...train.vae import reconstruct

            with self.torch.no_grad():
                frames = reconstruct(self.vae, frames)
        return frames, {"fps": None}


# How `teacher:DIR` samples by default: as its training samples do.
DEFAULT_TEACHER_SAMPLING = {"steps": TEACHER_SAMPLE_STEPS, "guidance": TEACHER_GUIDANCE, "shift": StreamConfig().shift,
                            "start_sigma": 1.0}


class TeacherVideos:
    """The `teacher:DIR` system: the bidirectional teacher samples each job's whole clip with its ODE
    (`steps` Euler steps on a grid of timestep `shift`, classifier-free `guidance`).

    With start_sigma < 1 it does not start from pure noise but from the world's own clip of the job,
    encoded by the teacher's VAE and noised to start_sigma (a diagnostic: where in the ODE the teacher
    loses the object's shape and path)."""

    def __init__(self, system: System, device: str = "auto", steps: int = DEFAULT_TEACHER_SAMPLING["steps"],
                 guidance: float = DEFAULT_TEACHER_SAMPLING["guidance"], shift: float = DEFAULT_TEACHER_SAMPLING["shift"],
                 start_sigma: float = DEFAULT_TEACHER_SAMPLING["start_sigma"]):
        from ...pipeline import VideoSSMPipeline

        if steps < 1:
            raise ConfigError(f"teacher steps must be >= 1, got {steps}")
        if guidance < 0:
            raise ConfigError(f"teacher guidance must be >= 0, got {guidance}")
        if not shift > 0:
            raise ConfigError(f"teacher shift must be > 0, got {shift}")
        if not 0 < start_sigma <= 1:
            raise ConfigError(f"teacher start sigma must be in (0, 1], got {start_sigma}")
        self.pipe = VideoSSMPipeline.from_pretrained(system.model, device=device)
        self.trained, self.fps = self.pipe.trained, self.pipe.model_config.fps
        self.steps, self.guidance, self.shift, self.start_sigma = steps, guidance, shift, start_sigma

    def generate(self, job: "VideoJob", seconds: float, fps: int) -> tuple[np.ndarray, dict]:
        import time

        from ...config import latent_frames_for
        from ...models.vae import to_uint8_frames
        from ...sampling.ode import sample_video_latents

        if len(job.segments) > 1:
            raise ConfigError(f"job {job.name}: a teacher samples one prompt per clip, and this {job.scenario} job "
                              f"has {len(job.segments)}; pass single-prompt --scenarios (plain pan_and_return "
                              f"wraparound long_static)")
        pipe, cfg = self.pipe, self.pipe.model_config
        total = max(1, round(seconds * fps))
        latent_frames = latent_frames_for(total, cfg.vae_scale_temporal)
        clean = None
        if self.start_sigma < 1:
            clean = self.encode_reference(job, seconds, fps, latent_frames)
        started = time.perf_counter()
        x0 = sample_video_latents(pipe.transformer, pipe.encode_prompt(job.segments[0][1]), latent_frames,
                                  self.steps, self.guidance, self.shift, job.seed, clean, self.start_sigma)
        frames = to_uint8_frames(pipe.decoder.decode(pipe.decoder.new_state(), x0))[:total]
        return frames, {"fps": len(frames) / (time.perf_counter() - started)}

    def encode_reference(self, job: "VideoJob", seconds: float, fps: int, latent_frames: int):
        """The world's clip of the job as normalised latents [1, C, latent_frames, h, w] (teacher's VAE)."""
        from ...train.data import WorldLatents

        cfg = self.pipe.model_config
        encoder = WorldLatents(self.pipe.decoder.vae, cfg, latent_frames)
        frames = render_clip(job.segments[0][1], seconds, job.seed, cfg.height, fps, job.scenario).frames
        frames = frames[:encoder.pixel_frames]  # may be one short of pixel_frames: repeat the last
        frames = np.concatenate([frames, frames[-1:].repeat(encoder.pixel_frames - len(frames), 0)])
        return encoder.encode(frames[None])


@dataclass(frozen=True)
class VideoJob:
    index: int
    seed: int
    scenario: str
    split: str
    segments: tuple[tuple[float, str], ...]

    @property
    def name(self) -> str:
        return f"{self.index:03d}-{self.scenario}-{self.split}-seed{self.seed}"

    def timeline(self, fps: int) -> dict:
        return {"fps": fps, "segments": [{"start": s, "prompt": p} for s, p in self.segments]}


def make_jobs(videos: int, seconds: float, scenarios=DEFAULT_SCENARIOS, seed: int = 1000, fps: int = 16) -> list[VideoJob]:
    """The evaluation videos: scenario i % len(scenarios), held-out combos for even i, seeds seed + i."""
    for s in scenarios:
        if s not in SCENARIOS:
            raise ConfigError(f"unknown scenario {s!r}; accepted: {', '.join(SCENARIOS)}")
    jobs = []
    for i in range(videos):
        scenario = scenarios[i % len(scenarios)]
        split = "heldout" if i % 2 == 0 else "train"
        rng = np.random.default_rng([seed, i])
        spec = sample_spec(rng, split, **({"motions": WRAPPING_MOTIONS} if scenario == "wraparound" else {}))
        try:  # the renderer makes the scenario's timeline (e.g. the switch), as the `renderer` system renders it
            clip = render_clip(spec, seconds, seed + i, size=REFERENCE_SIZE, fps=fps, scenario=scenario)
        except ValueError:  # too short for this scenario (wraparound needs ~5 s): a plain video instead
            scenario, clip = "plain", render_clip(spec, seconds, seed + i, size=REFERENCE_SIZE, fps=fps)
        jobs.append(VideoJob(i, seed + i, scenario, split, tuple((float(s), p) for s, p in clip.segments)))
    return jobs


def bootstrap_mean(values, samples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean and percentile bootstrap CI of the finite values."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(samples, len(v)))].mean(1)
    a = (1 - level) / 2
    return {"mean": float(v.mean()), "lo": float(np.quantile(means, a)), "hi": float(np.quantile(means, 1 - a)),
            "n": int(len(v))}


def _write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=lambda o: None)
    os.replace(tmp, path)


def _clean(value):
    """JSON-safe: inf/nan -> None (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def measure_system(system: System, jobs: list[VideoJob], seconds: float, out_dir: str, probe, config: WorldMetricConfig,
                   device: str = "auto", save_videos: bool = False, progress: bool = True,
                   teacher_sampling: dict | None = None) -> dict[str, dict]:
    """Generate and measure every job for one system; cached per video under out_dir/videos/LABEL/.

    `teacher_sampling` ({"steps", "guidance", "shift", "start_sigma"}; DEFAULT_TEACHER_SAMPLING fills the
    rest) is how a `teacher:DIR` system samples; it is kept in each of its records, and a cached record made
    with other settings is an error rather than a silent mix. So is a generator's record made with another
    window or sink than the system now streams with (e.g. a checkpoint re-shipped with other settings;
    records older than this check carry no `stream` and are taken as they are), and a record of another
    length than `seconds` (older records carry no `seconds`)."""
    sampling, settings = None, stream_settings(system)
    if system.memory == "teacher":
        sampling = {**DEFAULT_TEACHER_SAMPLING, **(teacher_sampling or {})}
    from ...pipeline import VideoSSMPipeline

    folder = os.path.join(out_dir, "videos", system.label.replace("/", "_"))
    results, pipe = {}, None
    bar = tqdm(jobs, desc=f"{system.label}", disable=not progress, dynamic_ncols=True)
    for job in bar:
        path = os.path.join(folder, f"{job.name}.json")
        if os.path.isfile(path):
            with open(path) as f:
                cached = json.load(f)
            # a setting missing from a record (older records lack some or all) was its default
            recorded = sampling and {**DEFAULT_TEACHER_SAMPLING, **cached.get("sampling", {})}
            if recorded != sampling:
                raise ConfigError(f"{path} was sampled with {recorded}, not {sampling}; "
                                  f"pass another --out-dir (or label) for other teacher settings")
            recorded = {k: cached["system"].get(k) for k in STREAM_OVERRIDES}
            wanted = {k: getattr(system, k) for k in STREAM_OVERRIDES}
            if recorded != wanted:
                raise ConfigError(f"{path} was generated with stream settings {recorded}, not {wanted}; pass another "
                                  f"--out-dir (or label) for other settings")
            if cached.get("seconds", seconds) != seconds:  # records older than this check carry no seconds
                raise ConfigError(f"{path} is a {cached['seconds']:g} s video, not {seconds:g} s; pass another "
                                  f"--out-dir for another length")
            if settings and cached.get("stream", settings) != settings:
                raise ConfigError(f"{path} was generated with {cached['stream']}, and {system.model} now streams "
                                  f"with {settings}; pass another --out-dir (or label), or delete the record")
            results[job.name] = cached
            continue
        if pipe is None and system.memory in ("renderer", "vae"):
            pipe = ReferenceVideos(system, device)
        if pipe is None and system.memory == "teacher":
            pipe = TeacherVideos(system, device, **sampling)
        if pipe is None:
            pipe = VideoSSMPipeline.from_pretrained(system.model, device=device, memory=system.memory,
                                                    **system.stream_overrides())
        if isinstance(pipe, (ReferenceVideos, TeacherVideos)):
            fps = pipe.fps
            frames, stats = pipe.generate(job, seconds, fps)
        else:
            fps = pipe.model_config.fps
            frames, stats = pipe.generate(job.timeline(fps), seconds, seed=job.seed)
        metrics = video_metrics(frames, job.segments, fps, probe, config)
        stream = None if isinstance(pipe, (ReferenceVideos, TeacherVideos)) else window_and_sink(pipe.stream_config)
        record = _clean({"job": asdict(job), "seconds": seconds, "system": asdict(system), "trained": pipe.trained,
                         "gen_fps": stats["fps"], **({"sampling": sampling} if sampling else {}),
                         **({"stream": stream} if stream else {}), **metrics})
        if save_videos:
            from ...video.mp4 import Mp4Writer

            os.makedirs(folder, exist_ok=True)
            writer = Mp4Writer(os.path.join(folder, f"{job.name}.mp4"), fps=fps)
            writer.write(frames)
            writer.close()
        _write_json(path, record)
        results[job.name] = record
    return results


def world_presence(jobs: list[VideoJob], seconds: float, out_dir: str, probe, config: WorldMetricConfig,
                   progress: bool = True) -> dict[str, float | None]:
    """Per job name, the share of frames in which the probe finds the object in the world's own video of the
    job (the `renderer` system's `presence`). A wrapping object is off screen part of every lap, and a pan
    leaves it behind, so the world shows it only part of the time: a generator's presence should match this,
    not exceed it (an object frozen in view scores 1). Measured as a `renderer` system labelled `world`, so
    its records are cached under out_dir/videos/world/ like any system's."""
    world = System(WORLD_LABEL, "renderer", "renderer")
    records = measure_system(world, jobs, seconds, out_dir, probe, config, progress=progress)
    return {name: record["scalars"].get("presence") for name, record in records.items()}


def add_presence_gaps(per_system: dict[str, dict[str, dict]], world: dict[str, float | None]) -> None:
    """Each record's scalar `presence_gap`: |its presence - the world's presence on the same job| (None where
    either is unknown)."""
    for videos in per_system.values():
        for name, record in videos.items():
            made, truth = record["scalars"].get("presence"), world.get(name)
            gap = None if made is None or truth is None else abs(float(made) - float(truth))
            record["scalars"]["presence_gap"] = _clean(gap)


def aggregate(per_system: dict[str, dict[str, dict]], compare: list[tuple[str, str]], samples: int = 2000) -> dict:
    """Per system and table row: bootstrap mean + CI; per compared pair: the paired difference's CI."""
    table = {}
    for row, key, split, _ in TABLE_ROWS:
        entry = {}
        for label, videos in per_system.items():
            values = [_num(v["scalars"].get(key)) for v in videos.values() if split in ("all", v["job"]["split"])]
            entry[label] = bootstrap_mean(values, samples)
        for a, b in compare:
            if a in per_system and b in per_system:
                shared = [n for n in per_system[a] if n in per_system[b]
                          and split in ("all", per_system[a][n]["job"]["split"])]
                diffs = [_num(per_system[a][n]["scalars"].get(key)) - _num(per_system[b][n]["scalars"].get(key))
                         for n in shared]
                entry[f"{a} - {b}"] = bootstrap_mean(diffs, samples)
        table[row] = entry
    return table


def _cell(stat: dict, digits: int = 3) -> str:
    if not stat["n"]:
        return "n/a"
    return f"{stat['mean']:.{digits}f} [{stat['lo']:.{digits}f}, {stat['hi']:.{digits}f}] ({stat['n']})"


def markdown_table(table: dict, columns: list[str], title: str) -> str:
    lines = [f"### {title}", "", "| metric | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for row, entry in table.items():
        lines.append(f"| {row} | " + " | ".join(_cell(entry[c]) if c in entry else "n/a" for c in columns) + " |")
    lines += ["", "Mean [95% bootstrap CI] (videos). Higher is better except response time, the presence gap, "
              "drift, revisit inconsistency and freeze. Presence is best where it matches the world's own share of "
              "frames showing the object (the gap row: |presence - the world's|, per video). A difference column "
              "is paired over the same videos; its CI excluding 0 is a significant difference. n/a: no video had "
              "that event (e.g. no camera revisit, no switch)."]
    return "\n".join(lines) + "\n"


def plot_curves(per_system: dict[str, dict[str, dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(CURVES), 1, figsize=(7, 1.9 * len(CURVES)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], CURVES):
        for label, videos in per_system.items():
            curves = [v["curves"] for v in videos.values()]
            if not curves:
                continue
            length = max(len(c["t"]) for c in curves)
            t = next(c["t"] for c in curves if len(c["t"]) == length)
            stack = np.full((len(curves), length), np.nan)
            for k, c in enumerate(curves):
                stack[k, :len(c[name])] = [_num(v) for v in c[name]]
            with warnings.catch_warnings():  # windows no video measured stay NaN (gaps in the line)
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stack, 0)
            ax.plot(t, mean, marker=".", label=label)
        ax.set_ylabel(name.replace("_", " "), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("seconds into the video (window start)")
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def run_world_eval(systems: list[System], jobs: list[VideoJob], seconds: float, out_dir: str, probe_dir: str | None = None,
                   device: str = "auto", save_videos: bool = False, samples: int = 2000, progress: bool = True,
                   config: WorldMetricConfig = WorldMetricConfig(), teacher_sampling: dict | None = None,
                   compare: list[tuple[str, str]] | None = None) -> dict:
    """Measure every system on every job; write results.json, table.md and curves.png. `compare`: the
    (A, B) label pairs whose paired difference A - B is tabled (default hybrid - window, hybrid - sink)."""
    probe = load_probe(probe_dir)
    per_system = {s.label: measure_system(s, jobs, seconds, out_dir, probe, config, device, save_videos, progress,
                                          teacher_sampling) for s in systems}
    add_presence_gaps(per_system, world_presence(jobs, seconds, out_dir, probe, config, progress))
    labels = [s.label for s in systems]
    if compare is None:
        compare = [(a, b) for a, b in (("hybrid", "window"), ("hybrid", "sink")) if a in labels and b in labels]
    table = aggregate(per_system, compare, samples)
    columns = labels + [f"{a} - {b}" for a, b in compare]
    untrained = sorted({v["system"]["label"] for vids in per_system.values() for v in vids.values() if not v["trained"]})
    title = f"World metrics: {len(jobs)} videos x {seconds:g} s per system"
    md = markdown_table(table, columns, title)
    if untrained:
        md += f"\nUntrained systems (fresh weights, values are meaningless): {', '.join(untrained)}.\n"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(md)
    plot_curves(per_system, os.path.join(out_dir, "curves.png"))
    results = {"systems": [asdict(s) for s in systems], "jobs": [asdict(j) for j in jobs], "seconds": seconds,
               "table": table, "videos": per_system, "config": asdict(config)}
    _write_json(os.path.join(out_dir, "results.json"), _clean(results))
    return results
