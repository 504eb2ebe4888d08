"""`Study`: the arena's server side. Issues balanced, signed comparisons; checks and stores votes; computes
the statistics. The Gradio tabs (videossm/ui/arena.py) and the CLI (videossm/study/cli.py) are thin layers
over it.

    study = Study.open("study")                          # verifies the DB against the journal first
    c = study.new_comparison(session="abc", ip="1.2.3.4")
    ...the voter watches c.clip_paths (random names) for at least c.min_watch_s...
    result = study.vote(c.token, "B,A,C,D", session="abc", ip="1.2.3.4")
    result.reveal                                        # {"A": "tiny-sink", ...}, only now
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import os
import random
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from .config import LETTERS, StudyConfig, write_atomic
from .pool import Pool
from .schedule import BalancedScheduler
from .stats import StudyStats, compute_stats
from .store import BROKEN, Comparison, DuplicateVote, VerifyReport, VoteRecord, VoteStore
from .tokens import RateLimited, RateLimiter, TokenError, TokenSigner, load_secret

logger = logging.getLogger(__name__)

ADMIN_ENV = "VIDEOSSM_STUDY_ADMIN_TOKEN"
HUB_REPO_ENV = "VIDEOSSM_STUDY_HUB_REPO"
DB_FILE, JOURNAL_FILE, SECRET_FILE, ADMIN_FILE = "study.db", os.path.join("journal", "votes.jsonl"), "secret.key", \
    "admin.sha256"
NEW_PER_VOTE = 3  # a session may fetch this many comparisons per vote it may cast (rate limit on arena_new)


class VoteRejected(ValueError):
    """A vote was refused; the message says why and what to do. Nothing was stored."""


class AdminError(PermissionError):
    """A missing or wrong admin token."""


@dataclass(frozen=True)
class IssuedComparison:
    token: str
    comparison_id: str
    prompt: str
    letters: tuple[str, ...]
    clip_paths: tuple[str, ...]  # per letter; random file names
    min_watch_s: float
    expires_at: float
    attention: bool  # server-side only: never sent to the client


@dataclass(frozen=True)
class VoteResult:
    vote_id: str
    reveal: dict[str, str]  # letter -> system
    ranking: tuple[str, ...]
    attention: bool
    attention_passed: bool | None


def parse_ranking(ranking, k: int, max_chars: int) -> tuple[str, ...]:
    """`"B,A,C,D"`, `"B>A>C>D"`, `"B A C D"` or `"BACD"` -> ("B", "A", "C", "D"): all k letters, best first."""
    letters = LETTERS[:k]
    if not isinstance(ranking, str):
        raise VoteRejected(f"ranking must be a string of the letters {', '.join(letters)}, best first; "
                           f"got a {type(ranking).__name__}")
    if len(ranking) > max_chars:
        raise VoteRejected(f"ranking is too long ({len(ranking)} characters, at most {max_chars})")
    text = ranking.strip().upper()
    if not re.fullmatch(r"[A-Z]([\s,>]*[A-Z])*", text):
        raise VoteRejected(f"ranking must be letters separated by ',' or '>', best first, e.g. "
                           f"{'>'.join(letters)}; got {ranking!r}")
    parsed = tuple(re.findall(r"[A-Z]", text))
    unknown = sorted(set(parsed) - set(letters))
    if unknown:
        raise VoteRejected(f"unknown video letter(s) {', '.join(unknown)}; this comparison has {', '.join(letters)}")
    if len(set(parsed)) != len(parsed):
        raise VoteRejected(f"each video must get its own rank (no ties); {ranking!r} repeats a letter")
    if len(parsed) != k:
        raise VoteRejected(f"rank all {k} videos ({', '.join(letters)}); got {len(parsed)}")
    return parsed


class Study:
    def __init__(self, config: StudyConfig, pipelines: dict | None = None, rng: random.Random | None = None,
                 clock=time.time, hub: bool = True):
        self.config = config.validate()
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        os.makedirs(config.root, exist_ok=True)
        self.signer = TokenSigner(load_secret(config.path(SECRET_FILE)), config.token_ttl_s)
        self.scheduler_hub = self._start_hub() if hub else None
        lock = self.scheduler_hub.lock if self.scheduler_hub is not None else None
        self.store = VoteStore(config.path(DB_FILE), config.path(JOURNAL_FILE), journal_lock=lock)
        self.last_verify: VerifyReport = self.store.verify(repair=True)
        self.pool = Pool(config)
        self.system_names = [s.name for s in config.systems]
        self.scheduler = BalancedScheduler(self.system_names, config.k, self.rng)
        for item, systems in self.store.issued_systems():
            if set(systems) <= set(self.system_names):
                self.scheduler.record(item, systems)
        self.session_limit = RateLimiter(config.votes_per_session, config.rate_window_s, "session")
        self.ip_limit = RateLimiter(config.votes_per_ip, config.rate_window_s, "network address")
        self.new_limit = RateLimiter(NEW_PER_VOTE * config.votes_per_session, config.rate_window_s, "session")
        self.pipelines = pipelines
        self._top_up: threading.Thread | None = None

    @classmethod
    def open(cls, root: str, pipelines: dict | None = None, **overrides) -> "Study":
        return cls(StudyConfig.load(root, **overrides), pipelines=pipelines)

    def _start_hub(self):
        repo = self.config.hub_repo or os.environ.get(HUB_REPO_ENV)
        token = os.environ.get("HF_TOKEN")
        if not repo or not token:
            return None
        try:
            from huggingface_hub import CommitScheduler

            scheduler = CommitScheduler(repo_id=repo, repo_type="dataset", private=True, token=token,
                                        folder_path=os.path.dirname(self.config.path(JOURNAL_FILE)),
                                        path_in_repo="journal", every=self.config.hub_every_minutes,
                                        allow_patterns=["*.jsonl"])
            logger.info("pushing the vote journal to the private dataset %s every %g min", repo,
                        self.config.hub_every_minutes)
            return scheduler
        except Exception as e:  # the local DB and journal still keep every vote
            logger.error("cannot push the vote journal to %s (%s); votes are kept locally only", repo, e)
            return None

    # Ids ---------------------------------------------------------------------------------------------------------
    def voter_id(self, session: str) -> str:
        if not isinstance(session, str) or not session:
            raise VoteRejected("no session: open the app in a browser (or use a gradio_client session)")
        return self.signer.hash_id("session", session)

    def ip_hash(self, ip: str | None) -> str:
        return self.signer.hash_id("ip", ip or "unknown")

    # Comparisons ---------------------------------------------------------------------------------------------
    def new_comparison(self, session: str, ip: str | None = None) -> IssuedComparison:
        voter, ip_hash = self.voter_id(session), self.ip_hash(ip)
        try:
            self.new_limit.check(voter)
        except RateLimited as e:
            raise VoteRejected(str(e).replace("votes", "new comparisons")) from None
        cfg = self.config
        items = self.pool.available(self.system_names)
        if not items:
            raise VoteRejected(f"the study pool in {cfg.root} is empty; build it with "
                               f"`python -m videossm study build-pool --root {cfg.root}`")
        attention = cfg.attention_check_rate > 0 and self.rng.random() < cfg.attention_check_rate
        checkable = [i for i, it in self.pool.items.items() if it.broken and len(items[i]) >= cfg.k - 1]
        if attention and checkable:
            item_id = self.rng.choice(sorted(checkable))
            systems = self.rng.sample(sorted(items[item_id]), cfg.k - 1) + [BROKEN]
            self.rng.shuffle(systems)
        else:
            attention = False
            item_id, systems = self.scheduler.next(items)
        item = self.pool.items[item_id]
        clips = tuple(item.broken if s == BROKEN else item.clips[s] for s in systems)
        now = self.clock()
        cid = secrets.token_hex(16)
        token, expires_at = self.signer.sign(cid, voter, now)
        self.store.add_comparison(Comparison(cid, voter, ip_hash, item_id, tuple(systems), clips, attention, now,
                                             expires_at))
        self._maybe_top_up()
        return IssuedComparison(token, cid, item.prompt_text, tuple(LETTERS[: len(systems)]),
                                tuple(self.pool.clip_path(c) for c in clips), cfg.watch_s, expires_at, attention)

    def _maybe_top_up(self) -> None:
        if self.pipelines is None or (self._top_up is not None and self._top_up.is_alive()):
            return
        counts = self.scheduler.item_counts
        if min((counts[i] for i in self.pool.items), default=0) < self.config.max_shows_per_item:
            return
        logger.info("every pool item was shown %d times: generating %d more in the background",
                    self.config.max_shows_per_item, self.config.top_up_items)
        self._top_up = threading.Thread(target=self.pool.build, args=(self.config.top_up_items, self.pipelines),
                                        kwargs={"progress": False}, daemon=True, name="study-top-up")
        self._top_up.start()

    # Votes ---------------------------------------------------------------------------------------------------
    def vote(self, token, ranking, session: str, ip: str | None = None) -> VoteResult:
        """Check and store one vote; raises VoteRejected (with the reason) and stores nothing otherwise."""
        cfg = self.config
        if not isinstance(token, str) or not token or len(token) > cfg.max_token_chars:
            raise VoteRejected("invalid comparison token (missing, not text, or too long); press 'New comparison'")
        voter, ip_hash = self.voter_id(session), self.ip_hash(ip)
        now = self.clock()
        try:
            claims = self.signer.verify(token, voter, now)
        except TokenError as e:
            raise VoteRejected(str(e)) from None
        comparison = self.store.get_comparison(claims.comparison_id)
        if comparison is None or comparison.voter != voter:
            raise VoteRejected("unknown comparison (the server may have restarted); press 'New comparison'")
        if self.store.has_vote(comparison.id, voter):
            raise VoteRejected("this comparison already has your vote (a token is good for one vote); "
                               "press 'New comparison'")
        letters = parse_ranking(ranking, len(comparison.systems), cfg.max_ranking_chars)
        waited = now - comparison.issued_at
        if waited < cfg.watch_s:
            raise VoteRejected(f"please watch the videos before voting: {cfg.watch_s - waited:.1f} s to go "
                               f"(at least {cfg.watch_s:g} s)")
        try:
            self.session_limit.check(voter)
        except RateLimited as e:
            raise VoteRejected(str(e)) from None
        try:
            self.ip_limit.check(ip_hash)
        except RateLimited as e:
            self.session_limit.undo(voter)
            raise VoteRejected(str(e)) from None
        passed = None
        if comparison.attention:
            passed = letters[-1] == LETTERS[comparison.systems.index(BROKEN)]
        record = VoteRecord(uuid.uuid4().hex, comparison.id, voter, ip_hash, comparison.item_id, comparison.systems,
                            letters, comparison.attention, passed, comparison.issued_at, now)
        try:
            self.store.add_vote(record)
        except DuplicateVote:
            self.session_limit.undo(voter)
            self.ip_limit.undo(ip_hash)
            raise VoteRejected("this comparison already has your vote (a token is good for one vote); "
                               "press 'New comparison'") from None
        except BaseException:
            self.session_limit.undo(voter)
            self.ip_limit.undo(ip_hash)
            raise
        reveal = {LETTERS[i]: s for i, s in enumerate(comparison.systems)}
        return VoteResult(record.vote_id, reveal, letters, comparison.attention, passed)

    # Statistics ---------------------------------------------------------------------------------------------
    def counted_votes(self) -> tuple[list[VoteRecord], dict]:
        """The votes the statistics count, and the attention-check tallies."""
        votes = self.store.votes()
        checks = [v for v in votes if v.attention]
        failed_voters = {v.voter for v in checks if not v.attention_passed}
        ordinary = [v for v in votes if not v.attention]
        counted = [v for v in ordinary if v.voter not in failed_voters]
        return counted, dict(attention_checks=len(checks), attention_failures=sum(not v.attention_passed for v in checks),
                             votes_excluded=len(ordinary) - len(counted), voters_counted=len({v.voter for v in counted}))

    def stats(self, seed: int | None = None) -> StudyStats:
        counted, tallies = self.counted_votes()
        rankings = [v.ranked_systems for v in counted]
        names = list(self.system_names)
        names += sorted({s for r in rankings for s in r} - set(names))  # systems since removed from the config
        cfg = self.config
        return compute_stats(rankings, names, samples=cfg.bootstrap_samples,
                             seed=cfg.bootstrap_seed if seed is None else seed, prior=cfg.bt_prior, **tallies)

    # Admin (CLI only; never wired to the UI) --------------------------------------------------------------------
    def set_admin_token(self, token: str | None = None) -> str:
        """Store the hash of an admin token (a new random one when None) and return the token."""
        token = token or secrets.token_urlsafe(24)
        if len(token) < 12:
            raise AdminError(f"the admin token must be at least 12 characters, got {len(token)}")
        write_atomic(self.config.path(ADMIN_FILE), hashlib.sha256(token.encode()).hexdigest().encode())
        return token

    def has_admin_token(self) -> bool:
        return os.path.exists(self.config.path(ADMIN_FILE))

    def require_admin(self, token: str | None) -> None:
        token = token or os.environ.get(ADMIN_ENV)
        if not token:
            raise AdminError(f"this needs the study's admin token: pass --admin-token or set {ADMIN_ENV}")
        try:
            with open(self.config.path(ADMIN_FILE)) as f:
                want = f.read().strip()
        except FileNotFoundError:
            raise AdminError(f"{self.config.path(ADMIN_FILE)} is missing: no admin token was set for this study "
                             "(`study build-pool` sets one)") from None
        if not hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), want):
            raise AdminError("wrong admin token")

    def export_csv(self, path: str, admin_token: str | None) -> int:
        """All votes (including attention checks and excluded ones, flagged) as CSV. Returns the row count."""
        self.require_admin(admin_token)
        votes = self.store.votes()
        failed_voters = {v.voter for v in votes if v.attention and not v.attention_passed}
        names = list(self.system_names) + sorted({s for v in votes for s in v.systems} - set(self.system_names)
                                                 - {BROKEN})
        tmp = f"{path}.partial"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["vote_id", "voted_at_utc", "voter", "ip_hash", "comparison_id", "item_id", "prompt", "seed",
                        "letters_systems", "ranking_letters", "ranking_systems", "attention_check",
                        "attention_passed", "counted"] + [f"rank_{n}" for n in names])
            for v in votes:
                item = self.pool.items.get(v.item_id)
                ranked = v.ranked_systems
                w.writerow([v.vote_id, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v.voted_at)), v.voter,
                            v.ip_hash, v.comparison_id, v.item_id, item.prompt_text if item else "",
                            item.seed if item else "", ";".join(v.systems), "".join(v.ranking), ";".join(ranked),
                            int(v.attention), "" if v.attention_passed is None else int(v.attention_passed),
                            int(not v.attention and v.voter not in failed_voters)]
                           + [ranked.index(n) + 1 if n in ranked else "" for n in names])
        os.replace(tmp, path)
        return len(votes)

    def reset(self, admin_token: str | None) -> str | None:
        """Delete every vote and comparison (the journal is renamed aside, not deleted)."""
        self.require_admin(admin_token)
        archived = self.store.reset()
        self.scheduler.pair_counts.clear()
        self.scheduler.item_counts.clear()
        return archived

    def close(self) -> None:
        if self.scheduler_hub is not None:
            try:
                self.scheduler_hub.stop()
                self.scheduler_hub.trigger().result(timeout=60)  # push the last votes
            except Exception as e:
                logger.error("final journal push failed: %s", e)
        self.store.close()
