"""Encoding videos: the one place encoder settings live (the local renderer's clips, and
provider videos transcoded to the asked container).

- MP4: H.264 (libx264), yuv420p, faststart (the index before the data, so playback starts
  before the download ends). WebM: VP9 (libvpx-vp9). Audio, when there is some, is
  AAC in MP4 and Opus in WebM.
- Reproducible: fixed encoder options, one encoder thread (x264's output depends on its
  thread count, which would otherwise follow the machine's cores), bit-exact muxing (no
  library version strings, no random Matroska UIDs, no creation time) and bit-exact colour
  conversion (the same on every CPU, whatever its SIMD). The same frames give the same
  bytes with the same PyAV build.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from typing import Literal

import av
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.reformatter import Interpolation, VideoReformatter
from av.video.stream import VideoStream
from PIL import Image

VideoFormat = Literal["mp4", "webm"]

_ENCODERS: dict[VideoFormat, str] = {"mp4": "libx264", "webm": "libvpx-vp9"}
_AUDIO_ENCODERS: dict[VideoFormat, tuple[str, str]] = {
    "mp4": ("aac", "fltp"),
    "webm": ("libopus", "flt"),
}
_AUDIO_RATE = 48_000
# Fixed settings: part of what makes an encoding reproducible.
_ENCODER_OPTIONS: dict[VideoFormat, dict[str, str]] = {
    "mp4": {"preset": "veryfast", "crf": "23", "threads": "1"},
    "webm": {
        "deadline": "realtime",
        "cpu-used": "8",
        "crf": "32",
        "b": "0",
        "threads": "1",
        "row-mt": "0",
    },
}
_FAST_OPTIONS: dict[VideoFormat, dict[str, str]] = {"mp4": {"preset": "ultrafast"}, "webm": {}}
_MUXER_OPTIONS: dict[VideoFormat, dict[str, str]] = {"mp4": {"movflags": "+faststart"}, "webm": {}}
_BITEXACT = {"fflags": "+bitexact"}
_SCALING = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.BITEXACT


def transcode_video(
    data: bytes, *, width: int, height: int, fps: float, want: VideoFormat
) -> bytes:
    """Re-encode every frame (and the first audio track) into `want`, at the source's
    average frame rate `fps`. Timestamps are renumbered: a variable frame rate becomes
    constant, which is fine for the short clips this is for."""
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(24)
    # Audio and video interleave in the file: each is decoded from its own reader.
    with av.open(io.BytesIO(data), "r") as video_source:
        frames = video_source.decode(video_source.streams.video[0])
        if not video_source.streams.audio:
            return encode_video(frames, width=width, height=height, fps=rate, fmt=want)
        with av.open(io.BytesIO(data), "r") as audio_source:
            sound = audio_source.decode(audio_source.streams.audio[0])
            return encode_video(frames, width=width, height=height, fps=rate, fmt=want, audio=sound)


def encode_video(
    frames: Iterable[Image.Image | av.VideoFrame],
    *,
    width: int,
    height: int,
    fps: int | Fraction,
    fmt: VideoFormat,
    audio: Iterable[av.AudioFrame] | None = None,
    fast: bool = False,
) -> bytes:
    """Encode frames (Pillow images or decoded frames, scaled to width x height, rounded
    down to even sides as 4:2:0 needs) into an MP4 (H.264) or a WebM (VP9).

    MP4's faststart reopens the output by name to move the index, hence a temporary file.
    `fast` trades size for speed (x264's ultrafast preset: about twice the bytes, half the
    time at 720p)."""
    width, height = width - width % 2, height - height % 2
    tick = 1 / Fraction(fps)
    with tempfile.TemporaryDirectory(prefix="darkroom-video-") as folder:
        path = os.path.join(folder, f"out.{fmt}")
        with av.open(
            path, "w", format=fmt, options=_MUXER_OPTIONS[fmt], container_options=_BITEXACT
        ) as container:
            stream = _add_video(container, fmt, width, height, fps, fast=fast)
            sound = _add_audio(container, fmt) if audio is not None else None
            reformatter = VideoReformatter()
            for index, item in enumerate(frames):
                frame = _as_frame(item)
                frame = reformatter.reformat(
                    frame, width, height, "yuv420p", interpolation=_SCALING, threads=1
                )
                frame.pts, frame.time_base = index, tick
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
            if sound is not None and audio is not None:
                _encode_audio(container, sound, audio)
        with open(path, "rb") as file:
            return file.read()


def _as_frame(item: Image.Image | av.VideoFrame) -> av.VideoFrame:
    if isinstance(item, av.VideoFrame):
        return item
    frame: av.VideoFrame = av.VideoFrame.from_image(item)  # type: ignore[no-untyped-call]
    return frame


def _add_video(
    container: OutputContainer,
    fmt: VideoFormat,
    width: int,
    height: int,
    fps: int | Fraction,
    *,
    fast: bool,
) -> VideoStream:
    stream = container.add_stream(_ENCODERS[fmt], rate=fps)
    if not isinstance(stream, VideoStream):  # pragma: no cover - a video codec's stream
        raise TypeError(f"{_ENCODERS[fmt]} did not open a video stream")
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {**_ENCODER_OPTIONS[fmt], **(_FAST_OPTIONS[fmt] if fast else {})}
    stream.codec_context.flags |= av.codec.context.Flags.bitexact
    stream.codec_context.time_base = 1 / Fraction(fps)
    return stream


def _add_audio(container: OutputContainer, fmt: VideoFormat) -> AudioStream:
    codec, sample_format = _AUDIO_ENCODERS[fmt]
    stream = container.add_stream(codec, rate=_AUDIO_RATE)
    if not isinstance(stream, AudioStream):  # pragma: no cover - an audio codec's stream
        raise TypeError(f"{codec} did not open an audio stream")
    stream.layout = "stereo"
    stream.format = sample_format
    return stream


def _encode_audio(
    container: OutputContainer, stream: AudioStream, frames: Iterable[av.AudioFrame]
) -> None:
    """Resampled to the encoder's format and rate; the resampler re-times the samples."""
    resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=_AUDIO_RATE)
    for frame in frames:
        frame.pts = None
        for converted in resampler.resample(frame):
            container.mux(stream.encode(converted))
    for converted in resampler.resample(None):
        container.mux(stream.encode(converted))
    container.mux(stream.encode(None))
