"""PNG charts: VBench metrics over time for several videos on one figure, and the bench's latency and
memory over generated seconds for every memory mode."""

from __future__ import annotations

import math
import os


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_curves(videos: list[dict], path: str, title: str = "VBench metrics over time") -> str:
    """One panel per metric; one line per video (label), x = window start in video seconds."""
    plt = _pyplot()
    metrics = [m for m in videos[0]["curves"] if m != "window_start_s"] if videos else []
    if not metrics:
        raise ValueError("no metric curves to plot")
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for video in videos:
            curve = video["curves"]
            ax.plot(curve["window_start_s"], curve[metric], marker="o", ms=3, label=video.get("label", video.get("path")))
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(f"video time, s (windows of {videos[0]['window_seconds']:g} s)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(plt, fig, path)


def _save(plt, fig, path: str) -> str:
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bench(results: dict, path: str, title: str = "") -> str:
    """Left: per-block latency (ms) vs generated video seconds; right: memory (MB) vs generated seconds."""
    plt = _pyplot()
    fig, (ax_lat, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.2))
    for mode, r in results.items():
        blocks = r["stats"]["per_block"]
        t = [b.get("video_s", i) for i, b in enumerate(blocks)]
        ax_lat.plot(t, [1000 * b["seconds"] for b in blocks], lw=1, label=mode)
        key = "gpu_mb" if blocks and blocks[0].get("gpu_mb") is not None else "rss_mb"
        if blocks and key in blocks[0]:
            ax_mem.plot(t, [b[key] for b in blocks], lw=1.5, label=f"{mode} {'GPU allocated' if key == 'gpu_mb' else 'RSS'}")
        if blocks and "cache_mb" in blocks[0]:
            ax_mem.plot(t, [b["cache_mb"] for b in blocks], lw=1, ls="--", label=f"{mode} KV+memory state")
    ax_lat.set_xlabel("generated video, s")
    ax_lat.set_ylabel("ms per block")
    ax_lat.set_title("per-block latency")
    ax_mem.set_xlabel("generated video, s")
    ax_mem.set_ylabel("MB")
    ax_mem.set_title("memory")
    for ax in (ax_lat, ax_mem):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)
