"""Videos: the local renderer's clips decode as what they claim, the same request gives the
same bytes, and a provider's bytes count as a video only when they are one, of roughly the
asked duration, in the asked container (transcoded when not)."""

from __future__ import annotations

import io
import math
import random
import struct
from dataclasses import replace

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageOps, ImageStat

from service.providers import video
from service.providers.base import (
    GenerationRequest,
    InputImage,
    ProviderPermanentError,
    ProviderRetryableError,
)
from service.providers.local import LocalRenderer
from service.providers.local_video import render_video, render_video_output
from service.providers.video import (
    InvalidVideoError,
    checked_video,
    checked_video_sync,
    inspect_video,
)
from service.providers.video_encode import VideoFormat, encode_video

CODECS = {"mp4": "h264", "webm": "vp9"}
FORMATS: list[VideoFormat] = ["mp4", "webm"]


def make_request(**overrides: object) -> GenerationRequest:
    request = GenerationRequest(
        prompt="a lighthouse at dusk, oil painting",
        model_ref="procedural",
        width=192,
        height=128,
        format="mp4",
        seed=42,
        media="video",
        duration_s=2.0,
        fps=12,
    )
    return replace(request, **overrides)  # type: ignore[arg-type]


def frames_of(data: bytes) -> list[Image.Image]:
    with av.open(io.BytesIO(data), "r") as container:
        return [frame.to_image() for frame in container.decode(video=0)]  # type: ignore[no-untyped-call]


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def still(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, fmt)
    return buffer.getvalue()


def pattern(size: tuple[int, int] = (400, 300)) -> bytes:
    """Four coloured quadrants and a diagonal: easy to recognise after a resize."""
    image = Image.new("RGB", size, (20, 20, 160))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle((0, 0, w // 2, h // 2), fill=(230, 40, 40))
    draw.rectangle((w // 2, h // 2, w, h), fill=(40, 200, 60))
    draw.line((0, 0, w, h), fill=(255, 255, 255), width=9)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def with_audio(seconds: int = 2, fps: int = 12) -> bytes:
    """An MP4 (H.264 + AAC) such as a provider with sound sends."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        sound = container.add_stream("aac", rate=48_000)
        sound.layout = "stereo"
        for index in range(seconds * fps):
            frame = av.VideoFrame.from_image(  # type: ignore[no-untyped-call]
                Image.new("RGB", (96, 64), (index * 9, 90, 40))
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        for start in range(0, seconds * 48_000, 960):
            samples = b"".join(
                struct.pack("<hh", round(8000 * math.sin((start + k) / 20)), 0) for k in range(960)
            )
            audio = av.AudioFrame(format="s16", layout="stereo", samples=960)
            audio.planes[0].update(samples)
            audio.sample_rate, audio.pts = 48_000, start
            container.mux(sound.encode(audio))
        container.mux(sound.encode(None))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    """One local clip per format, 192x128, 2 s at 12 fps (rendered once for the module)."""
    return {fmt: render_video(make_request(format=fmt)) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_local_clip_decodes_as_asked(clips: dict[str, bytes], fmt: VideoFormat) -> None:
    data = clips[fmt]
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == CODECS[fmt]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (192, 128)
        assert "creation_time" not in container.metadata  # nothing that varies per run
    decoded = frames_of(data)
    assert len(decoded) == 24
    assert decoded[0].size == (192, 128)
    info = inspect_video(data)
    assert (info.format, info.width, info.height, info.frames) == (fmt, 192, 128, 24)
    assert (info.duration_s, info.fps, info.codec) == (2.0, 12.0, CODECS[fmt])
    assert info.playable


def test_mp4_starts_with_its_index(clips: dict[str, bytes]) -> None:
    """faststart: the moov atom comes before the media data, so playback starts early."""
    data = clips["mp4"]
    assert data[4:8] == b"ftyp"
    assert data.index(b"moov") < data.index(b"mdat")


@pytest.mark.parametrize("fmt", FORMATS)
def test_local_clip_is_byte_for_byte_reproducible(
    clips: dict[str, bytes], fmt: VideoFormat
) -> None:
    assert render_video(make_request(format=fmt)) == clips[fmt]
    assert render_video(make_request(format=fmt, seed=43)) != clips[fmt]


def test_local_clip_moves(clips: dict[str, bytes]) -> None:
    decoded = frames_of(clips["webm"])
    assert mean_difference(decoded[0], decoded[-1]) > 2
    assert mean_difference(decoded[0], decoded[1]) > 0


def test_duration_and_fps_set_the_frame_count() -> None:
    info = inspect_video(render_video(make_request(duration_s=1.5, fps=8, width=64, height=64)))
    assert (info.frames, info.duration_s, info.fps) == (12, 1.5, 8.0)
    default = inspect_video(render_video(make_request(duration_s=None, fps=None, width=64)))
    assert (default.frames, default.duration_s) == (24, 2.0)


async def test_local_output_reports_what_the_file_holds() -> None:
    output = await render_video_output(make_request(format="webm", width=96, height=64))
    assert (output.media, output.format, output.content_type) == ("video", "webm", "video/webm")
    assert (output.width, output.height, output.frames, output.duration_s) == (96, 64, 24, 2.0)
    assert inspect_video(output.data).frames == 24


@pytest.mark.parametrize(
    ("overrides", "limit"),
    [
        ({"duration_s": 10.5}, "at most 10"),
        ({"duration_s": 0.0}, "over 0"),
        ({"width": 1288}, "64..1280"),
        ({"height": 32}, "64..1280"),
        ({"width": 193}, "even"),
        ({"fps": 60}, "1..30"),
        ({"format": "png"}, "mp4 or webm"),
    ],
)
def test_local_refuses_past_its_limits(overrides: dict[str, object], limit: str) -> None:
    with pytest.raises(ProviderPermanentError, match=limit) as caught:
        render_video(make_request(**overrides))
    assert caught.value.code == "invalid_request"


def test_image_to_video_starts_on_the_image_and_moves_over_it() -> None:
    reference = InputImage("reference", pattern(), "image/png")
    request = make_request(format="webm", duration_s=3.0, inputs=(reference,))
    data = render_video(request)
    decoded = frames_of(data)
    assert len(decoded) == 36
    fitted = ImageOps.fit(Image.open(io.BytesIO(reference.data)), (192, 128))
    assert mean_difference(decoded[0], fitted) < 6
    assert mean_difference(decoded[-1], fitted) > 2 * mean_difference(decoded[0], fitted)
    assert render_video(request) == data


async def test_a_local_image_animates_into_a_local_video() -> None:
    """The chain "generate an image, then animate it", with the local renderer at both
    ends: the parent's output is the child's reference."""
    parent = await LocalRenderer().generate(
        GenerationRequest(
            prompt="a red fox", model_ref="procedural", width=192, height=128, format="jpeg", seed=3
        )
    )
    reference = InputImage("reference", parent.data, parent.content_type)
    child = await render_video_output(make_request(format="mp4", inputs=(reference,)))
    assert (child.media, child.width, child.height, child.frames) == ("video", 192, 128, 24)
    first = frames_of(child.data)[0]
    assert mean_difference(first, Image.open(io.BytesIO(parent.data))) < 6


def test_image_to_video_puts_transparency_on_white() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (128, 96), (0, 0, 0, 0)).save(buffer, "PNG")
    reference = InputImage("reference", buffer.getvalue(), "image/png")
    first = frames_of(render_video(make_request(duration_s=0.5, inputs=(reference,))))[0]
    assert min(ImageStat.Stat(first.convert("RGB")).mean) > 240


def test_a_single_frame_lasts_one_frame() -> None:
    data = encode_video(
        [Image.new("RGB", (64, 64), (9, 9, 9))], width=64, height=64, fps=4, fmt="webm"
    )
    info = inspect_video(data)
    assert (info.frames, info.duration_s) == (1, 0.25)
    assert checked_video_sync(data, make_request(format="webm", duration_s=None), provider="p")


def test_image_to_video_refuses_a_reference_that_is_no_image() -> None:
    broken = InputImage("reference", b"<html>gone</html>", "image/png")
    with pytest.raises(ProviderPermanentError, match="not a decodable image") as caught:
        render_video(make_request(inputs=(broken,)))
    assert caught.value.code == "invalid_input"


@pytest.mark.parametrize(
    "data",
    [b"", b"<html><body>502 Bad Gateway</body></html>", still("PNG"), still("GIF"), still("JPEG")],
)
def test_bytes_that_are_no_video_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidVideoError):
        inspect_video(data)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_video_is_refused(clips: dict[str, bytes], fmt: VideoFormat) -> None:
    data = clips[fmt]
    with pytest.raises(InvalidVideoError):
        inspect_video(data[: len(data) // 2])


@pytest.mark.parametrize("fmt", FORMATS)
async def test_checked_video_keeps_a_right_video_untouched(
    clips: dict[str, bytes], fmt: VideoFormat
) -> None:
    output = await checked_video(clips[fmt], make_request(format=fmt), provider="p")
    assert output.data == clips[fmt]
    assert (output.media, output.format, output.content_type) == ("video", fmt, f"video/{fmt}")
    assert (output.width, output.height, output.duration_s, output.frames) == (192, 128, 2.0, 24)


@pytest.mark.parametrize(
    ("asked", "accepted"), [(2.9, True), (None, True), (3.1, False), (8, False)]
)
def test_duration_must_be_roughly_the_asked_one(
    clips: dict[str, bytes], asked: float | None, accepted: bool
) -> None:
    request = make_request(duration_s=asked)
    if accepted:
        assert checked_video_sync(clips["mp4"], request, provider="p").duration_s == 2.0
        return
    with pytest.raises(ProviderRetryableError, match=r"2\.00 s") as caught:
        checked_video_sync(clips["mp4"], request, provider="p")
    assert caught.value.code == "invalid_output"


def test_long_videos_get_a_proportional_tolerance() -> None:
    assert video.duration_tolerance_s(2) == 1.0
    assert video.duration_tolerance_s(10) == 2.5


async def test_checked_video_refuses_an_image_as_retryable() -> None:
    with pytest.raises(ProviderRetryableError, match="p: not an MP4 or WebM") as caught:
        await checked_video(still("PNG"), make_request(), provider="p")
    assert caught.value.code == "invalid_output"


@pytest.mark.parametrize(("given", "want"), [("mp4", "webm"), ("webm", "mp4")])
async def test_another_container_is_transcoded(
    clips: dict[str, bytes], given: VideoFormat, want: VideoFormat
) -> None:
    output = await checked_video(clips[given], make_request(format=want), provider="p")
    info = inspect_video(output.data)
    assert (info.format, info.codec, info.pix_fmt) == (want, CODECS[want], "yuv420p")
    assert (output.format, output.frames, output.duration_s) == (want, 24, 2.0)
    assert mean_difference(frames_of(output.data)[5], frames_of(clips[given])[5]) < 6


def test_a_codec_browsers_do_not_play_is_transcoded() -> None:
    """H.264 in 4:4:4 is valid MP4, but browsers do not play it."""
    frames = [Image.new("RGB", (64, 64), (i * 20, 50, 90)) for i in range(12)]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv444p"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert not inspect_video(buffer.getvalue()).playable
    output = checked_video_sync(buffer.getvalue(), make_request(duration_s=1), provider="p")
    assert inspect_video(output.data).pix_fmt == "yuv420p"


def test_transcoding_keeps_the_sound() -> None:
    output = checked_video_sync(with_audio(), make_request(format="webm"), provider="p")
    with av.open(io.BytesIO(output.data)) as container:
        assert [stream.codec_context.name for stream in container.streams] == ["vp9", "opus"]
    assert (output.frames, output.duration_s) == (24, 2.0)


def test_transcoding_past_the_budget_is_permanent(
    clips: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(video, "MAX_TRANSCODE_PIXEL_FRAMES", 192 * 128 * 10)
    with pytest.raises(ProviderPermanentError, match="mp4 was asked") as caught:
        checked_video_sync(clips["webm"], make_request(format="mp4"), provider="p")
    assert caught.value.code == "unsupported_output"


def test_an_image_format_is_no_video_request(clips: dict[str, bytes]) -> None:
    with pytest.raises(ProviderPermanentError, match="png image was asked") as caught:
        checked_video_sync(clips["mp4"], make_request(format="png"), provider="p")
    assert caught.value.code == "unexpected_media"


def test_an_unknown_codec_is_refused(clips: dict[str, bytes]) -> None:
    data = clips["mp4"]
    entry = data.index(b"avc1", 40)  # the sample description, past ftyp's brands
    with pytest.raises(InvalidVideoError, match="unknown codec"):
        inspect_video(data[:entry] + b"zzzz" + data[entry + 4 :])


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_bytes_are_a_video_or_refused_never_a_crash(
    clips: dict[str, bytes], fmt: VideoFormat
) -> None:
    """Bit flips, cuts and holes anywhere (the header included): the answer is a VideoInfo
    or InvalidVideoError, never another exception."""
    rng = random.Random(fmt)
    original = clips[fmt]
    refused = 0
    for _ in range(300):
        damaged = bytearray(original)
        where = rng.randrange(len(damaged))
        kind = rng.choice(("flip", "cut", "hole"))
        if kind == "flip":
            for _ in range(rng.randint(1, 20)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        elif kind == "cut":
            del damaged[where:]
        else:
            del damaged[where : where + rng.randint(1, 200)]
        try:
            inspect_video(bytes(damaged))
        except InvalidVideoError:
            refused += 1
    assert refused > 0
