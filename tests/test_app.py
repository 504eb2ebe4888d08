"""The Gradio app end to end: launched in-process on loopback, driven through gradio_client's named endpoints
/generate, /update_timeline and /stop (real server, real streams, real H.264 segments)."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from videossm.video import read_video  # noqa: E402
from videossm.video.segments import write_ts_segment  # noqa: E402
from tests.helpers import free_port, timeline_json

HAVE_FFMPEG = bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="Gradio's streaming video needs the system ffmpeg and "
                                                          "ffprobe on PATH (scripts/setup.sh installs them)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RED = "a red circle moving right on a gray background"
BLUE = "a blue square moving left on a black background"


@pytest.mark.parametrize("size", [(32, 32), (33, 31)])
def test_ts_segment_round_trip(tmp_path, size):
    h, w = size
    frames = np.random.default_rng(0).integers(0, 256, (9, h, w, 3), dtype=np.uint8)
    path = write_ts_segment(tmp_path / "seg.ts", frames, fps=16)
    decoded, fps = read_video(path)
    assert decoded.shape == (9, h + h % 2, w + w % 2, 3)  # padded to even sizes for yuv420p
    assert fps == 16
    assert not os.path.exists(str(path) + ".partial")
    if HAVE_FFMPEG:
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,pix_fmt,duration",
                                "-of", "default=nw=1", str(path)], capture_output=True, text=True, check=True).stdout
        assert "codec_name=h264" in probe and "pix_fmt=yuv420p" in probe and "duration=0.5625" in probe


def test_app_help_and_env_defaults(monkeypatch):
    sys.path.insert(0, ROOT)
    import app

    from videossm.ui.config import DEFAULT_MODEL, DEFAULT_MODELS

    monkeypatch.setenv("VIDEOSSM_HOST", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.delenv("VIDEOSSM_PORT", raising=False)
    monkeypatch.delenv("VIDEOSSM_MODEL", raising=False)
    args = app.parse_args([])
    assert (args.model, args.device, args.host, args.port) == (",".join(DEFAULT_MODELS), "auto", "0.0.0.0", 7999)
    assert app.app_config(args).models[0] == DEFAULT_MODEL  # the shipped hybrid first, the baselines after it
    monkeypatch.setenv("VIDEOSSM_PORT", "7001")
    args = app.parse_args(["--model", "test,tiny", "--device", "cpu", "--max-seconds", "5"])
    assert args.port == 7001
    config = app.app_config(args)
    assert config.models == ("test", "tiny") and config.devices == ("cpu",) and config.max_seconds == 5


def test_worker_pool_spreads_requests():
    from videossm.pipeline import VideoSSMPipeline
    from videossm.ui import AppConfig, WorkerPool

    # Two workers that share one CPU stand in for two GPUs: the pool logic is the same.
    pipes = {d: {"test": VideoSSMPipeline.from_pretrained("test", device="cpu")} for d in ("cpu:0", "cpu:1")}
    pool = WorkerPool(AppConfig(models=("test",), devices=("cpu:0", "cpu:1"), concurrency_per_worker=3),
                      pipelines=pipes)
    assert pool.concurrency_limit == 6
    with pool.acquire("test") as a, pool.acquire("test") as b:
        assert a is not b and {w.active for w in pool.workers} == {1}
    assert {w.active for w in pool.workers} == {0}
    with pytest.raises(ValueError, match="not served here"):
        with pool.acquire("nope"):
            pass


@pytest.fixture(scope="module")
def served():
    from videossm.ui import AppConfig, WorkerPool, build_app

    # The test preset; generation paced to at most 1 s ahead of the viewer, so a 4 s video takes ~3 s.
    config = AppConfig(models=("test",), devices=("cpu",), max_seconds=20, default_seconds=4, max_segments=4,
                       max_prompt_chars=100, max_lead_seconds=1.0)
    demo = build_app(WorkerPool(config))
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True)
        yield demo.videossm_app, url
    finally:
        demo.close()


@pytest.fixture
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False, download_files=False)  # a fresh session per test


def test_page_and_api(served, client):
    import httpx

    app, url = served
    page = httpx.get(url, timeout=30).text + httpx.get(url.rstrip("/") + "/config", timeout=30).text
    assert "UNTRAINED" in page and "timeline-widget" in page
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/update_timeline", "/stop"} <= set(endpoints)


def _wait_for_stream(app, client, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = app.sessions.running(client.session_hash)
        if running and running[0]._stats.per_block:
            return running[0]
        time.sleep(0.05)
    raise AssertionError("the stream did not start")


@needs_ffmpeg
def test_generate_streams_segments_and_mp4(served, client):
    import httpx

    app, _ = served
    job = client.submit(timeline_json((0, RED)), 2, "hybrid", 3, "test", api_name="/generate")
    video, mp4, status, _ = job.result(timeout=60)
    streamed = [o[0] for o in job.outputs() if isinstance(o[0], dict) and o[0].get("is_stream")]
    assert len(streamed) == 3  # test preset at 16 fps: 32 frames = blocks of 9 + 12 + 11 pixel frames
    assert "Done" in status and "2.00 s** of 2 s" in status and "a red circle" in status and "UNTRAINED" in status
    frames, fps = read_video(mp4["path"])  # the downloadable mp4
    assert frames.shape == (32, 32, 32, 3) and fps == 16
    playlist = streamed[-1]["url"]  # the HLS stream the player gets decodes to the same frames
    assert read_video(playlist)[0].shape == (32, 32, 32, 3)
    assert httpx.get(playlist.rsplit("/", 1)[0] + "/playlist-file", timeout=30).status_code == 200
    stats = app.sessions.last_stats(client.session_hash)
    assert stats["frames"] == 32 and stats["encode_ms_mean"] > 0 and not app.sessions.running(client.session_hash)


@needs_ffmpeg
def test_timeline_edit_reaches_the_running_stream(served, client):
    app, _ = served
    job = client.submit(timeline_json((0, RED)), 4, "hybrid", 0, "test", api_name="/generate")
    handle = _wait_for_stream(app, client)
    locked = handle.timeline.locked_seconds
    switch_at = locked + 1.0  # the viewer-paced stream is ~1 s ahead of the viewer, well before 4 s
    assert switch_at < 3.5
    widget, table, message = client.predict(timeline_json((0, RED), (switch_at, BLUE)), 4, api_name="/update_timeline")
    assert "Edit applied" in message, message
    assert table["data"][-1] == [switch_at, BLUE]
    # Editing the locked past is refused, and the widget gets the live timeline back.
    widget, _, message = client.predict(timeline_json((0, BLUE)), 4, api_name="/update_timeline")
    assert "refused" in message and json.loads(widget)["segments"][1]["prompt"] == BLUE
    job.result(timeout=60)
    stats = app.sessions.last_stats(client.session_hash)
    switches = stats["prompt_switches"]
    assert [s["prompt"] for s in switches] == [BLUE]
    block = switches[0]
    # It took effect at the first block that starts at or after the switch time: the next block.
    starts = np.cumsum([0] + [b["frames"] for b in stats["per_block"]]) / 16
    assert starts[block["block"]] >= switch_at > starts[block["block"] - 1]
    assert all(b["prompt"] == (BLUE if starts[b["index"]] >= switch_at else RED) for b in stats["per_block"])


@needs_ffmpeg
def test_stop_cancels_promptly_and_frees_the_stream(served, client):
    app, _ = served
    job = client.submit(timeline_json((0, RED)), 20, "sink", 0, "test", api_name="/generate")
    handle = _wait_for_stream(app, client)
    t0 = time.perf_counter()
    assert client.predict(api_name="/stop") == "Stopping…"
    _, mp4, status, _ = job.result(timeout=30)
    assert time.perf_counter() - t0 < 5
    assert "Stopped" in status and mp4 is None
    assert handle.cancelled and handle.state is None  # the caches are released
    assert not app.sessions.running(client.session_hash)
    assert app.sessions.last_stats(client.session_hash)["frames"] < 20 * 16
    assert client.predict(api_name="/stop") == "Nothing is running."


@pytest.mark.parametrize("args, message", [
    ((timeline_json((0, RED)), 21, "hybrid", 0, "test"), "greater than maximum value 20"),  # Gradio's slider bound
    ((timeline_json((0, "")), 2, "hybrid", 0, "test"), "empty"),
    ((timeline_json((0, "a " * 60)), 2, "hybrid", 0, "test"), "at most 100 allowed"),
    ((timeline_json(*[(i * 0.5, RED) for i in range(5)]), 4, "hybrid", 0, "test"), "at most 4 allowed"),
    ((timeline_json((0, RED), (3, BLUE)), 2, "hybrid", 0, "test"), "max_seconds"),
    ((timeline_json((0, "a purple cat")), 2, "hybrid", 0, "test"), "does not know the word"),
    (("{not json", 2, "hybrid", 0, "test"), "not valid JSON"),
    ((timeline_json((0, RED)), 2, "full", 0, "test"), "not in the list of choices"),
    ((timeline_json((0, RED)), 2, "hybrid", -1, "test"), "less than minimum value 0"),
])
def test_over_limit_and_bad_inputs_are_refused(client, args, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")


@needs_ffmpeg
def test_one_stream_per_session(served, client):
    from gradio_client.exceptions import AppError

    app, _ = served
    job = client.submit(timeline_json((0, RED)), 10, "hybrid", 0, "test", api_name="/generate")
    _wait_for_stream(app, client)
    with pytest.raises(AppError, match="already runs 1 stream"):
        client.predict(timeline_json((0, RED)), 2, "hybrid", 0, "test", api_name="/generate")
    client.predict(api_name="/stop")
    job.result(timeout=30)


def test_handler_checks_its_own_inputs(served):
    import gradio as gr

    app, _ = served
    request = type("Request", (), {"session_hash": "direct"})()
    for args, message in [((timeline_json((0, RED)), 30, "hybrid", 0, "test"), "seconds"),
                          ((timeline_json((0, RED)), float("nan"), "hybrid", 0, "test"), "seconds"),
                          ((timeline_json((0, RED)), 1, "full", 0, "test"), "memory"),
                          ((timeline_json((0, RED)), 1, "hybrid", 1.5, "test"), "seed"),
                          ((timeline_json((0, RED)), 1, "hybrid", 0, "tiny"), "not served here"),
                          ((None, 1, "hybrid", 0, "test"), "timeline must be")]:
        with pytest.raises(gr.Error, match=message):
            next(app.generate(*args, request=request))
