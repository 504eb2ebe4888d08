"""The app in a real browser: Playwright drives Debian's Chromium (scripts/setup.sh installs it) against the app
served on loopback. Clicking Generate must make the video play, the timeline widget must edit, move the playhead
and export JSON, and an edit must reach the stream. A screenshot goes to test-artifacts/app.png."""

import json
import os
import shutil
import time

import pytest
from tests.helpers import free_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = os.environ.get("VIDEOSSM_CHROMIUM", "/usr/bin/chromium")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
BLUE = "a blue square moving left on a black background"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (scripts/setup.sh installs "
                                                            "Debian's chromium; set VIDEOSSM_CHROMIUM elsewhere)"),
    pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                       reason="the streaming player needs the system ffmpeg/ffprobe (scripts/setup.sh installs them)"),
]


def launch(demo) -> str:
    """Serve the app on loopback in this process; its URL."""
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return url


def open_page(playwright):
    """(browser, page): headless Chromium with a page big enough for the whole app."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    return browser, browser.new_page(viewport={"width": 1400, "height": 1100})


def test_browser_generate_plays_and_timeline_edits():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
    from videossm.ui import AppConfig, WorkerPool, build_app

    config = AppConfig(models=("test",), devices=("cpu",), max_seconds=20, default_seconds=6, max_lead_seconds=1.5)
    demo = build_app(WorkerPool(config))
    app = demo.videossm_app
    url = launch(demo)
    os.makedirs(ARTIFACTS, exist_ok=True)
    try:
        with playwright_api.sync_playwright() as p:
            browser, page = open_page(p)
            page.goto(url)
            widget = page.locator("#timeline-widget")
            widget.locator(".vt-seg").first.wait_for(timeout=30_000)
            segments_before = widget.locator(".vt-seg").count()

            # A 6 s video (the slider's number box), starting from one segment: Import a one-segment timeline.
            box = page.locator("#seconds input[type=number]")
            box.fill("6")
            box.press("Enter")
            page.wait_for_function("() => (document.querySelector('#timeline-widget .vt-readout') || {textContent: ''})"
                                   ".textContent.includes('of 6 s')", timeout=15_000)
            # Start from one segment (the example may have several): Import a one-segment timeline.
            example_box = page.locator("#example input")
            assert example_box.input_value()  # the page opens on an example
            widget.locator(".vt-json").fill(json.dumps(
                {"fps": 16, "segments": [{"start": 0, "prompt": "a red circle moving right on a gray background"}]}))
            widget.locator(".vt-import").click()
            assert widget.locator(".vt-seg").count() == 1, segments_before
            # The Example menu follows the timeline: an imported timeline is no example, so it goes blank.
            page.wait_for_function("() => document.querySelector('#example input').value === ''", timeout=15_000)
            # Add a segment (it lands halfway through the free time), then edit its prompt.
            widget.locator(".vt-add").click()
            assert widget.locator(".vt-seg").count() == 2
            start = float(widget.locator(".vt-start").input_value())
            assert start == 3.0  # halfway through the 6 s
            widget.locator(".vt-prompt").fill(BLUE)
            widget.locator(".vt-apply").click()
            page.locator("#timeline-message").get_by_text("Timeline ready").wait_for(timeout=15_000)
            assert BLUE in widget.locator(".vt-seg").nth(1).inner_text()
            # The table twin shows the same data.
            page.get_by_text("Timeline table (keyboard-accessible)").click()
            page.wait_for_function(f"() => (document.querySelector('#timeline-table') || {{textContent: ''}})"
                                   f".textContent.includes('{BLUE}')",
                                   timeout=15_000)

            # Generate: the video element plays (currentTime advances) and the playhead moves.
            t0 = time.perf_counter()
            page.locator("#generate").click()
            page.wait_for_function("() => { const v = document.querySelector('#player video');"
                                   " return v && v.currentTime > 0; }", timeout=60_000)
            first_play_s = time.perf_counter() - t0
            page.wait_for_function("() => { const p = document.querySelector('#timeline-widget .vt-playhead');"
                                   " return p && parseFloat(p.dataset.seconds) > 0; }", timeout=30_000)
            t_play = page.evaluate("document.querySelector('#player video').currentTime")
            page.wait_for_function(f"() => document.querySelector('#player video').currentTime > {t_play} + 0.3",
                                   timeout=30_000)
            page.screenshot(path=os.path.join(ARTIFACTS, "app.png"), full_page=True)
            page.locator("#status").get_by_text("Done.").wait_for(timeout=60_000)
            assert widget.locator(".vt-locked").evaluate("e => parseFloat(e.style.width)") > 90

            # Export JSON writes the edited timeline.
            widget.locator(".vt-export").click()
            exported = json.loads(widget.locator(".vt-json").input_value())
            assert [s["prompt"] for s in exported["segments"]][1] == BLUE and exported["segments"][1]["start"] == start
            browser.close()

        stats = [s for _, s in app.sessions.finished]
        assert len(stats) == 1 and [s["prompt"] for s in stats[0]["prompt_switches"]] == [BLUE]
        with open(os.path.join(ARTIFACTS, "browser.json"), "w") as f:
            json.dump({"click_to_playing_s": first_play_s, "first_frame_s": stats[0]["first_frame_s"],
                       "release_wall_s": stats[0]["release_wall_s"], "encode_ms_mean": stats[0]["encode_ms_mean"]},
                      f, indent=2)
    finally:
        demo.close()


def test_browser_memory_radio_and_model_menu_follow_each_other(tmp_path, monkeypatch):
    """With shipped checkpoints served, clicking a Memory mode shows its checkpoint in the Model menu, and
    picking a shipped checkpoint selects the mode it was trained for."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
    import videossm.config as config
    from videossm.pipeline import VideoSSMPipeline
    from videossm.ui import AppConfig, WorkerPool, build_app

    monkeypatch.setattr(config, "ASSETS_DIR", str(tmp_path))
    hybrid, sink = str(tmp_path / "videossm-hybrid"), str(tmp_path / "videossm-sink")
    for folder in (hybrid, sink):
        VideoSSMPipeline.from_pretrained("test", device="cpu").save_pretrained(folder)
    assert (config.shipped_model("hybrid"), config.shipped_model("sink")) == (hybrid, sink)
    demo = build_app(WorkerPool(AppConfig(models=(hybrid, sink), devices=("cpu",), warmup=False)))
    url = launch(demo)
    try:
        with playwright_api.sync_playwright() as p:
            browser, page = open_page(p)
            page.goto(url)
            model_box = page.locator("#model input")
            model_box.wait_for(timeout=30_000)
            assert model_box.input_value() == hybrid
            page.locator("#memory").get_by_text("sink", exact=True).click()
            page.wait_for_function(f"() => document.querySelector('#model input').value === {json.dumps(sink)}",
                                   timeout=15_000)
            page.locator("#memory").get_by_text("hybrid", exact=True).click()
            page.wait_for_function(f"() => document.querySelector('#model input').value === {json.dumps(hybrid)}",
                                   timeout=15_000)
            # the other way: the Model menu's sink checkpoint selects the sink mode
            model_box.click()
            page.get_by_role("option", name=sink).click()
            page.wait_for_function("() => document.querySelector('#memory input[value=\"sink\"]').checked",
                                   timeout=15_000)
            browser.close()
    finally:
        demo.close()
