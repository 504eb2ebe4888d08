"""The file-based edit channel (ZeroGPU mode): edits written by one process reach a generator running in another
at its next block, edits to the locked past are refused there, Stop arrives the same way; and the app forced into
that mode (AppConfig(edit_channel="file")) streams and applies edits through the file only."""

import json
import multiprocessing
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from videossm.timeline import Timeline, TimelineError  # noqa: E402
from videossm.ui.edit_channel import EditChannel, EditReader, apply_edit  # noqa: E402
from tests.helpers import free_port, timeline_json

RED = "a red circle moving right on a gray background"
BLUE = "a blue square moving left on a black background"
GREEN = "a green circle moving left on a black background"
needs_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                  reason="Gradio's streaming video needs the system ffmpeg/ffprobe (scripts/setup.sh)")


def test_channel_writes_are_atomic_and_ordered(tmp_path):
    channel = EditChannel.create(str(tmp_path))
    reader = EditReader(channel.path)
    assert reader.poll() is None and not reader.cancelled  # the empty document (seq 0) exists from the start
    n = 300

    def writer():
        for i in range(n):
            channel.write(Timeline([(0.0, RED), (1.0 + i / 100, BLUE)]))

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    while thread.is_alive() or reader.seen_seq < n:
        edit = reader.poll()  # a torn file would raise here (JSON error)
        if edit is not None:
            seen.append(edit.seq)
            assert Timeline.from_dict(edit.timeline)[1].start == 1.0 + (edit.seq - 1) / 100
    thread.join()
    assert seen == sorted(set(seen)) and seen[-1] == n  # each seq at most once, in order, the last one seen
    assert [f for f in os.listdir(tmp_path)] == [os.path.basename(channel.path)]  # no temporary files left
    channel.cancel()
    assert reader.poll().cancelled and reader.cancelled
    channel.close()
    assert not os.path.exists(channel.path)
    with pytest.raises(TimelineError, match="closed"):
        channel.write(Timeline([(0.0, RED)]))
    reader2 = EditReader(channel.path)
    assert reader2.poll() is None and reader2.cancelled  # a removed channel reads as cancelled
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TimelineError, match="bad.json"):
        EditReader(str(bad)).poll()


def test_apply_edit_uses_the_live_timeline_rules():
    from videossm.timeline import LiveTimeline
    from videossm.ui.edit_channel import Edit

    live = LiveTimeline(Timeline([(0.0, RED)]), max_seconds=4)
    live.lock_until(1.0)
    assert apply_edit(live, None) is None

    assert apply_edit(live, Edit(1, Timeline([(0.0, RED), (1.5, BLUE)]).to_dict(), False)) is None
    assert live.snapshot().prompts() == [RED, BLUE]
    error = apply_edit(live, Edit(2, Timeline([(0.0, BLUE)]).to_dict(), False))
    assert "already generated" in error and live.snapshot().prompts() == [RED, BLUE]
    assert "max_seconds" in apply_edit(live, Edit(3, Timeline([(0.0, RED), (9.0, BLUE)]).to_dict(), False))


def _generate_in_child(channel_path: str, timeline: dict, conn) -> None:
    """Child process (spawned: a fresh interpreter, like ZeroGPU's worker holds its own copy): the block loop,
    in lockstep with the parent so that 'the next block' is well defined."""
    torch.set_num_threads(1)
    from videossm.pipeline import VideoSSMPipeline
    from videossm.ui.zerogpu import stream_blocks

    pipe = VideoSSMPipeline.from_pretrained("test", device="cpu")
    for message in stream_blocks(pipe, timeline, seconds=4, seed=0, memory="hybrid", channel_path=channel_path):
        conn.send(message)
        conn.recv()  # the parent's go-ahead for the next block
    conn.send(None)


def _cpu_only(value) -> bool:
    if isinstance(value, dict):
        return all(_cpu_only(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_cpu_only(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool)) or (
        isinstance(value, np.ndarray) and value.dtype == np.uint8)


def test_edits_reach_a_generator_in_another_process(tmp_path):
    channel = EditChannel.create(str(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_generate_in_child, args=(channel.path, Timeline([(0.0, RED)]).to_dict(), child))
    process.start()
    try:
        assert parent.poll(120), "the child produced no block"
        first = parent.recv()
        assert _cpu_only(first) and first["frames"].shape[1:] == (32, 32, 3)
        assert first["block_index"] == 0 and first["prompt"] == RED and first["edit_seq"] == 0
        switch_at = first["locked_s"]  # the earliest unlocked time: where block 1 starts
        assert switch_at > 0

        # An edit written now (while the child waits at the block boundary) is used by the next block.
        channel.write(Timeline([(0.0, RED), (switch_at, BLUE)]))
        parent.send("next")
        second = parent.recv()
        assert (second["block_index"], second["prompt"], second["edit_seq"], second["edit_error"]) == (1, BLUE, 1, None)
        assert second["start_frame"] / 16 == pytest.approx(switch_at)

        # An edit of the locked past is refused by the child's LiveTimeline; the stream keeps its timeline.
        channel.write(Timeline([(0.0, GREEN), (switch_at, BLUE)]))
        parent.send("next")
        third = parent.recv()
        assert third["edit_seq"] == 2 and "already generated" in third["edit_error"]
        assert third["prompt"] == BLUE
        assert [s["prompt"] for s in third["timeline"]["segments"]] == [RED, BLUE]

        # Several edits between two blocks: the newest wins; a future switch is taken when its time comes.
        later = third["locked_s"] + 0.01
        channel.write(Timeline([(0.0, RED), (switch_at, BLUE), (later, RED)]))
        channel.write(Timeline([(0.0, RED), (switch_at, BLUE), (later, GREEN)]))
        parent.send("next")
        fourth = parent.recv()
        assert fourth["edit_seq"] == 4 and fourth["edit_error"] is None
        assert fourth["prompt"] == BLUE  # block 3 starts before `later`
        parent.send("next")
        fifth = parent.recv()
        assert fifth["prompt"] == GREEN

        # Stop travels the same way: the child stops before its next block.
        channel.cancel()
        parent.send("next")
        assert parent.recv() is None
        process.join(30)
        assert process.exitcode == 0
        assert fifth["block_index"] == 4  # 6 blocks in 4 s of the test preset; the last one never ran
    finally:
        if process.is_alive():
            process.kill()
        channel.close()


@pytest.fixture(scope="module")
def served_file_mode(tmp_path_factory):
    from videossm.ui import AppConfig, WorkerPool, build_app

    edit_dir = str(tmp_path_factory.mktemp("edits"))
    config = AppConfig(models=("test",), devices=("cpu",), max_seconds=20, default_seconds=4, max_lead_seconds=1.0,
                       edit_channel="file", edit_dir=edit_dir)
    demo = build_app(WorkerPool(config))
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True)
        yield demo.videossm_app, url, edit_dir
    finally:
        demo.close()


@needs_ffmpeg
def test_app_in_file_mode_applies_edits_through_the_file(served_file_mode):
    from gradio_client import Client

    from videossm.ui.zerogpu import RemoteStream

    app, url, edit_dir = served_file_mode
    client = Client(url, verbose=False, download_files=False)
    job = client.submit(timeline_json((0, RED)), 8, "hybrid", 0, "test", api_name="/generate")
    deadline = time.time() + 60
    while not (app.sessions.running(client.session_hash) and app.sessions.running(client.session_hash)[0]._stats.per_block):
        assert time.time() < deadline, "the stream did not start"
        time.sleep(0.05)
    stream = app.sessions.running(client.session_hash)[0]
    assert isinstance(stream, RemoteStream) and os.listdir(edit_dir) == [os.path.basename(stream.channel.path)]
    # The page knows only the blocks delivered to it; the worker may be up to ~1.5 s further (encoding, delivery,
    # max_lead_seconds), so the edit goes 2.5 s past the page's lock to land in the worker's future.
    switch_at = stream.timeline.locked_seconds + 2.5
    assert switch_at < 7.5
    _, table, message = client.predict(timeline_json((0, RED), (switch_at, BLUE)), 8, api_name="/update_timeline")
    assert "Edit applied" in message, message
    on_disk = json.load(open(stream.channel.path))
    assert on_disk["seq"] == 1 and on_disk["timeline"]["segments"][1] == {"start": switch_at, "prompt": BLUE}
    widget, _, message = client.predict(timeline_json((0, BLUE)), 8, api_name="/update_timeline")
    assert "refused" in message and json.loads(widget)["segments"][1]["prompt"] == BLUE
    _, mp4, status, _ = job.result(timeout=60)
    assert "Done" in status and mp4 is not None
    stats = app.sessions.last_stats(client.session_hash)
    assert stats["edit_channel"] == "file" and stats["frames"] == 128 and not stats["edit_errors"]
    assert [s["prompt"] for s in stats["prompt_switches"]] == [BLUE]
    starts = np.cumsum([0] + [b["frames"] for b in stats["per_block"]]) / 16
    block = stats["prompt_switches"][0]["block"]
    assert starts[block] >= switch_at > starts[block - 1]  # the first block starting at or after the switch
    assert os.listdir(edit_dir) == []  # the channel file goes with the stream


def test_zerogpu_mode_is_detected_and_configured(monkeypatch):
    import importlib.util
    import sys

    from videossm.config import ConfigError
    from videossm.ui import AppConfig
    from videossm.ui.zerogpu import zerogpu_enabled

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import app as app_main

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu_enabled()
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zerogpu_enabled() == (importlib.util.find_spec("spaces") is not None)  # never without `spaces`
    config = app_main.app_config(app_main.parse_args(["--model", "test"]), zerogpu=True)
    assert (config.zerogpu, config.edit_channel, config.warmup) == (True, "file", False)
    assert config.queue_max_size == AppConfig.queue_max_size  # explicit (ZeroGPU's default would be 1)
    with pytest.raises(ConfigError, match="edit_channel='file'"):
        AppConfig(zerogpu=True).validate()
    with pytest.raises(ConfigError, match="'pipe'"):
        AppConfig(edit_channel="pipe").validate()
    monkeypatch.delenv("VIDEOSSM_HOST", raising=False)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # what a Space sets
    assert app_main.parse_args([]).host == "0.0.0.0"


def test_space_metadata():
    """The README opens with the Space's YAML header, pinned to the gradio this project installs."""
    import gradio
    import yaml

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__ and meta["app_file"] == "app.py"
    assert f"gradio=={meta['sdk_version']}" in open(os.path.join(root, "requirements.txt")).read()
    assert {"title", "emoji", "python_version", "suggested_hardware"} <= set(meta)
    assert os.path.exists(os.path.join(root, meta["app_file"]))
    assert "ffmpeg" in open(os.path.join(root, "packages.txt")).read().split()
    assert text.split("---\n", 2)[2].lstrip().startswith("# VideoSSM")  # the page itself starts right after
