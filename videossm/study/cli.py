"""`python -m videossm study build-pool|serve|stats|verify|export|reset`: run a user study from the shell.

Export and reset need the study's admin token (`--admin-token` or VIDEOSSM_STUDY_ADMIN_TOKEN); `build-pool`
sets it the first time (printing a random one unless given). Neither is reachable from the web UI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..config import default_model

ROOT_ENV = "VIDEOSSM_STUDY_DIR"
# The shipped checkpoint of each mode (the untrained "tiny" preset where none is shipped).
DEFAULT_SYSTEMS = tuple(f"{m}={default_model(m)}:{m}" for m in ("hybrid", "sink", "window"))
DEFAULT_PROMPT = "a red circle moving right on a gray background"


def _scripts(args) -> list:
    scripts: list = list(args.prompt or [])
    for path in args.prompts_file or []:
        if path.endswith(".json"):  # one Timeline JSON script
            with open(path) as f:
                scripts.append(json.load(f))
        else:  # one prompt per line
            with open(path) as f:
                scripts += [line.strip() for line in f if line.strip()]
    return scripts


def cmd_build_pool(args) -> int:
    from .config import StudyConfig, SystemSpec
    from .service import ADMIN_ENV, Study

    root = args.root
    if os.path.exists(os.path.join(root, "study.json")):
        if args.systems or args.prompt or args.prompts_file or args.seconds:
            print("note: the study exists; --systems/--prompt/--prompts-file/--seconds are ignored "
                  f"(edit {os.path.join(root, 'study.json')} to change them)", file=sys.stderr)
        config = StudyConfig.load(root)
    else:
        systems = tuple(SystemSpec.parse(s) for s in (args.systems or DEFAULT_SYSTEMS))
        scripts = _scripts(args) or [DEFAULT_PROMPT]
        config = StudyConfig(root=root, systems=systems, scripts=tuple(scripts), seconds=args.seconds or 5.0,
                             videos_per_comparison=args.videos, attention_check_rate=args.attention_checks).validate()
        config.save()
    study = Study(config, hub=False)
    try:
        if not study.has_admin_token():
            given = args.admin_token or os.environ.get(ADMIN_ENV)
            token = study.set_admin_token(given)
            if not given:
                print(f"admin token (shown once; needed for `study export` and `study reset`; keep it secret, "
                      f"e.g. as the Space secret {ADMIN_ENV}):\n{token}", file=sys.stderr)
        study.pool.build(args.items, device=args.device, progress=not args.no_progress)
        print(f"{root}: {len(study.pool.items)} items x {len(config.systems)} systems "
              f"({', '.join(study.system_names)})", file=sys.stderr)
    finally:
        study.close()
    return 0


def cmd_stats(args) -> int:
    from .service import Study
    from .stats import format_table, plot_stats

    study = Study.open(args.root)
    try:
        stats = study.stats(seed=args.seed)
        print(format_table(stats))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(stats.as_dict(), f, indent=2)
        if args.plot:
            plot_stats(stats).savefig(args.plot, dpi=120)
    finally:
        study.close()
    return 0


def cmd_verify(args) -> int:
    from .service import Study

    study = Study.open(args.root)
    try:
        r = study.last_verify
        print(f"journal {r.journal_votes} votes, database {r.db_votes}; restored {len(r.restored)}, "
              f"database-only {len(r.db_only)}, conflicts {len(r.conflicts)}, torn bytes cut {r.torn_bytes}")
    finally:
        study.close()
    return 0 if r.consistent else 1


def cmd_export(args) -> int:
    from .service import Study

    study = Study.open(args.root)
    try:
        n = study.export_csv(args.csv, args.admin_token)
    finally:
        study.close()
    print(f"wrote {n} votes to {args.csv}", file=sys.stderr)
    return 0


def cmd_reset(args) -> int:
    from .service import Study

    study = Study.open(args.root)
    try:
        study.require_admin(args.admin_token)
        if not args.yes:
            print(f"this deletes all {study.store.count_votes()} votes in {args.root} (the journal is kept aside); "
                  "pass --yes to confirm", file=sys.stderr)
            return 1
        archived = study.reset(args.admin_token)
    finally:
        study.close()
    print(f"reset {args.root}; the old journal is {archived}", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ..ui.arena import build_demo
    from .service import Study

    overrides = {}
    if args.min_watch is not None:
        overrides["min_watch_s"] = args.min_watch
    # {}: the pool builder loads each system's model when a top-up first needs it
    study = Study.open(args.root, pipelines={} if args.top_up else None, **overrides)
    demo = build_demo(study)
    print(f"serving the study in {args.root} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        demo.launch(server_name=args.host, server_port=args.port, quiet=True)
    finally:
        study.close()
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    study = subparsers.add_parser("study", help="user-study arena: build the clip pool, serve, statistics, export")
    study.add_argument("--root", default=os.environ.get(ROOT_ENV, "study"),
                       help=f"study folder (env {ROOT_ENV}; default: %(default)s)")
    sub = study.add_subparsers(dest="study_command", required=True)

    build = sub.add_parser("build-pool", help="generate clips for every system (creates the study on first use)")
    build.add_argument("--systems", nargs="+", metavar="[NAME=]MODEL:MEMORY",
                       help=f"systems to compare (default: {' '.join(DEFAULT_SYSTEMS)})")
    build.add_argument("--prompt", action="append", help="a prompt script (repeatable)")
    build.add_argument("--prompts-file", action="append",
                       help="a text file with one prompt per line, or a Timeline JSON file (repeatable)")
    build.add_argument("--items", type=int, default=8, help="items (prompt script + seed) to add (default %(default)s)")
    build.add_argument("--seconds", type=float, default=None, help="clip length (default 5)")
    build.add_argument("--videos", type=int, default=4, choices=(2, 3, 4), help="videos per comparison")
    build.add_argument("--attention-checks", type=float, default=0.0,
                       help="share of comparisons with an obviously broken clip (default 0: off)")
    build.add_argument("--admin-token", default=None, help="admin token to set (default: a random one, printed)")
    build.add_argument("--device", default=os.environ.get("VIDEOSSM_DEVICE", "auto"))
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(func=cmd_build_pool)

    serve = sub.add_parser("serve", help="a standalone web app with the Arena and Results tabs")
    serve.add_argument("--host", default=os.environ.get("VIDEOSSM_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("VIDEOSSM_PORT", "7860")))
    serve.add_argument("--min-watch", type=float, default=None, help="override the minimum watch time (s)")
    serve.add_argument("--top-up", action="store_true",
                       help="generate new pool items in the background once every item has been shown often")
    serve.set_defaults(func=cmd_serve)

    stats = sub.add_parser("stats", help="print the Table-3-style results")
    stats.add_argument("--json", help="also write the statistics as JSON here")
    stats.add_argument("--plot", help="also save the plot here (png, pdf, svg)")
    stats.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: the study's)")
    stats.set_defaults(func=cmd_stats)

    verify = sub.add_parser("verify", help="check the database against the journal (repairs from the journal)")
    verify.set_defaults(func=cmd_verify)

    for name, func, text in (("export", cmd_export, "write every vote to a CSV file (admin)"),
                             ("reset", cmd_reset, "delete all votes; the journal is kept aside (admin)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--admin-token", default=None, help="or set VIDEOSSM_STUDY_ADMIN_TOKEN")
        p.set_defaults(func=func)
    sub.choices["export"].add_argument("--csv", required=True, help="output CSV file")
    sub.choices["reset"].add_argument("--yes", action="store_true", help="confirm")
    return study
