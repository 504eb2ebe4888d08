"""bench/prompt_track.py: the span-by-span reading of one prompt's video, checked on the world's own video of the
issue's example, whose answers the renderer knows."""

import numpy as np
import pytest
import torch

from bench.prompt_track import in_view, row_text, track
from videossm.eval.world.probe import load_probe
from videossm.world import render_clip

torch.set_num_threads(1)


def test_the_worlds_own_example_reads_as_its_prompt_span_by_span():
    clip = render_clip("a red circle moving right on a gray background", 10.0, seed=0, fps=16)
    probe = load_probe(None)
    rows = track(clip.frames, probe, fps=16, span_frames=5 * 16)
    assert [(r["start"], r["stop"]) for r in rows] == [(0.0, 5.0), (5.0, 10.0)]
    shown = probe.config.present_min_visible  # the share of the object that counts as shown, as the probe learned
    visible = np.array([r.visible and r.visible_fraction >= shown for r in clip.records])  # the ground truth
    assert in_view(rows) == pytest.approx(visible.mean(), abs=0.05)
    for row, truth in zip(rows, (visible[:80], visible[80:])):
        assert row["present"] == pytest.approx(truth.mean(), abs=0.08)
        assert row["colour"][0] == "red" and row["shape"][0] == "circle"
        vx, vy = row["velocity"]
        assert 25 < vx < 40 and abs(vy) < 3, row  # the world's object crosses at 32 px/s
        assert "colour red" in row_text(row) and "velocity" in row_text(row)
    empty = track(np.full((16, 128, 128, 3), 128, np.uint8), probe, fps=16, span_frames=16)
    assert empty[0]["present"] == 0 and empty[0]["colour"] is None and in_view(empty) == 0
    assert row_text(empty[0]).endswith("present 0.00")
