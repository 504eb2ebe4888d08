"""VideoSSM app: `python app.py` (or `bash scripts/app.sh`, which sets everything up first).

Options fall back to the environment, then to defaults:
  --model   VIDEOSSM_MODEL    preset names or checkpoint folders, comma-separated; the first is the default
                              (default: the shipped assets/videossm-hybrid, with the shipped sink and window
                              baselines beside it for the memory radio; the UNTRAINED "tiny" when none is shipped)
  --device  VIDEOSSM_DEVICE   auto (every GPU, one worker each; else CPU), cpu, cuda:1, or a comma list
  --host    VIDEOSSM_HOST or GRADIO_SERVER_NAME  interface to listen on (default 127.0.0.1; a Space sets
                              GRADIO_SERVER_NAME=0.0.0.0; use 0.0.0.0 in a container)
  --port    VIDEOSSM_PORT or GRADIO_SERVER_PORT (default 7860)
  --max-seconds VIDEOSSM_MAX_SECONDS  cap on one generation's length (default 60)

On a ZeroGPU Space (`spaces` installed and SPACES_ZERO_GPU set) the generating function runs under
`@spaces.GPU` in ZeroGPU's worker process and timeline edits reach it through a per-stream file
(videossm/ui/zerogpu.py); nothing to configure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from videossm.ui.config import DEFAULT_MODELS, AppConfig


def _env_port() -> int:
    value = os.environ.get("VIDEOSSM_PORT") or os.environ.get("GRADIO_SERVER_PORT") or "7860"
    try:
        return int(value)
    except ValueError:
        sys.exit(f"error: VIDEOSSM_PORT/GRADIO_SERVER_PORT must be an integer port, got {value!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="VideoSSM streaming text-to-video app (Gradio).")
    parser.add_argument("--model", default=os.environ.get("VIDEOSSM_MODEL", ",".join(DEFAULT_MODELS)),
                        help=f"model preset(s) or checkpoint folder(s), comma-separated; the first is the default "
                             f"(env VIDEOSSM_MODEL; default: {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--device", default=os.environ.get("VIDEOSSM_DEVICE", "auto"),
                        help="auto (one worker per GPU, else CPU), cpu, cuda:0,cuda:1, ... (env VIDEOSSM_DEVICE)")
    parser.add_argument("--host", default=os.environ.get("VIDEOSSM_HOST")
                        or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                        help="interface to listen on (env VIDEOSSM_HOST or GRADIO_SERVER_NAME, which a Space sets to "
                             "0.0.0.0; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=_env_port(),
                        help="port (env VIDEOSSM_PORT or GRADIO_SERVER_PORT; default 7860)")
    parser.add_argument("--max-seconds", type=float, default=float(os.environ.get("VIDEOSSM_MAX_SECONDS",
                                                                                   AppConfig.max_seconds)),
                        help=f"longest video one request may ask for (env VIDEOSSM_MAX_SECONDS; "
                             f"default {AppConfig.max_seconds:g})")
    parser.add_argument("--study", default=os.environ.get("VIDEOSSM_STUDY", "study"),
                        help="user-study folder (env VIDEOSSM_STUDY; default: study). When it holds a study "
                             "(python -m videossm study build-pool), the Arena and Results tabs are shown")
    return parser.parse_args(argv)


def study_tabs(study_root: str, pool) -> list:
    """The Arena and Results tabs when `study_root` holds a study, else none (with a log line saying why)."""
    from videossm.study.config import CONFIG_FILE

    if not os.path.exists(os.path.join(study_root, CONFIG_FILE)):
        logging.getLogger("videossm.app").info(
            "no user study in %r: the Arena tab is off (python -m videossm study build-pool --root %s ...)",
            study_root, study_root)
        return []
    from videossm.study import Study
    from videossm.ui.arena import build_arena_tab, build_results_tab

    # Pool top-up generates new clips with the models this process already serves.
    study = Study.open(study_root, pipelines=dict(pool.workers[0].pipelines))
    return [("Arena", lambda _pool: build_arena_tab(study)), ("Results", lambda _pool: build_results_tab(study))]


def app_config(args: argparse.Namespace, zerogpu: bool = False) -> AppConfig:
    """The app's limits from the options. On ZeroGPU: generation under @spaces.GPU, edits through the file
    channel, no warm-up (CUDA exists only inside the GPU function there)."""
    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip())  # noqa: E731
    return AppConfig(models=split(args.model), devices=split(args.device), max_seconds=args.max_seconds,
                     default_seconds=min(AppConfig.default_seconds, args.max_seconds), zerogpu=zerogpu,
                     edit_channel="file" if zerogpu else "memory", warmup=not zerogpu).validate()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from videossm.ui.zerogpu import zerogpu_enabled

    zerogpu = zerogpu_enabled()  # imports `spaces` first when on ZeroGPU (before anything touches CUDA)

    from videossm.config import ConfigError
    from videossm.ui import WorkerPool, build_app

    try:
        pool = WorkerPool(app_config(args, zerogpu))  # every model loads once per device and warms up, before serving
    except ConfigError as e:
        sys.exit(f"error: {e}")
    for worker in pool.workers:
        for pipe in worker.pipelines.values():
            print(pipe.describe(), flush=True)
    build_app(pool, extra_tabs=study_tabs(args.study, pool)).launch(server_name=args.host, server_port=args.port,
                                                                    show_error=True)


if __name__ == "__main__":
    main()
