"""fit(spec, want): each capability refused, and each size mapped, on ModelSpecs built
directly (no configuration file, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.catalog.config import TASKS, NumberRange, Option, Sizes
from service.catalog.fit import Fit, Problem, Want, fit, task_of
from service.providers.registry import ModelSpec

RATIOS = Sizes(aspect_ratios=["1:1", "16:9", "9:16", "4:3", "3:4"])
OPENAI = Sizes.model_validate({"list": ["1024x1024", "1536x1024", "1024x1536"]})
LATENT = Sizes(min=256, max=1440, multiple_of=64)
ODD_MIN = Sizes(min=300, max=1000, multiple_of=64)
VIDEO_FORMATS = frozenset({"mp4"})


def spec(**capabilities: Any) -> ModelSpec:
    return ModelSpec(name="m", provider="p", ref="r", **capabilities)


def video(**capabilities: Any) -> ModelSpec:
    capabilities.setdefault("tasks", frozenset({"text-to-video"}))
    return spec(media="video", formats=VIDEO_FORMATS, **capabilities)


def want(**asked: Any) -> Want:
    media = asked.pop("media", "image")
    references = asked.get("references", 0)
    has_mask = asked.get("has_mask", False)
    asked.setdefault("task", task_of(media, references=references, has_mask=has_mask))
    asked.setdefault("width", 1024)
    asked.setdefault("height", 1024)
    asked.setdefault("format", "mp4" if media == "video" else "png")
    # A duration or fps given here is one the job asked for, unless told otherwise.
    asked.setdefault("duration_asked", "duration_s" in asked)
    asked.setdefault("fps_asked", "fps" in asked)
    return Want(media=media, **asked)


def fitted(model: ModelSpec, job: Want) -> Fit:
    result = fit(model, job)
    assert isinstance(result, Fit), result
    # Mapped entries are stored in the job's params.
    assert json.loads(json.dumps(result.mapped)) == result.mapped
    assert json.loads(json.dumps(result.params)) == result.params
    return result


def problems(model: ModelSpec, job: Want) -> list[Problem]:
    result = fit(model, job)
    assert isinstance(result, list), result
    return result


# Mapping


@pytest.mark.parametrize(
    ("sizes", "width", "height", "params", "mapped"),
    [
        # Aspect ratios: the ratio is sent, width and height stay as asked.
        (RATIOS, 1920, 1080, {"aspect_ratio": "16:9"}, "16:9"),
        (RATIOS, 1000, 1000, {"aspect_ratio": "1:1"}, "1:1"),
        (RATIOS, 1080, 1920, {"aspect_ratio": "9:16"}, "9:16"),
        # 1366x768 is 0.1% off 16:9.
        (RATIOS, 1366, 768, {"aspect_ratio": "16:9"}, "16:9"),
        # 1200x900 is exactly 4:3.
        (RATIOS, 1200, 900, {"aspect_ratio": "4:3"}, "4:3"),
        # OpenAI's list: the nearest ratio, then the nearest area.
        (OPENAI, 1920, 1080, {"width": 1536, "height": 1024}, "1536x1024"),
        (OPENAI, 1000, 1000, {"width": 1024, "height": 1024}, "1024x1024"),
        (OPENAI, 720, 1280, {"width": 1024, "height": 1536}, "1024x1536"),
        # Rounded to a multiple of 64: 1000/64 = 15.6 -> 1024, 700/64 = 10.9 -> 704.
        (LATENT, 1000, 700, {"width": 1024, "height": 704}, "1024x704"),
        # Half up: 288/64 = 4.5 -> 320; 800/64 = 12.5 -> 832.
        (LATENT, 288, 800, {"width": 320, "height": 832}, "320x832"),
        # 1430 rounds down to 1408, the largest multiple of 64 below the max (1440).
        (LATENT, 1430, 256, {"width": 1408, "height": 256}, "1408x256"),
        # The max itself rounds half up to 1472, past the max: the nearest inside is 1408.
        (LATENT, 1440, 512, {"width": 1408, "height": 512}, "1408x512"),
        # Past the max by up to half a multiple: still the nearest multiple inside.
        (LATENT, 1450, 512, {"width": 1408, "height": 512}, "1408x512"),
        (LATENT, 1472, 512, {"width": 1408, "height": 512}, "1408x512"),
        # Below the min by up to half a multiple: the smallest multiple inside.
        (LATENT, 224, 512, {"width": 256, "height": 512}, "256x512"),
        # A min that is no multiple: the first multiple above it (300 -> 320, not 256).
        (ODD_MIN, 290, 512, {"width": 320, "height": 512}, "320x512"),
        (Sizes(max=1024, multiple_of=8), 1028, 512, {"width": 1024, "height": 512}, "1024x512"),
    ],
)
def test_a_size_is_mapped_and_the_mapping_recorded(
    sizes: Sizes, width: int, height: int, params: dict[str, Any], mapped: str
) -> None:
    result = fitted(spec(sizes=sizes), want(width=width, height=height))
    assert result.params == params
    assert result.mapped == {"size": {"asked": f"{width}x{height}", "sent": mapped}}


@pytest.mark.parametrize(
    ("sizes", "params"),
    [
        (OPENAI, {"width": 1024, "height": 1024}),
        (LATENT, {"width": 1024, "height": 1024}),
        (None, {}),
    ],
)
def test_a_size_the_model_takes_as_asked_is_not_recorded_as_mapped(
    sizes: Sizes | None, params: dict[str, Any]
) -> None:
    result = fitted(spec(sizes=sizes), want(width=1024, height=1024))
    assert result.params == params
    assert result.mapped == {}


def test_a_model_without_size_constraints_takes_any_size() -> None:
    result = fitted(spec(), want(width=4000, height=123))
    assert result == Fit(params={}, mapped={})


def test_a_list_tie_in_ratio_goes_to_the_nearest_area() -> None:
    sizes = Sizes.model_validate({"list": ["512x512", "1024x1024", "2048x2048"]})
    assert fitted(spec(sizes=sizes), want(width=900, height=900)).params == {
        "width": 1024,
        "height": 1024,
    }
    assert fitted(spec(sizes=sizes), want(width=600, height=600)).params == {
        "width": 512,
        "height": 512,
    }


def test_a_job_the_model_can_do_fits() -> None:
    model = spec(
        tasks=frozenset({"text-to-image", "image-to-image", "inpaint"}),
        inputs=frozenset({"reference", "mask"}),
        max_reference_images=2,
        options={"steps": Option(type="int", min=1, max=50)},
    )
    job = want(
        references=2,
        has_mask=True,
        has_negative_prompt=True,
        seed_given=True,
        options={"steps": 20},
    )
    assert fitted(model, job) == Fit(params={}, mapped={})


def test_a_video_within_every_bound_fits() -> None:
    model = video(
        durations=[5.0, 10.0],
        fps=NumberRange(min=12, max=30),
        resolutions=frozenset({"480p", "720p"}),
    )
    job = want(media="video", duration_s=10, fps=24, resolution="720p")
    assert fitted(model, job) == Fit(params={}, mapped={})


def test_options_are_unchecked_when_the_model_declares_none() -> None:
    assert isinstance(fit(spec(), want(options={"anything": [1, "x"]})), Fit)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        (Option(type="int", min=1, max=4), 4),
        (Option(type="float", min=0, max=20), 7),
        (Option(type="float", min=0, max=20), 7.5),
        (Option(type="bool"), False),
        (Option(type="string", values=["euler", "ddim"]), "ddim"),
        (Option(type="int", values=[1, 2, 4]), 2),
    ],
)
def test_an_option_of_the_right_kind_passes(option: Option, value: Any) -> None:
    model = spec(options={"o": option})
    assert isinstance(fit(model, want(options={"o": value})), Fit)


# Refusals


IMAGE_TO_IMAGE = spec(
    tasks=frozenset({"text-to-image", "image-to-image"}),
    inputs=frozenset({"reference"}),
    max_reference_images=1,
)


@pytest.mark.parametrize(
    ("model", "job", "expected"),
    [
        (
            spec(),
            want(media="video"),
            Problem("media", "model 'm' makes images, not videos"),
        ),
        (
            spec(),
            want(references=1),
            Problem("reference_images", "model 'm' takes no reference images"),
        ),
        (
            video(),
            want(media="video", references=1),
            Problem("reference_images", "model 'm' takes no reference images"),
        ),
        (
            IMAGE_TO_IMAGE,
            want(references=3),
            Problem(
                "reference_images",
                "model 'm' takes at most 1 reference image, the job gives 3",
            ),
        ),
        (
            spec(max_reference_images=2, tasks=frozenset({"image-to-image"})),
            want(references=3),
            Problem(
                "reference_images",
                "model 'm' takes at most 2 reference images, the job gives 3",
            ),
        ),
        (
            spec(),
            want(has_mask=True),
            Problem("mask", "model 'm' takes no mask"),
        ),
        (
            IMAGE_TO_IMAGE,
            want(task="controlnet", references=1),
            Problem("task", "model 'm' does text-to-image, image-to-image, not controlnet"),
        ),
        (
            spec(),
            want(task="ip-adapter", references=1),
            Problem("reference_images", "model 'm' takes no reference images"),
        ),
        (
            IMAGE_TO_IMAGE,
            want(task="ip-adapter", references=1),
            Problem("task", "model 'm' does text-to-image, image-to-image, not ip-adapter"),
        ),
        (
            spec(negative_prompt=False),
            want(has_negative_prompt=True),
            Problem("negative_prompt", "model 'm' takes no negative prompt"),
        ),
        (
            spec(seed=False),
            want(seed_given=True),
            Problem("seed", "model 'm' takes no seed"),
        ),
        (
            spec(formats=frozenset({"png", "webp"})),
            want(format="jpeg"),
            Problem("format", "model 'm' makes png or webp, not jpeg"),
        ),
        (
            spec(sizes=Sizes(aspect_ratios=["1:1", "4:3", "3:4"])),
            want(width=1920, height=1080),
            Problem(
                "width",
                "1920x1080 is 16:9; model 'm' takes the aspect ratios 1:1, 4:3, 3:4; "
                "the nearest, 4:3, is 33.3% off",
            ),
        ),
        (
            spec(sizes=Sizes(aspect_ratios=["1:1", "2:1"])),
            want(width=1920, height=1080),
            Problem(
                "width",
                "1920x1080 is 16:9; model 'm' takes the aspect ratios 1:1, 2:1; "
                "the nearest, 2:1, is 12.5% off",
            ),
        ),
        (
            # 2:1 is 33% off OpenAI's 3:2: more than a listed size may be.
            spec(sizes=OPENAI),
            want(width=2048, height=1024),
            Problem(
                "width",
                "2048x1024 is 2:1; model 'm' takes the sizes 1024x1024, 1536x1024, "
                "1024x1536; the nearest, 1536x1024, is 33.3% off in aspect ratio",
            ),
        ),
        (
            spec(sizes=LATENT),
            want(width=1000, height=2000),
            Problem("height", "height 2000 must be between 256 and 1440 for model 'm'"),
        ),
        (
            # More than half a multiple (32) past the max: no multiple inside is near.
            spec(sizes=LATENT),
            want(width=1473, height=512),
            Problem("width", "width 1473 must be between 256 and 1440 for model 'm'"),
        ),
        (
            spec(sizes=LATENT),
            want(width=512, height=223),
            Problem("height", "height 223 must be between 256 and 1440 for model 'm'"),
        ),
        (
            spec(sizes=Sizes(min=256, max=1440)),
            want(width=100, height=512),
            Problem("width", "width 100 must be between 256 and 1440 for model 'm'"),
        ),
        (
            spec(sizes=Sizes(max=1024, multiple_of=8)),
            want(width=1029, height=512),
            Problem("width", "width 1029 must be at most 1024 for model 'm'"),
        ),
        (
            video(durations=[5.0, 10.0]),
            want(media="video", duration_s=7),
            Problem("duration_s", "model 'm' makes clips of 5 or 10 s, not 7 s"),
        ),
        (
            video(durations=NumberRange(min=2, max=10)),
            want(media="video", duration_s=12.5),
            Problem("duration_s", "model 'm' makes clips of between 2 and 10 s, not 12.5 s"),
        ),
        (
            video(durations=NumberRange(min=2, max=10)),
            want(media="video", duration_s=1),
            Problem("duration_s", "model 'm' makes clips of between 2 and 10 s, not 1 s"),
        ),
        (
            video(fps=[24, 30]),
            want(media="video", fps=60),
            Problem("fps", "model 'm' makes clips at 24 or 30 fps, not 60 fps"),
        ),
        (
            video(fps=NumberRange(max=30)),
            want(media="video", fps=60),
            Problem("fps", "model 'm' makes clips at at most 30 fps, not 60 fps"),
        ),
        (
            video(resolutions=frozenset({"720p", "480p"})),
            want(media="video", resolution="1080p"),
            Problem("resolution", "model 'm' makes 480p or 720p, not 1080p"),
        ),
    ],
)
def test_a_job_the_model_cannot_do_is_refused_naming_the_field(
    model: ModelSpec, job: Want, expected: Problem
) -> None:
    assert problems(model, job) == [expected]


OPTIONS = {
    "steps": Option(type="int", min=1, max=4),
    "guidance": Option(type="float", min=0, max=20),
    "hd": Option(type="bool"),
    "scheduler": Option(type="string", values=["euler", "ddim"]),
}


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        (
            {"cfg": 7},
            "options.cfg",
            "takes no option 'cfg'; it takes: guidance, hd, scheduler, steps",
        ),
        ({"steps": 8}, "options.steps", "takes 'steps' between 1 and 4; the job gives 8"),
        ({"steps": 0}, "options.steps", "takes 'steps' between 1 and 4; the job gives 0"),
        ({"steps": 2.5}, "options.steps", "takes 'steps' as an integer; the job gives 2.5"),
        ({"steps": "4"}, "options.steps", "takes 'steps' as an integer; the job gives '4'"),
        ({"steps": True}, "options.steps", "takes 'steps' as an integer; the job gives True"),
        (
            {"guidance": True},
            "options.guidance",
            "takes 'guidance' as a number; the job gives True",
        ),
        (
            {"guidance": -1.5},
            "options.guidance",
            "takes 'guidance' between 0 and 20; the job gives -1.5",
        ),
        (
            {"guidance": float("nan")},
            "options.guidance",
            "takes 'guidance' as a number; the job gives nan",
        ),
        ({"hd": 1}, "options.hd", "takes 'hd' as true or false; the job gives 1"),
        (
            {"scheduler": "dpm"},
            "options.scheduler",
            "takes 'scheduler' as one of 'euler', 'ddim'; the job gives 'dpm'",
        ),
        ({"scheduler": 3}, "options.scheduler", "takes 'scheduler' as a string; the job gives 3"),
    ],
)
def test_an_option_the_model_does_not_take_is_refused(
    options: dict[str, Any], field: str, message: str
) -> None:
    assert problems(spec(options=OPTIONS), want(options=options)) == [
        Problem(field, f"model 'm' {message}")
    ]


def test_a_model_that_declares_no_options_takes_none() -> None:
    assert problems(spec(options={}), want(options={"steps": 4})) == [
        Problem("options.steps", "model 'm' takes no option 'steps'; it takes no options")
    ]


def test_a_long_value_is_cut_short_in_the_message() -> None:
    [problem] = problems(spec(options=OPTIONS), want(options={"scheduler": "x" * 10_000}))
    assert len(problem.message) < 200


def test_every_problem_is_returned_once() -> None:
    model = spec(
        sizes=Sizes(aspect_ratios=["1:1"]),
        negative_prompt=False,
        seed=False,
        formats=frozenset({"png"}),
        options=OPTIONS,
    )
    job = want(
        references=2,
        has_mask=True,
        width=1920,
        height=1080,
        format="webp",
        has_negative_prompt=True,
        seed_given=True,
        options={"steps": 9, "cfg": 7},
    )
    found = problems(model, job)
    # The missing inpaint task and the missing mask input are one cause, reported once;
    # so are the missing reference task and the zero reference images.
    assert [p.field for p in found] == [
        "reference_images",
        "mask",
        "format",
        "negative_prompt",
        "seed",
        "width",
        "options.steps",
        "options.cfg",
    ]
    assert len(set(found)) == len(found)


def test_a_job_for_the_wrong_media_gets_one_problem_for_it() -> None:
    """Not also the task and format that follow from the media."""
    found = problems(spec(sizes=RATIOS), want(media="video", width=1920, height=1080))
    assert [p.field for p in found] == ["media"]


def test_a_video_model_checks_every_video_field() -> None:
    model = video(durations=[5.0], fps=[24], resolutions=frozenset({"720p"}))
    job = want(media="video", duration_s=6, fps=30, resolution="1080p")
    assert [p.field for p in problems(model, job)] == ["duration_s", "fps", "resolution"]


# Video defaults: what the job did not ask is mapped, what it asked is refused.


def defaults(**asked: Any) -> Want:
    """A video job that set neither duration nor fps: Darkroom's defaults (4 s, 24 fps)."""
    return want(
        media="video", duration_s=4.0, fps=24, duration_asked=False, fps_asked=False, **asked
    )


@pytest.mark.parametrize(
    ("model", "params"),
    [
        # A list: the nearest; of two as near, the larger (3 and 5 are both 1 s off 4).
        (video(durations=[5.0, 10.0]), {"duration_s": 5.0}),
        (video(durations=[3.0, 5.0]), {"duration_s": 5.0}),
        (video(durations=[2.0, 3.0]), {"duration_s": 3.0}),
        # A range: the bound the default lies past.
        (video(durations=NumberRange(min=5, max=10)), {"duration_s": 5.0}),
        (video(durations=NumberRange(max=3)), {"duration_s": 3.0}),
        (video(fps=[30, 60]), {"fps": 30}),
        (video(fps=[16, 32]), {"fps": 32}),
        # fps is a whole number: the nearest whole one in the range.
        (video(fps=NumberRange(min=25.5)), {"fps": 26}),
        (video(fps=NumberRange(min=8, max=20.5)), {"fps": 20}),
        (
            video(durations=[6.0], fps=NumberRange(min=30, max=60)),
            {"duration_s": 6.0, "fps": 30},
        ),
    ],
)
def test_a_default_duration_or_fps_the_model_cannot_make_is_mapped(
    model: ModelSpec, params: dict[str, Any]
) -> None:
    result = fitted(model, defaults())
    assert result.params == params
    assert result.mapped == {key: {"asked": None, "sent": value} for key, value in params.items()}


def test_a_default_the_model_can_make_is_left_alone() -> None:
    model = video(durations=[2.0, 4.0], fps=NumberRange(min=12, max=30))
    assert fitted(model, defaults()) == Fit(params={}, mapped={})


def test_a_duration_or_fps_the_job_asked_is_refused_not_mapped() -> None:
    model = video(durations=[5.0, 10.0], fps=[30])
    job = want(media="video", duration_s=4.0, fps=24)
    assert problems(model, job) == [
        Problem("duration_s", "model 'm' makes clips of 5 or 10 s, not 4 s"),
        Problem("fps", "model 'm' makes clips at 30 fps, not 24 fps"),
    ]


def test_a_default_fps_with_no_whole_number_in_range_is_refused_saying_so() -> None:
    model = video(fps=NumberRange(min=24.2, max=24.8))
    assert problems(model, defaults()) == [
        Problem("fps", "model 'm' makes clips at between 24.2 and 24.8 fps, not the default 24 fps")
    ]


def test_a_mapped_default_and_a_mapped_size_are_both_recorded() -> None:
    model = video(durations=[5.0], sizes=RATIOS)
    result = fitted(model, defaults(width=1920, height=1080))
    assert result.params == {"duration_s": 5.0, "aspect_ratio": "16:9"}
    assert set(result.mapped) == {"duration_s", "size"}


# A task that contradicts the job's own inputs


EVERYTHING = spec(
    tasks=frozenset(TASKS) - {"text-to-video", "image-to-video"},
    inputs=frozenset({"reference", "mask"}),
    max_reference_images=4,
)
EVERY_VIDEO = video(
    tasks=frozenset({"text-to-video", "image-to-video"}),
    inputs=frozenset({"reference"}),
    max_reference_images=1,
)


@pytest.mark.parametrize(
    ("model", "job", "message"),
    [
        (EVERYTHING, want(task="inpaint"), "inpaint needs a mask"),
        (EVERYTHING, want(task="inpaint", references=1), "inpaint needs a mask"),
        (EVERYTHING, want(task="image-to-image"), "image-to-image needs a reference image"),
        (EVERYTHING, want(task="ip-adapter"), "ip-adapter needs a reference image"),
        (EVERYTHING, want(task="controlnet"), "controlnet needs a reference image"),
        (
            EVERY_VIDEO,
            want(media="video", task="image-to-video"),
            "image-to-video needs a reference image",
        ),
        (
            EVERYTHING,
            want(task="text-to-image", references=1),
            "text-to-image takes no reference images; use image-to-image",
        ),
        (
            EVERY_VIDEO,
            want(media="video", task="text-to-video", references=1),
            "text-to-video takes no reference images; use image-to-video",
        ),
        (
            EVERYTHING,
            want(task="text-to-image", has_mask=True),
            "text-to-image takes no mask; use inpaint",
        ),
        # Whatever the model: a model without the task gets the same one problem.
        (spec(), want(task="inpaint"), "inpaint needs a mask"),
    ],
)
def test_a_task_that_contradicts_the_inputs_is_refused(
    model: ModelSpec, job: Want, message: str
) -> None:
    assert problems(model, job) == [Problem("task", message)]


@pytest.mark.parametrize(
    "job",
    [
        want(task="inpaint", has_mask=True, references=1),
        want(task="image-to-image", references=1),
        want(task="image-to-image", references=1, has_mask=True),
        want(task="controlnet", references=2),
        want(task="text-to-image"),
        # No task named: the inputs imply one, which cannot contradict them.
        want(references=1),
        want(has_mask=True, references=1),
    ],
)
def test_a_task_the_inputs_agree_with_fits(job: Want) -> None:
    assert isinstance(fit(EVERYTHING, job), Fit)
