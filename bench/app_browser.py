"""App latency on this machine, in a real browser and through the API.

    python bench/app_browser.py --model tiny --seconds 8 --runs 3

Browser (Playwright + the system Chromium): time from clicking Generate to the video element playing
(`currentTime > 0`), and the stalls after playback started (`waiting` events on the <video>) until the
stream ends. API (gradio_client): a segment added at the earliest unlocked time while the stream runs;
edit latency = the block that used the new prompt minus the blocks already generated when the edit was
sent (1 = the next block).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

RED = "a red circle moving right on a gray background"
BLUE = "a blue square moving left on a black background"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


def _timeline(*segments) -> str:
    return json.dumps({"fps": 16, "segments": [{"start": s, "prompt": p} for s, p in segments]})


def browser_run(url: str, seconds: float, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.locator("#timeline-widget .vt-seg").first.wait_for(timeout=60_000)
        box = page.locator("#seconds input[type=number]")
        box.fill(f"{seconds:g}")
        box.press("Enter")
        page.locator("#timeline-widget .vt-json").fill(_timeline((0, RED)))
        page.locator("#timeline-widget .vt-import").click()
        page.wait_for_timeout(500)
        t0 = time.perf_counter()
        page.locator("#generate").click()
        page.wait_for_function("() => { const v = document.querySelector('#player video');"
                               " return v && v.currentTime > 0; }", timeout=120_000, polling=10)
        first_play_s = time.perf_counter() - t0
        page.evaluate("() => { const v = document.querySelector('#player video'); window.__stalls = [];"
                      " v.addEventListener('waiting', () => window.__stalls.push(v.currentTime)); }")
        page.locator("#status").get_by_text("Done.").wait_for(timeout=300_000)
        page.wait_for_timeout(int(1000 * min(seconds, 5)))  # let playback run on to the end of the buffer
        stalls = page.evaluate("window.__stalls")
        played = page.evaluate("document.querySelector('#player video').currentTime")
        browser.close()
    return {"click_to_playing_s": round(first_play_s, 3), "stalls_after_start": len(stalls),
            "stall_positions_s": [round(s, 2) for s in stalls], "played_s": round(played, 2)}


def edit_latency_run(app, url: str, seconds: float, model: str, after_blocks: int) -> dict:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    job = client.submit(_timeline((0, RED)), seconds, "hybrid", 0, model, api_name="/generate")
    deadline = time.time() + 120
    while True:
        running = app.sessions.running(client.session_hash)
        if running and len(running[0]._stats.per_block) >= after_blocks:
            break
        if time.time() > deadline:
            raise RuntimeError("stream did not start")
        time.sleep(0.01)
    handle = running[0]
    done_at_edit = len(handle._stats.per_block)
    switch_at = handle.timeline.locked_seconds  # the earliest time an edit may change
    t0 = time.perf_counter()
    _, _, message = client.predict(_timeline((0, RED), (switch_at, BLUE)), seconds, api_name="/update_timeline")
    edit_call_s = time.perf_counter() - t0
    job.result(timeout=300)
    stats = app.sessions.last_stats(client.session_hash)
    switch = next(s for s in stats["prompt_switches"] if s["prompt"] == BLUE)
    return {"edit_latency_blocks": switch["block"] - done_at_edit + 1, "switch_block": switch["block"],
            "blocks_done_at_edit": done_at_edit, "edit_call_s": round(edit_call_s, 3), "message": message[:40]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (this machine has 2 shared cores)")
    parser.add_argument("--chromium", default=os.environ.get("VIDEOSSM_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--edit-channel", default="memory", choices=["memory", "file"])
    args = parser.parse_args()

    import torch

    from videossm.ui import AppConfig, WorkerPool, build_app

    torch.set_num_threads(args.threads)
    config = AppConfig(models=(args.model,), devices=("cpu",), edit_channel=args.edit_channel)
    demo = build_app(WorkerPool(config))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    app = demo.videossm_app
    try:
        for i in range(args.runs):
            result = browser_run(url, args.seconds, args.chromium)
            stats = app.sessions.finished[-1][1]
            result.update({"speed_x_realtime": round(stats["frames"] / 16 / sum(b["seconds"] for b in stats["per_block"]), 2),
                           "first_frame_generated_s": round(stats["first_frame_s"], 3),
                           "preroll_s": stats["preroll_s"], "rebuffers": stats["rebuffers"]})
            print(json.dumps({"run": i, **result}), flush=True)
        latencies = []
        for i in range(args.runs):
            result = edit_latency_run(app, url, args.seconds, args.model, after_blocks=2 + i)
            latencies.append(result["edit_latency_blocks"])
            print(json.dumps({"edit_run": i, **result}), flush=True)
        print(json.dumps({"edit_latency_blocks_max": max(latencies),
                          "edit_latency_blocks_median": statistics.median(latencies)}))
    finally:
        demo.close()


if __name__ == "__main__":
    main()
