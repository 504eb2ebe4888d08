"""World metrics of one video, read from its pixels alone (plus the timeline that made it).

    result = video_metrics(frames, segments, fps=16, probe=load_probe())
    result["scalars"]["color_adherence_10s"], result["curves"]["drift"], result["switches"], ...

The probe (`probe.py`) reads, per frame, whether the object is in view, where, its colour and shape;
the tracker (`tracking.py`) estimates the camera. From those:

- **Prompt adherence** (first `adherence_seconds`, and per curve window): the share of frames showing
  the object whose probed colour (shape) is the prompt's; the share of `motion_seconds` windows whose
  measured motion is the prompt's. Frames within `settle_seconds` after a switch are skipped (that is
  switch response). A video that never shows the object scores 0; `presence` is the share of frames
  showing it (reported beside, since wraparound legitimately hides the object for a while).
- **Motion** of a window: object positions (frame pixels plus the camera track, i.e. world pixels) at
  lag L = half a window; the median displacement per frame, and per axis the median absolute one.
  Under `min_speed` x the world's speed on both axes: standing still; over it on both: bouncing around
  (diagonal); else the dominant axis' sign gives left/right/up/down. Jumps of more than twice the
  world's speed are wraps or misreads and are dropped. Windows with too few object sightings are
  "unknown" and not scored.
- **Switch response**: for each prompt switch, the seconds from the switch until the new colour/shape
  holds (`hold_fraction` of the sighted frames over `hold_seconds`) or, for motion, until a window
  starting there measures the new motion; never within the segment counts as infinite.
  `switch_within_limit` is the share of switches that respond within `switch_limit_seconds`.
  Background survival: masked background MAE between the second before the switch and the second
  after the first `settle_seconds`; survived if under `background_survived_mae`.
- **Background drift**: the reference is the video's *own* first `reference_seconds`: the per-pixel
  median of those frames with the object's box masked out (the median removes frame noise and the
  moving object). Why the video's own start and not the renderer's background: a generated world's
  texture is invented by the model from noise, so there is no ground truth to compare it to; what a
  memory must do is keep what it showed. Every frame is compared with it after following the camera
  (aligned by the track), both box-blurred (radius 2) so per-pixel noise weighs less than content
  change, the object masked in both. Reported per frame (curve), as the mean over the last 10 s
  (`drift_end`), and minute by minute (`drift_by_minute`). Lower is better; 0 is a frozen background.
- **Revisit consistency**: frames whose (tracked) view returns within 1 px to an earlier view after
  leaving it by at least half a frame; the masked, blurred MAE between the two. NaN when the camera
  never comes back (the grammar has no camera words, so a generated video pans only on its own).
- **Dynamics**: over windows whose prompt moves (not standing still) and that show the object, the
  share where it moves at all (`moving_fraction`; `frozen_fraction` = 1 - that) and the longest run
  of frozen windows in seconds.
- **Flicker**: VBench's temporal flickering (`videossm.eval.flicker`), whole video and per window.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from ...world import PromptSpec, make_geometry, parse_prompt
from ...world.scenarios import DIRECTIONS
from ..flicker import frame_pair_mae, temporal_flickering
from .probe import ProbeReading, WorldProbe
from .tracking import aligned_mae, box_blur, estimate_track, revisit_pairs


@dataclass(frozen=True)
class WorldMetricConfig:
    present_threshold: float = 0.5  # P(object in view) above which a frame "shows the object"
    mask_radius: float = 0.17  # object box half-size, fraction of the frame (the object's is 0.1)
    motion_seconds: float = 1.0  # window over which a motion is measured
    min_speed: float = 0.4  # fraction of the world's object speed that counts as moving
    min_sightings: float = 0.5  # a window needs this share of frames showing the object
    adherence_seconds: float = 10.0  # prompt adherence is reported over the first seconds
    settle_seconds: float = 1.0  # adherence skips this long after a switch
    hold_seconds: float = 0.5  # switch: the new colour/shape must hold this long ...
    hold_fraction: float = 0.8  # ... in this share of the sighted frames
    switch_limit_seconds: float = 1.0
    background_survived_mae: float = 0.05
    reference_seconds: float = 2.0  # drift: the video's own first seconds
    end_seconds: float = 10.0  # drift_end: mean over the last seconds
    blur_radius: int = 2
    revisit_leave: float = 0.5  # fraction of the frame the view must leave by
    revisit_tolerance_px: int = 1
    revisit_stride: int = 2
    curve_seconds: float = 5.0  # time resolution of the curves


@dataclass
class Segment:
    start: float  # seconds
    spec: PromptSpec


def as_segments(segments) -> list[Segment]:
    """[(start_seconds, prompt | PromptSpec)] or a Timeline JSON dict -> [Segment]."""
    if isinstance(segments, dict):
        segments = [(s["start"], s["prompt"]) for s in segments["segments"]]
    out = []
    for start, prompt in segments:
        out.append(Segment(float(start), prompt if isinstance(prompt, PromptSpec) else parse_prompt(prompt)))
    if not out or out[0].start != 0:
        raise ValueError(f"segments must start at 0 s, got {[s.start for s in out]}")
    return out


def nominal_speed(height: int, width: int, fps: int) -> float:
    """The world's object speed in pixels per frame at this frame size (see world.scenarios.Geometry)."""
    return make_geometry((max(16, height), max(16, width)), fps).speed * 1.0


def object_boxes(reading: ProbeReading, height: int, width: int, config: WorldMetricConfig) -> list[np.ndarray | None]:
    r = config.mask_radius
    boxes = []
    for x, y, p in zip(reading.x, reading.y, reading.present):
        if p < config.present_threshold:
            boxes.append(None)
            continue
        boxes.append(np.array([[int((x - r) * width), int((y - r) * height),
                                int(math.ceil((x + r) * width)), int(math.ceil((y + r) * height))]]))
    return boxes


def valid_masks(boxes: list[np.ndarray | None], height: int, width: int) -> np.ndarray:
    """bool [T, H, W]: pixels outside the object's box."""
    valid = np.ones((len(boxes), height, width), bool)
    for t, b in enumerate(boxes):
        if b is not None:
            x0, y0, x1, y1 = b[0]
            valid[t, max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
    return valid


def classify_motion(px: np.ndarray, py: np.ndarray, seen: np.ndarray, speed: float, config: WorldMetricConfig,
                    lag: int) -> str | None:
    """The motion (a MOTIONS phrase) of positions px, py [n] in world pixels where `seen`; None: unknown."""
    n = len(px)
    if seen.mean() < config.min_sightings or n <= lag:
        return None
    ok = seen[lag:] & seen[:-lag]
    dx, dy = (px[lag:] - px[:-lag])[ok] / lag, (py[lag:] - py[:-lag])[ok] / lag
    keep = (np.abs(dx) <= 2 * speed) & (np.abs(dy) <= 2 * speed)  # wraps and misreads
    dx, dy = dx[keep], dy[keep]
    if len(dx) < max(2, (n - lag) // 3):
        return None
    threshold = config.min_speed * speed
    ax, ay = np.median(np.abs(dx)), np.median(np.abs(dy))
    if ax < threshold and ay < threshold:
        return "standing still"
    if ax >= threshold and ay >= threshold:
        return "bouncing around"
    if ax >= ay:
        return "moving right" if np.median(dx) > 0 else "moving left"
    return "moving down" if np.median(dy) > 0 else "moving up"


def _longest_run(flags: list[bool]) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def masked_median(frames: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over frames [n, H, W, C] where valid [n, H, W]; (median [H, W, C], any-valid [H, W])."""
    data = np.where(valid[..., None], frames.astype(np.float32), np.nan)
    seen = valid.any(0)
    with warnings.catch_warnings():  # all-NaN pixels (always under the object) are expected; `seen` marks them
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(data, axis=0) if len(frames) else np.zeros(frames.shape[1:], np.float32)
    return np.nan_to_num(median), seen


def video_metrics(frames: np.ndarray, segments, fps: int, probe: WorldProbe | None = None,
                  config: WorldMetricConfig = WorldMetricConfig(), reading: ProbeReading | None = None,
                  track: np.ndarray | None = None) -> dict:
    """Every world metric of one video (uint8 frames [T, H, W, 3]) made from `segments`.

    `reading`/`track` may be given (e.g. ground truth, to test the metrics apart from the probe)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) < 2:
        raise ValueError(f"world metrics need uint8 frames [T>=2, H, W, 3], got {frames.shape} {frames.dtype}")
    segments = as_segments(segments)
    n, height, width = frames.shape[:3]
    if reading is None:
        if probe is None:
            raise ValueError("video_metrics needs a probe (or a reading)")
        reading = probe.read(frames)
    boxes = object_boxes(reading, height, width, config)
    if track is None:
        track = estimate_track(frames, boxes)
    seen = reading.present >= config.present_threshold  # [T]
    speed = nominal_speed(height, width, fps)  # px per frame
    px = reading.x * width + track[:, 0]  # [T] world pixels (relative to frame 0's view)
    py = reading.y * height + track[:, 1]
    starts = [round(s.start * fps) for s in segments] + [n]
    seg_of = np.zeros(n, np.int64)
    for k in range(len(segments)):
        seg_of[starts[k]:starts[k + 1]] = k
    since_switch = np.array([(t - starts[seg_of[t]]) / fps if seg_of[t] > 0 else np.inf for t in range(n)])
    settled = since_switch >= config.settle_seconds
    color_ok = np.array([reading.color_names()[t] == segments[seg_of[t]].spec.color for t in range(n)])
    shape_ok = np.array([reading.shape_names()[t] == segments[seg_of[t]].spec.shape for t in range(n)])

    # motion windows: non-overlapping, inside one segment, after it settled
    win = max(2, round(config.motion_seconds * fps))
    lag = max(1, win // 2)
    windows = []  # (start, stop, target motion, measured motion or None)
    for k, seg in enumerate(segments):
        first = starts[k] + (round(config.settle_seconds * fps) if k > 0 else 0)
        for a in range(first, starts[k + 1] - win + 1, win):
            measured = classify_motion(px[a:a + win], py[a:a + win], seen[a:a + win], speed, config, lag)
            windows.append((a, a + win, seg.spec.motion, measured))

    def adherence(lo: float, hi: float) -> dict[str, float]:
        frames_in = np.zeros(n, bool)
        frames_in[int(lo * fps):int(min(n, hi * fps))] = True
        scored = frames_in & settled
        shown = scored & seen
        known = [(tgt, got) for a, b, tgt, got in windows if lo * fps <= a and b <= hi * fps + 1e-9 and got is not None]
        return {
            "color_adherence": float(color_ok[shown].mean()) if shown.any() else 0.0,
            "shape_adherence": float(shape_ok[shown].mean()) if shown.any() else 0.0,
            "direction_adherence": float(np.mean([t == g for t, g in known])) if known else float("nan"),
            "presence": float(seen[scored].mean()) if scored.any() else float("nan"),
        }

    # colour/shape adherence are over the frames that show the object (wraparound legitimately hides it for a
    # while); a video that never shows it scores 0, and `presence` says how often it is shown.
    first = adherence(0, config.adherence_seconds)
    whole = adherence(0, n / fps)

    # dynamics
    moving_windows = [(a, got) for a, b, tgt, got in windows if DIRECTIONS.get(tgt, (1, 1)) != (0, 0) and got is not None]
    frozen_flags = [got == "standing still" for _, got in moving_windows]
    moving_fraction = float(1 - np.mean(frozen_flags)) if frozen_flags else float("nan")

    # switches
    switches = []
    hold = max(1, round(config.hold_seconds * fps))
    for k in range(1, len(segments)):
        old, new = segments[k - 1].spec, segments[k].spec
        s, end = starts[k], starts[k + 1]
        changed = [f for f in ("color", "shape", "motion", "background") if getattr(old, f) != getattr(new, f)]
        # colour/shape/motion switches are timed; a background-only switch is not (NaN), only its survival
        response = math.inf if changed and changed[0] != "background" else float("nan")
        for field in changed[:1]:
            if field in ("color", "shape"):
                ok = color_ok if field == "color" else shape_ok
                for f in range(s, end - hold + 1):
                    shown = seen[f:f + hold]
                    if shown.mean() >= config.min_sightings and ok[f:f + hold][shown].mean() >= config.hold_fraction:
                        response = (f - s) / fps
                        break
            elif field == "motion":
                for f in range(s, end - win + 1, 2):
                    if classify_motion(px[f:f + win], py[f:f + win], seen[f:f + win], speed, config, lag) == new.motion:
                        response = (f - s) / fps
                        break
        background = _background_change(frames, boxes, track, s, end, fps, config)
        switches.append({"frame": s, "seconds": s / fps, "field": changed[0] if changed else None,
                         "response_s": response,
                         "within_limit": bool(response <= config.switch_limit_seconds) if not math.isnan(response) else None,
                         "background_mae": background,
                         "background_survived": bool(background <= config.background_survived_mae)
                         if not math.isnan(background) else None})

    # drift and revisits on blurred frames, object masked (one frame at a time: long videos stay small)
    def clean(t: int) -> tuple[np.ndarray, np.ndarray]:
        """(blurred float frame [H, W, 3], valid [H, W]: away from the object's box by the blur radius)."""
        blurred = box_blur(frames[t].astype(np.float32), config.blur_radius)
        near = box_blur((~valid_masks([boxes[t]], height, width)[0])[..., None].astype(np.float32),
                        config.blur_radius)[..., 0] > 0
        return blurred, ~near

    ref_n = max(1, min(n, round(config.reference_seconds * fps)))
    ref_frames = [t for t in range(ref_n) if (track[t] == track[0]).all()]
    ref_blurred, ref_valid = zip(*(clean(t) for t in ref_frames))
    reference, ref_seen = masked_median(np.stack(ref_blurred), np.stack(ref_valid))
    drift = np.array([aligned_mae(reference, ref_seen, track[0], *clean(t), track[t]) for t in range(n)])
    end_n = max(1, round(config.end_seconds * fps))
    minute = 60 * fps
    drift_by_minute = [_mean(drift[m:m + minute]) for m in range(0, n, minute)]
    pairs = revisit_pairs(track, (height, width), config.revisit_leave, config.revisit_tolerance_px,
                          config.revisit_stride)
    revisit = [aligned_mae(*clean(j), track[j], *clean(i), track[i]) for i, j in pairs]

    pair_mae = frame_pair_mae(frames)  # [T-1]
    scalars = {
        **{f"{k}_{config.adherence_seconds:g}s": v for k, v in first.items()},
        **{f"{k}": v for k, v in whole.items()},
        "moving_fraction": moving_fraction,
        "frozen_fraction": 1 - moving_fraction if not math.isnan(moving_fraction) else float("nan"),
        "max_frozen_s": _longest_run(frozen_flags) * win / fps if frozen_flags else float("nan"),
        # mean over the switches that responded at all (the others count in switch_within_limit)
        "switch_response_s": _mean([sw["response_s"] for sw in switches if np.isfinite(sw["response_s"])]),
        "switch_within_limit": _mean([float(sw["within_limit"]) for sw in switches if sw["within_limit"] is not None]),
        "switch_background_survived": _mean([float(sw["background_survived"]) for sw in switches
                                             if sw["background_survived"] is not None]),
        "drift_end": _mean(drift[-end_n:]),
        "revisit_mae": _mean(revisit),
        "revisits": len(pairs),
        "flicker": temporal_flickering(frames),
    }
    # curves
    step = max(1, round(config.curve_seconds * fps))
    curves: dict[str, list] = {"t": [], "color_adherence": [], "shape_adherence": [], "direction_adherence": [],
                               "presence": [], "moving_fraction": [], "drift": [], "flicker": []}
    for a in range(0, n, step):
        b = min(n, a + step)
        part = adherence(a / fps, b / fps)
        moving = [got != "standing still" for w0, got in moving_windows if a <= w0 < b]
        curves["t"].append(a / fps)
        for k in ("color_adherence", "shape_adherence", "direction_adherence", "presence"):
            # a window without the object (e.g. it wrapped out of view) has no colour/shape to judge
            hidden = k in ("color_adherence", "shape_adherence") and not part["presence"] > 0
            curves[k].append(float("nan") if hidden else part[k])
        curves["moving_fraction"].append(float(np.mean(moving)) if moving else float("nan"))
        curves["drift"].append(_mean(drift[a:b]))
        curves["flicker"].append(float((255 - pair_mae[a:max(a + 1, b - 1)].mean()) / 255) if b - a > 1 else float("nan"))
    return {"scalars": scalars, "curves": curves, "switches": switches,
            "drift_by_minute": drift_by_minute, "config": asdict(config),
            "frames": int(n), "fps": int(fps), "size": [int(height), int(width)]}


def _background_change(frames, boxes, track, s: int, end: int, fps: int, config: WorldMetricConfig) -> float:
    """Masked MAE between the background medians of the second before switch frame s and the second
    after it settled (camera followed: each side uses frames at its own first view)."""
    n, height, width = frames.shape[:3]
    sec = max(1, round(fps))
    before = range(max(0, s - sec), s)
    a0 = min(end, s + round(config.settle_seconds * fps))
    after = range(a0, min(end, a0 + sec))
    if not len(before) or not len(after):
        return float("nan")
    medians = []
    for idx in (before, after):
        idx = np.array(idx)
        idx = idx[(track[idx] == track[idx[0]]).all(1)]
        blurred = box_blur(frames[idx].astype(np.float32), config.blur_radius)
        valid = valid_masks([boxes[i] for i in idx], height, width)  # [len(idx), H, W]
        medians.append((*masked_median(blurred, valid), track[idx[0]]))
    (ma, va, oa), (mb, vb, ob) = medians
    return aligned_mae(ma, va, oa, mb, vb, ob)


def truth_reading(clip) -> ProbeReading:
    """The reading a perfect probe would give on a renderer clip (from its records)."""
    from ...world import COLORS, SHAPES

    height, width = clip.frames.shape[1:3]
    n = len(clip.records)
    color = np.zeros((n, len(COLORS)), np.float32)
    shape = np.zeros((n, len(SHAPES)), np.float32)
    for t, rec in enumerate(clip.records):
        color[t, COLORS.index(rec.color)] = 1
        shape[t, SHAPES.index(rec.shape)] = 1
    present = np.array([r.visible and r.visible_fraction >= 0.5 for r in clip.records], np.float32)
    return ProbeReading((clip.column("x") + 0.5) / width, (clip.column("y") + 0.5) / height, present, color, shape)
