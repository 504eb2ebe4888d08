"""bench/interpolate_students.py: a student whose transformer is (1 - a) x BASE + a x TUNED, which loads and
streams, and refusals that name what differs."""

import importlib.util
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from videossm.pipeline import VideoSSMPipeline

SPEC = importlib.util.spec_from_file_location(
    "interpolate_students", os.path.join(os.path.dirname(__file__), "..", "bench", "interpolate_students.py"))
interpolate_students = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(interpolate_students)


def _students(tmp_path):
    torch.manual_seed(0)
    base, tuned = str(tmp_path / "base"), str(tmp_path / "tuned")
    VideoSSMPipeline.from_pretrained("test", device="cpu").save_pretrained(base)
    shutil.copytree(base, tuned)
    path = os.path.join(tuned, "transformer.safetensors")
    weights = load_file(path)
    save_file({k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()}, path)
    return base, tuned


def test_interpolated_student_is_the_weighted_mean_and_streams(tmp_path, capsys):
    base, tuned = _students(tmp_path)
    out = str(tmp_path / "mix")
    assert interpolate_students.main([base, tuned, "--alpha", "0.25", "--out", out]) == 0
    b, t, m = (load_file(os.path.join(d, "transformer.safetensors")) for d in (base, tuned, out))
    for k in t:
        torch.testing.assert_close(m[k], 0.75 * b[k].float() + 0.25 * t[k].float())
    assert not os.path.exists(out + ".partial")
    pipe = VideoSSMPipeline.from_pretrained(out, device="cpu")
    frames, _ = pipe.generate("a red circle moving right on a gray background", seconds=1.0, seed=0)
    base_frames, _ = VideoSSMPipeline.from_pretrained(base, device="cpu").generate(
        "a red circle moving right on a gray background", seconds=1.0, seed=0)
    assert frames.shape == base_frames.shape == (16, 32, 32, 3) and not (frames == base_frames).all()
    assert interpolate_students.main([base, tuned, "--alpha", "0", "--out", out]) == 0  # replaces, and a=0 is BASE
    m = load_file(os.path.join(out, "transformer.safetensors"))
    assert all(torch.equal(m[k], b[k].float()) for k in b)


def test_refusals_name_what_differs(tmp_path, capsys):
    base, tuned = _students(tmp_path)
    out = str(tmp_path / "mix")
    assert interpolate_students.main([base, tuned, "--alpha", "1.5", "--out", out]) == 2
    assert "--alpha must be in [0, 1], got 1.5" in capsys.readouterr().err
    vae = os.path.join(tuned, "vae", "diffusion_pytorch_model.safetensors")
    weights = load_file(vae)
    key = next(k for k in sorted(weights) if k.startswith("decoder."))
    weights[key] = weights[key] + 1
    save_file(weights, vae)
    assert interpolate_students.main([base, tuned, "--out", out]) == 2
    assert f"different VAE decoders ({key} differs)" in capsys.readouterr().err
    assert interpolate_students.main([base, str(tmp_path / "nowhere"), "--out", out]) == 2
    assert "not found" in capsys.readouterr().err
    assert not os.path.exists(out)
