"""From an article's variables to one job's fields: the integration's template,
rendered in the sandbox (service.kit.templating), with the server's defaults for what
the template leaves out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.batches.schemas import MAX_PROMPT
from service.config import Settings
from service.kit.templating import TemplateError, render
from service.kit.text import is_blank

MAX_OUTPUT_NAME = 255


class RenderFailed(Exception):
    """A template could not make a job from this article. `field` names the template
    field ("template.prompt"); the message says why, fit to show the user."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RenderedJob:
    prompt: str
    negative_prompt: str | None
    output_name: str | None
    model: str
    width: int
    height: int
    format: str


def render_job(
    template: dict[str, Any], variables: dict[str, Any], settings: Settings
) -> RenderedJob:
    prompt = _render(template, "prompt", variables)
    if prompt is None or is_blank(prompt):
        raise RenderFailed("template.prompt", "rendered to an empty prompt")
    if len(prompt) > MAX_PROMPT:
        raise RenderFailed(
            "template.prompt", f"rendered to {len(prompt)} characters (at most {MAX_PROMPT})"
        )
    output_name = _render(template, "output_name", variables)
    if output_name is not None:
        # An empty name is named by the job's index; a long one is cut (storage keeps 120).
        output_name = None if is_blank(output_name) else output_name.strip()[:MAX_OUTPUT_NAME]
    return RenderedJob(
        prompt=prompt,
        negative_prompt=_render(template, "negative_prompt", variables),
        output_name=output_name,
        model=template.get("model") or settings.default_model,
        width=template.get("width") or settings.default_width,
        height=template.get("height") or settings.default_height,
        format=template.get("format") or settings.default_format,
    )


def _render(template: dict[str, Any], name: str, variables: dict[str, Any]) -> str | None:
    source = template.get(name)
    if source is None:
        return None
    try:
        text = render(source, variables)
    except TemplateError as exc:
        raise RenderFailed(f"template.{name}", str(exc)) from None
    problem = _unstorable(text)
    if problem:
        raise RenderFailed(f"template.{name}", problem)
    return text


def _unstorable(text: str) -> str | None:
    """A template's string literals may spell escapes ("\\x00") that no body could carry."""
    if "\x00" in text:
        return "rendered text contains NUL (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "rendered text contains a lone UTF-16 surrogate"
    return None
