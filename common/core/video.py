"""Writing mp4 videos and reading a video's frame rate, through PyAV (FFmpeg's libraries).

PyAV is the optional extra ``video`` (``pip install -r requirements-video.txt``);
``require_av`` says how to install it when it is missing. Files are written whole
(``common.core.files.atomic_write``): a crash leaves the previous file or none.
"""
from fractions import Fraction
from pathlib import Path

import numpy as np

from common.core.files import atomic_write

# H.264 plays everywhere; MPEG-4 part 2 is FFmpeg's own encoder, there when a build lacks libx264.
MP4_CODECS = ("libx264", "mpeg4")


def require_av(purpose):
    """The ``av`` module; ImportError saying how to install it for ``purpose`` when it is missing."""
    try:
        import av
    except ImportError as error:
        raise ImportError(f"{purpose} needs PyAV, which is not installed: pip install -r requirements-video.txt "
                          f"(its wheels ship FFmpeg)") from error
    return av


def write_mp4(path, frames, fps=25.0, quality=23):
    """Write (H, W, 3) uint8 RGB frames as an H.264 mp4 (yuv420p, plays in browsers and players).

    Odd widths or heights are padded by one black pixel (yuv420p needs even sides).
    ``quality``: the encoder's constant rate factor (0 lossless .. 51 worst; 23 is
    FFmpeg's default). Returns the Path. Raises ValueError for no frames or frames
    of different sizes.
    """
    av = require_av(f"writing {path}")
    frames = list(frames)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    height, width = frames[0].shape[:2]
    if any(frame.shape != (height, width, 3) or frame.dtype != np.uint8 for frame in frames):
        raise ValueError(f"{path}: every frame must be ({height}, {width}, 3) uint8 like the first")
    codec = next((name for name in MP4_CODECS if name in av.codecs_available), None)
    if codec is None:
        raise ImportError(f"writing {path}: this PyAV build has none of the encoders {MP4_CODECS}")
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_write(path) as stream:
        with av.open(stream, "w", format="mp4") as container:
            video = container.add_stream(codec, rate=rate)
            video.width, video.height = width + width % 2, height + height % 2
            video.pix_fmt = "yuv420p"
            video.options = {"crf": str(quality)} if codec == "libx264" else {"qscale": "3"}
            for frame in frames:
                padded = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)))
                for packet in video.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
                    container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
    return path


def video_fps(path, default=25.0):
    """Frames per second of a video file (its stream's average rate), or ``default`` where it does not say."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        with Image.open(path) as image:
            duration = image.info.get("duration") or 0
        return 1000.0 / duration if duration > 0 else default
    av = require_av(f"reading {path}")
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else default
