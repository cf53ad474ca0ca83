"""mp4 encode/decode with PyAV (FFmpeg) - the video half of the LeRobot v3 layout."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass
class VideoConfig:
    # 4:4:4 keeps colour at full resolution: at 64x64, 4:2:0 chroma blurs the small coloured objects and goal
    # markers (measured: 30 dB PSNR for 4:2:0 vs 40 dB for 4:4:4 at crf 10). LeRobot's decoders read both.
    codec: str = "libx264"
    pix_fmt: str = "yuv444p"
    crf: int = 10
    gop: int = 16


def encode_video(path: str | Path, frames: np.ndarray, fps: float, cfg: VideoConfig | None = None) -> None:
    """Write (T, H, W, 3) uint8 frames as one mp4 stream; frame i gets pts i (timestamp i / fps)."""
    cfg = cfg or VideoConfig()
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    _, h, w, _ = frames.shape
    with av.open(str(path), "w", format="mp4") as container:
        # exact rational rate: round() would misplace every frame of a 2.5 fps (stride-32) dataset
        stream = container.add_stream(cfg.codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, cfg.pix_fmt
        stream.options = {"crf": str(cfg.crf), "g": str(cfg.gop)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_video(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames of an mp4 as (T, H, W, 3) uint8 plus their timestamps in seconds."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time) if frame.time is not None else np.nan)
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    return np.stack(frames), np.asarray(times)


def write_preview(path: str | Path, frames: np.ndarray, fps: int = 10, scale: int = 4) -> None:
    """A browser-playable preview (H.264 4:2:0 needs even sizes; upscale small frames so they are visible)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    encode_video(path, frames, fps, VideoConfig(pix_fmt="yuv420p", crf=18, gop=fps))
