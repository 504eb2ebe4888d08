"""The study's Arena and Results tabs in a real browser (issue 7): Playwright drives Debian's Chromium against the
MAIN app (build_app with app.study_tabs) served on loopback. New comparison -> the lettered videos get sources
while nothing in the page names a system -> a full ranking through the dropdowns -> wait out the minimum watch
time -> Submit -> the reveal names the systems and the vote is stored -> Results -> Refresh shows the table.
A screenshot goes to test-artifacts/arena.png."""

import os
import re
import time

import pytest

from tests.study_helpers import SYSTEM_NAMES, build_template, copy_study
from tests.helpers import free_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = os.environ.get("VIDEOSSM_CHROMIUM", "/usr/bin/chromium")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
MIN_WATCH_S = 1.0
ORDINALS = ("Best", "2nd", "3rd", "4th")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"no Chromium at {CHROMIUM} (scripts/setup.sh installs Debian's chromium; "
                                       "set VIDEOSSM_CHROMIUM elsewhere)")

# The arena's lettered videos with a source (the main app's own #player video is not one of them).
ARENA_SOURCES_JS = """() => Array.from(document.querySelectorAll('video'))
    .filter(v => !v.closest('#player') && v.offsetParent !== null)
    .map(v => v.currentSrc || v.src || (v.querySelector('source') || {}).src || '')
    .filter(s => s)"""


def _choose(page, label: str, letter: str, expect) -> None:
    """Pick `letter` in the Gradio dropdown labelled `label`: open it, click the option, see it selected."""
    box = page.get_by_label(label, exact=True)
    box.click()
    option = page.get_by_role("option").filter(has_text=re.compile(rf"(^|\s){letter}\s*$")).filter(visible=True)
    option.first.wait_for(state="visible", timeout=10_000)
    option.first.click()
    expect(box).to_have_value(letter, timeout=10_000)


def test_arena_and_results_tabs_in_the_browser(tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
    import app as app_module
    from videossm.study import Study, StudyConfig
    from videossm.ui import AppConfig, WorkerPool, build_app

    template = build_template(str(tmp_path / "template"))
    root = copy_study(template, str(tmp_path / "study"), min_watch_s=MIN_WATCH_S)
    pool = WorkerPool(AppConfig(models=("test",), devices=("cpu",), warmup=False))
    tabs = app_module.study_tabs(root, pool)
    assert [label for label, _ in tabs] == ["Arena", "Results"]
    demo = build_app(pool, extra_tabs=tabs)
    os.makedirs(ARTIFACTS, exist_ok=True)
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True)
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(url)
                page.get_by_role("tab", name="Arena", exact=True).click()
                new_button = page.get_by_role("button", name="New comparison", exact=True)
                new_button.wait_for(state="visible", timeout=30_000)
                new_button.click()

                # The lettered videos (3 per comparison) get their sources; the prompt shows.
                page.wait_for_function(f"() => ({ARENA_SOURCES_JS})().length >= 3", timeout=30_000)
                issued_at = time.monotonic()
                page.get_by_text("Prompt:").first.wait_for(timeout=10_000)
                sources = page.evaluate(ARENA_SOURCES_JS)
                assert len(sources) == 3 and len(set(sources)) == 3, sources
                before = page.content()
                leaked = [name for name in SYSTEM_NAMES if name in before or any(name in s for s in sources)]
                assert not leaked, f"the page names systems before the vote: {leaked}"

                # A full ranking through the dropdowns: C best, then A, then B.
                ranking = ["C", "A", "B"]
                for label, letter in zip(ORDINALS, ranking):
                    _choose(page, label, letter, playwright_api.expect)
                assert not page.get_by_label(ORDINALS[3], exact=True).is_visible()  # only 3 videos: no 4th rank

                # Wait out the minimum watch time (measured from when the clips arrived), then submit.
                remaining = MIN_WATCH_S + 0.3 - (time.monotonic() - issued_at)
                if remaining > 0:
                    page.wait_for_timeout(remaining * 1000)
                page.get_by_role("button", name="Submit ranking", exact=True).click()
                page.get_by_text("Thank you, your vote is stored").wait_for(timeout=30_000)
                after = page.content()
                assert all(name in after for name in SYSTEM_NAMES), "the reveal names every system shown"
                reveal = page.locator("body").inner_text()
                revealed = {}
                for letter, place in (("C", "best in your ranking"), ("A", "2nd"), ("B", "3rd")):
                    match = re.search(rf"\b{letter} \({place}\): (" + "|".join(SYSTEM_NAMES) + ")", reveal)
                    assert match, reveal
                    revealed[letter] = match.group(1)
                page.screenshot(path=os.path.join(ARTIFACTS, "arena.png"), full_page=True)

                # Results: Refresh shows the table with the voted systems and one counted vote.
                page.get_by_role("tab", name="Results", exact=True).click()
                page.get_by_role("button", name="Refresh results", exact=True).click()
                page.get_by_text("1 votes from 1 voters counted").wait_for(timeout=30_000)
                table = page.locator("table").filter(has_text="Bradley-Terry").first
                table.wait_for(timeout=10_000)
                rows = {r.locator("td").first.inner_text().strip(): r.locator("td").last.inner_text().strip()
                        for r in table.locator("tbody tr").all()}
                assert {name: rows.get(name) for name in SYSTEM_NAMES} == {name: "1" for name in SYSTEM_NAMES}, rows
                page.screenshot(path=os.path.join(ARTIFACTS, "arena-results.png"), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()

    # The vote is in the study's database, with the ranking entered in the browser.
    study = Study(StudyConfig.load(root), hub=False)
    try:
        assert study.store.count_votes() == 1
        (vote,) = study.store.votes()
        assert vote.ranking == ("C", "A", "B") and sorted(vote.ranked_systems) == sorted(SYSTEM_NAMES)
        assert vote.ranked_systems == [revealed[letter] for letter in vote.ranking]  # the reveal told the truth
        assert study.stats().votes_counted == 1
    finally:
        study.close()
