"""Checking what a provider sent before anyone calls it a video.

A provider may answer 200 with an HTML error page, a still image, a truncated file, a clip
far shorter than asked, or another container than the one asked for. Before a video counts:
- its container must be MP4 (the QuickTime/ISO family) or WebM (Matroska), with a video
  stream; an image (PNG, GIF), HTML or anything else is refused;
- every packet is read (demuxed, not decoded: cheap even for long clips), which finds a
  truncated file whose header promises more than its data holds, and gives the frame count
  when the container does not record it (WebM does not);
- only the first frame is decoded, which proves the stream decodes and gives its true size;
- its duration must be roughly the one asked: within max(1 s, 25%) (any positive duration
  when none was asked).
Each refusal is `ProviderRetryableError("invalid_output")`, as for images: another
attempt may well produce a good video.

A video in another container or codec than asked (an MP4 when WebM was asked, an MP4 in
HEVC or 4:4:4 that browsers will not play) is transcoded, audio included, because clips
are short: up to `MAX_TRANSCODE_PIXEL_FRAMES` (about 12 s of 1080p at 30 fps). A longer one
is refused as permanent (`unsupported_output`): another attempt would send the same.
A video already right is kept byte for byte.

Encoding (settings, audio) lives in service.providers.video_encode.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from service.kit.threads import in_thread
from service.providers.base import (
    VIDEO_FORMATS,
    GenerationRequest,
    Output,
    ProviderPermanentError,
    ProviderRetryableError,
)
from service.providers.video_encode import VideoFormat, transcode_video

# Codecs (and, for H.264, pixel formats) a browser plays from each container; anything else
# is transcoded.
PLAYABLE_CODECS: dict[VideoFormat, frozenset[str]] = {
    "mp4": frozenset({"h264"}),
    "webm": frozenset({"vp8", "vp9", "av1"}),
}
PLAYABLE_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
# A frame larger than this is no video a job asked for (and decoding it costs too much).
MAX_PIXELS = 4096 * 4096
# Far past any clip a job may ask for (~11 minutes at 30 fps): reading stops there.
MAX_PACKETS = 20_000
# The transcoding budget (width x height x frames): about 12 s of 1080p at 30 fps.
MAX_TRANSCODE_PIXEL_FRAMES = 1920 * 1080 * 30 * 12
# How far short of the container's duration the video packets may stop before the file is
# truncated (an audio track may run a little longer than the video).
_TRUNCATION_SLACK_S = 0.5
_MIN_TOLERANCE_S = 1.0
_TOLERANCE_RATIO = 0.25

_CONTAINERS: dict[str, VideoFormat] = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "webm"}
_DecodeErrors = (av.FFmpegError, OSError, EOFError, ValueError, IndexError)


class InvalidVideoError(ValueError):
    """Bytes that are not a usable video; the message says why."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, read from its container and checked against its packets."""

    format: VideoFormat
    width: int
    height: int
    duration_s: float
    frames: int
    fps: float
    codec: str
    pix_fmt: str | None = None
    has_audio: bool = False

    @property
    def playable(self) -> bool:
        """Whether browsers play it as is from its container (else it is transcoded)."""
        if self.codec not in PLAYABLE_CODECS[self.format]:
            return False
        return self.format != "mp4" or self.pix_fmt in PLAYABLE_PIX_FMTS


def inspect_video(data: bytes) -> VideoInfo:
    """Read and check a video's container and packets; raises `InvalidVideoError`."""
    try:
        with av.open(io.BytesIO(data), "r") as container:
            return _inspect(container)
    except InvalidVideoError:
        raise
    except _DecodeErrors as exc:
        raise InvalidVideoError(f"not a decodable video: {exc}") from exc


def _inspect(container: InputContainer) -> VideoInfo:
    fmt = _CONTAINERS.get(container.format.name)
    if fmt is None:
        raise InvalidVideoError(
            f"not an MP4 or WebM video (the data reads as {container.format.long_name})"
        )
    if not container.streams.video:
        raise InvalidVideoError(f"{fmt} container without a video stream")
    stream = container.streams.video[0]
    context = stream.codec_context
    if context is None:  # a codec FFmpeg does not know, or a damaged header
        raise InvalidVideoError(f"{fmt} video stream in an unknown codec")
    if context.width * context.height > MAX_PIXELS:
        raise InvalidVideoError(f"{context.width}x{context.height} is over {MAX_PIXELS} pixels")
    scan = _read_packets(container, stream)
    if scan.first is None:
        raise InvalidVideoError(f"{fmt} video stream without a decodable frame")
    assert stream.time_base is not None  # demuxers always set it
    duration = float((scan.end - (scan.start or 0)) * stream.time_base)
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else scan.count / duration if duration > 0 else 0.0
    if scan.open_ended and fps > 0:  # the last frame's own duration was not recorded
        duration += 1 / fps
    _check_complete(container, stream, scan.count, duration, fps)
    return VideoInfo(
        format=fmt,
        width=scan.first.width,
        height=scan.first.height,
        duration_s=round(duration, 3),
        frames=scan.count,
        fps=round(fps, 3),
        codec=context.name,
        pix_fmt=context.pix_fmt,
        has_audio=bool(container.streams.audio),
    )


@dataclass
class _Scan:
    """What reading a video stream's packets found (times in the stream's time base)."""

    count: int = 0
    start: int | None = None
    end: int = 0
    # The latest packet had no duration: the span ends where the last frame starts.
    open_ended: bool = False
    first: av.VideoFrame | None = None


def _read_packets(container: InputContainer, stream: VideoStream) -> _Scan:
    """Count the stream's packets and find where they start and end; decode only until
    the first frame comes out."""
    scan = _Scan()
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker
        scan.count += 1
        if scan.count > MAX_PACKETS:
            raise InvalidVideoError(f"more than {MAX_PACKETS} frames")
        when = packet.pts if packet.pts is not None else packet.dts
        if when is not None:
            scan.start = when if scan.start is None else min(scan.start, when)
            if when + (packet.duration or 0) >= scan.end:
                scan.end, scan.open_ended = when + (packet.duration or 0), not packet.duration
        if scan.first is None:
            decoded = stream.decode(packet)
            scan.first = decoded[0] if decoded else None
    if scan.first is None and scan.count:
        flushed = stream.decode(None)
        scan.first = flushed[0] if flushed else None
    return scan


def _check_complete(
    container: InputContainer, stream: VideoStream, packets: int, duration: float, fps: float
) -> None:
    """A truncated file still has the header that promised the rest. The video track's own
    duration is matched to a couple of frames; the container's may include a longer audio
    track, so it is matched loosely."""
    if stream.frames and packets < stream.frames:
        raise InvalidVideoError(
            f"truncated: the header promises {stream.frames} frames, the data holds {packets}"
        )
    promised = _track_duration(stream)
    if promised is not None:
        slack = 2 / fps if fps > 0 else _TRUNCATION_SLACK_S
    elif container.duration:
        promised = container.duration / av.time_base
        slack = max(_TRUNCATION_SLACK_S, promised / 10)
    else:
        return
    if duration < promised - slack:
        raise InvalidVideoError(
            f"truncated: the header promises {promised:.2f} s, the data holds {duration:.2f} s"
        )


def _track_duration(stream: VideoStream) -> float | None:
    """The video track's own duration, where the container records it."""
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")  # Matroska (FFmpeg): "HH:MM:SS.nnnnnnnnn"
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    return None


def duration_tolerance_s(asked: float) -> float:
    """How far a video's duration may be from the one asked: providers round to their own
    steps (5 s, 8 s, a frame count), so an exact match is not expected."""
    return max(_MIN_TOLERANCE_S, asked * _TOLERANCE_RATIO)


def check_duration(info: VideoInfo, asked: float | None) -> None:
    if info.duration_s <= 0:
        raise InvalidVideoError("the video has no duration")
    if asked is not None and abs(info.duration_s - asked) > duration_tolerance_s(asked):
        raise InvalidVideoError(
            f"the video lasts {info.duration_s:.2f} s, {asked:g} s was asked "
            f"(tolerance {duration_tolerance_s(asked):g} s)"
        )


def checked_video_sync(
    data: bytes,
    request: GenerationRequest,
    *,
    provider: str,
    cost_usd: Decimal = Decimal(0),
    usage: Mapping[str, Any] | None = None,
) -> Output:
    want = _video_format(request.format, provider=provider)
    try:
        info = inspect_video(data)
        check_duration(info, request.duration_s)
    except InvalidVideoError as exc:
        raise ProviderRetryableError("invalid_output", f"{provider}: {exc}") from exc
    if info.format != want or not info.playable:
        data, info = _transcoded(data, info, want, provider=provider)
    return Output(
        data=data,
        format=want,
        width=info.width,
        height=info.height,
        media="video",
        duration_s=info.duration_s,
        frames=info.frames,
        cost_usd=cost_usd,
        usage=dict(usage or {}),
    )


# Reading every packet and encoding are CPU work the event loop should not wait on.
checked_video = in_thread(checked_video_sync)


def _video_format(fmt: str, *, provider: str) -> VideoFormat:
    """A job that asked for an image has no business here (the provider's code is wrong
    about what it made): permanent, as `checked_image` does the other way round."""
    if fmt not in VIDEO_FORMATS:
        raise ProviderPermanentError(
            "unexpected_media", f"{provider}: sent a video where a {fmt} image was asked for"
        )
    return "mp4" if fmt == "mp4" else "webm"


def _transcoded(
    data: bytes, info: VideoInfo, want: VideoFormat, *, provider: str
) -> tuple[bytes, VideoInfo]:
    work = info.width * info.height * info.frames
    if work > MAX_TRANSCODE_PIXEL_FRAMES:
        raise ProviderPermanentError(
            "unsupported_output",
            f"{provider}: sent {info.format}/{info.codec} ({info.width}x{info.height}, "
            f"{info.frames} frames) where {want} was asked; converting it is over the limit "
            f"of {MAX_TRANSCODE_PIXEL_FRAMES} pixel-frames",
        )
    try:
        converted = transcode_video(
            data, width=info.width, height=info.height, fps=info.fps, want=want
        )
        return converted, inspect_video(converted)
    except (*_DecodeErrors, InvalidVideoError) as exc:
        raise ProviderRetryableError(
            "invalid_output",
            f"{provider}: the {info.format} video does not convert to {want}: {exc}",
        ) from exc
