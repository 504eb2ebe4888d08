import json
import math
import re
import subprocess
import sys
import threading

import pytest

from videossm.timeline import (
    MAX_PROMPT_CHARS,
    LiveTimeline,
    Segment,
    Timeline,
    TimelineError,
    latent_frame_to_seconds,
)


def three() -> Timeline:
    return Timeline([Segment(0, "a cat"), Segment(10, "a dog"), Segment(20, "a bird")], fps=16)


# ---- basics


def test_no_torch_import():
    code = "import sys, videossm.timeline; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_json_roundtrip(tmp_path):
    tl = three()
    assert Timeline.from_json(tl.to_json()) == tl
    assert Timeline.from_dict(json.loads(tl.to_json())).to_dict() == tl.to_dict()
    path = tmp_path / "tl.json"
    tl.save(path)
    assert Timeline.load(path) == tl
    assert [p.name for p in tmp_path.iterdir()] == ["tl.json"]  # no temp file left


def test_single_and_containers():
    tl = Timeline.single("hello", fps=24)
    assert tl.fps == 24 and len(tl) == 1 and list(tl) == [Segment(0.0, "hello")]
    t3 = three()
    assert len(t3) == 3 and [s.prompt for s in t3] == ["a cat", "a dog", "a bird"]
    assert t3 != tl and t3 == three() and hash(t3) == hash(three())
    assert Timeline.from_dict({"segments": [{"start": 0, "prompt": "x"}]}).fps == 16


def test_prompt_at_boundaries():
    tl = three()
    assert tl.prompt_at(0) == "a cat"
    assert tl.prompt_at(9.999) == "a cat"
    assert tl.prompt_at(10) == "a dog"
    assert tl.prompt_at(19.5) == "a dog"
    assert tl.prompt_at(20.0) == "a bird"
    assert tl.prompt_at(1e6) == "a bird"
    assert [tl.segment_index_at(t) for t in (0, 10, 25)] == [0, 1, 2]
    with pytest.raises(TimelineError, match=r"-1"):
        tl.prompt_at(-1)
    with pytest.raises(TimelineError, match="nan"):
        tl.prompt_at(math.nan)


def test_prompts_distinct_in_order():
    tl = Timeline([Segment(0, "a"), Segment(1, "b"), Segment(2, "a"), Segment(3, "c")])
    assert tl.prompts() == ["a", "b", "c"]


# ---- LongLive format


def test_latent_frame_to_seconds():
    assert latent_frame_to_seconds(0, 16) == 0
    assert latent_frame_to_seconds(1, 16) == 1 / 16
    assert latent_frame_to_seconds(41, 16) == 161 / 16


@pytest.mark.parametrize("key", ["switch_frames", "switch_frame_indices"])
@pytest.mark.parametrize("frames", [[41, 81], "41, 81", "41,81,"])
def test_longlive_format(key, frames):
    tl = Timeline.from_dict({"prompts": ["p0", "p1", "p2"], key: frames})
    assert tl.to_dict() == {
        "fps": 16,
        "segments": [
            {"start": 0.0, "prompt": "p0"},
            {"start": 161 / 16, "prompt": "p1"},  # latent 41 -> pixel 1 + 4 * 40
            {"start": 321 / 16, "prompt": "p2"},
        ],
    }


def test_longlive_single_prompt_and_fps():
    assert Timeline.from_dict({"prompts": ["only"]}) == Timeline.single("only")
    tl = Timeline.from_json('{"prompts": ["a", "b"], "switch_frame_indices": "2", "fps": 10}')
    assert tl.segments[1].start == 0.5 and tl.fps == 10


def test_longlive_errors():
    with pytest.raises(TimelineError, match=r"switch_frames has 1 entries for 3 prompts.*= 2"):
        Timeline.from_dict({"prompts": ["a", "b", "c"], "switch_frames": [5]})
    with pytest.raises(TimelineError, match=r"switch_frame_indices\[1\] = 5 must be .* > 9"):
        Timeline.from_dict({"prompts": ["a", "b", "c"], "switch_frame_indices": [9, 5]})
    with pytest.raises(TimelineError, match=r"switch_frames\[0\] = 0 must be"):
        Timeline.from_dict({"prompts": ["a", "b"], "switch_frames": [0]})
    with pytest.raises(TimelineError, match=r"'4x, 8'"):
        Timeline.from_dict({"prompts": ["a", "b", "c"], "switch_frame_indices": "4x, 8"})
    with pytest.raises(TimelineError, match=r"str '8'"):
        Timeline.from_dict({"prompts": ["a", "b"], "switch_frames": ["8"]})
    with pytest.raises(TimelineError, match="only one of"):
        Timeline.from_dict({"prompts": ["a", "b"], "switch_frames": [4], "switch_frame_indices": [4]})
    with pytest.raises(TimelineError, match=r"'prompts' must be a list.*str 'abc'"):
        Timeline.from_dict({"prompts": "abc"})
    with pytest.raises(TimelineError, match=r"unknown top-level key\(s\) \['seed'\].*switch_frames"):
        Timeline.from_dict({"prompts": ["a"], "seed": 1})


# ---- validation: every error names the bad value and the accepted range


def seg(start, prompt="p"):
    return {"start": start, "prompt": prompt}


def load(segments, **kw):
    return Timeline.from_dict({"fps": 16, "segments": segments}, **kw)


def test_no_segments():
    with pytest.raises(TimelineError, match=r"no segments; need 1 to 64"):
        load([])


def test_first_start_not_zero():
    with pytest.raises(TimelineError, match=r"segment 0 start must be 0.0.*got 1.5"):
        load([seg(1.5)])


def test_unsorted_and_duplicate_starts():
    with pytest.raises(TimelineError, match=r"segment 2 start 3 must be greater than segment 1 start 5 "):
        load([seg(0), seg(5), seg(3)])
    with pytest.raises(TimelineError, match=r"segment 2 start 5.0 must be greater than segment 1 start 5 "):
        load([seg(0), seg(5), seg(5.0)])


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_bad_times(bad):
    with pytest.raises(TimelineError, match=rf"segment 1 start {bad} is not a finite time >= 0"):
        load([seg(0), seg(bad)])


def test_nan_from_json_text():
    with pytest.raises(TimelineError, match=r"segment 1 start nan"):
        Timeline.from_json('{"segments": [{"start": 0, "prompt": "a"}, {"start": NaN, "prompt": "b"}]}')


def test_beyond_max_seconds():
    with pytest.raises(TimelineError, match=r"segment 1 start 30.0 is beyond max_seconds 20.*\[0, 20\)"):
        load([seg(0), seg(30.0)], max_seconds=20)
    assert len(load([seg(0), seg(19.9)], max_seconds=20)) == 2
    with pytest.raises(TimelineError, match=r"max_seconds must be .* > 0.*-5"):
        load([seg(0)], max_seconds=-5)


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_empty_prompt(prompt):
    msg = f"segment 1 prompt {prompt!r} is empty or whitespace-only; need 1 to 2000"
    with pytest.raises(TimelineError, match=re.escape(msg)):
        load([seg(0), seg(2, prompt)])


def test_long_prompt():
    assert MAX_PROMPT_CHARS == 2000
    load([seg(0, "x" * 2000)])
    with pytest.raises(TimelineError, match=r"segment 0 prompt 'xxx.*' has 2001 characters; at most 2000"):
        load([seg(0, "x" * 2001)])
    with pytest.raises(TimelineError, match=r"has 11 characters; at most 10"):
        load([seg(0, "x" * 11)], max_prompt_chars=10)


def test_too_many_segments():
    load([seg(i) for i in range(64)])
    with pytest.raises(TimelineError, match=r"65 segments; at most 64"):
        load([seg(i) for i in range(65)])
    with pytest.raises(TimelineError, match=r"3 segments; at most 2"):
        load([seg(i) for i in range(3)], max_segments=2)


@pytest.mark.parametrize("fps", [0, 121, -3, 16.0, "16", True, None])
def test_bad_fps(fps):
    with pytest.raises(TimelineError, match=rf"fps must be an int in \[1, 120\], got {type(fps).__name__} "):
        Timeline.from_dict({"fps": fps, "segments": [seg(0)]})
    with pytest.raises(TimelineError, match=r"fps must be an int in \[1, 120\]"):
        Timeline.single("a", fps=fps)


def test_wrong_types():
    with pytest.raises(TimelineError, match=r"segment 1 start must be a number of seconds >= 0, got str '5'"):
        load([seg(0), seg("5")])
    with pytest.raises(TimelineError, match=r"segment 0 start must be a number.*got bool True"):
        load([seg(True)])
    with pytest.raises(TimelineError, match=r"segment 1 prompt must be a str, got int 7"):
        load([seg(0), seg(1, 7)])
    with pytest.raises(TimelineError, match=r"'segments' must be a list.*got dict"):
        Timeline.from_dict({"segments": {"start": 0, "prompt": "a"}})
    with pytest.raises(TimelineError, match=r"segment 0 must be .* got str 'abc'"):
        load(["abc"])
    with pytest.raises(TimelineError, match=r"segment 0 has unknown keys \['end'\].*accepted keys"):
        load([{"start": 0, "prompt": "a", "end": 3}])
    with pytest.raises(TimelineError, match=r"missing keys \['prompt'\]"):
        load([{"start": 0}])
    msg = "unknown top-level key(s) ['duration']; accepted keys: ['fps', 'segments']"
    with pytest.raises(TimelineError, match=re.escape(msg)):
        Timeline.from_dict({"fps": 16, "segments": [seg(0)], "duration": 5})
    with pytest.raises(TimelineError, match=r"must be a JSON object, got list"):
        Timeline.from_dict([seg(0)])
    with pytest.raises(TimelineError, match=r"missing 'segments'"):
        Timeline.from_dict({"fps": 16})
    with pytest.raises(TimelineError, match=r"not valid JSON"):
        Timeline.from_json("{nope")


def test_load_error_names_path(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"segments": []}')
    with pytest.raises(TimelineError, match=r"bad.json: timeline has no segments"):
        Timeline.load(path)


# ---- LiveTimeline


def test_live_edits_and_version():
    live = LiveTimeline(three())
    assert live.version == 0
    assert live.add(15, "a fox") == 2
    assert live.snapshot().prompt_at(16) == "a fox" and live.version == 1
    live.edit(2, prompt="a wolf")
    live.edit(2, start=16.0)
    assert live.snapshot().segments[2] == Segment(16.0, "a wolf") and live.version == 3
    live.remove(2)
    assert live.snapshot() == three() and live.version == 4
    live.set_segments([Segment(0, "x"), (5, "y")])
    assert live.snapshot().prompts() == ["x", "y"] and live.version == 5
    live.replace(three())
    assert live.snapshot() == three() and live.version == 6


def test_live_invalid_edit_changes_nothing():
    live = LiveTimeline(three(), max_seconds=30)
    before = live.snapshot()
    bad = [
        lambda: live.edit(1, start=25.0),  # past its neighbour
        lambda: live.edit(1, prompt="  "),
        lambda: live.add(10, "dup"),
        lambda: live.add(40, "too late"),
        lambda: live.add(5, "x" * 3000),
        lambda: live.edit(7, prompt="x"),
        lambda: live.remove(0),
        lambda: live.set_segments([]),
        lambda: live.replace(Timeline([Segment(0, "a"), Segment(99, "b")])),  # beyond max_seconds
    ]
    for f in bad:
        with pytest.raises(TimelineError):
            f()
        assert live.snapshot() == before and live.version == 0


def test_live_index_errors():
    live = LiveTimeline(three())
    with pytest.raises(TimelineError, match=r"segment index int 3 is out of range; must be an int in \[0, 2\]"):
        live.edit(3, prompt="x")
    with pytest.raises(TimelineError, match=r"segment index int -1"):
        live.remove(-1)
    with pytest.raises(TimelineError, match=r"segment 0 cannot be removed"):
        live.remove(0)


def test_live_lock_refusals():
    live = LiveTimeline(three())
    live.lock_until(12.0)
    assert live.locked_seconds == 12.0
    msg = "segment 1 (start 10.0s, prompt 'a dog') starts before the lock at 12.0s"
    with pytest.raises(TimelineError, match=re.escape(msg)):
        live.edit(1, prompt="a horse")
    with pytest.raises(TimelineError, match=r"segment 1 .* lock at 12.0s .* cannot be removed"):
        live.remove(1)
    with pytest.raises(TimelineError, match=r"segment 0 .* lock at 12.0s"):
        live.edit(0, prompt="a lion")
    with pytest.raises(TimelineError, match=r"cannot add a segment at 11.0s: .* before 12.0s .* >= 12.0s"):
        live.add(11.0, "x")
    with pytest.raises(TimelineError, match=r"cannot move segment 2 to 5.0s: .* >= 12.0s"):
        live.edit(2, start=5.0)
    msg = "segment 1 (start 10.0s, prompt 'a dog') would change before the lock at 12.0s"
    with pytest.raises(TimelineError, match=re.escape(msg)):
        live.set_segments([Segment(0, "a cat"), Segment(11, "a dog"), Segment(20, "a bird")])
    with pytest.raises(TimelineError, match=r"cannot change fps from 16 to 24"):
        live.replace(Timeline(three().segments, fps=24))
    with pytest.raises(TimelineError, match=r"lock time 3 is before the current lock 12.0"):
        live.lock_until(3)
    assert live.snapshot() == three() and live.version == 0
    # at or after the lock is fine
    assert live.add(12.0, "a fox") == 2
    live.edit(3, start=21.0, prompt="an owl")
    live.remove(2)
    live.set_segments([Segment(0, "a cat"), Segment(10, "a dog"), Segment(13, "new")])
    assert live.version == 4 and live.snapshot().prompt_at(14) == "new"
    live.unlock()
    live.edit(0, prompt="a lion")
    assert live.snapshot().prompt_at(0) == "a lion"


def test_live_concurrent_snapshots_are_valid():
    live = LiveTimeline(three())
    stop = threading.Event()
    errors: list[BaseException] = []

    def editor():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                idx = live.add(25 + (i % 50) * 0.1, f"p{i}")
                live.edit(idx, prompt=f"q{i}")
                live.remove(idx)
                live.edit(1, start=10 + (i % 7))
            except TimelineError as e:  # pragma: no cover - would be a bug
                errors.append(e)

    t = threading.Thread(target=editor)
    t.start()
    try:
        versions = []
        for _ in range(3000):
            snap = live.snapshot()
            versions.append(live.version)
            # Rebuilding from the serialised form re-runs full validation.
            assert Timeline.from_dict(snap.to_dict()) == snap
            assert snap.prompt_at(0) == "a cat" and 3 <= len(snap) <= 4
    finally:
        stop.set()
        t.join()
    assert not errors
    assert versions == sorted(versions) and versions[-1] > 0
