"""A client that disconnects mid-stream: the app on loopback, a raw queue/join + SSE request (what the browser
sends), the connection dropped after a few segments; the stream must be cancelled and its state freed within
seconds, in both edit-channel modes."""

import gc
import json
import os
import shutil
import threading
import time
import uuid
import weakref

import pytest
from tests.helpers import free_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

RED = "a red circle moving right on a gray background"
pytestmark = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                reason="Gradio's streaming video needs the system ffmpeg/ffprobe (scripts/setup.sh)")


def _generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "videossm-generate" and t.is_alive()]


@pytest.mark.parametrize("edit_channel", ["memory", "file"])
def test_disconnect_cancels_the_stream_and_frees_it(edit_channel, tmp_path):
    import httpx

    from videossm.ui import AppConfig, WorkerPool, build_app

    config = AppConfig(models=("test",), devices=("cpu",), max_seconds=20, max_lead_seconds=1.0,
                       edit_channel=edit_channel, edit_dir=str(tmp_path))
    pool = WorkerPool(config)
    demo = build_app(pool)
    app = demo.videossm_app
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        fn_index = next(d["id"] for d in httpx.get(url + "config", timeout=30).json()["dependencies"]
                        if d.get("api_name") == "generate")
        session = uuid.uuid4().hex[:12]
        timeline = json.dumps({"fps": 16, "segments": [{"start": 0, "prompt": RED}]})
        joined = httpx.post(url + "gradio_api/queue/join", timeout=30, json={
            "data": [timeline, 20, "hybrid", 0, "test"], "fn_index": fn_index, "session_hash": session,
            "event_data": None, "trigger_id": None})
        assert joined.status_code == 200, joined.text
        segments = 0
        with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=60) as sse:
            for line in sse.iter_lines():
                if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_generating":
                    segments += 1
                if segments >= 3:  # a few updates in: the 20 s stream is well under way
                    break
            (handle,) = app.sessions.running(session)
            state = weakref.ref(handle.state) if handle.state is not None else None
            assert not handle.cancelled and handle._stats.frames < 20 * 16
        # The connection is closed here, mid-stream.
        t0 = time.perf_counter()
        # the session entry, the generator thread and the worker slot are released in that order, moments apart
        while app.sessions.running(session) or _generate_threads() or any(w.active for w in pool.workers):
            assert time.perf_counter() - t0 < 5, "the stream outlived its client by 5 s"
            time.sleep(0.05)
        assert handle.cancelled and handle._stats.frames < 20 * 16
        if edit_channel == "memory":
            gc.collect()
            assert handle.state is None and state() is None  # KV cache, memory state and decoder cache are gone
        else:
            assert handle.channel.seq >= 1 and os.listdir(tmp_path) == []  # cancel written, then the file removed
        assert app.sessions.last_stats(session)["frames"] == handle._stats.frames
    finally:
        demo.close()
