"""The study backend with real files: SQLite (WAL) + fsynced journal, recovery, tokens, rate limits, watch time,
balanced scheduling, the statistics against hand-computed values, and the CLI."""

import json
import os
import random
import sqlite3
import threading

import numpy as np
import pytest

from tests.study_helpers import ADMIN, SYSTEM_NAMES, build_template, copy_study
from videossm.study import Study, StudyConfig, VoteRejected
from videossm.study.schedule import BalancedScheduler
from videossm.study.stats import bootstrap_mean_rank, bradley_terry, compute_stats, format_table, implied_wins
from videossm.study.store import BROKEN, SCHEMA_VERSION, StoreError


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_template(str(tmp_path_factory.mktemp("study") / "template"))


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def make_study(template, tmp_path):
    opened = []

    def make(name="s", clock=None, **changes):
        root = str(tmp_path / name)
        copy_study(template, root, **changes) if not (tmp_path / name).exists() else None
        study = Study(StudyConfig.load(root), rng=random.Random(0), clock=clock or Clock(), hub=False)
        opened.append(study)
        return study

    yield make
    for s in opened:
        try:
            s.close()
        except Exception:
            pass


def cast(study, session="s1", ip="10.0.0.1", ranking=None, wait=1000.0):
    c = study.new_comparison(session, ip)
    if isinstance(study.clock, Clock):
        study.clock.t += wait
    return c, study.vote(c.token, ranking or ",".join(c.letters), session, ip)


def journal_lines(study):
    if not os.path.exists(study.store.journal.path):
        return []
    with open(study.store.journal.path) as f:
        return [json.loads(line) for line in f]


# Storage -------------------------------------------------------------------------------------------------------
def test_vote_is_in_wal_db_and_fsynced_journal(make_study):
    study = make_study()
    assert study.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert study.store.schema_version == SCHEMA_VERSION
    c, result = cast(study, ranking="C>A>B")
    assert result.ranking == ("C", "A", "B") and set(result.reveal.values()) == set(SYSTEM_NAMES)
    (line,) = journal_lines(study)
    assert line["vote_id"] == result.vote_id and line["ranking"] == ["C", "A", "B"] and line["v"] == 1
    # A second connection (another process would see the same) reads the committed vote.
    other = sqlite3.connect(study.store.db_path)
    assert other.execute("SELECT ranking FROM votes").fetchall() == [('["C", "A", "B"]',)]
    # The UNIQUE constraint itself, below the service's checks.
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        other.execute("INSERT INTO votes SELECT 'other-id', comparison_id, voter, ip_hash, item_id, systems, ranking, "
                      "attention, attention_passed, issued_at, voted_at FROM votes")
    other.close()


def test_newer_schema_is_refused(make_study):
    study = make_study()
    study.store.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    root = study.config.root
    study.close()
    with pytest.raises(StoreError, match="newer than this code"):
        Study.open(root)


def test_restart_restores_journal_votes_and_detects_db_only_votes(make_study):
    study = make_study()
    ids = [cast(study, session=f"s{i}")[1].vote_id for i in range(4)]
    root = study.config.root
    # A crash between the journal fsync and the commit: the DB lacks a journaled vote.
    study.store.conn.execute("DELETE FROM votes WHERE vote_id = ?", (ids[1],))
    # A vote in the DB that the journal lacks (not written by this code): drop its line.
    lines = open(study.store.journal.path).read().splitlines(keepends=True)
    study.close()
    with open(study.store.journal.path, "w") as f:
        f.writelines(line for line in lines if ids[2] not in line)
    # And a torn last line (a crash inside a write).
    with open(study.store.journal.path, "a") as f:
        f.write('{"vote_id": "torn", "compar')
    reopened = Study(StudyConfig.load(root), hub=False)
    report = reopened.last_verify
    assert report.restored == [ids[1]] and report.db_only == [ids[2]] and report.torn_bytes > 0
    assert sorted(v.vote_id for v in reopened.store.votes()) == sorted(ids)
    assert sorted(d["vote_id"] for d in journal_lines(reopened)) == sorted(ids)  # db-only vote journaled again
    reopened.close()
    again = Study(StudyConfig.load(root), hub=False)
    assert again.last_verify.consistent and again.store.count_votes() == 4
    again.close()


def test_damaged_journal_line_in_the_middle_stops_with_a_clear_error(make_study):
    study = make_study()
    cast(study)
    root, path = study.config.root, study.store.journal.path
    study.close()
    with open(path, "r+") as f:
        good = f.read()
        f.seek(0)
        f.write("garbage\n" + good)
    with pytest.raises(StoreError, match="line 1 is not valid JSON"):
        Study.open(root)


def test_concurrent_voters_every_vote_stored_once(make_study):
    study = make_study(votes_per_session=1000, votes_per_ip=100_000, max_shows_per_item=10_000)
    accepted, rejected, errors = [], [], []

    def voter(n):
        try:
            for i in range(25):
                c = study.new_comparison(f"voter{n}", "10.1.1.1")
                study.clock.t += 0  # watch time is 0 below
                accepted.append(study.vote(c.token, ",".join(c.letters), f"voter{n}", "10.1.1.1").vote_id)
                try:  # the same token again: rejected, whatever thread wins the race
                    study.vote(c.token, ",".join(c.letters), f"voter{n}", "10.1.1.1")
                except VoteRejected as e:
                    rejected.append(str(e))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    study.config = study.config.replace(min_watch_s=0.0)
    threads = [threading.Thread(target=voter, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(accepted) == len(set(accepted)) == 500 and len(rejected) == 500
    assert all("already has your vote" in r for r in rejected)
    assert study.store.count_votes() == 500 and len(journal_lines(study)) == 500
    assert sum(s.votes for s in study.stats().systems) == 500 * 3


# Integrity -----------------------------------------------------------------------------------------------------
def test_forged_replayed_expired_and_foreign_tokens_are_rejected(make_study):
    study = make_study()
    c = study.new_comparison("alice", "1.1.1.1")
    study.clock.t += 100
    ranking = ",".join(c.letters)
    payload, mac = c.token.split(".")
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    for token, message in [
        (payload + "." + mac[::-1], "bad signature"),
        (forged_payload + "." + mac, "bad signature|not base64"),
        ("not-a-token", "malformed"),
        ("", "missing"),
        (12345, "not text"),
        ("x" * 10_000, "too long"),
        ("!!!.???", "not base64|bad signature"),
    ]:
        with pytest.raises(VoteRejected, match=message):
            study.vote(token, ranking, "alice", "1.1.1.1")
    with pytest.raises(VoteRejected, match="another session"):
        study.vote(c.token, ranking, "mallory", "1.1.1.1")
    # A token signed with another study's secret.
    other = make_study("other")
    c_other = other.new_comparison("alice", "1.1.1.1")
    with pytest.raises(VoteRejected, match="bad signature"):
        study.vote(c_other.token, ranking, "alice", "1.1.1.1")
    assert study.store.count_votes() == 0
    study.vote(c.token, ranking, "alice", "1.1.1.1")
    with pytest.raises(VoteRejected, match="already has your vote"):
        study.vote(c.token, ranking, "alice", "1.1.1.1")
    late = study.new_comparison("alice", "1.1.1.1")
    study.clock.t += study.config.token_ttl_s + 1
    with pytest.raises(VoteRejected, match="expired"):
        study.vote(late.token, ranking, "alice", "1.1.1.1")
    assert study.store.count_votes() == 1 and len(journal_lines(study)) == 1


@pytest.mark.parametrize("ranking, message", [
    ("A,B", "rank all 3"), ("A,B,C,D", "unknown video letter"), ("A,A,B", "no ties"), ("A,B,Z", "unknown"),
    ("", "letters separated"), ("A;B;C", "letters separated"), ("<script>", "letters separated"),
    ("A" * 100, "too long"), (None, "string"), (["A", "B", "C"], "string"), ("1,2,3", "letters separated"),
])
def test_malformed_rankings_are_rejected_and_nothing_stored(make_study, ranking, message):
    study = make_study()
    c = study.new_comparison("s", "1.1.1.1")
    study.clock.t += 100
    with pytest.raises(VoteRejected, match=message):
        study.vote(c.token, ranking, "s", "1.1.1.1")
    assert study.store.count_votes() == 0 and not journal_lines(study)
    assert study.vote(c.token, "c > b > a", "s", "1.1.1.1").ranking == ("C", "B", "A")  # the token still works


def test_minimum_watch_time(make_study):
    study = make_study(min_watch_s=10.0)
    c = study.new_comparison("s", "1.1.1.1")
    study.clock.t += 3
    with pytest.raises(VoteRejected, match="7.0 s to go"):
        study.vote(c.token, "A,B,C", "s", "1.1.1.1")
    study.clock.t += 7
    study.vote(c.token, "A,B,C", "s", "1.1.1.1")
    assert study.store.count_votes() == 1


def test_default_watch_time_is_the_clip_length(make_study):
    assert make_study(min_watch_s=None).config.watch_s == 1.0


def test_rate_limits_per_session_and_per_ip(make_study):
    study = make_study(votes_per_session=3, votes_per_ip=5, rate_window_s=600)
    for _ in range(3):
        cast(study, session="a", ip="9.9.9.9", wait=1)
    with pytest.raises(VoteRejected, match="this session"):
        cast(study, session="a", ip="9.9.9.9", wait=1)
    cast(study, session="b", ip="9.9.9.9", wait=1)
    cast(study, session="c", ip="9.9.9.9", wait=1)
    with pytest.raises(VoteRejected, match="network address"):  # sixth vote from the same address
        cast(study, session="d", ip="9.9.9.9", wait=1)
    cast(study, session="d", ip="8.8.8.8", wait=1)  # another address is fine
    assert study.store.count_votes() == 6
    # The IP is stored only as a keyed hash.
    assert "9.9.9.9" not in open(study.store.journal.path).read()
    study.clock.t += 601  # the window slides on (monotonic time in the limiter: check with its own clock)
    study.session_limit.check("x", now=0), study.session_limit.check("x", now=1), study.session_limit.check("x", now=2)
    with pytest.raises(Exception, match="too many"):
        study.session_limit.check("x", now=3)
    study.session_limit.check("x", now=600.5)


def test_attention_check_failures_are_excluded_and_counted(make_study):
    study = make_study(attention_check_rate=1.0)
    c = study.new_comparison("careless", "1.1.1.1")
    study.clock.t += 100
    broken = c.letters[study.store.get_comparison(c.comparison_id).systems.index(BROKEN)]
    assert c.attention
    bad = [broken] + [x for x in c.letters if x != broken]
    assert study.vote(c.token, ",".join(bad), "careless", "1.1.1.1").attention_passed is False
    c = study.new_comparison("careful", "1.1.1.2")
    study.clock.t += 100
    broken = c.letters[study.store.get_comparison(c.comparison_id).systems.index(BROKEN)]
    good = [x for x in c.letters if x != broken] + [broken]
    assert study.vote(c.token, ",".join(good), "careful", "1.1.1.2").attention_passed is True
    study.config = study.config.replace(attention_check_rate=0.0)
    for session in ("careless", "careful"):
        cast(study, session=session, ip="1.1.1.3")
    stats = study.stats()
    assert (stats.attention_checks, stats.attention_failures, stats.votes_excluded) == (2, 1, 1)
    assert stats.votes_counted == 1 and stats.voters_counted == 1
    assert BROKEN not in [s.name for s in stats.systems]
    assert "failed: 1" in format_table(stats)


def test_pool_is_topped_up_in_the_background_when_every_item_was_shown(make_study):
    from videossm.pipeline import VideoSSMPipeline

    study = make_study(max_shows_per_item=2, top_up_items=1)
    study.pipelines = {"test": VideoSSMPipeline.from_pretrained("test", device="cpu")}
    before = set(study.pool.items)
    for i in range(3):  # 2 items x 2 shows, 3 videos out of 3 systems: every item is shown twice after 4
        study.new_comparison(f"s{i}", "1.1.1.1")
    assert study._top_up is None
    study.new_comparison("s4", "1.1.1.1")
    study._top_up.join(timeout=120)
    new = set(study.pool.items) - before
    assert len(new) == 1
    item = study.pool.items[new.pop()]
    assert sorted(item.clips) == sorted(SYSTEM_NAMES) and all(os.path.exists(study.pool.clip_path(c))
                                                              for c in item.clips.values())
    assert json.load(open(study.pool.path))["items"][-1]["id"] == item.id  # saved to pool.json


# Scheduling ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3])
def test_balanced_pairs_and_random_positions(k):
    systems = ["s1", "s2", "s3", "s4"]
    sched = BalancedScheduler(systems, k, random.Random(1))
    items = {f"i{n}": set(systems) for n in range(5)}
    n = 600
    first = {s: 0 for s in systems}
    for _ in range(n):
        item, order = sched.next(items)
        assert len(set(order)) == k
        first[order[0]] += 1
    pairs = list(sched.pair_counts.values())
    assert len(pairs) == 6 and max(pairs) - min(pairs) <= 1 and sum(pairs) == n * k * (k - 1) // 2
    assert max(sched.item_counts.values()) - min(sched.item_counts.values()) <= 1
    # Each system leads (letter A) about as often as any other: shows per system x 1/k, within 4 sigma.
    expected = n * k / 4 / k
    sigma = (n * k / 4 * (1 / k) * (1 - 1 / k)) ** 0.5
    assert all(abs(v - expected) < 4 * sigma for v in first.values()), first


def test_scheduler_only_uses_items_with_all_clips():
    sched = BalancedScheduler(["a", "b", "c"], 3, random.Random(0))
    assert sched.next({"x": {"a", "b"}, "y": {"a", "b", "c"}})[0] == "y"
    with pytest.raises(LookupError, match="no item"):
        sched.next({"x": {"a", "b"}})


# Statistics ----------------------------------------------------------------------------------------------------
RANKINGS = [["A", "B", "C"], ["A", "C", "B"], ["B", "A", "C"], ["C", "A"]]


def test_stats_match_hand_computed_values():
    stats = compute_stats(RANKINGS, ["A", "B", "C"], samples=500, seed=3, prior=0.0, voters_counted=4)
    by = {s.name: s for s in stats.systems}
    # A: ranks 1,1,2,2; B: 2,3,1; C: 3,2,3,1.
    assert by["A"].votes == 4 and by["A"].mean_rank == 1.5 and by["A"].rank_shares == [0.5, 0.5, 0.0]
    assert by["B"].votes == 3 and by["B"].mean_rank == 2.0 and by["B"].rank_shares == pytest.approx([1 / 3] * 3)
    assert by["C"].votes == 4 and by["C"].mean_rank == 2.25 and by["C"].rank_shares == [0.25, 0.25, 0.5]
    assert [s.name for s in stats.systems] == ["A", "B", "C"]  # sorted by mean rank
    # Implied pairwise wins: A>B 2, B>A 1; A>C 3, C>A 1; B>C 2, C>B 1.
    assert stats.wins == [[0, 2, 3], [1, 0, 2], [1, 1, 0]]
    p = np.array([by[n].strength for n in "ABC"])
    wins = np.array(stats.wins, float)
    games = wins + wins.T
    # The Bradley-Terry maximum-likelihood equations: W_i = sum_j n_ij p_i / (p_i + p_j).
    assert wins.sum(1) == pytest.approx((games * p[:, None] / (p[:, None] + p[None, :])).sum(1), rel=1e-8)
    table = format_table(stats)
    assert "| A | 50.00 | 50.00 | 0.00 | 1.50 [" in table and "| 4 |" in table


def test_bradley_terry_known_examples():
    assert bradley_terry(np.array([[0, 3], [1, 0]])) == pytest.approx([0.75, 0.25])
    assert bradley_terry(np.array([[0, 3], [1, 0]]), prior=0.5) == pytest.approx([0.7, 0.3])
    # Outcomes exactly as expected under p = (4, 2, 1) / 7: that p is the unique MLE.
    wins = np.array([[0, 4, 4], [2, 0, 2], [1, 1, 0]])
    assert bradley_terry(wins) == pytest.approx(np.array([4, 2, 1]) / 7, abs=1e-9)
    # A cycle with equal margins: all equal.
    assert bradley_terry(np.array([[0, 2, 1], [1, 0, 2], [2, 1, 0]])) == pytest.approx([1 / 3] * 3)
    # A system that never met another gets NaN; the others are unaffected.
    p = bradley_terry(np.array([[0, 3, 0], [1, 0, 0], [0, 0, 0]]))
    assert p[:2] == pytest.approx([0.75, 0.25]) and np.isnan(p[2])
    assert implied_wins([["x", "y", "z"]], ["x", "y", "z"]).tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_bootstrap_is_reproducible_and_matches_an_explicit_resampling():
    ranks = np.array([[1, 2, 3], [1, 3, 2], [2, 1, 3], [2, np.nan, 1]], float)
    lo1, hi1 = bootstrap_mean_rank(ranks, 400, seed=7)
    lo2, hi2 = bootstrap_mean_rank(ranks, 400, seed=7)
    assert np.array_equal(lo1, lo2) and np.array_equal(hi1, hi2)
    many = np.array([np.random.default_rng(i).permutation(3) + 1.0 for i in range(50)])
    assert not np.array_equal(np.r_[bootstrap_mean_rank(many, 400, seed=7)],
                              np.r_[bootstrap_mean_rank(many, 400, seed=8)])
    # The same draws, resampled by hand, vote by vote.
    rng = np.random.default_rng(7)
    counts = rng.multinomial(4, [0.25] * 4, size=400)
    means = []
    for c in counts:
        sample = np.repeat(ranks, c, axis=0)
        with np.errstate(invalid="ignore"):
            means.append(np.nanmean(sample, axis=0) if len(sample) else np.full(3, np.nan))
    means = np.array(means)
    assert lo1 == pytest.approx(np.nanquantile(means, 0.025, axis=0))
    assert hi1 == pytest.approx(np.nanquantile(means, 0.975, axis=0))
    assert np.all(lo1 <= np.nanmean(ranks, 0)) and np.all(np.nanmean(ranks, 0) <= hi1)
    # Unanimous votes: a zero-width interval at the value.
    assert bootstrap_mean_rank(np.array([[1.0, 2.0]] * 5), 100, 0)[0].tolist() == [1.0, 2.0]


# CLI -------------------------------------------------------------------------------------------------------------
def test_cli_stats_export_reset_need_admin(make_study, tmp_path, capsys, monkeypatch):
    from videossm.cli import main

    study = make_study()
    for i in range(3):
        cast(study, session=f"v{i}", ranking="B,A,C")
    root = study.config.root
    study.close()
    monkeypatch.delenv("VIDEOSSM_STUDY_ADMIN_TOKEN", raising=False)
    assert main(["study", "--root", root, "stats", "--json", str(tmp_path / "s.json"),
                 "--plot", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "Rank-1 (%)" in out and "3 votes from 3 voters" in out
    assert json.load(open(tmp_path / "s.json"))["votes_counted"] == 3 and (tmp_path / "s.png").stat().st_size > 0
    csv_path = tmp_path / "votes.csv"
    assert main(["study", "--root", root, "export", "--csv", str(csv_path)]) == 2
    assert "admin token" in capsys.readouterr().err and not csv_path.exists()
    assert main(["study", "--root", root, "export", "--csv", str(csv_path), "--admin-token", "wrong-token-xx"]) == 2
    assert "wrong admin token" in capsys.readouterr().err
    monkeypatch.setenv("VIDEOSSM_STUDY_ADMIN_TOKEN", ADMIN)
    assert main(["study", "--root", root, "export", "--csv", str(csv_path)]) == 0
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("vote_id,") and "rank_zqhybrid" in rows[0]
    assert main(["study", "--root", root, "reset"]) == 1  # asks for --yes
    assert main(["study", "--root", root, "reset", "--yes"]) == 0
    assert main(["study", "--root", root, "verify"]) == 0
    assert "journal 0 votes, database 0" in capsys.readouterr().out
    archived = [p for p in (tmp_path / "s" / "journal").iterdir() if ".reset-" in p.name]
    assert len(archived) == 1 and len(archived[0].read_text().splitlines()) == 3  # nothing deleted for good
