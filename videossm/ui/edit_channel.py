"""A per-stream file that carries timeline edits (and Stop) to a generator running in another process.

Under ZeroGPU the generating function runs in a forked worker, so an edit made in the Gradio process
cannot mutate the stream's LiveTimeline in memory. Instead:

    channel = EditChannel.create(edit_dir)       # Gradio process: one file per running stream
    channel.write(timeline)                      # each edit: the whole Timeline JSON, replaced atomically
    channel.cancel()                             # Stop / disconnect

    reader = EditReader(channel.path)            # worker process, inside the block loop
    edit = reader.poll()                         # at each block boundary: the newest unseen edit, or None
    error = apply_edit(handle.timeline, edit)    # through LiveTimeline's rules (locked past refused)

The file holds `{"seq": n, "cancelled": bool, "timeline": {...}}`. Writes go to a temporary file in the
same folder and `os.replace` it over the channel file, so a reader sees the old or the new document,
never half of one. `seq` grows with every write; the reader applies each seq at most once.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass

from ..timeline import LiveTimeline, Timeline, TimelineError


@dataclass(frozen=True)
class Edit:
    seq: int  # the channel's write counter when this document was written
    timeline: dict | None  # Timeline JSON dict, or None when only a cancel was written
    cancelled: bool


class EditChannel:
    """The writing end (Gradio process). Thread-safe: the update and stop events may run at once."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._seq = 0
        self._timeline: dict | None = None
        self._cancelled = False
        self._closed = False

    @classmethod
    def create(cls, edit_dir: str | None = None) -> "EditChannel":
        """A new channel file with a random name in `edit_dir` (default: the system temp folder)."""
        if edit_dir:
            os.makedirs(edit_dir, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="videossm-edits-", suffix=".json", dir=edit_dir or None)
        os.close(fd)
        channel = cls(path)
        channel._flush()
        return channel

    @property
    def seq(self) -> int:
        return self._seq

    def write(self, timeline: Timeline) -> int:
        """Publish the whole timeline; returns its seq."""
        with self._lock:
            if self._closed:
                raise TimelineError("the stream has ended; its edit channel is closed")
            self._seq += 1
            self._timeline = timeline.to_dict()
            self._flush()
            return self._seq

    def cancel(self) -> None:
        with self._lock:
            if not self._cancelled and not self._closed:
                self._cancelled = True
                self._seq += 1
                self._flush()

    def close(self) -> None:
        """Remove the file: the stream is over (a reader that still runs takes this as a cancel)."""
        with self._lock:
            self._closed = True
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def _flush(self) -> None:  # call with the lock held (or before the channel is shared)
        doc = {"seq": self._seq, "cancelled": self._cancelled, "timeline": self._timeline}
        folder = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(prefix=".videossm-edit-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, ensure_ascii=False)
            os.replace(tmp, self.path)  # atomic on POSIX and Windows: readers see old or new, never half
        except BaseException:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
            raise


class EditReader:
    """The reading end (generating process): `poll()` once per block boundary."""

    def __init__(self, path: str):
        self.path = path
        self.seen_seq = 0
        self.cancelled = False

    def poll(self) -> Edit | None:
        """The newest document if its seq is new, else None. The writer creates the file before the stream
        starts and removes it when its side is over, so a missing file means cancelled. An unreadable
        document raises, naming the path."""
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            self.cancelled = True
            return None
        try:
            doc = json.loads(text)
            seq, timeline, cancelled = int(doc["seq"]), doc.get("timeline"), bool(doc.get("cancelled", False))
        except (ValueError, KeyError, TypeError) as e:
            raise TimelineError(f"edit channel {self.path} holds an unreadable document ({e}): {text[:80]!r}") from e
        if seq <= self.seen_seq:
            return None
        self.seen_seq = seq
        self.cancelled = self.cancelled or cancelled
        return Edit(seq, timeline, cancelled)


def apply_edit(live: LiveTimeline, edit: Edit | None) -> str | None:
    """Apply an edit's timeline through the LiveTimeline rules; returns the refusal message, or None."""
    if edit is None or edit.timeline is None:
        return None
    try:
        live.replace(Timeline.from_dict(edit.timeline))
    except TimelineError as e:
        return str(e)
    return None
