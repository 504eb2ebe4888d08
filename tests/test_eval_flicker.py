import numpy as np
import pytest

from videossm.eval.flicker import frame_pair_mae, temporal_flickering


def test_static_video_scores_one_and_alternating_scores_by_formula():
    static = np.full((5, 8, 8, 3), 77, np.uint8)
    assert temporal_flickering(static) == 1.0
    alternating = np.zeros((4, 8, 8, 3), np.uint8)
    alternating[1::2] = 51  # every pair differs by 51 everywhere
    assert np.allclose(frame_pair_mae(alternating), 51.0)
    assert temporal_flickering(alternating) == pytest.approx((255 - 51) / 255)


def test_no_uint8_wraparound_and_clear_errors():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[0] = 255  # 0 - 255 must be 255, not 1
    assert temporal_flickering(frames) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="shape"):
        temporal_flickering(np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        temporal_flickering(np.zeros((3, 4, 4, 3), np.float32))
