"""The command line, run as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

from videossm.video.mp4 import read_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a red circle moving right on a gray background"


def run(*args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "videossm", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_lists_commands():
    out = run("--help").stdout
    assert "generate" in out and "bench" in out
    assert "--memory" in run("generate", "--help").stdout


def test_generate_writes_h264_mp4_and_stats(tmp_path):
    out, stats_path = tmp_path / "v.mp4", tmp_path / "s.json"
    timeline = tmp_path / "t.json"
    timeline.write_text(json.dumps({"fps": 16, "segments": [
        {"start": 0.0, "prompt": PROMPT}, {"start": 1.0, "prompt": "a blue square standing still on a black background"}]}))
    proc = run("generate", "--model", "test", "--timeline", str(timeline), "--seconds", "2", "--memory", "sink",
               "--out", str(out), "--stats", str(stats_path), "--threads", "1", "--no-progress")
    assert "UNTRAINED" in proc.stderr  # never pass noise off as a trained model
    assert "warmed up in" in proc.stderr  # the first frame is timed on a warm model, as a server serves it
    frames, fps = read_video(str(out))
    assert frames.shape == (32, 32, 32, 3) and fps == 16
    import av

    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    stats = json.loads(stats_path.read_text())
    assert stats["frames"] == 32 and stats["memory"] == "sink" and stats["fps"] > 0
    assert stats["first_frame_s"] > 0 and stats["peak_rss_mb"] > 0
    assert [set(b) >= {"index", "seconds", "frames"} for b in stats["per_block"]] == [True] * 3
    assert stats["prompt_switches"][0]["block"] == 2


@pytest.mark.parametrize("args,message", [
    (["--seconds", "0"], "error: seconds must be in (0, 600], got 0"),
    (["--window", "4"], "error: window_frames=4 is smaller than sink_frames + block_frames"),
    (["--model", "nope"], "error: unknown model 'nope'"),
])
def test_generate_bad_input_is_one_clear_line(tmp_path, args, message):
    proc = run("generate", "--model", "test", "--prompt", PROMPT, "--out", str(tmp_path / "v.mp4"), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "v.mp4").exists()


def test_bench_runs_every_mode_and_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    proc = run("bench", "--model", "test", "--seconds", "2", "--threads", "1", "--json", str(path))
    data = json.loads(path.read_text())
    assert set(data["results"]) == {"hybrid", "sink", "window", "full"}
    for r in data["results"].values():
        assert r["summary"]["blocks"] == 3 and r["summary"]["fps"] > 0
    assert "ratio" in proc.stdout and "hybrid" in proc.stdout
