"""The arena served for real: Gradio on loopback mounting the Arena and Results tabs, driven through the same
/arena_new, /arena_vote and /arena_stats endpoints the browser uses; a served process killed with SIGKILL."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tests.study_helpers import SYSTEM_NAMES, build_template, copy_study  # noqa: E402
from videossm.study import Study, StudyConfig  # noqa: E402
from tests.helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 20 concurrent voters; the full load (50 votes each) with VIDEOSSM_STUDY_LOAD=20x50. The suite default
# stays short on shared 2-core CI machines.
VOTERS, VOTES_EACH = (int(v) for v in os.environ.get("VIDEOSSM_STUDY_LOAD", "20x5").split("x"))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(str(tmp_path_factory.mktemp("study") / "template"))


@pytest.fixture(scope="module")
def served(template, tmp_path_factory):
    from videossm.ui.arena import build_demo

    root = copy_study(template, str(tmp_path_factory.mktemp("served") / "study"), min_watch_s=1.0,
                      votes_per_session=VOTES_EACH + 5, votes_per_ip=VOTERS * VOTES_EACH + 100,
                      max_shows_per_item=100_000)
    study = Study(StudyConfig.load(root), hub=False)
    demo = build_demo(study)
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True)
        yield study, url
    finally:
        demo.close()
        study.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def _clip_urls(outputs):
    return [o["value"]["url"] for o in outputs[2:6] if isinstance(o, dict) and o.get("value")]


def test_anonymous_until_the_vote(served):
    import httpx

    study, url = served
    names = SYSTEM_NAMES + [f"test:{m}" for m in ("hybrid", "sink", "window")]
    client = _client(url)
    seen = httpx.get(url, timeout=30).text + httpx.get(url.rstrip("/") + "/config", timeout=30).text
    seen += json.dumps(client.view_api(print_info=False, return_format="dict"))
    outputs = client.predict(api_name="/arena_new")
    token, prompt = outputs[0], outputs[1]
    seen += json.dumps(outputs)
    urls = _clip_urls(outputs)
    assert len(urls) == 3 and ("a red circle" in prompt or "a blue square" in prompt)
    for clip_url in urls:
        name = clip_url.rsplit("/", 1)[1]
        assert re.fullmatch(r"[0-9a-f]{32}\.mp4", name), clip_url
        response = httpx.get(clip_url, timeout=30)
        assert response.status_code == 200 and response.content[4:8] == b"ftyp"
        seen += clip_url + response.headers.get("content-disposition", "") + response.content.decode("latin-1")
    assert "/study/clips/" in seen  # the scan did see the clip URLs
    for name in names:
        assert name not in seen, f"system name {name!r} leaked before the vote"
    # Too early: the minimum watch time is enforced on the server. The scan above can itself take longer than the
    # fixture's 1 s on a loaded CI machine, so the server is given an hour-long minimum for this one vote: the
    # check then depends on the server reading its config at vote time, not on how fast this machine is.
    from gradio_client.exceptions import AppError

    short_watch = study.config
    study.config = short_watch.replace(min_watch_s=3600.0)
    try:
        with pytest.raises(AppError, match="watch the videos"):
            client.predict(token, "A,B,C", api_name="/arena_vote")
    finally:
        study.config = short_watch
    time.sleep(short_watch.watch_s)
    reveal = client.predict(token, "B>A>C", api_name="/arena_vote")
    assert "your vote is stored" in reveal and sum(n in reveal for n in SYSTEM_NAMES) == 3  # revealed only now
    receipt = re.search(r"receipt `([0-9a-f]+)`", reveal).group(1)
    assert any(v.vote_id.startswith(receipt) for v in study.store.votes())
    with pytest.raises(AppError, match="already has your vote"):
        client.predict(token, "B>A>C", api_name="/arena_vote")
    # Another session cannot use this session's token.
    with pytest.raises(AppError, match="another session"):
        _client(url).predict(token, "B>A>C", api_name="/arena_vote")
    table, plot = client.predict(api_name="/arena_stats")
    assert "Rank-1 (%)" in table and "Bradley-Terry" in table and plot is not None


@pytest.mark.parametrize("token, ranking, message", [
    ("x" * 100_000, "A,B,C", "too long"),
    ("\x00\xff garbage", "A,B,C", "malformed"),
    (None, "A,B,C", "missing"),
])
def test_garbage_through_the_api_is_rejected(served, token, ranking, message):
    from gradio_client.exceptions import AppError

    study, url = served
    before = study.store.count_votes()
    with pytest.raises(AppError, match=message):
        _client(url).predict(token, ranking, api_name="/arena_vote")
    assert study.store.count_votes() == before


def test_concurrent_voters_through_the_api(served):
    from gradio_client.exceptions import AppError

    study, url = served
    before = study.store.count_votes()
    clients = [_client(url) for _ in range(VOTERS)]
    acked, duplicates, errors = [], [], []

    def voter(client):
        tokens = [client.predict(api_name="/arena_new")[0] for _ in range(VOTES_EACH)]
        time.sleep(1.0)  # the minimum watch time passes for every issued comparison
        for token in tokens:
            try:
                reveal = client.predict(token, "C,A,B", api_name="/arena_vote")
                acked.append(re.search(r"receipt `([0-9a-f]+)`", reveal).group(1))
                try:
                    client.predict(token, "A,B,C", api_name="/arena_vote")
                except AppError as e:
                    duplicates.append(str(e))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=voter, args=(c,)) for c in clients]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert not errors, errors[:3]
    n = VOTERS * VOTES_EACH
    assert len(acked) == len(set(acked)) == n, f"{len(acked)} acknowledged in {elapsed:.1f}s"
    assert len(duplicates) == n and all("already has your vote" in d for d in duplicates)
    votes = study.store.votes()
    assert len(votes) == before + n
    stored = {v.vote_id[:12] for v in votes}
    assert set(acked) <= stored
    with open(study.store.journal.path) as f:
        assert sum(1 for _ in f) == before + n
    print(f"{n} votes (+{n} rejected duplicates) from {VOTERS} concurrent API clients in {elapsed:.1f}s")


def test_sigkill_mid_stream_loses_no_acknowledged_vote(template, tmp_path):
    import httpx

    root = copy_study(template, str(tmp_path / "study"), votes_per_session=10_000, votes_per_ip=100_000,
                      max_shows_per_item=100_000)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "videossm", "study", "--root", root, "serve", "--port", str(port), "--min-watch", "0"]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the study server did not start"
            time.sleep(0.3)
        acked, stop = [], threading.Event()

        def voter():
            client = _client(url)
            while not stop.is_set():
                try:
                    token = client.predict(api_name="/arena_new")[0]
                    reveal = client.predict(token, "A,B,C", api_name="/arena_vote")
                    acked.append(re.search(r"receipt `([0-9a-f]+)`", reveal).group(1))
                except Exception:
                    return  # the server is gone

        threads = [threading.Thread(target=voter, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 40:
            assert server.poll() is None
            time.sleep(0.05)
        os.kill(server.pid, signal.SIGKILL)  # in the middle of the stream: votes are in flight
        server.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # The restart: opening the study verifies the DB against the journal.
    study = Study(StudyConfig.load(root), hub=False)
    try:
        report = study.last_verify
        assert not report.db_only and not report.conflicts
        votes = study.store.votes()
        stored = {v.vote_id[:12] for v in votes}
        assert set(acked) <= stored, f"lost {len(set(acked) - stored)} acknowledged votes"
        assert study.store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with open(study.store.journal.path) as f:
            lines = [json.loads(line) for line in f]  # every line whole
        assert sorted(d["vote_id"] for d in lines) == sorted(v.vote_id for v in votes)
        assert all(len(v.ranking) == 3 and len(v.systems) == 3 for v in votes)
    finally:
        study.close()
    # Nothing else is left half-written: no partial files.
    assert not [p for p in os.listdir(root) if ".tmp-" in p or p.endswith(".partial")]
    con = sqlite3.connect(os.path.join(root, "study.db"))
    assert con.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == len(votes)
    con.close()


def test_main_app_mounts_the_arena_when_a_study_exists(template, tmp_path):
    """app.py's study_tabs: no study folder -> no tabs; a study -> Arena and Results in the main app, served."""
    import app as app_module
    from videossm.ui import AppConfig, WorkerPool, build_app

    pool = WorkerPool(AppConfig(models=("test",), devices=("cpu",), warmup=False))
    assert app_module.study_tabs(str(tmp_path / "none"), pool) == []
    root = copy_study(template, str(tmp_path / "study"), min_watch_s=0.0)
    tabs = app_module.study_tabs(root, pool)
    assert [label for label, _ in tabs] == ["Arena", "Results"]
    demo = build_app(pool, extra_tabs=tabs)
    try:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True)
        client = _client(url)
        endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert {"/generate", "/arena_new", "/arena_vote", "/arena_stats"} <= set(endpoints)
        issued = client.predict(api_name="/arena_new")
        assert len(_clip_urls(issued)) >= 2
        assert not any(name in str(issued) for name in SYSTEM_NAMES)
    finally:
        demo.close()
