"""World metrics (issue 5, section 5): measure generated videos of the procedural world against what the
world makes knowable, from the pixels alone.

    python -m videossm train probe                     # the probe (shipped in assets/probe/)
    python -m videossm eval-world --systems hybrid sink window --videos 16 --seconds 60
    python -m videossm eval --world ...                # the same, through the VBench-style `eval`

- `probe.py`: a tiny CNN reading the object's presence, position, colour and shape from a frame.
- `tracking.py`: the camera track of a video (for revisits and camera-following drift).
- `metrics.py`: adherence, switch response, drift, revisits, dynamics, flicker of one video.
- `harness.py`: systems x jobs -> cached per-video metrics -> bootstrap table, JSON, plots.
- `corruptions.py`: renderer clips spoiled on purpose (frozen, colour-swapped, background replaced,
  noise), with which the tests check that the metrics separate good from bad.
"""

from __future__ import annotations

from .cli import DEFAULT_SCENARIOS, PROBE_DIR, add_probe_parser, add_world_args, add_world_parser, run_from_args

__all__ = ["DEFAULT_SCENARIOS", "PROBE_DIR", "add_probe_parser", "add_world_args", "add_world_parser", "run_from_args"]
