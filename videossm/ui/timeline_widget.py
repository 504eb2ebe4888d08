"""The prompt timeline widget (gr.HTML + assets/timeline/*.js|css) and its keyboard-accessible table twin.

Both edit the same Timeline JSON string, the widget's value. The widget's props `duration`, `generated`
and `locked` move the axis end, the playhead and the locked (already generated) region.
"""

from __future__ import annotations

import json
import os

import gradio as gr

from ..timeline import Timeline, TimelineError

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "assets",
                      "timeline")
TABLE_HEADERS = ["start (s)", "prompt"]


def _asset(name: str) -> str:
    with open(os.path.join(ASSETS, name), encoding="utf-8") as f:
        return f.read()


def timeline_widget(value: str, duration: float) -> gr.HTML:
    return gr.HTML(
        value=value, html_template='<div class="vt"></div>', css_template=_asset("timeline.css"),
        js_on_load=_asset("timeline.js"), elem_id="timeline-widget", apply_default_css=False,
        duration=duration, generated=0.0, locked=0.0,
    )


def timeline_table(value: str) -> gr.Dataframe:
    return gr.Dataframe(value=to_rows(value), headers=TABLE_HEADERS, datatype=["number", "str"], column_count=2,
                        row_count=1, row_limits=(1, None), interactive=True, elem_id="timeline-table",
                        label="Timeline as a table (keyboard: Tab/arrows to move, Enter to edit; same data as above)")


def to_rows(value: str) -> list[list]:
    try:
        timeline = Timeline.from_json(value)
    except TimelineError:
        return [[0.0, ""]]
    return [[s.start, s.prompt] for s in timeline.segments]


def from_rows(rows) -> dict:
    """Table rows (a pandas DataFrame or a list of lists) to a Timeline JSON dict; blank rows are dropped."""
    if hasattr(rows, "values"):
        rows = rows.values.tolist()
    segments = []
    for i, row in enumerate(rows or []):
        start, prompt = (list(row) + [None, None])[:2]
        if (start is None or start == "") and not (prompt or "").strip():
            continue
        try:
            start = float(start)
        except (TypeError, ValueError):
            raise TimelineError(f"row {i + 1}: start must be a number of seconds, got {start!r}") from None
        segments.append({"start": start, "prompt": "" if prompt is None else str(prompt)})
    return {"segments": segments}


def to_json(timeline: Timeline) -> str:
    return json.dumps(timeline.to_dict(), ensure_ascii=False)
