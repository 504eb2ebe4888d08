"""The model card of the shipped checkpoints, written from what the runs recorded, never typed by hand.

    python -m videossm train card --runs runs --eval runs/world_eval_60s --to assets/MODEL_CARD.md

For each memory mode it follows the recipe's chain of run folders (scripts/train_recipe.sh, `--chain`):
vae -> teacher -> causal (one init shared by the modes; `causal-MODE` where a mode has its own) ->
its two continuations that teach the motion words -> dmd3-MODE -> long3-MODE -> the encoder recovered for
the shipped decoder (vae-enc, vae-enc-anchor) -> the teacher recovered from the shipped hybrid
(teacher-from-hybrid) -> the return-teaching long stage long8-w24-obj20-MODE, and reads each stage's
`metrics.json`: the command that made it, steps, wall time and hardware. A stage whose run folder is gone
(`runs/` is not in git) keeps its row from the card being replaced, so cleaning up runs never erases how a
shipped checkpoint was made; a stage found in neither is listed as not run, so a partial card says plainly
how far training got. The checkpoints table gives the stream settings each checkpoint loads with (its
config's window and sink, which `train ship --window-frames --sink-frames` may set apart from training's).
The metrics table is the `table.md` of an `eval-world` run (copied with its `curves.png` beside the card);
the data section is generated from the world's grammar and split.
"""

from __future__ import annotations

import json
import os
import shutil

from ..config import ConfigError
from ..world.grammar import BACKGROUNDS, COLORS, MOTIONS, SHAPES
from ..world.splits import HELD_OUT_COMBOS, TRAIN_COMBOS

MODES = ("hybrid", "sink", "window")
# The run folders of scripts/train_recipe.sh, in order; {mode} is each memory mode. A folder without
# {mode} serves every mode unless a MODE-suffixed one exists (`causal-hybrid` beside `causal`).
RECIPE_CHAIN = ("vae,teacher,causal,causal-cgrad,causal-cgrad-long,dmd3-{mode},long3-{mode},"
                "vae-enc,vae-enc-anchor,teacher-from-hybrid,long8-w24-obj20-{mode}")


def read_metrics(run: str) -> dict | None:
    path = os.path.join(run, "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f} h"


def _hardware(hw: dict | None) -> str:
    if not hw:
        return "-"
    where = hw.get("gpu") or hw.get("cpu") or hw.get("machine", "?")
    return f"{where}, {hw.get('num_processes', 1)} process(es), {hw.get('torch_threads', '?')} thread(s)"


def parse_chain(chain: str) -> list[str]:
    entries = [e.strip() for e in chain.split(",") if e.strip()]
    if not entries:
        raise ConfigError(f"--chain must name run folders, comma-separated, got {chain!r}")
    return entries


def stage_rows(runs: str, mode: str, chain: str = RECIPE_CHAIN) -> list[tuple[str, str, dict | None]]:
    """(stage, run folder, its metrics or None) along the chain of run folders for one memory mode. The
    stage is the one the run recorded, else the folder's name without its mode."""
    rows = []
    for entry in parse_chain(chain):
        if "{mode}" in entry:
            folder = os.path.join(runs, entry.format(mode=mode))
        else:
            own = os.path.join(runs, f"{entry}-{mode}")
            folder = own if os.path.isdir(own) else os.path.join(runs, entry)
        metrics = read_metrics(folder)
        stage = (metrics or {}).get("stage") or entry.replace("-{mode}", "")
        rows.append((stage, folder, metrics))
    return rows


INIT_KINDS = {  # `train causal --source` -> how the card names the init
    "teacher": "causal ODE init (regression on the teacher's trajectories)",
    "world": "causal init by teacher forcing on the world's noised clips (`--source world`)",
}


def init_kind(runs: str) -> str:
    """The shared causal init as the run recorded it (older runs without `source` made ODE inits)."""
    metrics = read_metrics(os.path.join(runs, "causal")) or {}
    return INIT_KINDS[metrics.get("source", "teacher")]


def recorded_rows(text: str) -> dict:
    """What a card already says: {"rows": {(mode, run folder): row line}, "vae": the VAE line or None,
    "init": the causal init's INIT_KINDS key or None}; the rows of runs whose folders are gone come from it."""
    rows, mode = {}, None
    for line in text.splitlines():
        if line.startswith("### `"):
            mode = line[5:].split("`")[0]
        elif mode and line.startswith("| ") and "`" in line and "not run yet" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 6 and cells[1].startswith("`"):
                rows[(mode, cells[1].strip("`"))] = line
        elif line.startswith("## ") and mode:
            mode = None
    vae = next((line for line in text.splitlines() if line.startswith("VAE reconstruction")), None)
    init = next((k for k, v in INIT_KINDS.items() if v in text), None)
    return {"rows": rows, "vae": vae, "init": init}


def data_section() -> list[str]:
    held = ", ".join(f"{c} {s} on {b}" for c, s, b in HELD_OUT_COMBOS)
    return [
        "## Training data",
        "",
        "Clips of the procedural world (`videossm/world/`), rendered fresh at every step at 128x128, 16 fps: "
        "one object on a seed-textured background (stripes, checks or blobs), with a per-frame ground-truth "
        "record of position, colour, shape and camera.",
        "",
        f"- Prompts: `a {{color}} {{shape}} {{motion}} on a {{background}} background`, colours "
        f"{', '.join(COLORS)}; shapes {', '.join(SHAPES)}; motions {', '.join(MOTIONS)}; backgrounds "
        f"{', '.join(BACKGROUNDS)}.",
        "- Scenarios: plain clips, camera pans that return to a region, objects wrapping around the frame; "
        "the long stage adds prompt switches at chunk boundaries.",
        f"- Held out of all training: {len(HELD_OUT_COMBOS)} of {len(HELD_OUT_COMBOS) + len(TRAIN_COMBOS)} "
        f"(colour, shape, background) combinations, with every motion: {held}.",
        "",
    ]


def write_card(runs: str, to: str, eval_dir: str | None = None, assets: str | None = None,
               modes: tuple[str, ...] = MODES, chain: str = RECIPE_CHAIN) -> str:
    """Write the card to `to` (markdown); returns its text."""
    from ..weights.checkpoint import read_config  # imports torch: only when a card is written

    if eval_dir and not os.path.exists(os.path.join(eval_dir, "table.md")):
        raise ConfigError(f"--eval {eval_dir!r} holds no table.md; run `python -m videossm eval-world ... "
                          f"--out-dir {eval_dir}` first")
    assets = assets or os.path.dirname(os.path.abspath(to))
    old = {"rows": {}, "vae": None, "init": None}
    if os.path.isfile(to):
        with open(to) as f:
            old = recorded_rows(f.read())
    init = init_kind(runs) if read_metrics(os.path.join(runs, "causal")) or not old["init"] else INIT_KINDS[old["init"]]
    lines = ["# VideoSSM small models: model card", "",
             "Small VideoSSM transformers trained by this project on its procedural world, with the full recipe "
             f"(docs/TRAINING.md): VAE, bidirectional teacher, {init}, Self-Forcing DMD, long "
             "self-rollout; then, from those checkpoints, an encoder re-trained for their decoder, a teacher "
             "recovered from the hybrid, and a second long stage that teaches a wrapping object's return, the "
             "object's latent cells weighted 20x in its regression on the world's clips. The "
             "`sink` and `window` baselines get the same stages and budgets as `hybrid`, from the same causal "
             "init.", "",
             "Generated by `python -m videossm train card` from the runs' `metrics.json` files (a run whose folder "
             "is gone keeps its row from the card this one replaced); rerun it after training or evaluating.", "",
             "## Checkpoints", "",
             "Window and sink are the stream settings each checkpoint loads with, in latent frames (its "
             "`videossm_config.json`; `generate --window --sink` override them).", "",
             "| checkpoint | memory | shipped | window / sink | size |", "|---|---|---|---|---|"]
    for mode in modes:
        folder = os.path.join(assets, f"videossm-{mode}")
        if os.path.isdir(folder):
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
            stream = read_config(folder).get("stream", {})
            sink = "none (window mode)" if mode == "window" else stream.get("sink_frames", "?")
            lines.append(f"| `assets/videossm-{mode}` | {mode} | yes | {stream.get('window_frames', '?')} / {sink} "
                         f"| {size / 2**20:.1f} MiB |")
        else:
            lines.append(f"| `assets/videossm-{mode}` | {mode} | not yet | - | - |")
    lines += ["", "## How each checkpoint was made", "",
              "`bash scripts/train_recipe.sh` runs every stage below (finished stages are skipped). Each row is "
              "the command the stage recorded, its steps, wall time and hardware. Where a run of a stage follows "
              "another of the same stage, it continued that run's last checkpoint (the recipe's `continue_run`), "
              "so its steps and wall time include the earlier run's. The stages after `long3` read "
              "`assets/videossm-MODE` as it stood then: `long3-MODE`'s student shipped with window 24 and sink 6 "
              "(the script writes that ship to `runs/ship3-MODE`; the last stage's recorded `runs/ship6-MODE` is "
              "that same set, taken back from git at the commit before the third set replaced it); "
              "`recipe/teacher` and `recipe/vae` are "
              "`runs/teacher-from-hybrid`'s and `runs/vae-enc-anchor`'s exports, kept in git.", ""]
    for mode in modes:
        lines += [f"### `{mode}`", "", "| stage | run | command | steps | wall time | hardware |",
                  "|---|---|---|---|---|---|"]
        for stage, folder, metrics in stage_rows(runs, mode, chain):
            if metrics is None and (mode, folder) in old["rows"]:
                lines.append(old["rows"][(mode, folder)])
                continue
            if metrics is None:
                lines.append(f"| {stage} | `{folder}` | not run yet | - | - | - |")
                continue
            lines.append(f"| {stage} | `{folder}` | `{metrics.get('command') or '?'}` | {metrics.get('steps', '-')} "
                         f"| {_hours(metrics.get('wall_seconds'))} | {_hardware(metrics.get('hardware'))} |")
        lines.append("")
    vae = read_metrics(os.path.join(runs, "vae"))
    if vae:
        lines += ["VAE reconstruction (EMA weights, PSNR over whole frames / object pixels): train "
                  f"{vae['psnr_train']:.1f} / {vae['psnr_train_object']:.1f} dB, held-out combinations "
                  f"{vae['psnr_heldout']:.1f} / {vae['psnr_heldout_object']:.1f} dB; streaming decode "
                  f"{vae['decode_s_per_block'] * 1000:.0f} ms per 12-frame block on one CPU thread.", ""]
    elif old["vae"]:
        lines += [old["vae"], ""]
    lines += data_section()
    lines += ["## Metrics against the world's ground truth", ""]
    if eval_dir:
        with open(os.path.join(eval_dir, "table.md")) as f:
            lines += [f.read().strip(), ""]
        curves = os.path.join(eval_dir, "curves.png")
        if os.path.exists(curves):
            target = os.path.join(os.path.dirname(os.path.abspath(to)), "model_card_curves.png")
            shutil.copyfile(curves, target)
            lines += ["![world metrics over time](model_card_curves.png)", ""]
        lines += [f"From `{eval_dir}` (its `results.json` names the command).", ""]
    else:
        lines += ["Not measured yet: run `python -m videossm eval-world` on the shipped checkpoints and pass "
                  "its folder with `--eval`.", ""]
    text = "\n".join(lines)
    os.makedirs(os.path.dirname(os.path.abspath(to)), exist_ok=True)
    tmp = f"{to}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, to)
    return text


def card(args) -> dict:
    modes = tuple(args.modes.split(",")) if args.modes else MODES
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"--modes: unknown {bad}; accepted: {', '.join(MODES)}")
    write_card(args.runs, args.to, args.eval, args.assets, modes, args.chain or RECIPE_CHAIN)
    print(f"wrote {args.to}")
    return {"card": args.to}
