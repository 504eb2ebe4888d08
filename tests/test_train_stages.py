"""One tiny run of each transformer stage of the recipe (teacher -> causal -> dmd -> long), chained as in the
real recipe on the `test` preset: losses are finite, parameters move, checkpoints resume and the exported
students load and stream."""

import dataclasses
import glob
import json
import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan

from videossm.cli import main
from videossm.models.vae import vae_config
from videossm.config import ConfigError
from videossm.pipeline import VideoSSMPipeline
from videossm.sampling.ode import ode_sigmas, sample_ode
from videossm.sampling.scheduler import denoising_sigmas
from videossm.train.causal import load_checkpoint
from videossm.train.common import read_csv
from videossm.weights.checkpoint import load_safetensors, read_config


def _ckpt_model(out):
    path = sorted(glob.glob(os.path.join(out, "ckpt-*.pt")))[-1]
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    vae_dir = str(root / "vae")
    torch.manual_seed(0)
    AutoencoderKLWan(**vae_config(z_dim=4, base_dim=4)).save_pretrained(vae_dir)
    common = ["--log-every", "1", "--save-every", "2"]
    teacher = str(root / "teacher")
    assert main(["train", "teacher", "--vae", vae_dir, "--out", teacher, "--preset", "test", "--latent-frames", "6",
                 "--steps", "2", "--batch", "2", "--sample-steps", "2", "--sample-every", "0", *common]) == 0
    causal = str(root / "causal")
    assert main(["train", "causal", "--teacher", f"{teacher}/teacher", "--out", causal, "--latent-frames", "12",
                 "--window-frames", "9", "--pairs", "3", "--shard-size", "2", "--ode-substeps", "2", "--steps", "2",
                 "--batch", "2", *common]) == 0
    dmd = str(root / "dmd")
    assert main(["train", "dmd", "--student", f"{causal}/student", "--teacher", f"{teacher}/teacher", "--out", dmd,
                 "--latent-frames", "6", "--rollout-frames", "6", "--steps", "2", "--gen-every", "1", *common]) == 0
    long = str(root / "long")
    assert main(["train", "long", "--student", f"{dmd}/student", "--teacher", f"{teacher}/teacher", "--out", long,
                 "--latent-frames", "6", "--rollout-frames", "18", "--window-frames", "6", "--switch-prob", "1",
                 "--steps", "3", "--gen-every", "1", *common]) == 0
    return dict(root=root, vae=vae_dir, teacher=teacher, causal=causal, dmd=dmd, long=long, common=common)


def test_teacher_trains_transformer_and_text_encoder(runs):
    log = read_csv(os.path.join(runs["teacher"], "log.csv"))
    assert len(log["loss"]) == 2 and np.isfinite(log["loss"]).all()
    weights = _ckpt_model(runs["teacher"])["model"]
    from videossm.train.teacher import build_teacher

    fresh, _ = build_teacher("test", seed=0)  # the same initialisation as the run
    moved = {k for k, v in fresh.state_dict().items() if not torch.equal(v, weights[k])}
    assert any(k.startswith("transformer.blocks.0.attn1") for k in moved)
    assert any(k.startswith("text_model.") for k in moved), "the text encoder must learn with the teacher"
    assert not any(".memory." in k for k in moved), "the bidirectional teacher has no use for the memory"
    assert os.path.exists(os.path.join(runs["teacher"], "samples", "final", "heldout.mp4"))


def test_teacher_init_from_a_student_trains_its_transformer_and_keeps_its_text_encoder(runs, tmp_path, capsys):
    from videossm.pipeline import VideoSSMPipeline

    student_dir = os.path.join(runs["long"], "student")
    out = str(tmp_path / "recovered")
    assert main(["train", "teacher", "--vae", runs["vae"], "--out", out, "--init-from", student_dir,
                 "--latent-frames", "6", "--steps", "2", "--batch", "2", "--sample-steps", "1", "--sample-every", "0",
                 "--log-every", "1", "--lr", "1e-3", "--warmup", "0"]) == 0
    log = read_csv(os.path.join(out, "log.csv"))
    assert len(log["loss"]) == 2 and np.isfinite(log["loss"]).all()
    student = VideoSSMPipeline.from_pretrained(student_dir, dtype=torch.float32)
    start = {**{f"transformer.{k}": v for k, v in student.transformer.state_dict().items()},
             **{f"text_model.{k}": v for k, v in student.text_encoder.model.state_dict().items()}}
    weights = _ckpt_model(out)["model"]
    assert weights.keys() == start.keys()
    moved = {k for k, v in start.items() if not torch.equal(v, weights[k])}
    assert any(k.startswith("transformer.blocks.0.attn1") for k in moved), "the transformer must learn"
    assert not any(k.startswith("text_model.") for k in moved), "the students' text encoder must stay as it is"
    teacher = VideoSSMPipeline.from_pretrained(os.path.join(out, "teacher"), dtype=torch.float32)
    assert teacher.model_config.to_dict() == student.model_config.to_dict()
    prompt = "a red circle moving right on a gray background"
    assert torch.equal(teacher.text_encoder.encode(prompt), student.text_encoder.encode(prompt))
    assert main(["train", "teacher", "--vae", runs["vae"], "--out", str(tmp_path / "x"),
                 "--init-from", str(tmp_path / "missing"), "--steps", "1"]) == 2
    assert "--init-from" in capsys.readouterr().err


@pytest.mark.parametrize("replay", [[], ["--reuse", "2", "--replay-window", "2"]],
                         ids=["fresh", "replay"])
def test_teacher_resumes_where_it_stopped(runs, tmp_path, replay):
    out = str(tmp_path / "t")
    args = ["train", "teacher", "--vae", runs["vae"], "--out", out, "--preset", "test", "--latent-frames", "6",
            "--short-frames", "3", "--short-share", "0.5",
            "--batch", "1", "--sample-steps", "1", "--sample-every", "0", "--log-every", "1", "--save-every", "1",
            *replay]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "4"]) == 0  # continues from step 2
    resumed = read_csv(os.path.join(out, "log.csv"))
    straight = str(tmp_path / "s")
    assert main([*[a if a != out else straight for a in args], "--steps", "4"]) == 0
    assert np.allclose(resumed["loss"], read_csv(os.path.join(straight, "log.csv"))["loss"], rtol=1e-4)
    # the step's RNG picks the clip length: both lengths occur, and the same ones in both runs
    assert set(resumed["latent_frames"]) == {3.0, 6.0}
    assert list(resumed["latent_frames"]) == list(read_csv(os.path.join(straight, "log.csv"))["latent_frames"])


def test_replay_pool_reuses_recent_clips_and_rebuilds_after_a_resume(runs):
    from videossm.config import get_model_config
    from videossm.train.data import ReplayLatents, WorldLatents, batch_rng, load_frozen_vae

    torch.set_num_threads(1)
    source = WorldLatents(load_frozen_vae(runs["vae"], "cpu"), get_model_config("test"), 2)
    even = lambda step: step % 2 == 0  # this pool serves the even steps
    pool = ReplayLatents(source, reuse=2, window=2, seed=0, rank=0, is_kind=even)
    batches = {step: pool.batch(step, batch_rng(0, 0, step), 3) for step in range(0, 12, 2)}
    # refreshes at the 0th, 2nd, 4th ... even step (steps 0, 4, 8); the pool keeps the last two
    assert sorted(pool.pool) == [4, 8]
    refresh = {tuple(x.flatten()[:8].tolist()) for x in pool.pool[8][0]}
    assert {tuple(x.flatten()[:8].tolist()) for x in batches[10][0]} <= refresh | {
        tuple(x.flatten()[:8].tolist()) for x in pool.pool[4][0]}, "a step draws only from the pool"
    resumed = ReplayLatents(source, reuse=2, window=2, seed=0, rank=0, is_kind=even)
    again = resumed.batch(10, batch_rng(0, 0, 10), 3)
    assert sorted(resumed.pool) == [4, 8]
    assert torch.equal(again[0], batches[10][0]) and again[1] == batches[10][1]


def test_latent_object_mask_follows_the_ground_truth_object():
    from videossm.train.data import latent_object_mask
    from videossm.world import render_clip

    clip = render_clip("a red square moving right on a black background", 33 / 16, seed=1, size=64, fps=16)
    mask = latent_object_mask(clip, 33, 9, scale_spatial=8, scale_temporal=4, dilate=0)  # [F, h, w]
    assert mask.shape == (9, 8, 8)
    x, y = clip.column("x"), clip.column("y")
    for k in range(9):  # the cell under the object's centre at the latent frame's last pixel frame
        frame = 4 * k
        if clip.records[frame].visible:
            assert mask[k, y[frame] // 8, x[frame] // 8]
    cols = np.nonzero(mask.any(axis=1))  # (frame, column) of every column the object touches
    first, last = cols[1][cols[0] == 0].mean(), cols[1][cols[0] == 8].mean()
    assert last > first, "moving right: the footprint moves right"
    grown = latent_object_mask(clip, 33, 9, 8, 4, dilate=1)
    assert (grown >= mask).all() and grown.sum() > mask.sum()  # dilation only adds cells
    still = render_clip("a red square standing still on a black background", 33 / 16, seed=1, size=64, fps=16)
    still_mask = latent_object_mask(still, 33, 9, 8, 4, dilate=0)
    assert (still_mask == still_mask[:1]).all() and 0 < still_mask[0].sum() < 64


def test_weighted_mse_weighs_cells_and_reduces_to_plain_mse():
    from videossm.train.teacher import weighted_mse

    torch.manual_seed(0)
    pred, target = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 4, 5, 5)
    uniform = torch.full((2, 1, 4, 5, 5), 7.0)
    assert torch.allclose(weighted_mse(pred, target, uniform), torch.nn.functional.mse_loss(pred, target))
    one_cell = torch.zeros(2, 1, 4, 5, 5)
    one_cell[1, 0, 2, 3, 4] = 1.0
    assert torch.allclose(weighted_mse(pred, target, one_cell), ((pred - target)[1, :, 2, 3, 4] ** 2).mean())


def test_teacher_object_weight_and_mixture_train(runs, tmp_path):
    out = str(tmp_path / "weighted")
    assert main(["train", "teacher", "--vae", runs["vae"], "--out", out, "--preset", "test", "--latent-frames", "6",
                 "--steps", "2", "--batch", "2", "--sample-steps", "1", "--sample-every", "0", "--log-every", "1",
                 "--object-weight", "5", "--mixture", "plain=1,wraparound=0"]) == 0
    log = read_csv(os.path.join(out, "log.csv"))
    assert len(log["loss"]) == 2 and np.isfinite(log["loss"]).all()
    plain = read_csv(os.path.join(runs["teacher"], "log.csv"))["loss"]
    assert not np.allclose(log["loss"], plain)  # another loss on other clips


@pytest.mark.parametrize("text, message", [("plain", "is not NAME=WEIGHT"), ("prompt_switch=1", "single-prompt"),
                                           ("plain=x", "must be a number"), ("plain=-1", ">= 0"),
                                           ("plain=0", "no positive weight")])
def test_bad_mixtures_name_the_entry(text, message):
    from videossm.config import ConfigError
    from videossm.train.data import parse_mixture

    with pytest.raises(ConfigError, match=message):
        parse_mixture(text)


@pytest.mark.parametrize("flags, message", [(["--short-share", "1.5"], "--short-share"),
                                            (["--reuse", "0"], "--reuse"),
                                            (["--object-weight", "0"], "--object-weight"),
                                            (["--short-share", "0.5", "--short-frames", "6"], "--short-frames")])
def test_teacher_rejects_bad_short_clips(runs, tmp_path, capsys, flags, message):
    assert main(["train", "teacher", "--vae", runs["vae"], "--out", str(tmp_path / "x"), "--preset", "test",
                 "--latent-frames", "6", "--steps", "1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_causal_regression_hits_teacher_states_and_trains_the_memory_gates(runs):
    shards = sorted(glob.glob(os.path.join(runs["causal"], "trajectories", "shard-*.pt")))
    assert len(shards) == 2
    shard = torch.load(shards[0], weights_only=True)
    assert shard["states"].shape[:2] == (2, 4) and shard["x0"].shape[2] == 12
    sigmas = denoising_sigmas(4, 5.0)
    assert shard["sigmas"] == sigmas
    teacher = VideoSSMPipeline.from_pretrained(os.path.join(runs["teacher"], "teacher"))
    # The stored end point is the teacher's ODE solution from the stored starting noise.
    cond = torch.cat([teacher.text_encoder.encode(p) for p in shard["prompts"]])
    x0, _ = sample_ode(teacher.transformer, shard["states"][:, 0].float(), cond, ode_sigmas(sigmas, 2), 3.0)
    assert torch.allclose(x0, shard["x0"].float(), atol=2e-2)

    log = read_csv(os.path.join(runs["causal"], "log.csv"))
    assert np.isfinite(log["loss"]).all()
    before = load_safetensors(os.path.join(runs["teacher"], "teacher", "transformer.safetensors"))
    after = _ckpt_model(runs["causal"])["model"]
    changed = {k.removeprefix("student.") for k, v in after.items() if not torch.equal(v, before[k.removeprefix("student.")])}
    assert any(".memory.beta_proj" in k for k in changed), "evicted frames must train the memory's write gates"
    assert any(".memory.out_gate" in k for k in changed)


def test_students_of_other_modes_share_the_teacher_trajectories(runs, tmp_path, capsys):
    shared = os.path.join(runs["causal"], "trajectories")
    stamps = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(shared, "shard-*.pt"))}
    args = ["train", "causal", "--teacher", f"{runs['teacher']}/teacher", "--trajectories", shared,
            "--latent-frames", "12", "--window-frames", "9", "--pairs", "3", "--shard-size", "2",
            "--ode-substeps", "2", "--steps", "1", "--batch", "2", *runs["common"]]
    assert main([*args, "--out", str(tmp_path / "sink"), "--memory", "sink"]) == 0
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps, "the shared shards are read, not remade"
    assert not os.path.exists(tmp_path / "sink" / "trajectories")
    assert main([*args, "--out", str(tmp_path / "other"), "--guidance", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds trajectories made with other settings" in err and "'guidance': (3.0, 2.0)" in err


def test_causal_init_on_world_clips_regresses_the_noised_clip_and_resumes_exactly(runs, tmp_path):
    """--source world: no trajectories; the targets are the world's clips through the teacher's VAE, and a
    resumed run (replay pool rebuilt) logs the losses of an uninterrupted one."""
    from videossm.train.causal import WorldBatches
    from videossm.train.data import batch_rng

    def run(out, steps):
        return main(["train", "causal", "--teacher", f"{runs['teacher']}/teacher", "--out", str(out),
                     "--source", "world", "--reuse", "2", "--replay-window", "2", "--latent-frames", "6",
                     "--window-frames", "3", "--sink-frames", "0", "--steps", str(steps), "--batch", "2",
                     *runs["common"]])

    assert run(tmp_path / "whole", 4) == 0
    assert run(tmp_path / "split", 2) == 0 and run(tmp_path / "split", 4) == 0
    whole, split = read_csv(tmp_path / "whole" / "log.csv"), read_csv(tmp_path / "split" / "log.csv")
    assert np.isfinite(whole["loss"]).all() and list(whole["step"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(split["loss"], whole["loss"], rtol=1e-5)
    assert not os.path.exists(tmp_path / "whole" / "trajectories")
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert metrics["source"] == "world" and "pairs" not in metrics
    before = load_safetensors(os.path.join(runs["teacher"], "teacher", "transformer.safetensors"))
    after = _ckpt_model(tmp_path / "whole")["model"]
    assert any(not torch.equal(v, before[k.removeprefix("student.")]) for k, v in after.items())
    assert VideoSSMPipeline.from_pretrained(str(tmp_path / "whole" / "student")).trained

    # the states are the clip noised to each student sigma, with one noise per clip
    teacher = VideoSSMPipeline.from_pretrained(os.path.join(runs["teacher"], "teacher"))
    args = type("Args", (), dict(teacher=f"{runs['teacher']}/teacher", latent_frames=6, reuse=1, replay_window=4,
                                 seed=0))()
    sigmas = denoising_sigmas(4, 5.0)
    states, x0, prompts, weight = WorldBatches(teacher, args, "cpu", 0).batch(0, batch_rng(0, 0, 0), 2, sigmas)
    assert weight is None  # --object-weight 1: plain MSE
    _, _, _, weight = WorldBatches(teacher, args, "cpu", 0, object_weight=4.0).batch(0, batch_rng(0, 0, 0), 2, sigmas)
    assert weight.shape == (2, 1, *x0.shape[2:]) and set(weight.unique().tolist()) == {1.0, 4.0}
    longer = WorldBatches(teacher, args, "cpu", 0, mixture={"plain": 1.0}, latent_frames=9)  # DMD's own length
    assert longer.batch(0, batch_rng(0, 0, 0), 2, sigmas)[1].shape[2] == 9 and longer.clips.mixture == {"plain": 1.0}
    assert states.shape[:2] == (2, 4) and x0.shape[2] == 6 and len(prompts) == 2
    noise = (states[:, 0] - (1 - sigmas[0]) * x0) / sigmas[0]
    for k, s in enumerate(sigmas):
        torch.testing.assert_close(states[:, k], (1 - s) * x0 + s * noise, atol=1e-5, rtol=1e-5)
    assert x0.std() > 0.05


def test_motion_switch_clips_change_motion_at_a_block_boundary_and_train_the_causal_student(runs, tmp_path):
    """--motion-switch-share: the clip's motion (ground truth) changes at the first pixel frame of a latent
    block, its per-block prompts switch there, the loss re-caches at the switch, and a run trains on them."""
    from videossm.config import get_model_config
    from videossm.models.transformer import VideoSSMTransformer
    from videossm.train.causal import CausalODELoss, encode_prompts
    from videossm.train.data import motion_switch_clip
    from videossm.world import parse_prompt

    cfg = get_model_config("test")
    for seed in range(6):
        clip, prompts = motion_switch_clip(np.random.default_rng(seed), 1 + 4 * 8, 9, 3, cfg)
        assert len(prompts) == 3 and prompts[0] != prompts[-1]
        block = prompts.index(prompts[-1])
        first, new = parse_prompt(prompts[0]), parse_prompt(prompts[-1])
        assert first.motion != new.motion and (first.color, first.shape, first.background) == \
            (new.color, new.shape, new.background)
        switch_frame = 1 + 4 * (3 * block - 1)
        assert [r.prompt for r in clip.records[switch_frame - 1 : switch_frame + 1]] == [prompts[0], prompts[-1]]

    torch.manual_seed(0)
    student = VideoSSMTransformer(cfg).eval()
    pipe = VideoSSMPipeline.from_pretrained(os.path.join(runs["teacher"], "teacher"))
    stream = pipe.stream_config.with_overrides(memory="sink", window_frames=6, sink_frames=0)
    loss = CausalODELoss(student, stream, memory_grad=False)
    x0 = torch.randn(2, cfg.in_channels, 9, cfg.height // cfg.vae_scale_spatial, cfg.width // cfg.vae_scale_spatial)
    states = torch.stack([0.5 * x0 + 0.5 * torch.randn_like(x0) for _ in range(4)], 1)
    bank = {}
    plain = encode_prompts(pipe.text_encoder, bank, ["a red circle moving right on a gray background"] * 2, 3)
    repeated = encode_prompts(pipe.text_encoder, bank, ["a red circle moving right on a gray background",
                                                        ("a red circle moving right on a gray background",) * 3], 3)
    switched = encode_prompts(pipe.text_encoder, bank, [("a red circle moving right on a gray background",) * 2
                                                        + ("a red circle moving up on a gray background",)] * 2, 3)
    assert plain.dim() == 3 and repeated.dim() == 4 and repeated.shape[1] == 3
    sigmas, index = [1.0, 0.9, 0.8, 0.6], [0, 1, 2]
    with torch.no_grad():
        base = loss(states, x0, plain, index, sigmas)
        torch.testing.assert_close(loss(states, x0, repeated, index, sigmas), base)  # no switch: no re-cache
        assert not torch.isclose(loss(states, x0, switched, index, sigmas), base)

    out = tmp_path / "switch"
    assert main(["train", "causal", "--teacher", f"{runs['teacher']}/teacher", "--out", str(out), "--source", "world",
                 "--motion-switch-share", "1", "--latent-frames", "6", "--window-frames", "3", "--sink-frames", "0",
                 "--context-grad", "--steps", "2", "--batch", "2", *runs["common"]]) == 0
    assert np.isfinite(read_csv(out / "log.csv")["loss"]).all()
    assert main(["train", "causal", "--teacher", f"{runs['teacher']}/teacher", "--out", str(tmp_path / "bad"),
                 "--motion-switch-share", "0.5"]) == 2
    assert main(["train", "causal", "--teacher", f"{runs['teacher']}/teacher", "--out", str(tmp_path / "bad"),
                 "--object-weight", "2"]) == 2
    assert main(["train", "causal", "--teacher", f"{runs['teacher']}/teacher", "--out", str(tmp_path / "bad"),
                 "--mixture", "plain=1"]) == 2
    assert main(["train", "causal", "--teacher", f"{runs['teacher']}/teacher", "--out", str(tmp_path / "bad"),
                 "--source", "world", "--mixture", "plain"]) == 2


def test_causal_context_grad_trains_the_cache_writing_passes(runs):
    """--context-grad: the same loss, but the clean passes that fill the cache get gradients too. With no past
    (one block) both modes give the same gradients; with a past they differ."""
    from videossm.config import get_model_config
    from videossm.models.transformer import VideoSSMTransformer
    from videossm.train.causal import CausalODELoss, encode_prompts

    cfg = get_model_config("test")
    torch.manual_seed(0)
    student = VideoSSMTransformer(cfg).train()
    pipe = VideoSSMPipeline.from_pretrained(os.path.join(runs["teacher"], "teacher"))
    stream = pipe.stream_config.with_overrides(memory="sink", window_frames=6, sink_frames=0)
    text = encode_prompts(pipe.text_encoder, {}, ["a red circle moving right on a gray background"], 3)
    x0 = torch.randn(1, cfg.in_channels, 9, cfg.height // cfg.vae_scale_spatial, cfg.width // cfg.vae_scale_spatial)
    states = torch.stack([0.5 * x0 + 0.5 * torch.randn_like(x0) for _ in range(4)], 1)
    sigmas = [1.0, 0.9, 0.8, 0.6]

    def grads(context_grad: bool, frames: int) -> tuple[float, list[torch.Tensor]]:
        student.zero_grad()
        value = CausalODELoss(student, stream, memory_grad=False, context_grad=context_grad)(
            states[:, :, :, :frames], x0[:, :, :frames], text, [0] * (frames // 3), sigmas)
        value.backward()
        return value.item(), [p.grad.clone() for p in student.parameters() if p.grad is not None]

    for frames, same in ((3, True), (9, False)):
        (plain, g_plain), (ctx, g_ctx) = grads(False, frames), grads(True, frames)
        assert plain == pytest.approx(ctx, rel=1e-6)
        assert len(g_plain) == len(g_ctx)
        differ = max((a - b).abs().max().item() for a, b in zip(g_plain, g_ctx))
        assert (differ < 1e-7) if same else (differ > 1e-5), (frames, differ)


def test_dmd_and_long_stages_move_the_generator_and_export_streaming_students(runs):
    for stage, start in (("dmd", runs["causal"]), ("long", runs["dmd"])):
        log = read_csv(os.path.join(runs[stage], "log.csv"))
        assert np.isfinite(log["critic_loss"]).all() and np.isfinite(log["dmd_loss"]).all()
        before = load_safetensors(os.path.join(start, "student", "transformer.safetensors"))
        after = _ckpt_model(runs[stage])["model"]
        assert any(not torch.equal(v, before[k.removeprefix("generator.")])
                   for k, v in after.items() if k.startswith("generator.blocks"))
    long_log = read_csv(os.path.join(runs["long"], "log.csv"))
    assert list(long_log["frame"]) == [6, 12, 18], "the long stage continues one rollout across steps"
    assert long_log["switches"][-1] == 2, "prompt switches happen at chunk boundaries after the first"
    pipe = VideoSSMPipeline.from_pretrained(os.path.join(runs["long"], "student"))
    assert pipe.trained and pipe.stream_config.window_frames == 6
    frames, _ = pipe.generate("a red circle moving right on a gray background", seconds=2, seed=0)
    assert frames.shape[1:] == (32, 32, 3) and frames.dtype == np.uint8


def test_dmd_with_world_regression_logs_it_and_resumes_its_batches(runs, tmp_path, capsys):
    """--regression-weight: each generator step also regresses world clips; the loss is logged, moves the
    generator, and a resumed run draws the same regression batches (its loss before the first update after
    the resume equals the uninterrupted run's)."""
    def run(out, steps, *extra):
        return main(["train", "dmd", "--student", f"{runs['causal']}/student", "--teacher", f"{runs['teacher']}/teacher",
                     "--out", str(out), "--latent-frames", "6", "--rollout-frames", "6", "--steps", str(steps),
                     "--gen-every", "1", "--regression-weight", "1", "--regression-batch", "2", "--reuse", "2",
                     "--replay-window", "2", *extra, *runs["common"]])

    assert run(tmp_path / "whole", 4) == 0
    assert run(tmp_path / "split", 2) == 0 and run(tmp_path / "split", 4) == 0
    whole, split = read_csv(tmp_path / "whole" / "log.csv"), read_csv(tmp_path / "split" / "log.csv")
    assert list(whole["step"]) == [1, 2, 3, 4] and np.isfinite(whole["reg_loss"]).all()
    assert whole["reg_loss"].min() > 0 and np.isfinite(whole["dmd_loss"]).all()
    np.testing.assert_allclose(split["reg_loss"][:3], whole["reg_loss"][:3], rtol=1e-5)
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["regression_weight"] == 1.0
    before = load_safetensors(os.path.join(runs["causal"], "student", "transformer.safetensors"))
    after = _ckpt_model(tmp_path / "whole")["model"]
    assert any(not torch.equal(v, before[k.removeprefix("generator.")])
               for k, v in after.items() if k.startswith("generator.blocks"))
    assert "reg_loss" not in read_csv(os.path.join(runs["dmd"], "log.csv")), "DMD alone logs no regression"
    assert run(tmp_path / "bad", 1, "--regression-weight", "-1") == 2
    assert "--regression-weight must be >= 0, got -1.0" in capsys.readouterr().err


def test_dmd_regression_can_teach_motion_switches_with_object_weight_and_context_grad(runs, tmp_path, capsys):
    """The causal stage's motion-word flags reach DMD's regression term: a run with them trains, records them,
    and differs from the plain-regression run; given without --regression-weight they are refused by name."""
    def run(out, *extra):
        return main(["train", "dmd", "--student", f"{runs['causal']}/student", "--teacher", f"{runs['teacher']}/teacher",
                     "--out", str(out), "--latent-frames", "6", "--rollout-frames", "6", "--steps", "2",
                     "--gen-every", "1", "--regression-batch", "2", "--reuse", "2", "--replay-window", "2",
                     *extra, *runs["common"]])

    flags = ("--motion-switch-share", "1", "--object-weight", "5", "--context-grad")
    assert run(tmp_path / "plain", "--regression-weight", "1") == 0
    assert run(tmp_path / "motion", "--regression-weight", "1", *flags) == 0
    plain, motion = read_csv(tmp_path / "plain" / "log.csv"), read_csv(tmp_path / "motion" / "log.csv")
    assert np.isfinite(motion["reg_loss"]).all() and motion["reg_loss"].min() > 0
    assert not np.allclose(plain["reg_loss"], motion["reg_loss"]), "switch clips weighted by the object differ"
    config = torch.load(tmp_path / "motion" / "ckpt-0000002.pt", map_location="cpu", weights_only=False)["config"]
    assert (config["motion_switch_share"], config["object_weight"], config["context_grad"]) == (1.0, 5.0, True)
    assert run(tmp_path / "bad", *flags) == 2
    assert ("--motion-switch-share, --object-weight, --context-grad only shape the regression term; "
            "add --regression-weight W > 0") in capsys.readouterr().err
    assert run(tmp_path / "bad2", "--regression-weight", "1", "--motion-switch-share", "1.5") == 2
    assert "--motion-switch-share must be in [0, 1], got 1.5" in capsys.readouterr().err
    # the term's own clip length and scenario mixture: longer clips, recorded, and bad values named
    assert run(tmp_path / "long", "--regression-weight", "1", "--regression-frames", "9", "--mixture", "plain=1") == 0
    config = torch.load(tmp_path / "long" / "ckpt-0000002.pt", map_location="cpu", weights_only=False)["config"]
    assert (config["regression_frames"], config["mixture"]) == (9, "plain=1")
    assert np.isfinite(read_csv(tmp_path / "long" / "log.csv")["reg_loss"]).all()
    assert run(tmp_path / "bad3", "--regression-weight", "1", "--regression-frames", "7") == 2
    assert "--regression-frames must be a positive multiple of --block-frames (3), got 7" in capsys.readouterr().err
    assert run(tmp_path / "bad4", "--regression-weight", "1", "--mixture", "switch=1") == 2
    assert "mixture scenario 'switch' is not a single-prompt scenario" in capsys.readouterr().err
    assert run(tmp_path / "bad5", "--regression-frames", "9") == 2
    assert "--regression-frames only shape the regression term" in capsys.readouterr().err


def test_bad_stage_arguments_are_named(runs, capsys):
    rc = main(["train", "causal", "--teacher", os.path.join(runs["teacher"], "teacher"), "--out",
               str(runs["root"] / "bad"), "--latent-frames", "10"])
    assert rc == 2 and "--latent-frames must be a positive multiple of --block-frames (3), got 10" in capsys.readouterr().err
    rc = main(["train", "teacher", "--vae", str(runs["root"] / "nope"), "--out", str(runs["root"] / "bad2"),
               "--preset", "test"])
    assert rc == 2 and "is not a VAE folder" in capsys.readouterr().err


def test_ship_halves_the_transformer_and_loads_the_same_model(runs, tmp_path, capsys):
    target = str(tmp_path / "assets" / "videossm-hybrid")
    assert main(["train", "ship", "--student", os.path.join(runs["causal"], "student"), "--to", target]) == 0
    full = load_safetensors(os.path.join(runs["causal"], "student", "transformer.safetensors"))
    half = load_safetensors(os.path.join(target, "transformer.safetensors"))
    assert all(half[k].dtype == torch.float16 and torch.allclose(half[k].float(), v, atol=1e-2, rtol=1e-3)
               for k, v in full.items())
    a, _ = VideoSSMPipeline.from_pretrained(os.path.join(runs["causal"], "student")).generate(
        "a red circle moving right on a gray background", seconds=1, seed=3)
    b, _ = VideoSSMPipeline.from_pretrained(target).generate("a red circle moving right on a gray background",
                                                             seconds=1, seed=3)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 3.0
    # the VAE keeps only its decoder, in fp16; encoding with it is refused with a message
    from safetensors.torch import load_file

    from videossm.config import ConfigError
    from videossm.models.vae import load_vae

    vae_weights = load_file(os.path.join(target, "vae", "diffusion_pytorch_model.safetensors"))
    trained = AutoencoderKLWan.from_pretrained(os.path.join(runs["causal"], "student", "vae")).state_dict()
    assert vae_weights and all(k.startswith(("decoder.", "post_quant_conv.")) for k in vae_weights)
    assert all(v.dtype == torch.float16 and torch.allclose(v.float(), trained[k], atol=1e-2, rtol=1e-3)
               for k, v in vae_weights.items())
    assert {k for k in trained if k.startswith(("decoder.", "post_quant_conv."))} == set(vae_weights)
    with pytest.raises(ConfigError, match="shipped decoder-only"):
        load_vae(os.path.join(target, "vae")).encode(torch.zeros(1, 3, 1, 32, 32))
    del vae_weights["decoder.conv_out.weight"]  # a decoder-only VAE missing a decoder tensor is refused
    from safetensors.torch import save_file

    save_file(vae_weights, os.path.join(target, "vae", "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ConfigError, match=r"missing \['decoder.conv_out.weight'\]"):
        load_vae(os.path.join(target, "vae"))
    # Stream settings other than training's: set at ship time, also on an already shipped checkpoint.
    wide = str(tmp_path / "assets" / "videossm-wide")
    assert main(["train", "ship", "--student", os.path.join(runs["causal"], "student"), "--to", wide,
                 "--window-frames", "24", "--sink-frames", "6"]) == 0
    settings = VideoSSMPipeline.from_pretrained(wide).stream_config
    assert (settings.window_frames, settings.sink_frames) == (24, 6)
    student_stream = read_config(os.path.join(runs["causal"], "student"))["stream"]
    assert read_config(target)["stream"] == student_stream and student_stream["window_frames"] != 24  # no flags
    weights = {name: open(os.path.join(wide, name), "rb").read()
               for name in ("transformer.safetensors", os.path.join("vae", "diffusion_pytorch_model.safetensors"))}
    assert main(["train", "ship", "--student", wide, "--to", wide, "--window-frames", "18"]) == 0  # onto itself
    settings = VideoSSMPipeline.from_pretrained(wide).stream_config
    assert (settings.window_frames, settings.sink_frames) == (18, 6)
    assert all(open(os.path.join(wide, name), "rb").read() == data for name, data in weights.items())
    assert main(["train", "ship", "--student", wide, "--to", wide, "--window-frames", "8"]) == 2
    assert "window_frames=8 is smaller than sink_frames + block_frames = 6 + 3" in capsys.readouterr().err
    assert VideoSSMPipeline.from_pretrained(wide).stream_config.window_frames == 18  # a refused ship changes nothing
    # An untrained model is never shipped.
    fresh = str(tmp_path / "fresh")
    VideoSSMPipeline.from_pretrained("test").save_pretrained(fresh)
    assert main(["train", "ship", "--student", fresh, "--to", str(tmp_path / "x")]) == 2


def test_ship_with_a_decoder_retrained_on_the_students_encoder(runs, tmp_path, capsys):
    from videossm.models.vae import load_vae

    student = os.path.join(runs["causal"], "student")
    dec = str(tmp_path / "dec")
    assert main(["train", "vae", "--out", dec, "--encoder-from", os.path.join(student, "vae"), "--z-dim", "4",
                 "--base-dim", "4", "--size", "32", "--seconds", "1", "--frames", "9", "--batch", "1", "--steps", "1",
                 "--eval-clips", "1", "--eval-frames", "9", "--cpu"]) == 0
    target = str(tmp_path / "shipped")
    assert main(["train", "ship", "--student", student, "--to", target, "--vae", os.path.join(dec, "vae")]) == 0
    shipped = load_vae(os.path.join(target, "vae")).state_dict()
    retrained = AutoencoderKLWan.from_pretrained(os.path.join(dec, "vae")).state_dict()
    decoding = [k for k in retrained if k.startswith(("decoder.", "post_quant_conv."))]
    assert decoding and all(torch.equal(shipped[k], retrained[k].half().float()) for k in decoding)
    assert VideoSSMPipeline.from_pretrained(target).generate("a red circle moving right on a gray background",
                                                             seconds=1, seed=3)[0].shape[0] > 0
    # a VAE with another encoder would decode another latent space: refused, naming the difference
    other = str(tmp_path / "other")
    torch.manual_seed(1)
    AutoencoderKLWan(**vae_config(z_dim=4, base_dim=4)).save_pretrained(other)
    assert main(["train", "ship", "--student", student, "--to", str(tmp_path / "x"), "--vae", other]) == 2
    assert "its encoder differs" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_a_shipped_student_continues_with_a_recovered_encoder(runs, tmp_path, capsys):
    """When the training runs are gone: `train vae --decoder-from` recovers an encoder for a shipped (decoder-only)
    student, and `train causal --init-student --vae` continues that student on world clips."""
    from videossm.models.vae import ENCODER_PREFIXES, load_vae

    shipped = str(tmp_path / "assets" / "videossm-hybrid")
    assert main(["train", "ship", "--student", os.path.join(runs["causal"], "student"), "--to", shipped]) == 0
    from safetensors.torch import save_file

    weights_path = os.path.join(shipped, "transformer.safetensors")  # set it apart from the teacher it came from
    weights = load_safetensors(weights_path)
    save_file({k: v + 0.5 if k.endswith("ffn.net.2.weight") else v for k, v in weights.items()}, weights_path)
    causal = ["train", "causal", "--source", "world", "--latent-frames", "6", "--window-frames", "9", "--steps", "2",
              "--batch", "1", *runs["common"]]
    assert main([*causal, "--init-student", shipped, "--out", str(tmp_path / "no_vae")]) == 2
    assert "decoder-only" in capsys.readouterr().err  # the shipped VAE cannot encode; the fix is named

    recovered = str(tmp_path / "vae-enc")
    assert main(["train", "vae", "--out", recovered, "--decoder-from", os.path.join(shipped, "vae"), "--z-dim", "4",
                 "--base-dim", "4", "--size", "32", "--seconds", "1", "--frames", "9", "--batch", "1", "--steps", "1",
                 "--eval-clips", "1", "--eval-frames", "9", "--cpu", "--train-latents", "mode", "--anchor-student",
                 shipped, "--anchor-clips", "2", "--anchor-blocks", "1", "--log-every", "1"]) == 0
    anchor_mse = read_csv(os.path.join(recovered, "log.csv"))["anchor_mse"]  # the fit to the student's own latents
    assert len(anchor_mse) == 1 and np.isfinite(anchor_mse).all() and anchor_mse[0] > 0
    assert "MSE(encoded latents" in json.loads(open(os.path.join(recovered, "metrics.json")).read())["loss"]
    out = str(tmp_path / "continued")
    assert main([*causal, "--init-student", shipped, "--vae", os.path.join(recovered, "vae"), "--out", out]) == 0
    metrics = json.loads(open(os.path.join(out, "metrics.json")).read())
    assert metrics["init_student"] == shipped and metrics["vae"] == os.path.join(recovered, "vae")
    start = {k: v.float() for k, v in load_safetensors(os.path.join(shipped, "transformer.safetensors")).items()}
    teacher = load_safetensors(os.path.join(runs["teacher"], "teacher", "transformer.safetensors"))
    after = {k.removeprefix("student."): v for k, v in _ckpt_model(out)["model"].items()}
    moved = [k for k, v in after.items() if not torch.equal(v, start[k])]
    assert moved, "the student trains"
    # it started from the shipped student, not the teacher: two steps at lr 1e-4 stay next to the student
    near = lambda w: max((after[k] - w[k].float()).abs().max().item() for k in moved)
    assert near(start) < 0.01 < near(teacher)
    exported = os.path.join(out, "student")
    exported_vae = load_vae(os.path.join(exported, "vae")).state_dict()
    assert any(k.startswith(ENCODER_PREFIXES) for k in exported_vae), "the exported student carries the full VAE"
    shipped_vae = load_vae(os.path.join(shipped, "vae")).state_dict()
    assert all(torch.equal(exported_vae[k], v) for k, v in shipped_vae.items())  # the same decoder
    assert VideoSSMPipeline.from_pretrained(exported).generate("a red circle moving right on a gray background",
                                                               seconds=1, seed=3)[0].shape[0] > 0

    assert main([*causal, "--init-student", shipped, "--vae", os.path.join(recovered, "vae"), "--out",
                 str(tmp_path / "w"), "--window-frames", "6"]) == 2
    assert "window_frames 9 != 6" in capsys.readouterr().err
    assert main([*causal, "--init-student", shipped, "--teacher", f"{runs['teacher']}/teacher", "--out",
                 str(tmp_path / "both")]) == 2
    assert "exactly one of --teacher" in capsys.readouterr().err
    other = str(tmp_path / "other")
    torch.manual_seed(1)
    AutoencoderKLWan(**vae_config(z_dim=4, base_dim=4)).save_pretrained(other)
    assert main([*causal, "--init-student", shipped, "--vae", other, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "its decoder differs from" in err and "train vae --decoder-from" in err


def rollout_run(runs, out, steps, *extra, mixture="plain=0.5,wraparound=0.5"):
    """`train rollout` of the chained runs' student on 9-frame clips, one clip a step."""
    return main(["train", "rollout", "--student", os.path.join(runs["long"], "student"), "--out", str(out),
                 "--latent-frames", "9", "--mixture", mixture, "--steps", str(steps), "--batch", "1",
                 *runs["common"], *extra])


def whole_and_resumed(run, tmp_path, steps, *flags):
    """The logs of `run` for `steps` steps in one go (tmp_path/whole) and stopped one step short, then resumed
    (tmp_path/split)."""
    assert run(tmp_path / "whole", steps, *flags) == 0
    assert run(tmp_path / "split", steps - 1, *flags) == 0
    assert run(tmp_path / "split", steps, *flags, "--resume") == 0
    return read_csv(tmp_path / "whole" / "log.csv"), read_csv(tmp_path / "split" / "log.csv")


def test_rollout_loss_compares_each_generated_block_with_its_own_frames(runs):
    """The rollout stage's loss: the student continues the context through the streaming generator, and each
    block's x0, decoded through the decoder's causal cache (primed on the context, detached between blocks),
    is compared with the clip's frames of that block. A target that is the reference decode of the same
    rollout gives zero; the same frames one step late do not."""
    from videossm.models.vae import decode_frames
    from videossm.sampling.stream import StreamingGenerator
    from videossm.train.causal import load_checkpoint
    from videossm.train.rollout import RolloutLoss

    pipe = load_checkpoint(os.path.join(runs["long"], "student"), "cpu")
    sc, cfg = pipe.stream_config, pipe.model_config
    assert sc.memory == "hybrid" and sc.window_frames == 6  # frames leave the window: the memory is written
    context = torch.randn(2, cfg.in_channels, 3, cfg.latent_height, cfg.latent_width,
                          generator=torch.Generator().manual_seed(4))
    text = torch.cat([pipe.text_encoder.encode(p) for p in ("a red circle moving right on a gray background",
                                                             "a blue square moving up on a black background")])
    exit_steps = [3, 1, 0]
    with torch.no_grad():  # the reference: the same rollout by hand, decoded in one call
        gen = StreamingGenerator(pipe.transformer, sc)
        state = gen.new_state(11, batch_size=2)
        gen.set_prompt(state, "p", text)
        gen.commit_block(state, context)
        blocks = [context]
        for e in exit_steps:
            blocks.append(gen.denoise_block(state, e))
            gen.commit_block(state, blocks[-1])
        latents = torch.cat(blocks, dim=2)  # [2, C, 12, h, w]
        vae = pipe.decoder.vae
        reference = decode_frames(vae, pipe.decoder.denormalize(latents), [None] * vae._cached_conv_counts["decoder"], 0)
    assert reference.shape[2] == 1 + 4 * 11
    mask = torch.zeros(2, 1, *reference.shape[2:], dtype=torch.bool)
    mask[:, :, :, 8:16, 8:16] = True
    model = RolloutLoss(pipe.transformer, sc, pipe.decoder, object_weight=5.0, memory_grad=True)
    loss, extra, pairs = model(context, text, reference, mask, exit_steps, seed=11)
    assert pairs is None  # no discriminator: the pixel loss alone
    assert loss.item() < 1e-10 and extra["object_mse"] < 1e-10
    late = torch.cat([reference[:, :, :1], reference[:, :, :-1]], dim=2)
    loss, extra, _ = model(context, text, late, mask, exit_steps, seed=11)
    assert loss.item() > 1e-4 and extra["object_mse"] > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipe.transformer.parameters())
    assert all(p.grad is None for p in vae.parameters()), "the decoder is frozen"
    gates = [b.memory for b in pipe.transformer.blocks]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for m in gates for n, p in m.named_parameters()
               if "gate" in n or "A_log" in n), "the memory's write path learns from later blocks"


def test_rollout_stage_trains_resumes_exactly_and_exports_a_student(runs, tmp_path, capsys):
    """`train rollout` on the world's clips: the context blocks come from the VAE's encoder, the targets are the
    rendered frames with their exact object masks, and a resumed run logs the losses of an uninterrupted one."""
    import numpy as np

    from videossm.train.data import batch_rng
    from videossm.train.rollout import WorldRollouts
    from videossm.world import sample_training_clip

    student = os.path.join(runs["long"], "student")

    def run(out, steps, *extra):
        return rollout_run(runs, out, steps, *extra)

    assert run(tmp_path / "whole", 3) == 0
    assert run(tmp_path / "split", 2) == 0 and run(tmp_path / "split", 3, "--resume") == 0
    whole, split = read_csv(tmp_path / "whole" / "log.csv"), read_csv(tmp_path / "split" / "log.csv")
    assert list(whole["step"]) == [1, 2, 3] and np.isfinite(whole["loss"]).all() and (whole["object_mse"] >= 0).all()
    np.testing.assert_allclose(split["loss"], whole["loss"], rtol=1e-5)
    before = load_safetensors(os.path.join(student, "transformer.safetensors"))
    after = _ckpt_model(tmp_path / "whole")["model"]
    assert any(not torch.equal(v, before[k.removeprefix("student.")]) for k, v in after.items())
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert metrics["stage"] == "rollout" and metrics["student"] == student and metrics["memory"] == "hybrid"
    pipe = VideoSSMPipeline.from_pretrained(str(tmp_path / "whole" / "student"))
    assert pipe.trained and pipe.stream_config.window_frames == 6
    assert pipe.generate("a red circle moving right on a gray background", seconds=1, seed=0)[0].shape[0] > 0

    # the clips: the context is the encoding of the clip's first frames; the targets are its frames and masks
    from videossm.train.data import load_frozen_vae

    vae = load_frozen_vae(os.path.join(student, "vae"), "cpu")
    data = WorldRollouts(vae, pipe.model_config, 9, 3, {"plain": 1.0})
    clips = data.batch(batch_rng(0, 0, 5), 2)
    rng = batch_rng(0, 0, 5)
    truth = [sample_training_clip(rng, 33 / 16, 32, 16, {"plain": 1.0}) for _ in range(2)]
    assert clips.prompts == [c.prompt for c in truth] and clips.pixels.shape == (2, 3, 33, 32, 32)
    np.testing.assert_array_equal(((clips.pixels + 1) * 127.5).round().permute(0, 2, 3, 4, 1).numpy(),
                                  np.stack([c.frames[:33] for c in truth]).astype(np.float32))
    for b, clip in enumerate(truth):
        for t in (0, 16, 32):
            assert torch.equal(clips.object_mask[b, 0, t], torch.from_numpy(clip.object_mask(t)))
    torch.testing.assert_close(clips.context, data.latents.encode(np.stack([c.frames[:9] for c in truth])))

    # the window and sink are the student's unless set (the shipped ones stream wider than they trained)
    assert run(tmp_path / "wide", 1, "--window-frames", "9", "--sink-frames", "0") == 0
    wide = VideoSSMPipeline.from_pretrained(str(tmp_path / "wide" / "student")).stream_config
    assert (wide.window_frames, wide.sink_frames) == (9, 0)
    assert run(tmp_path / "whole", 4, "--resume", "--window-frames", "9") == 2  # not what the run trained with
    assert "stream.window_frames: 6 in the checkpoint, 9 now" in capsys.readouterr().err
    assert run(tmp_path / "bad", 1, "--window-frames", "2") == 2
    assert "window_frames=2 is smaller than sink_frames + block_frames" in capsys.readouterr().err
    assert run(tmp_path / "bad", 1, "--context-blocks", "3") == 2
    assert "--context-blocks 3 leaves no block to generate" in capsys.readouterr().err
    assert run(tmp_path / "bad", 1, "--object-weight", "0") == 2
    assert "--object-weight must be > 0, got 0.0" in capsys.readouterr().err
    shipped = str(tmp_path / "shipped")
    assert main(["train", "ship", "--student", student, "--to", shipped]) == 0
    assert main(["train", "rollout", "--student", shipped, "--out", str(tmp_path / "bad"), "--latent-frames",
                 "9"]) == 2
    assert "decoder-only" in capsys.readouterr().err  # a shipped student needs --vae; the fix is named


def test_rollout_adversarial_term_judges_each_block_with_the_frames_before_it(runs):
    """With a discriminator, each generated block is judged with the `history_frames` pixel frames before it
    (the clip through the VAE before the first block, the student's own after), against the same span of the
    clip through the VAE; with --pixel-weight 0 the loss is the adversarial term alone, and it trains the
    student."""
    from videossm.train.adversarial import BlockDiscriminator, generator_loss, pooled_text
    from videossm.train.rollout import RolloutLoss

    pipe = load_checkpoint(os.path.join(runs["long"], "student"), "cpu")
    sc, cfg = pipe.stream_config, pipe.model_config
    gen = torch.Generator().manual_seed(4)
    context = torch.randn(2, cfg.in_channels, 3, cfg.latent_height, cfg.latent_width, generator=gen)
    text = torch.cat([pipe.text_encoder.encode(p) for p in ("a red circle moving right on a gray background",
                                                             "a blue square moving up on a black background")])
    frames = 1 + 4 * 8  # context block + 2 generated blocks of 3 latent frames
    pixels = torch.rand(2, 3, frames, cfg.height, cfg.width, generator=gen) * 2 - 1
    seen = torch.rand(2, 3, frames, cfg.height, cfg.width, generator=gen) * 2 - 1
    mask = torch.zeros(2, 1, frames, cfg.height, cfg.width, dtype=torch.bool)
    disc = BlockDiscriminator(cfg.text_dim, width=4)
    model = RolloutLoss(pipe.transformer, sc, pipe.decoder, object_weight=5.0, memory_grad=True, pixel_weight=0.0,
                        adversarial_weight=0.5)
    loss, extra, pairs = model(context, text, pixels, mask, [2, 0], seed=3, disc=disc, seen=seen)
    history = cfg.vae_scale_temporal
    assert pairs.real.shape == pairs.fake.shape == (4, 3, history + 12, cfg.height, cfg.width)
    torch.testing.assert_close(pairs.real[:2], seen[:, :, 9 - history:21])  # block 1: frames 9-20
    torch.testing.assert_close(pairs.real[2:], seen[:, :, 21 - history:33])
    torch.testing.assert_close(pairs.fake[:2, :, :history], seen[:, :, 9 - history:9])  # the context's, through the VAE
    torch.testing.assert_close(pairs.fake[2:, :, :history], pairs.fake[:2, :, -history:])  # then the student's own
    torch.testing.assert_close(pairs.text, torch.cat([pooled_text(text, 0)] * 2))
    torch.testing.assert_close(loss, 0.5 * generator_loss(disc, pairs.fake, pairs.text))
    assert extra["adv_loss"] > 0 and extra["pixel_loss"] > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipe.transformer.parameters())
    assert all(p.grad is None for p in disc.parameters()), "the student's term leaves the discriminator alone"


def test_rollout_stage_with_a_discriminator_resumes_exactly(runs, tmp_path, capsys):
    student = os.path.join(runs["long"], "student")

    def run(out, steps, *extra):
        return rollout_run(runs, out, steps, "--adversarial-weight", "0.1", "--disc-width", "4", "--disc-steps", "2",
                           *extra)

    assert run(tmp_path / "whole", 3) == 0
    assert run(tmp_path / "split", 2) == 0 and run(tmp_path / "split", 3, "--resume") == 0
    whole, split = read_csv(tmp_path / "whole" / "log.csv"), read_csv(tmp_path / "split" / "log.csv")
    for column in ("loss", "pixel_loss", "adv_loss", "disc_loss", "disc_real_acc", "disc_fake_acc"):
        assert np.isfinite(whole[column]).all(), column
        np.testing.assert_allclose(split[column], whole[column], rtol=1e-5, err_msg=column)
    weights = _ckpt_model(tmp_path / "whole")["model"]
    assert any(k.startswith("disc.") for k in weights) and any(k.startswith("rollout.student.") for k in weights)
    assert VideoSSMPipeline.from_pretrained(str(tmp_path / "whole" / "student")).trained
    # a checkpoint copied into a new folder exports there, with no log to take final losses from
    (tmp_path / "copy").mkdir()
    shutil.copy(sorted((tmp_path / "whole").glob("ckpt-*.pt"))[-1], tmp_path / "copy")
    assert run(tmp_path / "copy", 3, "--resume") == 0
    metrics = json.loads((tmp_path / "copy" / "metrics.json").read_text())
    assert metrics["final_loss"] is None and metrics["steps"] == 3
    assert VideoSSMPipeline.from_pretrained(str(tmp_path / "copy" / "student")).trained
    # a run of the plain stage cannot be resumed with the term switched on: the configs differ
    assert main(["train", "rollout", "--student", student, "--out", str(tmp_path / "plain"), "--latent-frames", "9",
                 "--steps", "1", "--batch", "1", *runs["common"]]) == 0
    assert run(tmp_path / "plain", 2) == 2
    assert "different configuration" in capsys.readouterr().err
    for flag, value, message in (("--adversarial-weight", "-1", "--adversarial-weight must be >= 0, got -1.0"),
                                 ("--disc-lr", "0", "--disc-lr must be > 0, got 0.0"),
                                 ("--disc-width", "0", "--disc-width must be >= 1")):
        assert run(tmp_path / "bad", 1, flag, value) == 2
        assert message in capsys.readouterr().err
    assert run(tmp_path / "bad", 1, "--adversarial-weight", "0", "--pixel-weight", "0") == 2
    assert "leave the stage no loss" in capsys.readouterr().err
    for value in ("0", "1.5"):
        assert run(tmp_path / "bad", 1, "--disc-max-acc", value) == 2
        assert f"--disc-max-acc must be in (0, 1], got {float(value)}" in capsys.readouterr().err
    # the balance logs how many of its --disc-steps the discriminator took, and is part of the run's config
    assert run(tmp_path / "balanced", 2, "--disc-max-acc", "0.75") == 0
    updates = read_csv(tmp_path / "balanced" / "log.csv")["disc_updates"]
    assert ((updates >= 0) & (updates <= 2)).all(), updates
    assert "disc_updates" not in whole
    assert run(tmp_path / "balanced", 3, "--resume") == 2
    assert "different configuration" in capsys.readouterr().err


def test_default_model_is_the_shipped_checkpoint_of_the_memory_mode(runs, tmp_path, monkeypatch):
    import videossm.config as config
    from videossm.cli import build_parser, load_pipe
    from videossm.eval.world.harness import parse_system

    assets = tmp_path / "assets"
    monkeypatch.setattr(config, "ASSETS_DIR", str(assets))
    monkeypatch.delenv("VIDEOSSM_MODEL", raising=False)
    assert config.default_model() == config.default_model("sink") == "tiny"  # nothing shipped: untrained preset
    hybrid, sink = str(assets / "videossm-hybrid"), str(assets / "videossm-sink")
    assert main(["train", "ship", "--student", os.path.join(runs["causal"], "student"), "--to", hybrid]) == 0
    assert config.default_model() == config.default_model("sink") == hybrid  # the baselines fall back to it
    assert VideoSSMPipeline.from_pretrained(config.default_model()).trained
    assert main(["train", "ship", "--student", os.path.join(runs["dmd"], "student"), "--to", sink]) == 0
    assert config.default_model("sink") == sink and config.default_model("window") == config.default_model() == hybrid
    # `generate --memory sink` and eval-world's bare `sink` system use the sink checkpoint
    args = build_parser().parse_args(["generate", "--prompt", "a red circle moving right on a gray background",
                                      "--memory", "sink"])
    assert load_pipe(args).stream_config.memory == "sink" and args.model == sink
    assert parse_system("sink").model == sink and parse_system("sink").label == "sink"
    assert parse_system("window").model == hybrid and parse_system("hybrid", "tiny").model == "tiny"
    # the app serves the shipped baselines beside hybrid; its memory radio picks the one trained for the mode
    import gradio as gr

    from videossm.ui import AppConfig, WorkerPool

    pool = WorkerPool(AppConfig(models=(hybrid, sink, "test"), devices=("cpu",), warmup=False))
    assert pool.model_for(None, "sink") == pool.model_for(hybrid, "sink") == sink
    assert pool.model_for(sink, "hybrid") == hybrid and pool.model_for(sink, "window") == sink  # none for window
    assert pool.model_for("test", "sink") == "test"  # a preset or a folder of one's own is taken as given
    assert (pool.memory_of(None), pool.memory_of(sink), pool.memory_of("test")) == ("hybrid", "sink", None)
    # the app's Memory radio and Model dropdown follow each other
    from videossm.ui.app import App

    app = App(pool)
    assert app.follow_memory("sink", hybrid) == sink and app.follow_memory("hybrid", sink) == hybrid
    assert app.follow_memory("sink", "test") == "test"
    assert app.follow_model(sink, "hybrid") == "sink" and app.follow_model(hybrid, "sink") == "hybrid"
    assert isinstance(app.follow_model("test", "sink"), type(gr.skip()))  # the radio stays where the visitor put it


def test_eval_world_measures_the_teacher_on_single_prompt_jobs(runs, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval-world", "--systems", f"teacher:{runs['teacher']}/teacher", "--videos", "2", "--seconds", "1",
            "--scenarios", "plain", "--out-dir", str(out), "--bootstrap", "50", "--no-progress", "--save-videos"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    videos = results["videos"]["teacher"]
    assert len(videos) == 2 and all(v["trained"] for v in videos.values())
    assert all(v["gen_fps"] > 0 and len(v["curves"]["t"]) == 1 for v in videos.values())
    assert len(list((out / "videos" / "teacher").glob("*.mp4"))) == 2
    capsys.readouterr()
    assert main([*argv[:-6], "--scenarios", "prompt_switch", "--out-dir", str(tmp_path / "switch"),
                 "--no-progress"]) == 2
    assert "a teacher samples one prompt per clip" in capsys.readouterr().err
    assert main(["eval-world", "--systems", "teacher:nowhere", "--out-dir", str(out)]) == 2
    assert all(v["sampling"] == {"steps": 32, "guidance": 3.0, "shift": 5.0, "start_sigma": 1.0} for v in videos.values())
    capsys.readouterr()  # the cache holds guidance-3 videos: other settings must not be mixed in silently
    assert main([*argv, "--teacher-guidance", "1"]) == 2
    assert "was sampled with {'steps': 32, 'guidance': 3.0, 'shift': 5.0, 'start_sigma': 1.0}" in capsys.readouterr().err


def test_teacher_system_samples_with_the_given_steps_and_guidance(runs):
    from videossm.config import ConfigError
    from videossm.eval.world.harness import System, TeacherVideos, make_jobs

    system = System("teacher", os.path.join(runs["teacher"], "teacher"), "teacher")
    job = make_jobs(1, 1.0, ("plain",))[0]
    settings = [(1.0, 5.0), (3.0, 5.0), (3.0, 1.0)]  # (guidance, shift)
    frames = [TeacherVideos(system, "cpu", steps=2, guidance=g, shift=s).generate(job, 1.0, 16)[0] for g, s in settings]
    assert all(f.shape == frames[0].shape and len(f) == 16 for f in frames)
    assert np.abs(frames[0].astype(int) - frames[1]).mean() > 0.5  # the guidance reaches the ODE
    assert np.abs(frames[2].astype(int) - frames[1]).mean() > 0.5  # and so does the shift
    with pytest.raises(ConfigError, match="teacher steps must be >= 1, got 0"):
        TeacherVideos(system, "cpu", steps=0)
    with pytest.raises(ConfigError, match="teacher shift must be > 0, got 0"):
        TeacherVideos(system, "cpu", shift=0)


def test_teacher_from_a_lightly_noised_world_clip_keeps_it(runs):
    """start_sigma < 1 starts the ODE from the job's own clip: at a low noise level the video stays close to
    that clip (as the teacher's VAE reconstructs it), far closer than a sample from pure noise."""
    from videossm.eval.world.harness import System, TeacherVideos, make_jobs
    from videossm.models.vae import to_uint8_frames

    system = System("teacher", os.path.join(runs["teacher"], "teacher"), "teacher")
    job = make_jobs(1, 1.0, ("plain",))[0]
    teacher = TeacherVideos(system, "cpu", steps=8)
    decoder = teacher.pipe.decoder
    clean = teacher.encode_reference(job, 1.0, 16, latent_frames=5)
    assert clean.shape[2] == 5  # 17 pixel frames: the 16 of the video and its last again
    target = to_uint8_frames(decoder.decode(decoder.new_state(), clean))[:16].astype(int)
    error = {}
    for start in (0.05, 1.0):
        teacher.start_sigma = start
        error[start] = np.abs(teacher.generate(job, 1.0, 16)[0] - target).mean()
    assert error[0.05] < 0.5 * error[1.0], error
    from videossm.config import ConfigError
    from videossm.sampling.ode import sample_video_latents

    text = teacher.pipe.encode_prompt(job.segments[0][1])
    with pytest.raises(ConfigError, match="start_sigma 0.5 < 1 needs the clean latents"):
        sample_video_latents(teacher.pipe.transformer, text, 5, 8, 3.0, 5.0, 0, None, 0.5)
    with pytest.raises(ConfigError, match=r"clean latents \(1, \d+, 4, "):
        sample_video_latents(teacher.pipe.transformer, text, 5, 8, 3.0, 5.0, 0, clean[:, :, :4], 0.5)


def test_model_card_follows_the_recipe_chain_and_quotes_the_eval_table(runs, tmp_path):
    recipe = tmp_path / "runs"
    recipe.mkdir()
    os.symlink(runs["teacher"], recipe / "teacher")  # the recipe's folder names; the VAE run is missing
    os.symlink(runs["causal"], recipe / "causal")  # one ODE init shared by the modes
    for stage in ("dmd", "long"):
        os.symlink(runs[stage], recipe / f"{stage}-hybrid")
    assets = tmp_path / "assets"
    assert main(["train", "ship", "--student", os.path.join(runs["long"], "student"),
                 "--to", str(assets / "videossm-hybrid")]) == 0
    eval_dir = tmp_path / "eval"
    assert main(["eval-world", "--systems", "renderer", "--videos", "1", "--seconds", "2", "--out-dir", str(eval_dir),
                 "--no-progress", "--bootstrap", "20"]) == 0
    card = assets / "MODEL_CARD.md"
    chain = ["--chain", "vae,teacher,causal,dmd-{mode},long-{mode}"]  # the fixture's chain, one causal run
    assert main(["train", "card", "--runs", str(recipe), "--eval", str(eval_dir), "--to", str(card), *chain]) == 0
    text = card.read_text()
    teacher_cmd = json.load(open(os.path.join(runs["teacher"], "metrics.json")))["command"]
    assert teacher_cmd and f"`{teacher_cmd}`" in text  # the command the run recorded, verbatim
    assert "| vae | " in text and "not run yet" in text  # the missing VAE run is said, not hidden
    stream = read_config(str(assets / "videossm-hybrid"))["stream"]
    assert f"| `assets/videossm-hybrid` | hybrid | yes | {stream['window_frames']} / {stream['sink_frames']} |" in text
    assert "| `assets/videossm-sink` | sink | not yet |" in text
    assert (eval_dir / "table.md").read_text().strip() in text
    assert (assets / "model_card_curves.png").exists()
    assert "red triangle on purple" in text  # the held-out combinations, from the split itself
    sink = text[text.index("### `sink`"):text.index("### `window`")]
    assert f"| causal | `{recipe / 'causal'}` | `" in sink  # the shared init serves the baselines too
    assert f"| dmd | `{recipe / 'dmd-sink'}` | not run yet" in sink
    assert "causal ODE init (regression on the teacher's trajectories)" in text  # the fixture's --source teacher
    os.symlink(runs["causal"], recipe / "causal-window")  # a mode with its own init uses it
    text = main(["train", "card", "--runs", str(recipe), "--to", str(card), *chain]) == 0 and card.read_text()
    assert f"| causal | `{recipe / 'causal-window'}` | `" in text[text.index("### `window`"):]
    os.unlink(recipe / "causal")  # a shared init made with --source world is named as such
    (recipe / "causal").mkdir()
    metrics = json.load(open(os.path.join(runs["causal"], "metrics.json")))
    json.dump({**metrics, "source": "world"}, open(recipe / "causal" / "metrics.json", "w"))
    text = main(["train", "card", "--runs", str(recipe), "--to", str(card), *chain]) == 0 and card.read_text()
    assert "teacher forcing on the world's noised clips" in text and "ODE init" not in text
    text = main(["train", "card", "--runs", str(recipe), "--to", str(card)]) == 0 and card.read_text()
    assert f"| causal-cgrad-long | `{recipe / 'causal-cgrad-long'}` | not run yet" in text  # the recipe's chain
    assert f"| dmd3 | `{recipe / 'dmd3-hybrid'}` | not run yet" in text
    assert f"| teacher-from-hybrid | `{recipe / 'teacher-from-hybrid'}` | not run yet" in text  # then the return
    assert f"| long8-w24-obj20 | `{recipe / 'long8-w24-obj20-sink'}` | not run yet" in text  # stage's chain
    # Runs whose folders are gone keep their rows (and the init's kind) from the card being replaced, and the
    # checkpoints table follows a re-ship with other stream settings.
    os.unlink(recipe / "teacher")
    shutil.rmtree(recipe / "causal")
    assert main(["train", "ship", "--student", str(assets / "videossm-hybrid"), "--to", str(assets / "videossm-hybrid"),
                 "--window-frames", "12", "--sink-frames", "6"]) == 0
    kept = main(["train", "card", "--runs", str(recipe), "--to", str(card)]) == 0 and card.read_text()
    assert f"| teacher | `{recipe / 'teacher'}` | `{teacher_cmd}` |" in kept
    assert kept.count(f"| causal | `{recipe / 'causal'}` | `") == 2  # hybrid and sink (window has its own)
    assert "teacher forcing on the world's noised clips" in kept
    assert "| `assets/videossm-hybrid` | hybrid | yes | 12 / 6 |" in kept
    assert kept.replace("12 / 6", f"{stream['window_frames']} / {stream['sink_frames']}") == text  # nothing else
    (tmp_path / "fresh.md").write_text("")  # a card with nothing recorded says so
    fresh = main(["train", "card", "--runs", str(recipe), "--to", str(tmp_path / "fresh.md"),
                  "--assets", str(assets)]) == 0 and (tmp_path / "fresh.md").read_text()
    assert f"| teacher | `{recipe / 'teacher'}` | not run yet" in fresh


def test_model_card_names_a_missing_eval_table(tmp_path, capsys):
    assert main(["train", "card", "--runs", str(tmp_path), "--eval", str(tmp_path / "nope"),
                 "--to", str(tmp_path / "card.md")]) == 2
    assert "holds no table.md" in capsys.readouterr().err


def test_rollout_probe_term_reads_every_generated_frame_and_resumes_exactly(runs, tmp_path, capsys):
    """`train rollout --probe-weight`: a frozen world probe reads each generated block's frames against the clip's
    records. Alone (--pixel-weight 0) it is the whole loss and trains the student, not the probe; in a run it is
    logged, part of the run's config, and a resumed run logs what an uninterrupted one does."""
    from videossm.eval.world.probe import PROBE_DIR, load_probe
    from videossm.train.probe_term import clip_truth
    from videossm.train.rollout import RolloutLoss
    from videossm.world import sample_training_clip

    pipe = load_checkpoint(os.path.join(runs["long"], "student"), "cpu")
    sc, cfg = pipe.stream_config, pipe.model_config
    probe = load_probe().requires_grad_(False)
    gen = torch.Generator().manual_seed(4)
    context = torch.randn(1, cfg.in_channels, 3, cfg.latent_height, cfg.latent_width, generator=gen)
    clip = sample_training_clip(2, 33 / 16, cfg.height, 16, {"plain": 1.0})
    text = pipe.text_encoder.encode(clip.prompt)
    pixels = torch.from_numpy(clip.frames[:33]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    mask = torch.zeros(1, 1, 33, cfg.height, cfg.width, dtype=torch.bool)
    model = RolloutLoss(pipe.transformer, sc, pipe.decoder, object_weight=5.0, memory_grad=True, pixel_weight=0.0,
                        probe=probe, probe_weight=0.5)
    loss, extra, _ = model(context, text, pixels, mask, [2, 0], seed=3, truth=clip_truth([clip], 33, probe.config))
    assert abs(loss.item() - 0.5 * extra["probe_loss"]) < 1e-5 and extra["probe_loss"] > 0
    assert 0 <= extra["probe_read_right"] <= 1 and extra["pixel_loss"] > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipe.transformer.parameters())
    assert all(p.grad is None for p in probe.parameters()), "the probe is frozen"

    student = os.path.join(runs["long"], "student")

    def run(out, steps, *extra):
        return rollout_run(runs, out, steps, "--probe-weight", "0.2", "--probe", PROBE_DIR, *extra)

    assert run(tmp_path / "whole", 2) == 0
    assert "the probe eval-world measures with" in capsys.readouterr().out  # the shipped probe: a warning
    assert run(tmp_path / "split", 1) == 0 and run(tmp_path / "split", 2, "--resume") == 0
    whole, split = read_csv(tmp_path / "whole" / "log.csv"), read_csv(tmp_path / "split" / "log.csv")
    for column in ("loss", "pixel_loss", "probe_loss", "probe_presence", "probe_color", "probe_shape"):
        assert np.isfinite(whole[column]).all(), column
        np.testing.assert_allclose(split[column], whole[column], rtol=1e-5, err_msg=column)
    np.testing.assert_allclose(whole["loss"], whole["pixel_loss"] + 0.2 * whole["probe_loss"], rtol=1e-5)
    config = torch.load(sorted((tmp_path / "whole").glob("ckpt-*.pt"))[-1], weights_only=False)["config"]
    assert config["probe_weight"] == 0.2 and config["probe"] == os.path.abspath(PROBE_DIR)
    assert VideoSSMPipeline.from_pretrained(str(tmp_path / "whole" / "student")).trained
    assert main(["train", "rollout", "--student", student, "--out", str(tmp_path / "whole"), "--latent-frames", "9",
                 "--mixture", "plain=0.5,wraparound=0.5", "--steps", "3", "--batch", "1", *runs["common"],
                 "--resume"]) == 2
    assert "different configuration" in capsys.readouterr().err
    for flags, message in ((("--probe-weight", "-1"), "--probe-weight must be >= 0, got -1.0"),
                           (("--probe-weight", "0", "--pixel-weight", "0"), "leave the stage no loss"),
                           (("--probe-weight", "0"), f"--probe {PROBE_DIR} is unused without --probe-weight > 0")):
        assert run(tmp_path / "bad", 1, *flags) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "rollout", "--student", student, "--out", str(tmp_path / "bad"), "--latent-frames", "9",
                 "--probe-weight", "1", *runs["common"]]) == 2
    assert "--probe-weight 1.0 needs --probe PROBE_DIR" in capsys.readouterr().err


def test_rollout_color_term_compares_each_frame_with_the_world_through_the_vae(runs, tmp_path, capsys):
    """`train rollout --color-weight`: each generated block's share of the object's colour against the same frames
    of the clip through the VAE. Alone (--pixel-weight 0) it is the whole loss and trains the student; in a run it
    is logged, part of the run's config, and a resumed run logs what an uninterrupted one does."""
    from videossm.train.color_term import color_area_term, object_rgb
    from videossm.train.rollout import RolloutLoss

    pipe = load_checkpoint(os.path.join(runs["long"], "student"), "cpu")
    sc, cfg = pipe.stream_config, pipe.model_config
    gen = torch.Generator().manual_seed(4)
    context = torch.randn(1, cfg.in_channels, 3, cfg.latent_height, cfg.latent_width, generator=gen)
    text = pipe.text_encoder.encode("a red circle moving right on a gray background")
    frames = 1 + 4 * 8  # the context block and 2 generated blocks
    pixels = torch.rand(1, 3, frames, cfg.height, cfg.width, generator=gen) * 2 - 1
    mask = torch.zeros(1, 1, frames, cfg.height, cfg.width, dtype=torch.bool)
    mask[..., 4:10, 4:10] = True
    seen = pixels.clone()
    seen[:, :, 9:21] = torch.tensor([220, 30, 30]).view(1, 3, 1, 1, 1) / 127.5 - 1  # block 1's frames all red
    rgb = object_rgb(["red"])
    model = RolloutLoss(pipe.transformer, sc, pipe.decoder, object_weight=5.0, memory_grad=True, pixel_weight=0.0,
                        color_weight=0.5)
    loss, extra, _ = model(context, text, pixels, mask, [2, 0], seed=3, seen=seen, rgb=rgb)
    assert abs(loss.item() - 0.5 * extra["color_loss"]) < 1e-6
    share = 36 / cfg.height / cfg.width
    # block 1 asks for a whole frame of red (1 / share per frame); a student's frames are far from that
    assert extra["color_loss"] > 0.4 / share and extra["color_share_world"] > 0.45
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipe.transformer.parameters())
    with torch.no_grad():  # the term's value is the mean of the blocks' terms against their own frames
        term, _ = color_area_term(seen[:, :, 9:21], seen[:, :, 9:21], rgb, torch.tensor([share]), 0.25)
    assert term.item() == 0

    def run(out, steps, *extra):
        return rollout_run(runs, out, steps, "--color-weight", "0.3", *extra)

    assert run(tmp_path / "whole", 2) == 0
    assert run(tmp_path / "split", 1) == 0 and run(tmp_path / "split", 2, "--resume") == 0
    whole, split = read_csv(tmp_path / "whole" / "log.csv"), read_csv(tmp_path / "split" / "log.csv")
    for column in ("loss", "pixel_loss", "color_loss", "color_share_made", "color_share_world"):
        assert np.isfinite(whole[column]).all(), column
        np.testing.assert_allclose(split[column], whole[column], rtol=1e-5, err_msg=column)
    np.testing.assert_allclose(whole["loss"], whole["pixel_loss"] + 0.3 * whole["color_loss"], rtol=1e-5)
    config = torch.load(sorted((tmp_path / "whole").glob("ckpt-*.pt"))[-1], weights_only=False)["config"]
    assert config["color_weight"] == 0.3 and config["color_sigma"] == 0.25 and "color_side" not in config
    assert run(tmp_path / "under", 1, "--color-side", "under") == 0
    under = torch.load(sorted((tmp_path / "under").glob("ckpt-*.pt"))[-1], weights_only=False)["config"]
    assert under["color_side"] == "under"
    assert VideoSSMPipeline.from_pretrained(str(tmp_path / "whole" / "student")).trained
    for flags, message in ((("--color-weight", "-1"), "--color-weight must be >= 0, got -1.0"),
                           (("--color-sigma", "0"), "--color-sigma must be > 0, got 0.0"),
                           (("--color-weight", "0", "--pixel-weight", "0"), "leave the stage no loss")):
        assert run(tmp_path / "bad", 1, *flags) == 2
        assert message in capsys.readouterr().err


def test_rollout_pixel_phase_forgives_the_objects_timing(runs, tmp_path, capsys):
    """`train rollout --pixel-phase K`: each block's pixel loss is the least over the clip re-drawn with its object
    up to K frames early or late. Its exact timing's loss is what the plain pixel loss gives the same rollout; the
    chosen one is never more; in a run it is logged, in the config, and resumes exactly."""
    from videossm.train.phase_term import phase_targets
    from videossm.train.rollout import RolloutLoss
    from videossm.world import sample_training_clip

    pipe = load_checkpoint(os.path.join(runs["long"], "student"), "cpu")
    sc, cfg = pipe.stream_config, pipe.model_config
    gen = torch.Generator().manual_seed(4)
    context = torch.randn(1, cfg.in_channels, 3, cfg.latent_height, cfg.latent_width, generator=gen)
    clip = sample_training_clip(3, 33 / 16, cfg.height, 16, {"plain": 1.0})
    text = pipe.text_encoder.encode(clip.prompt)
    pixels = torch.from_numpy(clip.frames[:33]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    mask = torch.from_numpy(np.stack([clip.object_mask(t) for t in range(33)]))[None, None]
    losses = {}
    for phase in (0, 3):
        model = RolloutLoss(pipe.transformer, sc, pipe.decoder, object_weight=5.0, memory_grad=True,
                            phase_frames=phase)
        losses[phase] = model(context, text, pixels, mask, [2, 0], seed=3,
                              phase=phase_targets([clip], 33, phase) if phase else None)[:2]
    model = RolloutLoss(pipe.transformer, sc, pipe.decoder, object_weight=5.0, memory_grad=True, phase_frames=3,
                        phase_per="clip")
    held, held_extra = model(context, text, pixels, mask, [2, 0], seed=3, phase=phase_targets([clip], 33, 3))[:2]
    (plain, _), (tolerant, extra) = losses[0], losses[3]
    assert abs(extra["pixel_exact"] - plain.item()) < 1e-5 * plain.item()
    assert abs(held_extra["pixel_exact"] - plain.item()) < 1e-5 * plain.item()
    assert 0 < tolerant.item() <= held.item() + 1e-7 <= plain.item() + 2e-7, "per block <= per clip <= exact"
    assert 0 <= extra["phase_shift"] <= 3 and held_extra["phase_shift"] in (0, 1, 2, 3)
    tolerant.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipe.transformer.parameters())

    def run(out, steps, *extra):
        return rollout_run(runs, out, steps, *extra)

    whole, split = whole_and_resumed(run, tmp_path, 2, "--pixel-phase", "2")
    for column in ("loss", "phase_shift", "pixel_exact"):
        assert np.isfinite(whole[column]).all(), column
        np.testing.assert_allclose(split[column], whole[column], rtol=1e-5, err_msg=column)
    assert (whole["loss"] <= whole["pixel_exact"] + 1e-7).all()
    config = torch.load(sorted((tmp_path / "whole").glob("ckpt-*.pt"))[-1], weights_only=False)["config"]
    assert config["pixel_phase"] == 2 and "pixel_phase_per" not in config
    assert run(tmp_path / "held", 1, "--pixel-phase", "2", "--pixel-phase-per", "clip") == 0
    held = torch.load(sorted((tmp_path / "held").glob("ckpt-*.pt"))[-1], weights_only=False)["config"]
    assert held["pixel_phase_per"] == "clip"
    assert run(tmp_path / "whole", 3, "--resume") == 2  # the flag is part of the run
    assert "different configuration" in capsys.readouterr().err
    for flags, message in ((("--pixel-phase", "-1"), "--pixel-phase must be >= 0 frames, got -1"),
                           (("--pixel-phase", "2", "--pixel-weight", "0", "--color-weight", "1"),
                            "--pixel-phase 2 is unused with --pixel-weight 0"),
                           (("--color-side", "under"), "--color-side under is unused without --color-weight > 0"),
                           (("--pixel-phase-per", "clip"), "--pixel-phase-per clip is unused without --pixel-phase > 0")):
        assert run(tmp_path / "bad", 1, *flags) == 2
        assert message in capsys.readouterr().err


def test_rollout_free_blocks_judge_the_stream_deep_in_its_own_history(runs, tmp_path, capsys):
    """`train rollout --free-blocks N`: after the context the student makes blocks on its own as at inference
    (every step, no graph, unjudged), and only the blocks after them are judged, against the frames of a clip
    rendered that much longer. The loss against the reference decode of the same stream is zero, one frame late
    it is not; the clips' targets are the longer clip's frames from the first judged one; a run logs the drawn
    count, keeps it in its config and resumes exactly. A discriminator sees the last free block's frames before
    the first judged block, against the clip through the VAE over the same frames."""
    from videossm.models.vae import decode_frames
    from videossm.train.adversarial import BlockDiscriminator
    from videossm.sampling.stream import StreamingGenerator
    from videossm.train.data import batch_rng, load_frozen_vae
    from videossm.train.rollout import RolloutLoss, WorldRollouts
    from videossm.world import sample_training_clip

    student = os.path.join(runs["long"], "student")
    pipe = load_checkpoint(student, "cpu")
    sc, cfg = pipe.stream_config, pipe.model_config
    context = torch.randn(1, cfg.in_channels, 3, cfg.latent_height, cfg.latent_width,
                          generator=torch.Generator().manual_seed(5))
    text = pipe.text_encoder.encode("a red circle moving right on a gray background")
    exit_steps = [1, 3]
    with torch.no_grad():  # the reference: context, two free blocks at every step, then the judged blocks
        gen = StreamingGenerator(pipe.transformer, sc)
        state = gen.new_state(7, batch_size=1)
        gen.set_prompt(state, "p", text)
        gen.commit_block(state, context)
        blocks = [context, gen.generate_block(state), gen.generate_block(state)]
        for e in exit_steps:
            blocks.append(gen.denoise_block(state, e))
            gen.commit_block(state, blocks[-1])
        vae = pipe.decoder.vae
        reference = decode_frames(vae, pipe.decoder.denormalize(torch.cat(blocks, dim=2)),
                                  [None] * vae._cached_conv_counts["decoder"], 0)  # [1, 3, 57, H, W]
    judged_from = 1 + 4 * 8  # the first pixel frame of latent frame 9, after 3 context and 6 free frames
    judged = reference[:, :, judged_from:]
    mask = torch.zeros(1, 1, *judged.shape[2:], dtype=torch.bool)
    mask[..., 8:16, 8:16] = True
    model = RolloutLoss(pipe.transformer, sc, pipe.decoder, object_weight=5.0, memory_grad=True)
    loss, extra, _ = model(context, text, judged, mask, exit_steps, seed=7, free_blocks=2, judged_from=judged_from)
    assert loss.item() < 1e-10 and extra["object_mse"] < 1e-10
    late = torch.cat([judged[:, :, :1], judged[:, :, :-1]], dim=2)
    loss, _, _ = model(context, text, late, mask, exit_steps, seed=7, free_blocks=2, judged_from=judged_from)
    assert loss.item() > 1e-4
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipe.transformer.parameters())
    with pytest.raises(ValueError, match="the targets start at pixel frame 9, but the first judged block's is 33"):
        model(context, text, judged, mask, exit_steps, seed=7, free_blocks=2, judged_from=9)
    history = cfg.vae_scale_temporal
    seen = torch.rand_like(reference) * 2 - 1  # the whole clip through the VAE: indexed from the clip's start
    adversarial = RolloutLoss(pipe.transformer, sc, pipe.decoder, object_weight=5.0, memory_grad=True,
                              adversarial_weight=0.5)
    _, extra, pairs = adversarial(context, text, judged, mask, exit_steps, seed=7, free_blocks=2,
                                  judged_from=judged_from, disc=BlockDiscriminator(cfg.text_dim, width=4), seen=seen)
    shown = reference.clamp(-1, 1)  # D sees frames as decoded for viewing
    torch.testing.assert_close(pairs.fake[:1, :, :history], shown[:, :, judged_from - history:judged_from])
    torch.testing.assert_close(pairs.real[:1], seen[:, :, judged_from - history:judged_from + 12])
    torch.testing.assert_close(pairs.fake[1:, :, history:], shown[:, :, judged_from + 12:])
    assert extra["adv_loss"] > 0

    # the clips: rendered free frames longer; the context is their start, the targets begin at the judged frames
    vae = load_frozen_vae(os.path.join(student, "vae"), "cpu")
    data = WorldRollouts(vae, cfg, 9, 3, {"plain": 1.0}, phase_frames=2)
    clips = data.batch(batch_rng(0, 0, 2), 1, free_frames=6)
    clip = sample_training_clip(batch_rng(0, 0, 2), 57 / 16, cfg.height, 16, {"plain": 1.0})
    assert clips.judged_from == judged_from and clips.pixels.shape[2] == 57 - judged_from
    np.testing.assert_array_equal(((clips.pixels + 1) * 127.5).round()[0].permute(1, 2, 3, 0).numpy(),
                                  clip.frames[judged_from:57].astype(np.float32))
    assert torch.equal(clips.object_mask[0, 0, 0], torch.from_numpy(clip.object_mask(judged_from)))
    assert torch.equal(clips.phase.masks[0, 0, 0], torch.from_numpy(clip.object_mask(judged_from, -2)))
    torch.testing.assert_close(clips.context, data.latents.encode(clip.frames[None, :9]))
    assert data.batch(batch_rng(0, 0, 2), 1).judged_from == 0  # without free frames: the whole clip, as before

    def run(out, steps, *extra):
        return rollout_run(runs, out, steps, *extra)

    whole, split = whole_and_resumed(run, tmp_path, 3, "--free-blocks", "2")
    assert np.isfinite(whole["loss"]).all() and set(whole["free_blocks"]) <= {0, 1, 2}
    np.testing.assert_allclose(split["loss"], whole["loss"], rtol=1e-5)
    config = torch.load(sorted((tmp_path / "whole").glob("ckpt-*.pt"))[-1], weights_only=False)["config"]
    assert config["free_blocks"] == 2
    before = load_safetensors(os.path.join(student, "transformer.safetensors"))
    after = _ckpt_model(tmp_path / "whole")["model"]
    assert any(not torch.equal(v, before[k.removeprefix("student.")]) for k, v in after.items())
    assert run(tmp_path / "whole", 4, "--resume") == 2  # the option is part of the run
    assert "different configuration" in capsys.readouterr().err
    assert run(tmp_path / "bad", 1, "--free-blocks", "-1") == 2
    assert "--free-blocks must be >= 0, got -1" in capsys.readouterr().err
    assert run(tmp_path / "adv", 2, "--free-blocks", "2", "--adversarial-weight", "0.1") == 0
    adv = read_csv(tmp_path / "adv" / "log.csv")
    assert np.isfinite(adv["adv_loss"]).all() and np.isfinite(adv["disc_loss"]).all() and "free_blocks" in adv


def test_rollout_anchor_keeps_the_first_block_from_noise(runs, tmp_path, capsys):
    """`train rollout --anchor-weight W`: the first block of a fresh stream from noise, which the rollouts never ask
    for, is held to what the frozen anchor makes of the same noise. At the last exit step it is inference's first
    block; the term is 0 for the anchor itself and not for a moved student, whose gradient it reaches; in a run it
    starts at 0, is logged, in the config, and resumes exactly."""
    from videossm.sampling.stream import StreamingGenerator
    from videossm.train.anchor_term import anchor_term, check_anchor, first_block

    student = os.path.join(runs["long"], "student")
    pipe, frozen = load_checkpoint(student, "cpu"), load_checkpoint(student, "cpu")
    sc = pipe.stream_config
    text = torch.cat([pipe.text_encoder.encode("a red circle moving right on a gray background"),
                      pipe.text_encoder.encode("a blue square moving up on a black background")])
    moving, anchor = StreamingGenerator(pipe.transformer, sc), StreamingGenerator(frozen.transformer, sc)
    last = sc.num_steps - 1
    state = moving.new_state(5, batch_size=2)
    moving.set_prompt(state, "two prompts", text)
    with torch.no_grad():
        torch.testing.assert_close(first_block(moving, text, last, 5, grad=False), moving.generate_block(state))
        assert anchor_term(moving, anchor, text, last, 5).item() == 0.0
    with torch.no_grad():
        pipe.transformer.proj_out.weight.mul_(1.1)
    moved = anchor_term(moving, anchor, text, 1, 5)
    assert moved.item() > 0
    moved.backward()
    assert pipe.transformer.proj_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in frozen.transformer.parameters())

    odd = load_checkpoint(student, "cpu")
    with torch.no_grad():
        next(odd.text_encoder.model.parameters()).add_(0.01)
    with pytest.raises(ConfigError, match="its text encoder differs"):
        check_anchor(odd, frozen, "odd", student)
    odd = load_checkpoint(student, "cpu")
    odd.transformer.config = dataclasses.replace(odd.transformer.config, num_layers=odd.transformer.config.num_layers + 1)
    with pytest.raises(ConfigError, match="its transformer config differs"):
        check_anchor(odd, frozen, "odd", student)

    def run(out, steps, *extra):
        return rollout_run(runs, out, steps, *extra, mixture="plain=1")

    assert run(tmp_path / "whole", 2, "--anchor-weight", "2") == 0
    assert run(tmp_path / "split", 1, "--anchor-weight", "2") == 0
    assert run(tmp_path / "split", 2, "--anchor-weight", "2", "--resume") == 0
    whole, split = read_csv(tmp_path / "whole" / "log.csv"), read_csv(tmp_path / "split" / "log.csv")
    for column in ("loss", "pixel_loss", "anchor_loss"):
        np.testing.assert_allclose(split[column], whole[column], rtol=1e-5, err_msg=column)
    assert whole["anchor_loss"][0] == 0.0 and whole["anchor_loss"][1] > 0, "the student starts as its anchor"
    assert run(tmp_path / "named", 1, "--anchor-weight", "2", "--anchor", student) == 0  # loaded, not copied
    named = read_csv(tmp_path / "named" / "log.csv")
    np.testing.assert_allclose(named["loss"], whole["loss"][:1], rtol=1e-5)
    assert named["anchor_loss"][0] == 0.0
    np.testing.assert_allclose(whole["loss"], np.add(whole["pixel_loss"], 2 * np.asarray(whole["anchor_loss"])),
                               rtol=1e-5)
    config = torch.load(sorted((tmp_path / "whole").glob("ckpt-*.pt"))[-1], weights_only=False)["config"]
    assert config["anchor_weight"] == 2 and config["anchor"] == os.path.abspath(student)
    assert run(tmp_path / "whole", 3, "--resume") == 2  # the flag is part of the run
    assert "different configuration" in capsys.readouterr().err
    for flags, message in ((("--anchor-weight", "-1"), "--anchor-weight must be >= 0, got -1"),
                           (("--anchor", student), f"--anchor {student} is unused without --anchor-weight > 0")):
        assert run(tmp_path / "bad", 1, *flags) == 2
        assert message in capsys.readouterr().err
