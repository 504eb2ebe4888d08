"""Argument parsing for the world metrics, kept free of heavy imports (torch loads only when a command runs)."""

from __future__ import annotations

import argparse
import os

from ...config import TEACHER_GUIDANCE, TEACHER_SAMPLE_STEPS, StreamConfig, default_model

PROBE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "assets", "probe")
DEFAULT_SCENARIOS = ("long_static", "prompt_switch", "pan_and_return", "wraparound", "plain")
SCENARIO_NAMES = ("plain", "pan_and_return", "wraparound", "long_static", "prompt_switch")  # world.SCENARIOS


def add_world_args(parser: argparse.ArgumentParser) -> None:
    """The world-eval options, for `eval --world` (issue 8's parser) and `eval-world`.

    An option the parser already has (e.g. a shared --device or --threads) is left to it, so this can be
    added to another command's parser without an argparse conflict."""
    group = parser.add_argument_group("world metrics (--world)")

    class _Group:  # add_argument that skips option strings the parser already defines
        @staticmethod
        def add_argument(*names, **kwargs):
            if not any(n in parser._option_string_actions for n in names):
                group.add_argument(*names, **kwargs)

    g = _Group()
    g.add_argument("--systems", nargs="+", default=["hybrid", "sink", "window"],
                   help="LABEL=MODEL:MEMORY, MODEL:MEMORY or MEMORY (model from --world-model); MEMORY may carry stream "
                        "settings, e.g. hybrid,window=24,sink=3 (latent frames); references: renderer "
                        "(perfect videos: the ceiling), vae:VAE_DIR (them through a VAE), teacher:DIR (the recipe's teacher, "
                        "single-prompt scenarios, ~5 s); default: %(default)s")
    g.add_argument("--compare", nargs="+", default=None, metavar="A,B",
                   help="system pairs whose paired difference A - B the table shows (default: hybrid,window and "
                        "hybrid,sink when those labels are present)")
    g.add_argument("--teacher-steps", type=int, default=TEACHER_SAMPLE_STEPS,
                   help="Euler steps of teacher:DIR systems' ODE (default: %(default)s, as its training samples)")
    g.add_argument("--teacher-guidance", type=float, default=TEACHER_GUIDANCE,
                   help="classifier-free guidance of teacher:DIR systems (default: %(default)s)")
    g.add_argument("--teacher-shift", type=float, default=StreamConfig().shift,
                   help="timestep shift of teacher:DIR systems' ODE grid (default: %(default)s, the stream's)")
    g.add_argument("--teacher-start-sigma", type=float, default=1.0,
                   help="below 1, teacher:DIR systems start from the world's own clip noised to this level "
                        "instead of pure noise: a diagnostic of where the teacher loses the object")
    g.add_argument("--world-model", default=os.environ.get("VIDEOSSM_MODEL"),
                   help="model of systems given without one: checkpoint folder or preset (default: "
                        "$VIDEOSSM_MODEL, else the shipped checkpoint of each system's memory mode, else "
                        f"{default_model()})")
    g.add_argument("--videos", type=int, default=16, dest="world_videos",  # `eval` has a positional `videos`
                   help="videos per system (default %(default)s)")
    g.add_argument("--seconds", type=float, default=60.0, help="length of each video (default %(default)s)")
    g.add_argument("--scenarios", nargs="+", choices=SCENARIO_NAMES, default=list(DEFAULT_SCENARIOS),
                   help="scenario timelines, cycled over the videos")
    g.add_argument("--seed", type=int, default=1000, help="first generation seed (held-out: beyond training's)")
    g.add_argument("--out-dir", default="runs/world_eval", help="results.json, table.md, curves.png, videos/ (cache)")
    g.add_argument("--probe", default=PROBE_DIR, help="probe folder (default: the shipped assets/probe)")
    g.add_argument("--device", default=os.environ.get("VIDEOSSM_DEVICE", "auto"))
    g.add_argument("--save-videos", action="store_true", help="also keep every generated video as mp4")
    g.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--no-progress", action="store_true")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the world evaluation from parsed `add_world_args` options; prints the table."""
    from ...config import ConfigError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.world_videos < 1:
        raise ConfigError(f"--videos must be >= 1, got {args.world_videos}")
    if not 0 < args.seconds <= 600:
        raise ConfigError(f"--seconds must be in (0, 600], got {args.seconds}")
    from .harness import make_jobs, parse_system, run_world_eval

    systems = [parse_system(s, args.world_model) for s in args.systems]
    labels = [s.label for s in systems]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"system labels must differ, got {labels}; name them LABEL=MODEL:MEMORY")
    compare = None
    if args.compare is not None:
        compare = []
        for pair in args.compare:
            names = pair.split(",")
            if len(names) != 2 or any(n not in labels for n in names):
                raise ConfigError(f"--compare {pair!r}: write A,B with two of the system labels {labels}")
            compare.append((names[0], names[1]))
    jobs = make_jobs(args.world_videos, args.seconds, tuple(args.scenarios), args.seed)
    run_world_eval(systems, jobs, args.seconds, args.out_dir, args.probe, args.device, args.save_videos,
                   args.bootstrap, not args.no_progress, compare=compare,
                   teacher_sampling={"steps": args.teacher_steps, "guidance": args.teacher_guidance,
                                     "shift": args.teacher_shift, "start_sigma": args.teacher_start_sigma})
    with open(os.path.join(args.out_dir, "table.md")) as f:
        print(f.read())
    print(f"wrote {args.out_dir}/results.json, table.md, curves.png")
    return 0


def add_world_parser(sub) -> None:
    """`python -m videossm eval-world`: registered on the top-level subcommands."""
    p = sub.add_parser("eval-world", help="world metrics (adherence, switch, drift, revisits, dynamics, flicker) "
                                          "of generated videos, with a bootstrap table")
    add_world_args(p)
    p.set_defaults(func=run_from_args)


def add_probe_parser(stages) -> None:
    """`python -m videossm train probe`: registered on the `train` subcommand's stage parsers."""
    p = stages.add_parser("probe", help="the world-metric probe (object colour, shape, position) on renderer frames")
    p.add_argument("--out", default=PROBE_DIR, help="folder for probe.safetensors + probe.json (default: %(default)s)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64, help="frames per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae", default=None, metavar="VAE_DIR",
                   help="also train on clips reconstructed through this VAE (train vae's OUT/vae), whose soft "
                        "outlines a generator decoded through it draws; validated on held-out reconstructions")
    p.add_argument("--vae-share", type=float, default=None,
                   help="share of each batch's clips from the VAE pool (default 0.25 with --vae)")
    p.add_argument("--vae-clips", type=int, default=64, help="train-split clips reconstructed for that pool")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train_probe)


def _train_probe(args) -> int:
    from .probe import cmd_train_probe

    return cmd_train_probe(args)
