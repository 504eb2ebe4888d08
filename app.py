"""VideoSSM app: `python app.py` (or `bash scripts/app.sh`, which sets everything up first).

Options fall back to the environment, then to defaults:
  --model   VIDEOSSM_MODEL    a preset name or a checkpoint folder      (default: tiny, embedded, untrained)
  --device  VIDEOSSM_DEVICE   auto, cpu, cuda, cuda:1, ...              (default: auto)
  --host    VIDEOSSM_HOST     interface to listen on                    (default: 127.0.0.1;
                                                                          use 0.0.0.0 on a Space or in a container)
  --port    VIDEOSSM_PORT or GRADIO_SERVER_PORT                         (default: 7860)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _env_port() -> int:
    value = os.environ.get("VIDEOSSM_PORT") or os.environ.get("GRADIO_SERVER_PORT") or "7860"
    try:
        return int(value)
    except ValueError:
        sys.exit(f"error: VIDEOSSM_PORT/GRADIO_SERVER_PORT must be an integer port, got {value!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="VideoSSM streaming text-to-video app (Gradio).")
    parser.add_argument("--model", default=os.environ.get("VIDEOSSM_MODEL", "tiny"),
                        help="model preset name or checkpoint folder (env VIDEOSSM_MODEL; default: tiny)")
    parser.add_argument("--device", default=os.environ.get("VIDEOSSM_DEVICE", "auto"),
                        help="auto, cpu, cuda, ... (env VIDEOSSM_DEVICE; default: auto)")
    parser.add_argument("--host", default=os.environ.get("VIDEOSSM_HOST", "127.0.0.1"),
                        help="interface to listen on (env VIDEOSSM_HOST; default 127.0.0.1; a Space needs 0.0.0.0)")
    parser.add_argument("--port", type=int, default=_env_port(),
                        help="port (env VIDEOSSM_PORT or GRADIO_SERVER_PORT; default 7860)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from videossm.config import ConfigError
    from videossm.pipeline import VideoSSMPipeline
    from videossm.ui.minimal import build_demo

    try:
        pipe = VideoSSMPipeline.from_pretrained(args.model, device=args.device)  # once, shared by all requests
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(pipe.describe(), flush=True)
    demo = build_demo(pipe)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
