"""`bench` on the test preset (seconds), the 1.3B preset's shapes on the meta device, and `report` from fixture JSON."""

import json

import pytest

from videossm.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_bench_tiny_modes_side_by_side_json_and_png(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "test", "--seconds", "1.5", "--modes", "sink", "full", "--threads", "1",
                 "--window", "6", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["kind"] == "bench" and list(data["results"]) == ["sink", "full"]
    for r in data["results"].values():
        s = r["summary"]
        assert s["blocks"] == 3 and s["sustained_fps"] > 0 and s["first_frame_s"] > 0 and s["peak_rss_mb"] > 0
        blocks = r["stats"]["per_block"]
        assert [b["video_s"] for b in blocks] == sorted(b["video_s"] for b in blocks)
        assert blocks[-1]["video_s"] == pytest.approx(1.5, abs=1 / 16)  # 24 frames at 16 fps
        assert all(b["rss_mb"] > 0 and "cache_mb" in b for b in blocks)
    # full keeps all 9 latent frames; sink keeps its window of 6
    full, sink = data["results"]["full"]["stats"]["per_block"], data["results"]["sink"]["stats"]["per_block"]
    assert full[-1]["cache_mb"] > sink[-1]["cache_mb"]
    assert (tmp_path / "bench.png").read_bytes()[:8] == PNG
    assert "sustained" in capsys.readouterr().out


def test_bench_1_3b_preset_builds_real_shapes_on_meta(tmp_path):
    out = tmp_path / "dry.json"
    assert main(["bench", "--preset", "wan2.1-t2v-1.3b", "--random-weights", "--dry-run", "--dry-run-blocks", "1",
                 "--modes", "sink", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    assert info["size"] == [832, 480] and info["tokens_per_latent_frame"] == 1560 and info["num_layers"] == 30
    assert info["dtype"] == "torch.bfloat16" and info["text_encoder"] == "RandomTextEncoder"
    assert info["text_embeddings"] == [1, 512, 4096]
    assert (info["num_steps"], info["window_frames"], info["sink_frames"], info["block_frames"]) == (4, 12, 3, 3)
    assert 1.4e9 < info["transformer_params"] < 1.6e9  # Wan2.1-1.3B plus the memory modules
    assert info["vae_layout"] == "wan2.1"
    assert info["blocks"][0]["latents"] == [1, 16, 3, 60, 104]
    assert info["blocks"][0]["pixels"] == [1, 3, 9, 480, 832]  # first block: 1 + 4 + 4 frames


def test_bench_preset_needs_random_weights(capsys):
    assert main(["bench", "--preset", "wan2.1-t2v-1.3b", "--dry-run"]) == 2
    assert "--random-weights" in capsys.readouterr().err


def _bench_fixture(path):
    def blocks(ms):
        return [{"index": i, "seconds": m / 1000, "frames": 12, "video_s": 0.75 * (i + 1), "cache_mb": 7.0,
                 "rss_mb": 400.0, "gpu_mb": None} for i, m in enumerate(ms)]

    results = {}
    for mode, ms in {"sink": [200, 201, 199, 200], "full": [200, 300, 400, 500]}.items():
        results[mode] = {"summary": {"blocks": 4, "first_frame_s": 0.2, "fps": 50.0, "sustained_fps": 55.5,
                                     "block_ms_first10": float(ms[1]), "block_ms_last10": float(ms[-1]),
                                     "latency_ratio": ms[-1] / ms[1], "latency_ratio_2min": None,
                                     "cache_mb_block10": 7.0, "cache_mb_end": 7.0, "peak_rss_mb": 410.0,
                                     "peak_gpu_mb": None},
                         "stats": {"per_block": blocks(ms), "seconds": 3.0, "frames": 48, "dtype": "torch.float32",
                                   "decode": False, "threads": 1, "ops": "auto"}}
    path.write_text(json.dumps({"kind": "bench", "model": "tiny", "command": "python -m videossm bench",
                                "machine": {"cpu_count": 2}, "results": results}))


def _eval_fixture(path):
    def video(label, value):
        return {"label": label, "path": f"{label}.mp4", "seconds": 10.0, "clip_seconds": 2.0, "window_seconds": 5.0,
                "scores": {"subject_consistency": value, "temporal_flickering": 0.97},
                "curves": {"window_start_s": [0.0, 5.0], "subject_consistency": [value + 0.01, value - 0.01],
                           "temporal_flickering": [0.97, 0.97]}}

    path.write_text(json.dumps({"kind": "eval", "metrics": {"subject_consistency": "DINO", "temporal_flickering": "MAE"},
                                "unavailable": {"imaging_quality": "no MUSIQ"},
                                "videos": [video("hybrid", 0.9), video("sink", 0.8)]}))


def test_report_renders_tables_and_plots_from_fixture_json(tmp_path, capsys):
    bench, evaluation = tmp_path / "bench.json", tmp_path / "eval.json"
    _bench_fixture(bench)
    _eval_fixture(evaluation)
    out = tmp_path / "report" / "report.md"
    assert main(["report", str(evaluation), str(bench), "--out", str(out)]) == 0
    md = out.read_text()
    assert "| hybrid | 10.0 | 0.900 | 0.970 |" in md and "| sink | 10.0 | 0.800 | 0.970 |" in md
    assert "| full | 4 | 0.200 | 50.0 | 55.5 | 300.0 | 500.0 | 1.667 |" in md
    assert "`imaging_quality`: no MUSIQ" in md and "python -m videossm bench" in md
    for png in ("00_eval_curves.png", "01_bench_bench.png"):
        assert f"]({png})" in md and (out.parent / png).read_bytes()[:8] == PNG
    (tmp_path / "junk.json").write_text("{}")
    assert main(["report", str(tmp_path / "junk.json"), "--out", str(out)]) == 2
    assert "junk.json" in capsys.readouterr().err
