"""`python -m videossm report JSON... --out report.md`: eval and bench JSON files -> one markdown report
with tables and PNG plots (written beside the report). The README and bench/README.md quote it."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="eval and bench JSON files -> one markdown report with tables and plots")
    p.add_argument("inputs", nargs="+", metavar="JSON", help="files written by `eval --json` or `bench --json`")
    p.add_argument("--out", default="report/report.md", help="markdown file; plots go beside it (default %(default)s)")
    p.add_argument("--title", default="VideoSSM evaluation and benchmark report")
    p.set_defaults(func=cmd_report)
    return p


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _kind(data: dict) -> str:
    if data.get("kind") in ("eval", "bench"):
        return data["kind"]
    if "videos" in data:
        return "eval"
    if "results" in data:
        return "bench"
    raise ValueError("not an eval or bench JSON (no 'videos' or 'results')")


def eval_section(data: dict, name: str, out_dir: str, stem: str) -> list[str]:
    from .plots import plot_metric_curves

    metrics = list(data["metrics"])
    videos = data["videos"]
    lines = [f"## VBench-style metrics: `{name}`", "",
             f"Each score is the mean over {videos[0]['clip_seconds']:g} s clips (VBench-Long); the chart shows "
             f"every metric per {videos[0]['window_seconds']:g} s window.", "",
             "| video | seconds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for v in videos:
        lines.append(f"| {v['label']} | {v['seconds']:.1f} | " + " | ".join(_fmt(v["scores"][m]) for m in metrics) + " |")
    png = f"{stem}_curves.png"
    plot_metric_curves(videos, os.path.join(out_dir, png), title=f"metrics over time: {name}")
    lines += ["", f"![metrics over time]({png})", ""]
    lines.append("Metric definitions:")
    lines += [f"- `{m}`: {desc}" for m, desc in data["metrics"].items()]
    lines += [f"- `{m}`: {why}" for m, why in data.get("unavailable", {}).items()]
    return lines + [""]


def bench_section(data: dict, name: str, out_dir: str, stem: str) -> list[str]:
    from .plots import plot_bench

    results = data["results"]
    first = next(iter(results.values()))["stats"]
    machine = data.get("machine", {})
    where = machine.get("gpu") or f"CPU ({machine.get('cpu_count', '?')} cores)"
    lines = [f"## Speed and memory: `{name}`", "",
             f"- Model `{data.get('model')}`, {first.get('dtype', '?')}, decode {'on' if first.get('decode') else 'off'}, "
             f"{first.get('threads', '?')} thread(s), ops `{first.get('ops', 'auto')}`, "
             f"compile {'on' if first.get('compile') else 'off'}, on {where}."]
    if data.get("command"):
        lines.append(f"- Command: `{data['command']}`")
    lines += ["", "| mode | blocks | first frame s | fps | sustained fps | ms/block first 10 | ms/block last 10 | "
              "ratio last/first | ratio at 2 min | state MB blk 10 -> end | peak RSS MB | peak GPU MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, r in results.items():
        s = r["summary"]
        ratio2 = s.get("latency_ratio_2min")
        if ratio2 is None:  # older bench JSONs: derive it from the per-block times
            from ..bench import _median_around

            blocks = r["stats"]["per_block"]
            t2 = _median_around(_with_video_time(blocks, r["stats"]), 120.0)
            ratio2 = t2 / (s["block_ms_first10"] / 1000) if t2 is not None else None
        lines.append(
            f"| {mode} | {s['blocks']} | {_fmt(s['first_frame_s'])} | {_fmt(s['fps'], 1)} | "
            f"{_fmt(s.get('sustained_fps'), 1)} | {_fmt(s['block_ms_first10'], 1)} | {_fmt(s['block_ms_last10'], 1)} | "
            f"{_fmt(s['latency_ratio'])} | {_fmt(ratio2)} | {_fmt(s.get('cache_mb_block10'), 1)} -> "
            f"{_fmt(s.get('cache_mb_end'), 1)} | {_fmt(s['peak_rss_mb'], 0)} | {_fmt(s.get('peak_gpu_mb'), 0)} |")
    for r in results.values():
        _with_video_time(r["stats"]["per_block"], r["stats"])
    png = f"{stem}_bench.png"
    plot_bench(results, os.path.join(out_dir, png), title=f"{data.get('model')}: {name}")
    return lines + ["", f"![latency and memory vs generated seconds]({png})", ""]


def _with_video_time(blocks: list[dict], stats: dict) -> list[dict]:
    """Older bench JSONs have no per-block `video_s`: add it from the frames each block stands for."""
    fps = stats.get("frames", 0) / stats["seconds"] if stats.get("seconds") else 16
    total = 0
    for b in blocks:
        total += b.get("frames", 0)
        b.setdefault("video_s", total / fps if fps else 0.0)
    return blocks


def render(inputs: list[str], out: str, title: str) -> str:
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"# {title}", "", "Generated by `python -m videossm report " + " ".join(inputs) + f" --out {out}`. "
             "Every number below comes from the JSON files listed; rerun the commands to reproduce them.", ""]
    for i, path in enumerate(inputs):
        with open(path) as f:
            data = json.load(f)
        name = os.path.basename(path)
        stem = f"{i:02d}_{os.path.splitext(name)[0]}"
        try:
            kind = _kind(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        lines += eval_section(data, name, out_dir, stem) if kind == "eval" else bench_section(data, name, out_dir, stem)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return out


def cmd_report(args) -> int:
    missing = [p for p in args.inputs if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"input(s) not found: {', '.join(missing)}")
    try:
        render(args.inputs, args.out, args.title)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
