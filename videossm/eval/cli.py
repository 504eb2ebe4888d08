"""`python -m videossm eval VIDEO... [--metrics ...] [--json out.json] [--plot curves.png]`.

`--world` hands over to the procedural-world metrics (`videossm.eval.world.run_from_args`) when that
package is present.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .metric_names import DEFAULT_METRICS, METRICS, UNAVAILABLE


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="VBench-style metrics of videos, over time (VBench-Long 2 s clips)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="video files (mp4, ...)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="METRIC",
                   help=f"any of: {', '.join(METRICS)} (default: all). imaging_quality: {UNAVAILABLE['imaging_quality']}")
    p.add_argument("--labels", nargs="+", help="a name per video for tables and plots (default: file names)")
    p.add_argument("--json", help="write every score, per-clip value and curve here")
    p.add_argument("--plot", help="PNG of every metric over time, all videos on one chart")
    p.add_argument("--clip-seconds", type=float, default=2.0, help="VBench-Long clip length (default %(default)s)")
    p.add_argument("--window-seconds", type=float, default=5.0, help="curve resolution (default %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="frames per feature-model batch")
    p.add_argument("--hub-cache", default=None, help="Hugging Face hub cache for the feature models (default: HF_HUB_CACHE)")
    p.add_argument("--dino", default="facebook/dino-vitb16", help="subject-consistency model (hub id or folder)")
    p.add_argument("--clip", default="openai/clip-vit-base-patch32", help="background-consistency model")
    p.add_argument("--aesthetic-clip", default="openai/clip-vit-large-patch14", help="aesthetic CLIP model")
    p.add_argument("--aesthetic-head", default="shunk031/aesthetics-predictor-v1-vit-large-patch14",
                   help="hub repo (or .safetensors file) holding LAION's aesthetic linear head")
    p.add_argument("--world", action="store_true", help="the procedural-world metrics instead (videossm.eval.world)")
    p.add_argument("--no-progress", action="store_true")
    from .world import add_world_args  # light: no torch until a command runs

    add_world_args(p)  # the --world options (shared ones such as --device are skipped)
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args) -> int:
    if args.world:
        try:
            from . import world
        except ImportError:
            print("error: --world needs the procedural-world metrics (videossm.eval.world), which this "
                  "installation does not have", file=sys.stderr)
            return 2
        return world.run_from_args(args)

    import torch

    from ..config import ConfigError
    from ..video.mp4 import read_video
    from .features import FeatureModelError, FeatureModels
    from .plots import plot_metric_curves
    from .vbench import LongVideoConfig, VBenchEvaluator

    if not args.videos:
        raise ConfigError("eval needs at least one VIDEO (or --world)")
    missing = [v for v in args.videos if not os.path.isfile(v)]
    if missing:
        raise FileNotFoundError(f"video(s) not found: {', '.join(missing)}")
    if args.labels and len(args.labels) != len(args.videos):
        raise ConfigError(f"--labels has {len(args.labels)} names for {len(args.videos)} videos")
    bad = [m for m in args.metrics if m not in METRICS]
    if bad:
        why = "; ".join(f"{m}: {UNAVAILABLE[m]}" for m in bad if m in UNAVAILABLE)
        raise ConfigError(f"unknown metric(s) {bad}; accepted: {', '.join(METRICS)}" + (f". {why}" if why else ""))
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        long = LongVideoConfig(args.clip_seconds, args.window_seconds).validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    models = FeatureModels(dino=args.dino, clip=args.clip, aesthetic_clip=args.aesthetic_clip,
                           aesthetic_head=args.aesthetic_head, cache_dir=args.hub_cache)
    evaluator = VBenchEvaluator(tuple(args.metrics), models, long, device=device, batch_size=args.batch_size,
                                progress=not args.no_progress)
    try:
        evaluator.load_models()
    except FeatureModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    labels = args.labels or [os.path.splitext(os.path.basename(v))[0] for v in args.videos]
    videos = []
    for path, label in zip(args.videos, labels):
        frames, fps = read_video(path)
        print(f"eval: {path}: {len(frames)} frames at {fps:g} fps", file=sys.stderr, flush=True)
        result = evaluator.evaluate(frames, fps)
        videos.append({"path": path, "label": label, **result})
    report = {"kind": "eval", "metrics": {m: METRICS[m] for m in args.metrics}, "unavailable": UNAVAILABLE,
              "models": {"dino": args.dino, "clip": args.clip, "aesthetic_clip": args.aesthetic_clip,
                         "aesthetic_head": args.aesthetic_head},
              "videos": videos}
    print_scores(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.plot:
        plot_metric_curves(videos, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def print_scores(report: dict) -> None:
    metrics = list(report["metrics"])
    print(f"VBench-style scores (VBench-Long: mean over {report['videos'][0]['clip_seconds']:g} s clips)")
    print(f"{'video':24} {'seconds':>7} " + " ".join(f"{m:>22}" for m in metrics))
    for v in report["videos"]:
        print(f"{v['label'][:24]:24} {v['seconds']:>7.1f} " + " ".join(f"{v['scores'][m]:>22.4f}" for m in metrics))
    for v in report["videos"]:
        print(f"\n{v['label']}: per {v['window_seconds']:g} s window")
        starts = v["curves"]["window_start_s"]
        for m in metrics:
            print(f"  {m:24} " + " ".join(f"{x:.3f}" for x in v["curves"][m]) + f"   (t = {starts[0]:g}..{starts[-1]:g} s)")
    for name, why in report["unavailable"].items():
        print(f"\nnot computed: {name}: {why}")
