"""The study's Arena and Results tabs, built inside an existing `gr.Blocks` from a `videossm.study.Study`.

    with gr.Blocks() as demo:
        with gr.Tab("Arena"):
            build_arena_tab(study)
        with gr.Tab("Results"):
            build_results_tab(study)
    demo.launch(allowed_paths=[study.pool.clip_dir])   # or: build_demo(study).launch(...)

API endpoints (the UI uses the same ones):
    /arena_new   ()                -> (token, prompt markdown, video A, B, C, D, rank dropdowns..., message)
    /arena_vote  (token, ranking)  -> message markdown revealing the systems; ranking e.g. "B,A,C,D"
    /arena_stats ()                -> (Table-3 markdown, plot)

Anonymity: clips are served under their random pool names; the letter -> system mapping stays in the
server's database and is only sent back in /arena_vote's answer. Nothing in the page or in /arena_new's
answer names a system. Export and reset are CLI-only (`python -m videossm study export|reset`).
"""

from __future__ import annotations

import html
import logging

import gradio as gr

from ..study.config import LETTERS
from ..study.service import Study, VoteRejected
from ..study.stats import format_table, plot_stats

logger = logging.getLogger(__name__)

ORDINALS = ("Best", "2nd", "3rd", "4th")
CONCURRENCY_LIMIT = 8
RECEIPT_CHARS = 12  # the start of the vote id, shown to the voter

INSTRUCTIONS = """### Which video is best?
The videos below come from different systems, shown under random letters. Watch them all (they follow the same
prompt), then rank them from best to worst: how well they follow the prompt, how consistent they stay over time,
and how good they look. The systems are revealed after you vote.
If a video is obviously broken (frozen or garbled), rank it last."""


def client_ip(request: gr.Request | None, trust_forwarded_for: bool) -> str | None:
    if request is None:
        return None
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else None


def _session(request: gr.Request | None) -> str:
    session = getattr(request, "session_hash", None)
    if not session:
        raise gr.Error("no session: open the app in a browser, or use gradio_client")
    return session


def make_arena_fns(study: Study):
    """The functions behind /arena_new, /arena_vote and /arena_stats (plain functions, testable directly)."""
    trust = study.config.trust_forwarded_for

    def arena_new(request: gr.Request):
        try:
            c = study.new_comparison(_session(request), client_ip(request, trust))
        except VoteRejected as e:
            raise gr.Error(str(e)) from e
        videos = [gr.update(value=c.clip_paths[i], visible=True) if i < len(c.letters)
                  else gr.update(value=None, visible=False) for i in range(len(LETTERS))]
        ranks = [gr.update(choices=list(c.letters), value=None, visible=i < len(c.letters))
                 for i in range(len(LETTERS))]
        prompt = f"**Prompt:** {html.escape(c.prompt)}"
        message = (f"Watch all {len(c.letters)} videos (at least {c.min_watch_s:g} s), then rank them and press "
                   "**Submit ranking**.")
        return [c.token, prompt, *videos, *ranks, message]

    def arena_vote(token: str, ranking: str, request: gr.Request) -> str:
        try:
            result = study.vote(token, ranking, _session(request), client_ip(request, trust))
        except VoteRejected as e:
            raise gr.Error(str(e)) from e
        lines = [f"**Thank you, your vote is stored** (receipt `{result.vote_id[:RECEIPT_CHARS]}`). The videos were:",
                 ""]
        lines += [f"- **{letter}** ({ORDINALS[result.ranking.index(letter)].lower()}"
                  f"{'' if result.ranking.index(letter) else ' in your ranking'}): {html.escape(system)}"
                  for letter, system in result.reveal.items()]
        if result.attention:
            lines += ["", "(This was an attention check: one clip was broken on purpose.)"]
        lines += ["", "Press **New comparison** for another one."]
        return "\n".join(lines)

    def arena_stats():
        stats = study.stats()
        if not stats.votes_counted:
            return format_table(stats) + "\n\nNo votes yet.", None
        return format_table(stats), plot_stats(stats)

    return arena_new, arena_vote, arena_stats


def build_arena_tab(study: Study) -> dict:
    """The Arena: New comparison -> watch the lettered videos -> rank -> submit -> reveal. Returns its components."""
    arena_new, arena_vote, _ = make_arena_fns(study)
    gr.set_static_paths([study.pool.clip_dir])  # clips are served from the pool folder under their random names
    gr.Markdown(INSTRUCTIONS)
    new_button = gr.Button("New comparison", variant="secondary")
    prompt = gr.Markdown()
    token = gr.Textbox(visible=False, label="comparison token")
    with gr.Row(equal_height=True):
        videos = [gr.Video(label=f"Video {letter}", autoplay=True, loop=True, interactive=False, visible=False,
                           buttons=[]) for letter in LETTERS]
    with gr.Row():
        ranks = [gr.Dropdown(choices=[], label=f"{ORDINALS[i]}", visible=False, interactive=True)
                 for i in range(len(LETTERS))]
    ranking = gr.Textbox(visible=False, label="ranking")
    vote_button = gr.Button("Submit ranking", variant="primary")
    message = gr.Markdown("Press **New comparison** to start.")

    new_button.click(arena_new, None, [token, prompt, *videos, *ranks, message], api_name="arena_new",
                     concurrency_id="arena", concurrency_limit=CONCURRENCY_LIMIT)

    def join_ranking(*letters):
        return ",".join(letter for letter in letters if letter)

    vote_button.click(join_ranking, ranks, ranking, api_name=False, queue=False).then(
        arena_vote, [token, ranking], message, api_name="arena_vote", concurrency_id="arena",
        concurrency_limit=CONCURRENCY_LIMIT)
    return {"new": new_button, "vote": vote_button, "token": token, "videos": videos, "ranks": ranks,
            "ranking": ranking, "message": message, "prompt": prompt}


def build_results_tab(study: Study) -> dict:
    """The Results: a Table-3-style table and a plot, computed on demand (never part of the page itself)."""
    _, _, arena_stats = make_arena_fns(study)
    gr.Markdown("### Results so far\nRank shares, mean rank with its bootstrap 95% confidence interval, and "
                "Bradley-Terry strengths from the pairwise outcomes the rankings imply.")
    refresh = gr.Button("Refresh results")
    table = gr.Markdown()
    plot = gr.Plot(label="Rank shares and mean rank")
    refresh.click(arena_stats, None, [table, plot], api_name="arena_stats", concurrency_limit=2)
    return {"refresh": refresh, "table": table, "plot": plot}


def build_demo(study: Study, title: str = "VideoSSM arena") -> gr.Blocks:
    """A standalone app with just the two study tabs (the main app mounts the same tabs)."""
    with gr.Blocks(title=title) as demo:
        with gr.Tab("Arena"):
            build_arena_tab(study)
        with gr.Tab("Results"):
            build_results_tab(study)
    demo.queue(max_size=256)
    return demo
