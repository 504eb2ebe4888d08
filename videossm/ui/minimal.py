"""Minimal Gradio app: one prompt in, a streaming video out (one H.264 .ts segment per generated block).

    demo = build_demo(VideoSSMPipeline.from_pretrained("tiny"))
    demo.launch()

The pipeline is built once by the caller and shared by every request. API: the `/generate` endpoint takes
(prompt, seconds, memory, seed) and returns (streamed video, mp4 file, status markdown).
"""

from __future__ import annotations

import html
import logging
import math
import os
import shutil
import tempfile
from typing import Any, Iterator

import gradio as gr

from ..config import MEMORY_MODES, ConfigError
from ..models.text_encoder import PromptError
from ..timeline import TimelineError
from ..video.mp4 import Mp4Writer
from ..video.segments import write_ts_segment

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "a red circle moving right on a gray background"
SECONDS_RANGE = (1, 20)
DEFAULT_SECONDS = 4
MAX_SEED = 2**63 - 1
QUEUE_MAX_SIZE = 16
CONCURRENCY_LIMIT = 2
USER_ERRORS = (ConfigError, PromptError, TimelineError)


def _check_inputs(seconds: Any, memory: Any, seed: Any) -> tuple[float, str, int]:
    lo, hi = SECONDS_RANGE
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        raise gr.Error(f"seconds must be a number in [{lo}, {hi}], got {seconds!r}")
    if not lo <= seconds <= hi:
        raise gr.Error(f"seconds must be in [{lo}, {hi}], got {seconds:g}")
    if memory not in MEMORY_MODES:
        raise gr.Error(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or seed != seed or seed != int(seed):
        raise gr.Error(f"seed must be a whole number in [0, {MAX_SEED}], got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise gr.Error(f"seed must be in [0, {MAX_SEED}], got {int(seed)}")
    return float(seconds), memory, int(seed)


def _status(pipe, handle, prompt: str, done: bool = False, blocks: int = 0) -> str:
    stats = handle.stats
    frames = stats["frames"]
    video_s = frames / handle.fps
    gen_fps = stats["fps"]
    speed = gen_fps / handle.fps if handle.fps else 0.0
    state = "**Done.**" if done else f"Generating block {blocks}/{handle.num_blocks}…"
    lines = [
        f"{state} {video_s:.2f} s of {handle.seconds:g} s generated ({frames} frames at {handle.fps} fps)",
        f"- generation speed: {gen_fps:.1f} frames/s ({speed:.2f}x real time)"
        + (f", first frame after {stats['first_frame_s']:.2f} s" if stats.get("first_frame_s") is not None else ""),
        f"- active prompt: {html.escape(prompt)}",
        f"- memory: {handle.generator.stream_config.memory}, seed: {handle.seed}",
    ]
    if not pipe.trained:
        lines.append("- model is UNTRAINED: this video is noise from random weights")
    return "\n".join(lines)


def make_generate(pipe):
    """The generator behind the Generate button: yields (segment .ts path, mp4 path, status markdown)."""

    def generate(prompt: str, seconds: float, memory: str, seed: float) -> Iterator[tuple]:
        seconds, memory, seed = _check_inputs(seconds, memory, seed)
        try:
            handle = pipe.stream(prompt, seconds=seconds, seed=seed, memory=memory)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from e
        except TypeError as e:  # e.g. prompt is not a string
            raise gr.Error(f"bad input: {e}") from e
        run_dir = tempfile.mkdtemp(prefix="videossm-")  # random name: nothing about the request leaks into URLs
        writer = Mp4Writer(os.path.join(run_dir, "videossm.mp4"), fps=handle.fps)
        sent: list[str] = []
        try:
            active, first = prompt, True
            for chunk in handle:
                # Everything yielded before has been sent (Gradio resumes the generator only after that).
                for path in sent:
                    os.remove(path)
                sent.clear()
                active = chunk.prompt
                if chunk.frames is None or not len(chunk.frames):
                    continue
                writer.write(chunk.frames)
                seg = write_ts_segment(os.path.join(run_dir, f"segment-{chunk.block_index:05d}.ts"), chunk.frames,
                                       handle.fps)
                sent.append(seg)
                # The first segment also clears the previous run's mp4.
                yield seg, (None if first else gr.skip()), _status(pipe, handle, active, blocks=chunk.block_index + 1)
                first = False
            writer.close()
            yield gr.skip(), writer.path, _status(pipe, handle, active, done=True)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from e
        finally:
            handle.cancel()
            writer.abort()  # no-op after a clean close
            shutil.rmtree(run_dir, ignore_errors=True)

    return generate


def build_demo(pipe) -> gr.Blocks:
    """The Blocks app for an already loaded pipeline (queue configured; call `.launch()` on it)."""
    generate = make_generate(pipe)
    with gr.Blocks(title="VideoSSM") as demo:
        gr.Markdown("# VideoSSM: streaming text-to-video with hybrid state-space memory")
        gr.Markdown(f"**Model:** {html.escape(pipe.describe())}", elem_id="model-description")
        if not pipe.trained:
            gr.Markdown(
                "⚠️ **This model is UNTRAINED (freshly initialised random weights). "
                "The video it streams is noise, not a picture of your prompt.** "
                "It demonstrates the streaming machinery only.",
                elem_id="untrained-warning",
            )
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, lines=2, max_lines=6)
                seconds = gr.Slider(*SECONDS_RANGE, value=DEFAULT_SECONDS, step=1, label="Seconds of video")
                memory = gr.Radio(list(MEMORY_MODES), value=pipe.stream_config.memory, label="Memory mode")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                button = gr.Button("Generate", variant="primary")
            with gr.Column(scale=2):
                video = gr.Video(label="Video (streams while it is generated)", streaming=True, autoplay=True)
                mp4 = gr.File(label="Download mp4 (when finished)")
                status = gr.Markdown("Press Generate to start.")
        button.click(generate, [prompt, seconds, memory, seed], [video, mp4, status], api_name="generate",
                     concurrency_id="generate")
        prompt.submit(generate, [prompt, seconds, memory, seed], [video, mp4, status], api_name=False,
                      concurrency_id="generate")
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)
    return demo
