"""Gradio UI: the streaming app (player, live timeline widget, controls) and its worker pool."""

from .app import App, build_app
from .config import DEFAULT_MODEL, AppConfig
from .serving import Sessions, WorkerPool

__all__ = ["App", "AppConfig", "DEFAULT_MODEL", "Sessions", "WorkerPool", "build_app"]
