"""Votes kept without loss: SQLite (WAL, schema-versioned, UNIQUE vote per comparison and voter) plus an
fsynced append-only JSONL journal.

A vote is accepted in one step, under one lock:
    BEGIN IMMEDIATE -> INSERT (the UNIQUE constraint rejects a second vote) -> append the journal line and
    fsync it -> COMMIT.
It is acknowledged only after the commit, so an acknowledged vote is in both. A crash between the fsync and
the commit leaves a vote in the journal only, and `verify(repair=True)` (run on every open) restores it. A
vote in the database but not in the journal cannot come from this code; it is reported (and journaled, so
nothing is lost). A torn last journal line (a crash inside a write) was never acknowledged and is cut off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
JOURNAL_VERSION = 1

# Migrations: MIGRATIONS[v] takes a database at version v to v + 1.
MIGRATIONS: dict[int, str] = {
    0: """
    CREATE TABLE comparisons (
        id TEXT PRIMARY KEY,
        voter TEXT NOT NULL,
        ip_hash TEXT NOT NULL,
        item_id TEXT NOT NULL,
        systems TEXT NOT NULL,           -- JSON list: the system behind letter A, B, ...
        clips TEXT NOT NULL,             -- JSON list: the clip id behind letter A, B, ...
        attention INTEGER NOT NULL,      -- 1: attention check (one clip is obviously broken)
        issued_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE votes (
        vote_id TEXT PRIMARY KEY,
        comparison_id TEXT NOT NULL,
        voter TEXT NOT NULL,
        ip_hash TEXT NOT NULL,
        item_id TEXT NOT NULL,
        systems TEXT NOT NULL,           -- JSON list per letter, as issued
        ranking TEXT NOT NULL,           -- JSON list of letters, best first
        attention INTEGER NOT NULL,
        attention_passed INTEGER,        -- NULL for ordinary comparisons
        issued_at REAL NOT NULL,
        voted_at REAL NOT NULL,
        UNIQUE (comparison_id, voter)
    );
    CREATE INDEX votes_voter ON votes (voter);
    """,
}


class StoreError(RuntimeError):
    """The database or journal cannot be used as they are (newer schema, corrupt journal)."""


class DuplicateVote(ValueError):
    """A vote for this comparison by this voter is already stored."""


BROKEN = "(broken clip)"  # the pseudo-system behind an attention check's broken clip


@dataclass(frozen=True)
class Comparison:
    id: str
    voter: str
    ip_hash: str
    item_id: str
    systems: tuple[str, ...]  # per letter
    clips: tuple[str, ...]  # per letter
    attention: bool
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class VoteRecord:
    vote_id: str
    comparison_id: str
    voter: str
    ip_hash: str
    item_id: str
    systems: tuple[str, ...]  # per letter, as issued
    ranking: tuple[str, ...]  # letters, best first
    attention: bool
    attention_passed: bool | None
    issued_at: float
    voted_at: float

    @property
    def ranked_systems(self) -> list[str]:
        """The systems best first."""
        return [self.systems[ord(letter) - ord("A")] for letter in self.ranking]

    def to_json(self) -> str:
        d = asdict(self)
        d["v"] = JOURNAL_VERSION
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "VoteRecord":
        d = {k: v for k, v in d.items() if k not in ("v", "restored_from")}
        d["systems"], d["ranking"] = tuple(d["systems"]), tuple(d["ranking"])
        return cls(**d)

    def row(self) -> tuple:
        return (self.vote_id, self.comparison_id, self.voter, self.ip_hash, self.item_id, json.dumps(self.systems),
                json.dumps(self.ranking), int(self.attention),
                None if self.attention_passed is None else int(self.attention_passed), self.issued_at, self.voted_at)


VOTE_COLUMNS = ("vote_id, comparison_id, voter, ip_hash, item_id, systems, ranking, attention, attention_passed, "
                "issued_at, voted_at")


def _vote_from_row(row: tuple) -> VoteRecord:
    (vote_id, cid, voter, ip_hash, item_id, systems, ranking, attention, passed, issued_at, voted_at) = row
    return VoteRecord(vote_id, cid, voter, ip_hash, item_id, tuple(json.loads(systems)), tuple(json.loads(ranking)),
                      bool(attention), None if passed is None else bool(passed), issued_at, voted_at)


@dataclass
class VerifyReport:
    journal_votes: int = 0
    db_votes: int = 0
    restored: list[str] = field(default_factory=list)  # in the journal, missing from the DB: inserted
    db_only: list[str] = field(default_factory=list)  # in the DB, missing from the journal: reported (+ journaled)
    conflicts: list[str] = field(default_factory=list)  # journal votes the UNIQUE constraint refused
    torn_bytes: int = 0  # length of a torn last journal line that was cut off

    @property
    def consistent(self) -> bool:
        return not (self.restored or self.db_only or self.conflicts or self.torn_bytes)


class Journal:
    """Append-only JSONL; every append is fsynced before it returns. An flock keeps a second writer out."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StoreError(f"journal {self.path} is locked by another process (is a second server running "
                                 "on the same study folder?)") from None
            self._fd = fd
        return self._fd

    def append(self, line: str) -> None:
        data = (line + "\n").encode()
        fd = self._open()
        written = os.write(fd, data)
        if written != len(data):  # regular files write all or fail; never leave half a line silently
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        os.fsync(fd)

    def cut_torn_tail(self) -> int:
        """Remove a last line without its newline (a crash inside a write); returns the bytes removed."""
        if not os.path.exists(self.path):
            return 0
        with open(self.path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return 0
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return len(data) - keep

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        records = []
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    records.append(json.loads(raw))
                except json.JSONDecodeError as e:
                    raise StoreError(f"{self.path} line {n} is not valid JSON ({e}); the journal is damaged: fix or "
                                     "remove that line by hand (it is the source of truth, so nothing is dropped "
                                     "automatically)") from None
        return records

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the flock
            self._fd = None


class VoteStore:
    """The study's SQLite database and vote journal. Thread-safe: one connection, one write lock."""

    def __init__(self, db_path: str, journal_path: str, journal_lock: threading.Lock | None = None):
        self.db_path, self.journal = db_path, Journal(journal_path)
        os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
        self._lock = threading.RLock()
        self._journal_lock = journal_lock or contextlib.nullcontext()  # e.g. a CommitScheduler's lock
        self.conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # a committed vote survives a power cut, not just a crash
        self._migrate()

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._lock:
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.db_path} has schema version {version}, newer than this code's "
                                 f"{SCHEMA_VERSION}; upgrade videossm")
            while version < SCHEMA_VERSION:
                try:  # one transaction: the schema and its version number change together
                    self.conn.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[version]}; "
                                            f"PRAGMA user_version={version + 1}; COMMIT;")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
                version += 1
                logger.info("study database %s migrated to schema v%d", self.db_path, version)

    # Comparisons ---------------------------------------------------------------------------------------------
    def add_comparison(self, c: Comparison) -> None:
        with self._lock:
            self.conn.execute(
                "INSERT INTO comparisons VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (c.id, c.voter, c.ip_hash, c.item_id, json.dumps(c.systems), json.dumps(c.clips), int(c.attention),
                 c.issued_at, c.expires_at))

    def get_comparison(self, comparison_id: str) -> Comparison | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM comparisons WHERE id = ?", (comparison_id,)).fetchone()
        if row is None:
            return None
        cid, voter, ip_hash, item_id, systems, clips, attention, issued_at, expires_at = row
        return Comparison(cid, voter, ip_hash, item_id, tuple(json.loads(systems)), tuple(json.loads(clips)),
                          bool(attention), issued_at, expires_at)

    def issued_systems(self) -> list[tuple[str, tuple[str, ...]]]:
        """(item id, systems) of every ordinary comparison issued so far: what the scheduler balances."""
        with self._lock:
            rows = self.conn.execute("SELECT item_id, systems FROM comparisons WHERE attention = 0").fetchall()
        return [(item, tuple(json.loads(s))) for item, s in rows]

    # Votes -----------------------------------------------------------------------------------------------------
    def add_vote(self, vote: VoteRecord) -> None:
        """Store a vote in the database and the journal, or in neither. Raises DuplicateVote."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                try:
                    self.conn.execute(f"INSERT INTO votes ({VOTE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                      vote.row())
                except sqlite3.IntegrityError:
                    raise DuplicateVote(f"comparison {vote.comparison_id} already has a vote from this voter") from None
                with self._journal_lock:
                    self.journal.append(vote.to_json())
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def has_vote(self, comparison_id: str, voter: str) -> bool:
        with self._lock:
            return self.conn.execute("SELECT 1 FROM votes WHERE comparison_id = ? AND voter = ?",
                                     (comparison_id, voter)).fetchone() is not None

    def votes(self) -> list[VoteRecord]:
        with self._lock:
            rows = self.conn.execute(f"SELECT {VOTE_COLUMNS} FROM votes ORDER BY voted_at, vote_id").fetchall()
        return [_vote_from_row(r) for r in rows]

    def count_votes(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]

    # Recovery --------------------------------------------------------------------------------------------------
    def verify(self, repair: bool = True) -> VerifyReport:
        """Compare the database with the journal; with `repair`, make them agree without dropping a vote."""
        report = VerifyReport()
        with self._lock, self._journal_lock:
            if repair:
                report.torn_bytes = self.journal.cut_torn_tail()
                if report.torn_bytes:
                    logger.warning("cut a torn last line (%d bytes) off %s: a crash inside a write; that vote had "
                                   "not been acknowledged", report.torn_bytes, self.journal.path)
            journal = {d["vote_id"]: d for d in self.journal.read()}
            db = {v.vote_id: v for v in self.votes()}
            report.journal_votes, report.db_votes = len(journal), len(db)
            missing = [vid for vid in journal if vid not in db]
            report.db_only = sorted(vid for vid in db if vid not in journal)
            if repair and missing:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    for vid in missing:
                        try:
                            self.conn.execute(f"INSERT INTO votes ({VOTE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                              VoteRecord.from_dict(journal[vid]).row())
                            report.restored.append(vid)
                        except sqlite3.IntegrityError:
                            report.conflicts.append(vid)
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
            elif missing:
                report.restored = missing  # would be restored
            if report.restored:
                logger.warning("%s %d vote(s) from the journal that the database lacked",
                               "restored" if repair else "found", len(report.restored))
            if report.conflicts:
                logger.error("%d journal vote(s) clash with the UNIQUE constraint: %s", len(report.conflicts),
                             report.conflicts[:5])
            if report.db_only:
                logger.error("%d vote(s) are in the database but not in the journal %s (not written by this code): "
                             "%s%s", len(report.db_only), self.journal.path, report.db_only[:5],
                             "; appended to the journal so nothing is lost" if repair else "")
                if repair:
                    for vid in report.db_only:
                        d = json.loads(db[vid].to_json())
                        d["restored_from"] = "db"
                        self.journal.append(json.dumps(d, sort_keys=True, separators=(",", ":")))
        return report

    def reset(self) -> str | None:
        """Delete all votes and comparisons; the journal is kept, renamed aside. Returns its new path."""
        with self._lock, self._journal_lock:
            self.journal.close()
            archived = None
            if os.path.exists(self.journal.path):
                archived = f"{self.journal.path}.reset-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(self.journal.path, archived)
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM votes")
            self.conn.execute("DELETE FROM comparisons")
            self.conn.execute("COMMIT")
        return archived

    def close(self) -> None:
        with self._lock:
            self.journal.close()
            self.conn.close()
