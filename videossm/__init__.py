"""VideoSSM: autoregressive long video generation with hybrid state-space memory."""

__version__ = "0.1.0"

__all__ = ["VideoSSMPipeline", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import videossm.timeline` does not pull torch and diffusers.
    if name == "VideoSSMPipeline":
        from .pipeline import VideoSSMPipeline

        return VideoSSMPipeline
    raise AttributeError(name)
