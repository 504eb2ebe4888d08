"""World metrics: the probe reads the renderer's ground truth, the tracker follows its camera, every metric
scores renderer clips (perfect videos) well and their corruptions badly, and the harness runs end to end."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from videossm.cli import main
from videossm.config import ConfigError
from videossm.eval.world import corruptions as C
from videossm.eval.world.harness import System, aggregate, bootstrap_mean, make_jobs, parse_system
from videossm.eval.world.metrics import video_metrics
from videossm.eval.world.probe import (PROBE_DIR, WEIGHTS_NAME, ProbeConfig, WorldProbe, degrade, evaluate_probe,
                                       frames_with_truth, gaussian_blur, load_probe, train_probe)
from videossm.eval.world.tracking import estimate_track
from videossm.world import HELD_OUT_COMBOS, is_held_out, parse_prompt, render_clip, sample_training_clip

SIZE = 64  # metric tests render small frames; the probe resizes every frame to 64 anyway


@pytest.fixture(scope="module")
def probe() -> WorldProbe:
    return load_probe()


def scalars(frames, clip, probe, segments=None) -> dict:
    return video_metrics(frames, segments or clip.segments, clip.fps, probe)["scalars"]


# ---------------------------------------------------------------- probe

def test_shipped_probe_reads_held_out_ground_truth(probe):
    rng = np.random.default_rng(12345)  # not a seed the probe saw
    clips = [sample_training_clip(rng, 5, 128, split="heldout") for _ in range(24)]
    truth = frames_with_truth(clips, rng, 4, probe.config)
    report = evaluate_probe(probe, truth, 128)
    assert report["color_acc"] >= 0.97 and report["shape_acc"] >= 0.93, report
    assert report["present_acc"] >= 0.93 and report["loc_err_px_median"] <= 3.0, report
    assert os.path.getsize(os.path.join(PROBE_DIR, WEIGHTS_NAME)) < 1_000_000


def test_probe_training_step_and_checkpoint_round_trip(tmp_path):
    config = dataclasses.replace(ProbeConfig(), steps=2, batch=16, val_clips=2, val_frames_per_clip=2)
    result = train_probe(config, str(tmp_path), progress=False)
    assert all(np.isfinite(v) for v in result["final_loss"].values())
    assert set(result["validation"]) == {"heldout", "heldout_degraded", "train", "train_degraded"}
    loaded = load_probe(str(tmp_path))
    import torch

    torch.manual_seed(config.seed)
    fresh = WorldProbe(config)  # the initialisation train_probe started from
    changed = [k for k, v in fresh.state_dict().items() if not torch.equal(v, loaded.state_dict()[k])]
    assert changed  # two steps moved the weights
    frames = render_clip("a red circle moving up on a gray background", 0.5, seed=0, size=SIZE).frames
    a, b = loaded.read(frames), load_probe(str(tmp_path)).read(frames)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.color, b.color)
    with pytest.raises(FileNotFoundError, match="train probe"):
        load_probe(str(tmp_path / "missing"))


def test_probe_trains_on_vae_reconstructions_and_validates_through_them(tmp_path, capsys):
    from diffusers import AutoencoderKLWan

    from videossm.models.vae import vae_config

    vae_dir = str(tmp_path / "vae")
    AutoencoderKLWan(**vae_config(z_dim=4, base_dim=4)).save_pretrained(vae_dir)
    config = dataclasses.replace(ProbeConfig(), steps=2, batch=32, val_clips=2, val_frames_per_clip=2,
                                 clip_seconds=0.6, vae_share=0.25, vae_clips=2)
    result = train_probe(config, str(tmp_path / "probe"), progress=False, vae_dir=vae_dir)
    report = result["validation"]
    assert {"heldout_vae", "train_vae", "heldout_vae_shape_confusion"} <= set(report)
    confusion = report["heldout_vae_shape_confusion"]
    named = sum(sum(row.values()) for row in confusion.values())
    right = sum(confusion[shape][shape] for shape in confusion)
    assert 0 < named <= report["heldout_vae"]["frames"]
    assert right / named == pytest.approx(report["heldout_vae"]["shape_acc"])
    assert report["heldout_vae"]["frames"] == report["heldout"]["frames"]  # the same frames, reconstructed
    assert "--vae " + vae_dir in result["command"] and result["vae"] == vae_dir
    # the CLI refuses a share without a VAE, naming the flag
    assert main(["train", "probe", "--out", str(tmp_path / "p2"), "--vae-share", "0.5", "--steps", "1"]) != 0
    assert "--vae-share 0.5 needs --vae VAE_DIR" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "p2")
    with pytest.raises(ConfigError, match="vae_share 0.1 of 4 clips per step gives 0"):
        train_probe(dataclasses.replace(config, vae_share=0.1), str(tmp_path / "p3"), progress=False, vae_dir=vae_dir)


def test_soft_outline_degradation_blurs_per_frame():
    import torch

    pixels = -torch.ones(2, 3, 32, 32)
    pixels[:, :, 8:24, 8:24] = 1.0  # a white square
    blurred = gaussian_blur(pixels, torch.tensor([0.5, 2.0]))
    assert torch.allclose(blurred.mean(), pixels.mean(), atol=1e-3)  # the kernel sums to one
    edge = lambda x: float((x[:, 8:24, 7] + 1).mean())  # noqa: E731 light spilled outside the left edge
    assert 0 < edge(blurred[0]) < edge(blurred[1])  # the wider sigma spills more
    corner, side = blurred[1, 0, 8, 8], blurred[1, 0, 16, 8]
    assert corner < side  # corners round off: the corner pixel darkens more than the middle of a side
    out = degrade(pixels, torch.Generator().manual_seed(0), prob=1.0, soft_sigma_max=1.5)
    assert out.shape == pixels.shape and out.min() >= -1 and out.max() <= 1


# ---------------------------------------------------------------- camera tracker

def test_tracker_follows_the_renderer_camera():
    exact = total = 0
    for seed in range(4):
        clip = render_clip("a white circle bouncing around on a black background", 5, seed=seed, size=SIZE,
                           scenario="pan_and_return")
        r = int(clip.radius * 1.6)
        boxes = [np.array([[rec.x - r, rec.y - r, rec.x + r + 1, rec.y + r + 1]]) for rec in clip.records]
        track = estimate_track(clip.frames, boxes)
        camera = np.stack([clip.column("camera_x"), clip.column("camera_y")], 1)
        world = np.array(clip.world_size[::-1])
        error = (track - (camera - camera[0]) + world // 2) % world - world // 2
        exact += int((np.abs(error).max(1) == 0).sum())
        total += len(track)
        assert np.abs(camera - camera[0]).max() > 0  # it did pan
    assert exact >= 0.95 * total, (exact, total)


# ---------------------------------------------------------------- metrics on perfect and spoiled videos

def test_renderer_clips_score_well_and_corruptions_badly(probe):
    clip = render_clip("a blue square bouncing around on a brown background", 6, seed=1, size=SIZE,
                       scenario="long_static")
    clean = scalars(clip.frames, clip, probe)
    assert clean["color_adherence_10s"] >= 0.95 and clean["shape_adherence_10s"] >= 0.95
    assert clean["direction_adherence_10s"] >= 0.8 and clean["moving_fraction"] == 1.0
    assert clean["drift_end"] <= 0.01 and clean["max_frozen_s"] == 0.0

    swapped = scalars(C.color_swapped(clip, "green"), clip, probe)
    assert swapped["color_adherence_10s"] <= 0.1 and swapped["shape_adherence_10s"] >= 0.9

    stalled = scalars(C.frozen(clip, 16), clip, probe)
    assert stalled["moving_fraction"] <= 0.3 and stalled["max_frozen_s"] >= 3.0

    other = render_clip("a blue square bouncing around on a brown background", 6, seed=2, size=SIZE,
                        scenario="long_static")
    drifted = scalars(C.background_replaced(clip, other, 48), clip, probe)
    assert drifted["drift_end"] >= clean["drift_end"] + 0.03

    noisy = scalars(C.noisy(clip, 20.0), clip, probe)
    assert noisy["flicker"] <= clean["flicker"] - 0.05
    assert noisy["color_adherence_10s"] >= 0.9  # the probe sees through noise: adherence is not flicker


def test_direction_adherence_tells_directions_apart(probe):
    clip = render_clip("a yellow triangle moving left on a black background", 3, seed=4, size=SIZE)
    assert clip.records[0].x > SIZE // 2  # starts on the right: in view for the whole 3 s
    assert scalars(clip.frames, clip, probe)["direction_adherence_10s"] >= 0.8
    mirrored = clip.frames[:, :, ::-1].copy()  # the object now moves right
    assert scalars(mirrored, clip, probe)["direction_adherence_10s"] <= 0.2
    still = render_clip("a yellow triangle standing still on a black background", 3, seed=4, size=SIZE)
    assert scalars(still.frames, clip, probe)["direction_adherence_10s"] <= 0.2


def test_switch_response_and_background_survival(probe):
    clip = render_clip("a red circle moving right on a gray background", 6, seed=4, size=SIZE,
                       scenario="prompt_switch")
    old, new = (parse_prompt(p) for _, p in clip.segments)
    assert old.shape != new.shape  # this seed switches the shape
    good = video_metrics(clip.frames, clip.segments, 16, probe)["switches"][0]
    assert good["within_limit"] and good["response_s"] <= 0.25 and good["background_survived"]
    ignored = render_clip(clip.segments[0][1], 6, seed=4, size=SIZE).frames  # the old prompt throughout
    late = video_metrics(ignored, clip.segments, 16, probe)["switches"][0]
    assert not late["within_limit"] and late["response_s"] == float("inf")
    other = render_clip("a red circle moving right on a gray background", 6, seed=9, size=SIZE)
    lost = video_metrics(C.background_replaced(clip, other, clip.switch_frames[0]), clip.segments, 16, probe)
    assert lost["switches"][0]["background_survived"] is False


def test_revisit_consistency_catches_a_forgetful_memory(probe):
    clip = render_clip("a green triangle standing still on a purple background", 6, seed=3, size=SIZE,
                       scenario="pan_and_return")
    assert np.array_equal(C.forgetful(clip, 10 ** 6, 99), clip.frames)  # an unbounded memory forgets nothing
    clean = scalars(clip.frames, clip, probe)
    forgot = scalars(C.forgetful(clip, 16, 99), clip, probe)  # a 1 s memory re-invents the start view
    assert clean["revisits"] > 0 and forgot["revisits"] > 0
    assert clean["revisit_mae"] <= 0.005 and forgot["revisit_mae"] >= 0.02
    plain = scalars(render_clip("a green triangle standing still on a purple background", 3, seed=3, size=SIZE).frames,
                    clip, probe)
    assert plain["revisits"] == 0 and np.isnan(plain["revisit_mae"])  # no camera return, no revisit


def test_metrics_reject_bad_input(probe):
    clip = render_clip("a red circle moving right on a gray background", 1, seed=0, size=SIZE)
    with pytest.raises(ValueError, match="uint8 frames"):
        video_metrics(clip.frames.astype(np.float32), clip.segments, 16, probe)
    with pytest.raises(ValueError, match="start at 0"):
        video_metrics(clip.frames, [(1.0, clip.prompt)], 16, probe)


# ---------------------------------------------------------------- aggregation and harness

def test_bootstrap_ci_and_paired_difference():
    rng = np.random.default_rng(0)
    stat = bootstrap_mean(list(rng.normal(1.0, 0.1, 40)) + [float("nan")])
    assert stat["n"] == 40 and stat["lo"] < stat["mean"] < stat["hi"] and stat["hi"] - stat["lo"] < 0.1

    def videos(values):
        return {f"v{i}": {"job": {"split": "heldout"}, "scalars": {"drift_end": v}} for i, v in enumerate(values)}

    base = rng.uniform(0.02, 0.2, 20)
    table = aggregate({"hybrid": videos(base - 0.01), "window": videos(base), "sink": videos(base)},
                      [("hybrid", "window"), ("sink", "window")], samples=500)
    drift = table["background drift, last 10 s (MAE)"]
    assert drift["hybrid - window"]["hi"] < 0  # paired: a constant improvement is significant ...
    assert drift["hybrid"]["lo"] < drift["window"]["mean"]  # ... though the unpaired CIs overlap
    assert drift["sink - window"]["lo"] == drift["sink - window"]["hi"] == 0


def test_systems_and_jobs():
    assert parse_system("hybrid", "tiny") == parse_system("hybrid=tiny:hybrid", "x")
    s = parse_system("ours=runs/a/:window", "tiny")
    assert (s.label, s.model, s.memory) == ("ours", "runs/a/", "window")
    with pytest.raises(ConfigError, match="unknown memory mode 'lstm'"):
        parse_system("tiny:lstm", "tiny")
    assert parse_system("renderer", "tiny") == parse_system("renderer=renderer", "x")
    with pytest.raises(ConfigError, match="vae folder 'nowhere' not found"):
        parse_system("vae:nowhere", "tiny")
    wide = parse_system("hybrid,window=24,sink=6", "tiny")  # stream settings over the checkpoint's
    assert (wide.label, wide.memory, wide.window, wide.sink) == ("hybrid,window=24,sink=6", "hybrid", 24, 6)
    assert wide.stream_overrides() == {"window_frames": 24, "sink_frames": 6}
    assert parse_system("hybrid", "tiny").stream_overrides() == {}
    assert parse_system("w=runs/a:window,window=18", "tiny") == System("w", "runs/a", "window", window=18)
    for bad in ("hybrid,window=0", "hybrid,window=x", "hybrid,block=3", "hybrid,window"):
        with pytest.raises(ConfigError, match="bad stream setting .*window=N, sink=N"):
            parse_system(bad, "tiny")
    with pytest.raises(ConfigError, match="stream settings apply to generators, not to renderer"):
        parse_system("renderer,window=24", "tiny")
    jobs = make_jobs(6, 8, ("prompt_switch", "wraparound", "pan_and_return"), seed=1000)
    assert jobs == make_jobs(6, 8, ("prompt_switch", "wraparound", "pan_and_return"), seed=1000)
    assert [j.scenario for j in jobs[:3]] == ["prompt_switch", "wraparound", "pan_and_return"]
    for j in jobs:
        held = [is_held_out(*parse_prompt(p).combo) for _, p in j.segments]
        assert all(held) if j.split == "heldout" else not any(held)
        assert (len(j.segments) == 2) == (j.scenario == "prompt_switch")
    assert {parse_prompt(j.segments[0][1]).combo for j in jobs if j.split == "heldout"} <= set(HELD_OUT_COMBOS)
    assert make_jobs(1, 2, ("wraparound",))[0].scenario == "plain"  # too short to wrap


def test_eval_world_end_to_end_with_the_untrained_test_preset(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval-world", "--world-model", "test", "--systems", "hybrid", "window", "renderer", "--videos", "2",
            "--seconds", "1.5", "--scenarios", "long_static", "prompt_switch", "--out-dir", str(out),
            "--bootstrap", "100", "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["videos"]) == {"hybrid", "window", "renderer"} and len(results["videos"]["hybrid"]) == 2
    perfect = results["table"]["colour adherence, whole video"]["renderer"]
    assert perfect["n"] == 2 and perfect["mean"] == 1.0  # the reference system: the world's own videos
    assert results["table"]["background drift, last 10 s (MAE)"]["renderer"]["mean"] == 0.0
    video = next(iter(results["videos"]["hybrid"].values()))
    assert video["trained"] is False and len(video["curves"]["t"]) == 1
    # the presence gap: |presence - the world's presence on the job|, the world read once per job and cached
    world = {p.stem: json.loads(p.read_text()) for p in (out / "videos" / "world").glob("*.json")}
    assert set(world) == set(results["videos"]["hybrid"]) and all(w["seconds"] == 1.5 for w in world.values())
    assert all(w["system"]["memory"] == "renderer" for w in world.values())
    for label, videos in results["videos"].items():
        for name, v in videos.items():
            expected = abs(v["scalars"]["presence"] - world[name]["scalars"]["presence"])
            assert v["scalars"]["presence_gap"] == pytest.approx(expected), (label, name)
    assert results["table"]["object presence, gap to the world's"]["renderer"]["mean"] == 0.0
    table = (out / "table.md").read_text()
    assert "hybrid - window" in table and "Untrained" in table
    assert (out / "curves.png").stat().st_size > 1000
    cached = sorted((out / "videos" / "hybrid").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert main(argv) == 0  # resumed: every video's metrics come from the cache
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert main([*argv, "--compare", "window,renderer"]) == 0  # another pair, from the cached videos
    table = (out / "table.md").read_text()
    assert "window - renderer" in table and "hybrid - window" not in table
    drift = json.loads((out / "results.json").read_text())["table"]["background drift, last 10 s (MAE)"]
    assert drift["window - renderer"]["mean"] == pytest.approx(drift["window"]["mean"])  # the renderer's is 0
    assert main(["eval-world", "--systems", "tiny:lstm", "--out-dir", str(out)]) == 2
    short = [*argv[:4], "w=hybrid,window=6", *argv[7:]]  # a window of sink + block: no local past
    assert main(short) == 0
    record = json.loads(next((out / "videos" / "w").glob("*.json")).read_text())
    assert (record["system"]["window"], record["system"]["sink"]) == (6, None)
    assert main([*argv[:4], "w=hybrid,window=9", *argv[7:]]) == 2  # the cache was made with window 6
    assert "generated with stream settings {'window': 6, 'sink': None}" in capsys.readouterr().err
    longer = [a if a != "1.5" else "2" for a in argv]
    assert main(longer) == 2  # the cached videos are 1.5 s long
    assert "is a 1.5 s video, not 2 s; pass another --out-dir" in capsys.readouterr().err
    assert main([*argv[:4], "world=hybrid", *argv[7:]]) == 2
    assert "the label 'world' is reserved for the world's own videos" in capsys.readouterr().err
    assert main([*argv, "--compare", "hybrid,sink"]) == 2
    assert "--compare 'hybrid,sink': write A,B with two of the system labels" in capsys.readouterr().err


def test_world_args_join_another_eval_parser():
    import argparse

    from videossm.eval.world import add_world_args, run_from_args

    parser = argparse.ArgumentParser()  # like issue 8's `eval`, which owns --device and dispatches --world
    parser.add_argument("videos", nargs="*", metavar="VIDEO")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--world", action="store_true")
    add_world_args(parser)
    args = parser.parse_args(["--world", "--videos", "3", "--systems", "hybrid", "window", "--seconds", "30"])
    assert (args.device, args.world_videos, args.systems, args.seconds) == ("cpu", 3, ["hybrid", "window"], 30.0)
    assert args.videos == []  # the eval parser's own VIDEO files are untouched
    assert callable(run_from_args)


def test_a_cached_video_of_a_checkpoint_streamed_with_other_settings_is_refused(tmp_path, capsys):
    from videossm.pipeline import VideoSSMPipeline

    model = tmp_path / "model"
    VideoSSMPipeline.from_pretrained("test").save_pretrained(str(model))
    out = tmp_path / "eval"
    argv = ["eval-world", "--systems", f"m={model}:hybrid", "--videos", "1", "--seconds", "1", "--scenarios",
            "plain", "--out-dir", str(out), "--bootstrap", "10", "--no-progress"]
    assert main(argv) == 0
    config_path = model / "videossm_config.json"
    config = json.loads(config_path.read_text())
    stream = {"window_frames": config["stream"]["window_frames"], "sink_frames": config["stream"]["sink_frames"]}
    record = json.loads(next((out / "videos" / "m").glob("*.json")).read_text())
    assert record["stream"] == stream
    assert main(argv) == 0  # the same settings: taken from the cache
    config["stream"]["window_frames"] += 3  # as `train ship --window-frames` would re-ship it
    config_path.write_text(json.dumps(config))
    assert main(argv) == 2
    assert f"was generated with {stream}" in capsys.readouterr().err
