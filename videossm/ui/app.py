"""The VideoSSM Gradio app: streaming player, live prompt timeline, controls, and a worker pool.

    pool = WorkerPool(AppConfig())                 # loads and warms up every model once per device
    demo = build_app(pool, extra_tabs=[...])       # each extra tab: callable(pool) building inside a gr.Tab
    demo.launch()

API endpoints (gradio_client): `/generate` (timeline JSON, seconds, memory, seed, model) streams .ts
segments and ends with the mp4; `/update_timeline` (timeline JSON, seconds) edits the session's running
stream in place (effective at its next block); `/stop` cancels the session's streams.
"""

from __future__ import annotations

import contextlib
import glob
import html
import json
import logging
import math
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator, Sequence

import gradio as gr

from ..config import MEMORY_MODES, ConfigError
from ..models.text_encoder import PromptError
from ..timeline import Timeline, TimelineError
from .config import AppConfig
from .player import StreamEvent, StreamRun
from .serving import Sessions, WorkerPool
from .timeline_widget import from_rows, timeline_table, timeline_widget, to_json, to_rows
from .zerogpu import RemoteStream, gpu_stream, on_gpu, register_pool

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES_DIR = os.path.join(ROOT, "examples")
UI_MEMORY_MODES = tuple(m for m in MEMORY_MODES if m != "full")  # full attention grows without bound
MAX_SEED = 2**63 - 1
USER_ERRORS = (ConfigError, PromptError, TimelineError)
ExtraTab = tuple[str, Callable[[WorkerPool], Any]]  # (tab label, builder called inside `with gr.Tab(label)`)


def load_examples(pool: WorkerPool) -> dict[str, str]:
    """{label: Timeline JSON} for examples/*.json and examples/*/*.json that the default model can read."""
    pipe = pool.pipeline()
    out: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(EXAMPLES_DIR, "*.json")) + glob.glob(os.path.join(EXAMPLES_DIR, "*", "*.json"))):
        try:
            timeline = Timeline.load(path)
            for prompt in timeline.prompts():
                pipe.text_encoder.check(prompt)
        except (TimelineError, PromptError) as e:
            logger.info("example %s skipped for model %s: %s", path, pool.default_model, e)
            continue
        out[os.path.relpath(path, EXAMPLES_DIR)[:-5]] = to_json(timeline)
    return out


class App:
    """The event handlers, bound to one worker pool and one session registry."""

    def __init__(self, pool: WorkerPool, config: AppConfig | None = None):
        self.pool = pool
        self.config = (config or pool.config).validate()
        self.sessions = Sessions(self.config.max_streams_per_session)
        # edit_channel="file": generation goes through `gpu_stream` (on ZeroGPU, in its GPU worker).
        self.pool_key = register_pool(pool) if self.config.edit_channel == "file" else None
        self.gpu_stream = gpu_stream
        if self.config.zerogpu:
            self.gpu_stream = on_gpu(gpu_stream, self.config.gpu_duration_s)

    def open_stream(self, model: str, timeline: Timeline, seconds: float, seed: int, memory: str):
        """(context, handle): a StreamHandle on the least busy worker, or with edit_channel="file" a
        RemoteStream whose generating function acquires the worker itself."""
        model = self.pool.model_for(model, memory)
        if self.pool_key is not None:
            pipe = self.pool.pipeline(model)
            stream = RemoteStream(pipe, self.gpu_stream, self.pool_key, model, timeline, seconds, seed, memory,
                                  self.config.edit_dir)
            return contextlib.nullcontext(pipe), stream
        return self.pool.acquire(model), None

    # ---- the Memory radio and the Model dropdown follow each other for the shipped checkpoints
    def follow_memory(self, memory: str, model: str):
        """Memory radio changed: show the checkpoint that will serve it (WorkerPool.model_for)."""
        return self.pool.model_for(model, memory) if memory in UI_MEMORY_MODES else gr.skip()

    def follow_model(self, model: str, memory: str):
        """Model dropdown changed to a shipped checkpoint: select the memory mode it was trained for."""
        trained_for = self.pool.memory_of(model)
        return trained_for if trained_for in UI_MEMORY_MODES and trained_for != memory else gr.skip()

    # ---- checks (each refusal names the limit)
    def check_seconds(self, seconds: Any) -> float:
        hi = self.config.max_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
            raise gr.Error(f"seconds must be a number in (0, {hi:g}], got {seconds!r}")
        if not 0 < seconds <= hi:
            raise gr.Error(f"seconds must be in (0, {hi:g}] on this server, got {seconds:g}")
        return float(seconds)

    def parse_timeline(self, value: Any, seconds: float, model: str | None = None) -> Timeline:
        """Timeline JSON (a string, a dict, or a bare prompt) checked against the app limits and the model."""
        limits = {"max_seconds": seconds, "max_prompt_chars": self.config.max_prompt_chars,
                  "max_segments": self.config.max_segments}
        try:
            if isinstance(value, dict):
                timeline = Timeline.from_dict(value, **limits)
            elif isinstance(value, str) and value.lstrip().startswith("{"):
                timeline = Timeline.from_json(value, **limits)
            elif isinstance(value, str):
                timeline = Timeline([(0.0, value)], **limits)
            else:
                raise TimelineError(f"timeline must be Timeline JSON or a prompt string, got {type(value).__name__}")
            for prompt in timeline.prompts():
                self.pool.pipeline(model).text_encoder.check(prompt)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from e
        return timeline

    # ---- /generate
    def status(self, pipe, handle, event: StreamEvent | None, run: StreamRun | None, note: str = "") -> str:
        stats = handle._stats
        compute_s = sum(b["seconds"] for b in stats.per_block)
        video_s = stats.frames / handle.fps
        if event is None:
            state, note = note or "Starting…", ""
        elif event.done:
            state = "**Done.**"
        elif not event.released:
            what = "Re-buffering" if run is not None and run.clock.started else "Pre-roll"
            state = (f"{what}: holding {video_s:.2f} s, {event.preroll_s:.2f} s needed ahead of the viewer "
                     f"(generation is {event.speed:.2f}x real time)")
        else:
            state = f"Streaming block {event.block_index + 1}/{handle.num_blocks}"
        speed = video_s / compute_s if compute_s else 0.0
        lines = [f"{state} {note}".strip(),
                 f"- generated: **{video_s:.2f} s** of {handle.seconds:g} s ({stats.frames} frames at {handle.fps} fps)",
                 f"- speed: {stats.frames / compute_s if compute_s else 0:.1f} frames/s ({speed:.2f}x real time)"
                 + (f", first frame after {stats.first_frame_s:.2f} s" if stats.first_frame_s is not None else "")]
        if event is not None:
            lines.append(f"- active prompt: {html.escape(event.prompt)}")
        if run is not None and run.stats.encode_seconds:
            r = run.stats.as_dict()
            lines.append(f"- encoding (off the generation thread): {r['encode_ms_mean']:.0f} ms per segment"
                         + (f"; pre-roll {r['preroll_s']:.2f} s" if r["preroll_s"] else ""))
        lines.append(f"- model: {pipe.name}, device: {pipe.device}, memory: {handle.memory}, "
                     f"seed: {handle.seed}")
        if not pipe.trained:
            lines.append("- model is UNTRAINED: this video is noise from random weights")
        return "\n".join(lines)

    def generate(self, timeline_value: str, seconds: float, memory: str, seed: float, model: str | None,
                 request: gr.Request) -> Iterator[tuple]:
        seconds = self.check_seconds(seconds)
        if memory not in UI_MEMORY_MODES:
            raise gr.Error(f"memory must be one of {', '.join(UI_MEMORY_MODES)}, got {memory!r}")
        if seed is None:
            seed = 0
        if isinstance(seed, bool) or not isinstance(seed, (int, float)) or seed != seed or seed != int(seed) \
                or not 0 <= int(seed) <= MAX_SEED:
            raise gr.Error(f"seed must be a whole number in [0, {MAX_SEED}], got {seed!r}")
        try:
            model = self.pool.check_model(model)
        except ConfigError as e:
            raise gr.Error(str(e)) from e
        timeline = self.parse_timeline(timeline_value, seconds, model)
        session_id = request.session_hash or "anonymous"
        if len(self.sessions.running(session_id)) >= self.config.max_streams_per_session:
            raise gr.Error(f"this session already runs {self.config.max_streams_per_session} stream(s) (the limit); "
                           "press Stop or wait for it to finish")
        run_dir = tempfile.mkdtemp(prefix="videossm-")  # random name: nothing about the request leaks into URLs
        try:
            context, remote = self.open_stream(model, timeline, seconds, int(seed), memory)
        except USER_ERRORS as e:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise gr.Error(str(e)) from e
        with context as pipe:
            try:
                handle = remote or pipe.stream(timeline, seconds=seconds, seed=int(seed), memory=memory)
                self.sessions.add(session_id, handle)
            except USER_ERRORS as e:
                if remote is not None:
                    remote.channel.close()
                shutil.rmtree(run_dir, ignore_errors=True)
                raise gr.Error(str(e)) from e
            run = StreamRun(handle, run_dir, self.config)
            sent: list[str] = []
            first = True
            try:
                yield (gr.skip(), None, self.status(pipe, handle, None, run),
                       gr.update(generated=0.0, locked=0.0, duration=seconds))
                for event in run:
                    for path in sent:  # Gradio resumes the generator only after the previous yield was sent
                        os.remove(path)
                    sent.clear()
                    status = self.status(pipe, handle, event, run)
                    widget = gr.update(generated=event.generated_s, locked=event.locked_s)
                    if event.done:
                        for path in event.segments[:-1]:
                            yield path, gr.skip(), status, widget
                        yield (event.segments[-1] if event.segments else gr.skip()), event.mp4, status, widget
                        continue
                    if not event.segments:
                        yield gr.skip(), gr.skip(), status, widget
                    for path in event.segments:
                        sent.append(path)
                        yield path, (None if first else gr.skip()), status, widget
                        first = False
                if handle._stats.frames < handle.total_frames:  # stopped (Stop, or the session went away)
                    yield gr.skip(), None, self.status(pipe, handle, None, run, "**Stopped.**"), gr.skip()
            except USER_ERRORS as e:
                raise gr.Error(str(e)) from e
            except gr.Error:
                raise
            except Exception as e:  # one failed stream must not take the app down: report it, keep serving
                logger.exception("generation failed")
                raise gr.Error(f"generation failed: {type(e).__name__}: {e}") from e
            finally:
                handle.cancel()
                self.sessions.finish(session_id, handle, run.stats.as_dict())
                shutil.rmtree(run_dir, ignore_errors=True)

    # ---- /update_timeline
    def update_timeline(self, timeline_value: str, seconds: float, request: gr.Request) -> tuple:
        """Apply an edit to the session's running stream (next block). Returns (widget, table, message)."""
        session_id = request.session_hash or "anonymous"
        running = self.sessions.running(session_id)
        try:
            seconds = self.check_seconds(running[0].seconds if running else seconds)
            timeline = self.parse_timeline(timeline_value, seconds)
        except gr.Error as e:
            live = running[0].timeline.snapshot() if running else None
            widget = to_json(live) if live is not None and to_json(live) != timeline_value else gr.skip()
            return widget, gr.skip(), f"⚠️ Timeline not applied: {e.message}"
        if not running:
            return gr.skip(), to_rows(to_json(timeline)), "Timeline ready; it is used when you press Generate."
        handle = running[0]
        try:
            handle.update_timeline(timeline)
        except TimelineError as e:
            live = to_json(handle.timeline.snapshot())
            return live, to_rows(live), f"⚠️ Edit refused: {e}"
        return gr.skip(), to_rows(to_json(timeline)), (
            f"Edit applied to the running stream (version {handle.timeline.version}); it takes effect at the next "
            f"block after {handle.timeline.locked_seconds:.2f} s.")

    def table_edit(self, rows, timeline_value: str) -> tuple:
        """The table changed: turn it into the widget's value (whose .change applies it)."""
        try:
            d = from_rows(rows)
            d["fps"] = json.loads(timeline_value).get("fps", 16) if timeline_value else 16
            return json.dumps(d, ensure_ascii=False), ""
        except (TimelineError, ValueError) as e:
            return gr.skip(), f"⚠️ Table not applied: {e}"

    # ---- /stop
    def stop(self, request: gr.Request) -> str:
        n = self.sessions.stop(request.session_hash or "anonymous")
        return "Stopping…" if n else "Nothing is running."

    def unload(self, request: gr.Request) -> None:
        self.sessions.forget(request.session_hash or "anonymous")


def build_app(pool: WorkerPool, config: AppConfig | None = None, extra_tabs: Sequence[ExtraTab] = ()) -> gr.Blocks:
    """The Blocks app (queue configured; call `.launch()`). `extra_tabs`: [(label, builder(pool))], e.g. the
    arena: `build_app(pool, extra_tabs=[("Arena", videossm.ui.arena.build_tab)])`."""
    app = App(pool, config)
    cfg = app.config
    pipe = pool.pipeline()
    examples = load_examples(pool)
    first_example = next(iter(examples.values()), None)
    initial = first_example or to_json(Timeline.single("a red circle moving right on a gray background"))
    initial_seconds = min(cfg.max_seconds, max(cfg.default_seconds, math.ceil(Timeline.from_json(initial)[-1].start) + 4))
    with gr.Blocks(title="VideoSSM") as demo:
        demo.videossm_app = app  # for tests and embedding: the handlers and the session registry
        gr.Markdown("# VideoSSM: streaming text-to-video with hybrid state-space memory")
        gr.Markdown(f"**Model:** {html.escape(pipe.describe())}; workers: "
                    f"{', '.join(w.device for w in pool.workers)}", elem_id="model-description")
        if not pipe.trained:
            gr.Markdown("⚠️ **This model is UNTRAINED (freshly initialised random weights). The video it streams is "
                        "noise, not a picture of your prompt.** It demonstrates the streaming machinery only.",
                        elem_id="untrained-warning")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=3):
                    video = gr.Video(label="Video (streams while it is generated)", streaming=True, autoplay=True,
                                     elem_id="player")
                    status = gr.Markdown("Pick an example or edit the timeline, then press Generate.",
                                         elem_id="status")
                    mp4 = gr.File(label="Download mp4 (when finished)", elem_id="mp4")
                with gr.Column(scale=2):
                    with gr.Row():
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                    example = gr.Dropdown(list(examples), value=next(iter(examples), None), label="Example script",
                                          elem_id="example")
                    seconds = gr.Slider(1, cfg.max_seconds, value=initial_seconds, step=1,
                                        label=f"Seconds of video (at most {cfg.max_seconds:g})", elem_id="seconds")
                    with gr.Row():
                        memory = gr.Radio(list(UI_MEMORY_MODES), value="hybrid", label="Memory mode", elem_id="memory")
                        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    model = gr.Dropdown(pool.models, value=pool.default_model, label="Model",
                                        interactive=len(pool.models) > 1, elem_id="model")
            gr.Markdown("### Prompt timeline: click a segment to edit it, drag its left edge to move it; "
                        "the hatched part is already generated and locked. Edits apply at the next block.")
            widget = timeline_widget(initial, initial_seconds)
            timeline_msg = gr.Markdown("", elem_id="timeline-message")
            with gr.Accordion("Timeline table (keyboard-accessible)", open=False):
                table = timeline_table(initial)
        for label, build in extra_tabs:
            with gr.Tab(label):
                build(pool)

        gen = dict(concurrency_id="generate", concurrency_limit=pool.concurrency_limit, show_progress="hidden")
        generate_btn.click(app.generate, [widget, seconds, memory, seed, model], [video, mp4, status, widget],
                           api_name="generate", **gen)
        widget.change(app.update_timeline, [widget, seconds], [widget, table, timeline_msg], api_name="update_timeline",
                      concurrency_limit=None, show_progress="hidden")
        table.input(app.table_edit, [table, widget], [widget, timeline_msg], api_name=False, concurrency_limit=None,
                    show_progress="hidden")
        stop_btn.click(app.stop, None, [timeline_msg], api_name="stop", concurrency_limit=None, show_progress="hidden")
        memory.input(app.follow_memory, [memory, model], [model], api_name=False, show_progress="hidden", queue=False)
        model.input(app.follow_model, [model, memory], [memory], api_name=False, show_progress="hidden", queue=False)
        seconds.change(lambda s: gr.update(duration=s), [seconds], [widget], api_name=False, show_progress="hidden",
                       queue=False)

        def pick_example(name: str, current_seconds: float):
            if name not in examples:
                return gr.skip(), gr.skip()
            last_start = Timeline.from_json(examples[name]).segments[-1].start
            return examples[name], min(cfg.max_seconds, max(current_seconds, math.ceil(last_start) + 4))

        example.input(pick_example, [example, seconds], [widget, seconds], api_name=False, show_progress="hidden")

        parsed_examples = {name: Timeline.from_json(text) for name, text in examples.items()}

        def follow_timeline(value: str):
            """The Example menu names the example the timeline still equals, and goes blank once it is edited."""
            try:
                current = Timeline.from_json(value)
            except TimelineError:
                return gr.skip()
            return gr.update(value=next((n for n, t in parsed_examples.items() if t == current), None))

        widget.change(follow_timeline, [widget], [example], api_name=False, show_progress="hidden", queue=False)
        demo.unload(app.unload)
    demo.queue(max_size=cfg.queue_max_size, default_concurrency_limit=cfg.concurrency_per_worker)
    return demo
