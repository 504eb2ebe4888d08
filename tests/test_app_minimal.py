"""The minimal Gradio app end to end: launched in-process, driven through gradio_client's /generate endpoint."""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from videossm.video import read_video  # noqa: E402
from videossm.video.segments import write_ts_segment  # noqa: E402

HAVE_FFMPEG = bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="Gradio's streaming video needs the system ffmpeg and "
                                                          "ffprobe on PATH (scripts/setup.sh installs them)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    monkeypatch.setenv("VIDEOSSM_HOST", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.delenv("VIDEOSSM_PORT", raising=False)
    args = app.parse_args([])
    assert (args.model, args.device, args.host, args.port) == ("tiny", "auto", "0.0.0.0", 7999)
    monkeypatch.setenv("VIDEOSSM_PORT", "7001")
    assert app.parse_args(["--model", "test"]).port == 7001
    assert app.parse_args(["--model", "test"]).model == "test"


@pytest.fixture(scope="module")
def served():
    from gradio_client import Client

    from videossm.pipeline import VideoSSMPipeline
    from videossm.ui.minimal import build_demo

    pipe = VideoSSMPipeline.from_pretrained("test", device="cpu")
    demo = build_demo(pipe)
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                                quiet=True)
        yield pipe, demo, url, Client(url, verbose=False, download_files=False)
    finally:
        demo.close()


def test_page_says_untrained(served):
    import httpx

    pipe, _, url, client = served
    assert not pipe.trained
    assert "UNTRAINED" in pipe.describe()
    page = httpx.get(url, timeout=30).text + httpx.get(url.rstrip("/") + "/config", timeout=30).text
    assert "UNTRAINED" in page
    assert "/generate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


@needs_ffmpeg
def test_generate_streams_segments_and_mp4(served):
    import httpx

    _, _, _, client = served
    job = client.submit("a red circle moving right on a gray background", 2, "hybrid", 3, api_name="/generate")
    video, mp4, status = job.result(timeout=60)
    outputs = job.outputs()
    streamed = [o[0] for o in outputs if isinstance(o[0], dict) and o[0].get("is_stream")]
    assert len(streamed) == 3  # test preset at 16 fps: 32 frames = blocks of 9 + 12 + 11 pixel frames
    assert "Done" in status and "2.00 s of 2 s" in status and "a red circle" in status and "UNTRAINED" in status

    # The downloadable mp4, written by Mp4Writer.
    frames, fps = read_video(mp4["path"])
    assert os.path.exists(mp4["path"]) and frames.shape == (32, 32, 32, 3) and fps == 16

    # The streamed video: its HLS playlist decodes to the same number of frames, and so does Gradio's full mp4.
    playlist = streamed[-1]["url"]
    assert read_video(playlist)[0].shape == (32, 32, 32, 3)
    whole = httpx.get(playlist.rsplit("/", 1)[0] + "/playlist-file", timeout=30)
    assert whole.status_code == 200 and len(whole.content) > 0


@pytest.mark.parametrize("args, message", [
    (("", 1, "hybrid", 0), "empty"),
    (("   ", 1, "hybrid", 0), "empty"),
    # Gradio checks the component bounds and choices before the function runs.
    (("a cat", 0.5, "hybrid", 0), "less than minimum value 1"),
    (("a cat", 21, "hybrid", 0), "greater than maximum value 20"),
    (("a cat", 1, "nope", 0), "not in the list of choices"),
    (("a cat", 1, "hybrid", -1), "less than minimum value 0"),
])
def test_bad_inputs_are_user_errors(served, args, message):
    from gradio_client.exceptions import AppError

    _, _, _, client = served
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")


def test_generate_checks_its_own_inputs(served):
    import gradio as gr

    from videossm.ui.minimal import make_generate

    generate = make_generate(served[0])
    for args, message in [(("a cat", 30, "hybrid", 0), "seconds"), (("a cat", float("nan"), "hybrid", 0), "seconds"),
                          (("a cat", 1, "nope", 0), "memory"), (("a cat", 1, "hybrid", 1.5), "seed"),
                          (("", 1, "hybrid", 0), "empty"), ((None, 1, "hybrid", 0), "bad input")]:
        with pytest.raises(gr.Error, match=message):
            next(generate(*args))
