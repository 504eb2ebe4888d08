"""Command-line options of the training stages (`python -m videossm train STAGE`), apart from the stages'
code so that building the CLI parser imports no torch. Each stage reads these names from `args`."""

from __future__ import annotations

from ..config import COLOR_SIDES, MEMORY_MODES, TEACHER_GUIDANCE, TEACHER_SAMPLE_STEPS

STAGE_DEFAULTS = {  # stage -> defaults that differ between the short and the long stage
    "dmd": dict(rollout_frames=21, steps=2000, switch_prob=0.0, out="runs/dmd"),
    "long": dict(rollout_frames=240, steps=2000, switch_prob=0.2, out="runs/long"),
}


def add_stream_args(p, memory_default: str | None = "hybrid") -> None:
    p.add_argument("--memory", default=memory_default, choices=MEMORY_MODES,
                   help="memory mode the student is trained for (hybrid, or the sink/window baselines)")
    p.add_argument("--block-frames", type=int, default=3)
    p.add_argument("--window-frames", type=int, default=12)
    p.add_argument("--sink-frames", type=int, default=3)


def add_teacher_args(p) -> None:
    p.add_argument("--vae", required=True, help="the trained VAE folder (train vae's OUT/vae)")
    p.add_argument("--out", default="runs/teacher", help="run folder: checkpoints, logs, plots, teacher/, samples/")
    p.add_argument("--preset", default="tiny", help="transformer preset (tiny; test for smoke runs)")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint folder's transformer and text encoder (a shipped student such as "
                        "assets/videossm-hybrid, or a teacher) instead of fresh weights; its model config replaces "
                        "--preset, and its text encoder stays frozen, so the students keep reading the same prompt "
                        "embeddings. Recovers a teacher for the shipped students when the original is lost")
    p.add_argument("--latent-frames", type=int, default=21, help="clip length in latent frames (21: 5 s)")
    p.add_argument("--short-frames", type=int, default=0,
                   help="length of the short clips mixed in (0: none); attention cost grows with the square of the "
                        "clip, so short clips buy many more steps on a CPU")
    p.add_argument("--short-share", type=float, default=0.0,
                   help="share of steps whose batch is short clips (drawn per step from the step's RNG)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=4, help="clips per step per process")
    p.add_argument("--reuse", type=int, default=1,
                   help="use each rendered and encoded clip about this many times (1: every batch fresh): every "
                        "reuse-th step of a clip length encodes a batch of new clips into a pool that the steps draw "
                        "from (the VAE encoder's cost is mostly per call, so this divides it by ~reuse)")
    p.add_argument("--replay-window", type=int, default=4, help="refreshes (of --batch clips each) kept in each pool")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--train-shift", type=float, default=3.0, help="sigma = shift(u), u ~ U(0, 1) while training")
    p.add_argument("--text-dropout", type=float, default=0.1, help="share of clips trained with the empty text")
    p.add_argument("--object-weight", type=float, default=1.0,
                   help="loss weight of the latent cells the object covers (its ground-truth footprint, grown by "
                        "one cell) against 1 for the background; 1: plain flow matching. The object is ~2%% of "
                        "the cells, so its shape and motion barely move the plain loss")
    p.add_argument("--mixture", default=None, metavar="NAME=W,...",
                   help="scenario mixture of the clips, e.g. plain=0.75,wraparound=0.25 (default: plain=0.5,"
                        "pan_and_return=0.25,wraparound=0.25). The grammar has no camera words, so a pan moves the "
                        "object on screen against its prompted direction")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--sample-every", type=int, default=2000, help="write sample videos every N steps (0: only at the end)")
    p.add_argument("--sample-steps", type=int, default=TEACHER_SAMPLE_STEPS, help="Euler steps of the sample ODE")
    p.add_argument("--guidance", type=float, default=TEACHER_GUIDANCE, help="classifier-free guidance of the samples")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--resume", action="store_true", help="require a checkpoint in --out")


def add_world_clip_args(p, when: str) -> None:
    """The world clips' flags that the causal loss takes (`causal.WorldBatches`), for the causal stage
    (`when` = "--source world") and for DMD's regression term ("with --regression-weight")."""
    p.add_argument("--object-weight", type=float, default=1.0,
                   help=f"{when}: count the object's latent cells this many times in the loss (see train teacher)")
    p.add_argument("--mixture", default=None, metavar="NAME=W,...",
                   help=f"{when}: scenario mixture of the single-prompt clips, as train teacher --mixture (default: "
                        "plain=0.5,pan_and_return=0.25,wraparound=0.25; e.g. wraparound=1 to teach an object's return)")
    p.add_argument("--motion-switch-share", type=float, default=0.0,
                   help=f"{when}: share of clips whose motion changes at a block boundary, the prompt switching "
                        "with it, so the motion words and not the past's velocity tell where the object goes")


def add_causal_args(p) -> None:
    p.add_argument("--teacher", default=None, help="the teacher folder (train teacher's OUT/teacher): a fresh causal init")
    p.add_argument("--init-student", default=None, metavar="DIR",
                   help="instead of --teacher: continue this student checkpoint (e.g. assets/videossm-hybrid; its "
                        "transformer with its memory, text encoder and decoder); needs --source world, and --vae "
                        "when its VAE is decoder-only, as shipped ones are")
    p.add_argument("--vae", default=None, metavar="VAE_DIR",
                   help="--source world: the full VAE that encodes the world's clips (default: the starting "
                        "checkpoint's vae/); its decoder must be the starting checkpoint's, e.g. an encoder "
                        "recovered by `train vae --decoder-from DIR/vae`")
    p.add_argument("--out", default="runs/causal", help="run folder: trajectories/, checkpoints, logs, student/")
    add_stream_args(p)
    p.add_argument("--source", choices=("teacher", "world"), default="teacher",
                   help="what the student regresses: the teacher's ODE trajectories (x0 from noise, as Self-Forcing's "
                        "ODE init), or the world's own clips encoded by the teacher's VAE, noised to the student's "
                        "sigmas (teacher forcing on data, no trajectories)")
    p.add_argument("--latent-frames", type=int, default=21, help="trajectory length in latent frames (21: 5 s)")
    p.add_argument("--pairs", type=int, default=1024, help="teacher trajectories to generate")
    p.add_argument("--shard-size", type=int, default=16, help="trajectories per shard file")
    p.add_argument("--trajectories", default=None,
                   help="folder of the teacher trajectories (default OUT/trajectories); they do not depend on the "
                        "memory mode, so the hybrid, sink and window students can share one folder")
    p.add_argument("--ode-substeps", type=int, default=8, help="teacher Euler steps between two student sigmas")
    p.add_argument("--guidance", type=float, default=TEACHER_GUIDANCE, help="teacher classifier-free guidance")
    p.add_argument("--reuse", type=int, default=1,
                   help="--source world: use each encoded clip about this many times (see train teacher --reuse)")
    p.add_argument("--replay-window", type=int, default=4, help="--source world: refreshes kept in the clip pool")
    add_world_clip_args(p, "--source world")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--no-memory-grad", dest="memory_grad", action="store_false",
                   help="write the cache without gradients (the memory's gates then learn nothing here)")
    p.add_argument("--context-grad", action="store_true",
                   help="backpropagate through the clean passes that write the cache too, so the loss also trains "
                        "what the past's keys and values carry forward (teacher forcing in one graph, ~1.5x the "
                        "step's time); without it (and outside hybrid's memory gradient) only the new block's "
                        "pass learns")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--resume", action="store_true", help="require a checkpoint in --out")


def add_dmd_args(p, stage: str = "dmd") -> None:
    d = STAGE_DEFAULTS[stage]
    p.add_argument("--student", required=True, help="the student folder to start from (causal or dmd OUT/student)")
    p.add_argument("--teacher", required=True, help="the teacher folder (real score), train teacher's OUT/teacher")
    p.add_argument("--out", default=d["out"], help="run folder: checkpoints, logs, student/")
    add_stream_args(p, memory_default=None)
    p.add_argument("--latent-frames", type=int, default=21, help="chunk the teacher judges, latent frames (21: 5 s)")
    p.add_argument("--rollout-frames", type=int, default=d["rollout_frames"],
                   help="latent frames of one rollout before a new prompt and an empty cache (240: 60 s)")
    p.add_argument("--switch-prob", type=float, default=d["switch_prob"],
                   help="chance of a prompt switch at each chunk boundary of a rollout")
    p.add_argument("--steps", type=int, default=d["steps"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-5, help="generator learning rate")
    p.add_argument("--critic-lr", type=float, default=4e-5)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--gen-every", type=int, default=5, help="critic steps per generator step")
    p.add_argument("--guidance", type=float, default=TEACHER_GUIDANCE, help="teacher classifier-free guidance (real score)")
    p.add_argument("--score-shift", type=float, default=5.0, help="DMD noise level: sigma = shift(u), u ~ U(0.02, 0.98)")
    p.add_argument("--regression-weight", type=float, default=0.0,
                   help="also regress the world's clips on each generator step, with this weight: the causal "
                        "stage's --source world loss (teacher forcing on data) beside DMD, as DMD's own paired "
                        "regression term; 0 (default) is DMD alone")
    p.add_argument("--regression-batch", type=int, default=2, help="world clips per regression step")
    p.add_argument("--reuse", type=int, default=4,
                   help="with --regression-weight: use each encoded clip about this many times (train teacher --reuse)")
    p.add_argument("--replay-window", type=int, default=4, help="with --regression-weight: refreshes kept in the pool")
    add_world_clip_args(p, "with --regression-weight")
    p.add_argument("--context-grad", action="store_true",
                   help="with --regression-weight: backpropagate the term through the clean passes that write the "
                        "cache too (train causal --context-grad)")
    p.add_argument("--regression-frames", type=int, default=0,
                   help="with --regression-weight: latent frames of the term's clips (0: --latent-frames); "
                        "longer clips let an object leave the window and come back")
    p.add_argument("--no-memory-grad", dest="memory_grad", action="store_false",
                   help="commit blocks without gradients (the memory's gates then learn nothing here)")
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--resume", action="store_true", help="require a checkpoint in --out")


def add_long_args(p) -> None:
    add_dmd_args(p, "long")


def add_rollout_args(p) -> None:
    p.add_argument("--student", required=True, help="the student to continue (e.g. assets/videossm-hybrid)")
    p.add_argument("--vae", default=None, metavar="VAE_DIR",
                   help="the full VAE that encodes the clips' context blocks (default: the student's vae/); its "
                        "decoder must be the student's, e.g. an encoder recovered by `train vae --decoder-from "
                        "STUDENT/vae`; the student is exported with it")
    p.add_argument("--out", default="runs/rollout", help="run folder: checkpoints, logs, student/")
    p.add_argument("--memory", default=None, choices=MEMORY_MODES,
                   help="memory mode to train (default: the student's)")
    p.add_argument("--window-frames", type=int, default=None,
                   help="local window to train with, in latent frames (default: the student's; the shipped "
                        "checkpoints stream with 24 but were trained with 12)")
    p.add_argument("--sink-frames", type=int, default=None, help="sink frames (default: the student's)")
    p.add_argument("--latent-frames", type=int, default=42,
                   help="clip length in latent frames, context included (42: 10.5 s, long enough for a wrapping "
                        "object to leave the frame and come back)")
    p.add_argument("--context-blocks", type=int, default=1,
                   help="blocks of each clip encoded and given as the past; the rest the student generates")
    p.add_argument("--free-blocks", type=int, default=0, metavar="N",
                   help="each step draws 0..N blocks that the student makes after the context on its own, as at "
                        "inference (no gradient, not judged), before the judged blocks of --latent-frames; the "
                        "clips are rendered that much longer. Judges the stream deep into its own history, where "
                        "the object fades (0: off)")
    p.add_argument("--mixture", default=None, metavar="NAME=W,...",
                   help="scenario mixture of the clips, as train teacher --mixture (default: plain=0.5,"
                        "pan_and_return=0.25,wraparound=0.25)")
    p.add_argument("--object-weight", type=float, default=10.0,
                   help="loss weight of the object's pixels (its exact mask) against 1 for the background; the "
                        "object covers ~4%% of a 128 px frame")
    p.add_argument("--pixel-weight", type=float, default=1.0,
                   help="weight of the pixel loss against the world's frames (0: the adversarial term alone)")
    p.add_argument("--pixel-phase", type=int, default=0, metavar="FRAMES",
                   help="the pixel loss forgives the object's timing: each block counts against the clip with the "
                        "object drawn up to FRAMES frames early or late along its motion, whichever matches best "
                        "(0: the exact clip only); see videossm/train/phase_term.py")
    p.add_argument("--pixel-phase-per", choices=("block", "clip"), default="block",
                   help="with --pixel-phase: the timing is chosen for each block (a lag may grow block by block) "
                        "or once for each clip's whole rollout")
    p.add_argument("--adversarial-weight", type=float, default=0.0,
                   help="weight of a discriminator's verdict on each generated block (0: off). The real clips are "
                        "the world's frames through --vae; see videossm/train/adversarial.py")
    p.add_argument("--disc-lr", type=float, default=1e-4, help="the discriminator's learning rate")
    p.add_argument("--disc-steps", type=int, default=1,
                   help="discriminator updates per student step, on the same blocks (cheap beside the rollout)")
    p.add_argument("--disc-max-acc", type=float, default=None, metavar="ACC",
                   help="the discriminator skips its remaining updates on a step once it tells that step's blocks "
                        "from real clips with this mean accuracy (e.g. 0.75; default: it always takes --disc-steps). "
                        "Keeps it from winning outright, which sends the student large, uninformative gradients")
    p.add_argument("--disc-width", type=int, default=32, help="channels of the discriminator's first layer")
    p.add_argument("--color-weight", type=float, default=0.0,
                   help="weight of the colour-area term: each generated frame holds as much of the object's exact "
                        "colour as the clip's frame through --vae, wherever drawn (0: off); see "
                        "videossm/train/color_term.py")
    p.add_argument("--color-sigma", type=float, default=0.25,
                   help="width of a pixel's colour evidence, in [-1, 1] RGB units (the backgrounds sit >= 0.85 away)")
    p.add_argument("--color-side", choices=COLOR_SIDES, default="both",
                   help="both: a frame with more or less of the colour than the world's costs alike; under: only "
                        "too little costs, so an object drawn where the world has none is not repainted")
    p.add_argument("--probe-weight", type=float, default=0.0,
                   help="weight of a frozen world probe's verdict on each generated frame against the clip's records: "
                        "object in view or not, its colour and shape (0: off); see videossm/train/probe_term.py")
    p.add_argument("--probe", default=None, metavar="PROBE_DIR",
                   help="the probe of --probe-weight (train probe's --out). Not the shipped assets/probe, which "
                        "eval-world measures with: e.g. train probe --seed 1 --out runs/probe-judge")
    p.add_argument("--anchor-weight", type=float, default=0.0,
                   help="weight of the first-block anchor: the first block of a fresh stream, from noise (never "
                        "asked for by the rollouts, which start from a clip's context), stays what --anchor makes "
                        "of the same noise (0: off); see videossm/train/anchor_term.py")
    p.add_argument("--anchor", default=None, metavar="STUDENT_DIR",
                   help="the frozen model of --anchor-weight (default: --student, the starting point)")
    p.add_argument("--r1", type=float, default=0.1, help="R1 penalty on the discriminator's real inputs (0: off)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-memory-grad", dest="memory_grad", action="store_false",
                   help="commit blocks without gradients (the memory's gates then learn nothing here)")
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--save-every", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--resume", action="store_true", help="require a checkpoint in --out")


def add_ship_args(p) -> None:
    p.add_argument("--student", required=True, help="a trained student folder (e.g. runs/long-hybrid/student)")
    p.add_argument("--to", required=True, help="target folder, e.g. assets/videossm-hybrid (replaced if present)")
    p.add_argument("--vae", default=None, metavar="VAE_DIR",
                   help="ship this VAE instead of the student's: a decoder retrained with `train vae --encoder-from` "
                        "(its encoder and latent statistics must equal the student's)")
    p.add_argument("--window-frames", type=int, default=None,
                   help="the local window the shipped checkpoint streams with, in latent frames, sink and block "
                        "included (default: the student's)")
    p.add_argument("--sink-frames", type=int, default=None,
                   help="the sink the shipped checkpoint streams with (default: the student's)")


def add_card_args(p) -> None:
    p.add_argument("--runs", default="runs", help="the recipe's run folder (vae/, teacher/, causal-MODE/, ...)")
    p.add_argument("--to", default="assets/MODEL_CARD.md", help="the card to write")
    p.add_argument("--eval", default=None, help="an eval-world --out-dir (its table.md and curves.png)")
    p.add_argument("--assets", default=None, help="where the shipped checkpoints are (default: the card's folder)")
    p.add_argument("--modes", default=None, help="comma-separated memory modes (default hybrid,sink,window)")
    p.add_argument("--chain", default=None, metavar="RUN,RUN-{mode},...",
                   help="the run folders under --runs that made each checkpoint, in order, {mode} standing for the "
                        "memory mode (default: scripts/train_recipe.sh's chain, train.card.RECIPE_CHAIN)")
