"""Video file I/O."""

from .mp4 import Mp4Writer, read_video, write_mp4

__all__ = ["Mp4Writer", "read_video", "write_mp4"]
