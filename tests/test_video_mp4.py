import av
import numpy as np
import pytest

from videossm.video import Mp4Writer, read_video, write_mp4
from videossm.video.mp4 import h264_encoder


def gradient(n: int, h: int, w: int) -> np.ndarray:
    """A smooth gradient that moves 3 px per frame (easy for H.264, so errors stay small)."""
    y, x = np.mgrid[0:h, 0:w]
    t = np.arange(n)[:, None, None]
    r = (x[None] * 3 + t * 9) % 256
    g = (y[None] * 4 + t * 5) % 256
    b = ((x + y)[None] * 2 + 40) % 256 + 0 * t
    return np.stack([r, g, b], -1).astype(np.uint8)


def test_encoder_is_h264():
    assert h264_encoder() in ("libx264", "h264")
    assert av.codec.Codec(h264_encoder(), "w").name.startswith(("libx264", "h264"))


@pytest.mark.parametrize("w,h", [(64, 48), (33, 31)])
def test_roundtrip(tmp_path, w, h):
    frames = gradient(20, h, w)
    path = tmp_path / f"v{w}x{h}.mp4"
    with Mp4Writer(path, fps=16) as wr:
        wr.write(frames[:7])
        wr.write(frames[7])  # a single [H, W, 3] frame
        wr.write(frames[8:])
        assert (tmp_path / f"v{w}x{h}.mp4.partial").exists() and not path.exists()
    assert wr.frames_written == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no .partial left

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (w + w % 2, h + h % 2)

    out, fps = read_video(path)
    assert fps == 16
    assert out.shape == (20, h + h % 2, w + w % 2, 3) and out.dtype == np.uint8
    err = np.abs(out[:, :h, :w].astype(np.int16) - frames).mean()
    assert err < 8, err
    if h % 2:  # the padded row repeats the last row
        assert np.abs(out[:, h, :w].astype(np.int16) - frames[:, h - 1]).mean() < 8


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_encoder_threads_give_the_same_video(tmp_path, threads):
    """1 thread (the default, which leaves the cores to the model) or FFmpeg's choice: the same frames."""
    frames = gradient(12, 32, 48)
    with Mp4Writer(tmp_path / "t.mp4", threads=threads) as wr:
        wr.write(frames)
        assert wr._stream.codec_context.thread_count == threads
    out, _ = read_video(tmp_path / "t.mp4")
    assert out.shape == frames.shape and np.abs(out.astype(np.int16) - frames).mean() < 8


def test_write_mp4_helper(tmp_path):
    write_mp4(tmp_path / "a.mp4", gradient(5, 16, 16), fps=8)
    out, fps = read_video(tmp_path / "a.mp4")
    assert out.shape == (5, 16, 16, 3) and fps == 8


def test_crash_leaves_no_final_file(tmp_path):
    path = tmp_path / "c.mp4"
    with pytest.raises(RuntimeError, match="boom"), Mp4Writer(path) as wr:
        wr.write(gradient(3, 16, 16))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    with Mp4Writer(tmp_path / "b.mp4") as wr:
        with pytest.raises(TypeError, match="dtype uint8.*got float32"):
            wr.write(np.zeros((2, 16, 16, 3), np.float32))
        with pytest.raises(TypeError, match="numpy uint8 array.*got list"):
            wr.write([[0]])
        with pytest.raises(ValueError, match=r"shape \[n, H, W, 3\].*got \(2, 16, 16, 4\)"):
            wr.write(np.zeros((2, 16, 16, 4), np.uint8))
        with pytest.raises(ValueError, match=r"got \(16, 16\)"):
            wr.write(np.zeros((16, 16), np.uint8))
        with pytest.raises(ValueError, match=r"got \(0, 16, 3\)"):
            wr.write(np.zeros((0, 16, 3), np.uint8))
        wr.write(np.zeros((1, 16, 16, 3), np.uint8))
        with pytest.raises(ValueError, match=r"frame size 8x16 \(HxW\) differs from the first frames' 16x16"):
            wr.write(np.zeros((1, 8, 16, 3), np.uint8))
    with pytest.raises(RuntimeError, match="already closed"):
        wr.write(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"fps must be an int in \[1, 240\], got 0"):
        Mp4Writer(tmp_path / "x.mp4", fps=0)
    with pytest.raises(ValueError, match=r"crf must be an int in \[0, 51\], got 99"):
        Mp4Writer(tmp_path / "x.mp4", crf=99)
    with pytest.raises(ValueError, match=r"preset must be one of .* got 'warp'"):
        Mp4Writer(tmp_path / "x.mp4", preset="warp")
    with pytest.raises(ValueError, match=r"threads must be an int >= 0 \(0: FFmpeg chooses\), got -1"):
        Mp4Writer(tmp_path / "x.mp4", threads=-1)
    with pytest.raises(ValueError, match="no frames were written"):
        Mp4Writer(tmp_path / "empty.mp4").close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.mp4"]


def test_encoder_fallback(monkeypatch):
    from videossm.video import mp4

    real = av.codec.Codec

    def no_libx264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    def nothing(name, mode="r"):
        raise av.codec.codec.UnknownCodecError(name)

    try:
        monkeypatch.setattr(mp4.av.codec, "Codec", no_libx264)
        mp4.h264_encoder.cache_clear()
        assert mp4.h264_encoder().startswith(("h264", "libx264"))  # FFmpeg's default H.264 encoder
        monkeypatch.setattr(mp4.av.codec, "Codec", nothing)
        mp4.h264_encoder.cache_clear()
        with pytest.raises(RuntimeError, match="no H.264 encoder"):
            mp4.h264_encoder()
    finally:
        monkeypatch.undo()
        mp4.h264_encoder.cache_clear()
    assert mp4.h264_encoder() in ("libx264", "h264")
