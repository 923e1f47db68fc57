"""The configuration of a declarative HTTP account (kind `http`): any JSON API described
by its requests and by where the answer sits, without code.

Everything that can be checked before the first job is checked when the configuration
is loaded, and an error names its place (`providers.thena.submit.body.width: ...`):
templates must parse and use only known variables, JSONPaths must parse, statuses must be
HTTP error statuses that mean one thing each, and an asynchronous API gives its id, poll
request and status mapping together.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from service.kit import jsonpath
from service.kit.templating import TemplateError, variables_used
from service.providers.account import AccountConfig
from service.providers.base import InputRole, MediaKind

# The job's input images, by the variable a submit template reads them from (a URL the
# provider may fetch, else a data: URI; null when the job has none).
INPUT_VARIABLES: dict[str, InputRole] = {"reference_image": "reference", "mask_image": "mask"}
# What a submit template may read: the job's fields, and `options` (the model-specific
# parameters the model allows, as a mapping: `{{ options.steps }}`).
SUBMIT_VARIABLES = frozenset(
    {
        *INPUT_VARIABLES,
        "prompt",
        "negative_prompt",
        "ref",
        "width",
        "height",
        "seed",
        "format",
        "media",
        "duration_s",
        "fps",
        "options",
    }
)
# A poll knows only what the submit stored: the provider's id, and the model's ref.
POLL_VARIABLES = frozenset({"id", "ref"})

RESULT_KEYS = ("image_url", "image_b64", "video_url")
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _check_jsonpath(value: str) -> str:
    jsonpath.parse(value)  # JsonPathError is a ValueError: pydantic reports it at the key
    return value


JsonPathText = Annotated[str, AfterValidator(_check_jsonpath)]


@lru_cache(maxsize=256)
def compiled_path(source: str) -> jsonpath.JsonPath:
    """A configured JSONPath, parsed once per process (it was checked at load)."""
    return jsonpath.parse(source)


class EnvValue(BaseModel):
    """A header value read from the environment when a request is made: `{env: NAME}`,
    optionally after a literal `prefix` (`{env: NAME, prefix: "Bearer "}`)."""

    model_config = ConfigDict(extra="forbid")

    env: Annotated[str, Field(pattern=_ENV_NAME)]
    prefix: str = ""


HeaderValue = str | EnvValue


def _template_errors(
    value: Any, where: tuple[str | int, ...], allowed: frozenset[str]
) -> list[InitErrorDetails]:
    """Every template in `value` (a string, or strings nested in lists and mappings) that
    does not parse or reads a variable outside `allowed`, each at its own place."""
    if isinstance(value, dict):
        return [
            error
            for key, item in value.items()
            for error in _template_errors(item, (*where, str(key)), allowed)
        ]
    if isinstance(value, list):
        return [
            error
            for index, item in enumerate(value)
            for error in _template_errors(item, (*where, index), allowed)
        ]
    if not isinstance(value, str):
        return []
    try:
        unknown = sorted(variables_used(value) - allowed)
    except TemplateError as exc:
        return [_error(where, value, "bad_template", f"template does not parse: {exc}")]
    if unknown:
        known = ", ".join(sorted(allowed))
        message = f"unknown variable {', '.join(map(repr, unknown))} (known: {known})"
        return [_error(where, value, "bad_template", message)]
    return []


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return [value] if isinstance(value, str) else []


def _error(where: tuple[str | int, ...], value: Any, code: str, message: str) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(code, message), loc=where, input=value)


def _raise_all(title: str, errors: list[InitErrorDetails]) -> None:
    """Pydantic nests these under the model's own place, so each keeps its full path."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)


class RequestSpec(BaseModel):
    """One request: its method, its path (relative to base_url; a template) and, for a
    JSON body, a template of it whose string values are templates (see the README's
    typing rule)."""

    model_config = ConfigDict(extra="forbid")
    variables: ClassVar[frozenset[str]] = SUBMIT_VARIABLES

    method: HttpMethod = "POST"
    path: Annotated[str, Field(min_length=1)]
    body: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _templates_check(self) -> RequestSpec:
        errors = _template_errors(self.path, ("path",), self.variables)
        if self.path.lstrip().startswith(("http:", "https:", "//")):
            errors.append(_error(("path",), self.path, "bad_path", "a path, not a URL"))
        if self.body is not None:
            errors += _template_errors(self.body, ("body",), self.variables)
        _raise_all(type(self).__name__, errors)
        return self


class SubmitSpec(RequestSpec):
    pass


class PollSpec(RequestSpec):
    variables: ClassVar[frozenset[str]] = POLL_VARIABLES

    method: HttpMethod = "GET"


class ResultSpec(BaseModel):
    """Where the output is in the final answer: exactly one of an image URL, base64 image
    data (a data: URI is accepted too) or a video URL. URLs are downloaded through the
    SSRF guard."""

    model_config = ConfigDict(extra="forbid")

    image_url: JsonPathText | None = None
    image_b64: JsonPathText | None = None
    video_url: JsonPathText | None = None

    @property
    def key(self) -> str:
        """The one key given (checked at load)."""
        return next(name for name in RESULT_KEYS if getattr(self, name))

    @property
    def path(self) -> str:
        return str(getattr(self, self.key))

    @property
    def media(self) -> MediaKind:
        return "video" if self.video_url else "image"

    @model_validator(mode="after")
    def _exactly_one(self) -> ResultSpec:
        given = [name for name in RESULT_KEYS if getattr(self, name)]
        if len(given) != 1:
            names = ", ".join(RESULT_KEYS)
            raise ValueError(f"give exactly one of {names} (got {given or 'none'})")
        return self


StatusValue = str | int | bool


class StatusSpec(BaseModel):
    """Where an asynchronous API's status is, and which values end the generation. Any
    other value means it is still going. `error` optionally points at the failure's
    message."""

    model_config = ConfigDict(extra="forbid")

    path: JsonPathText
    succeeded: Annotated[list[StatusValue], Field(min_length=1)]
    failed: list[StatusValue] = []
    error: JsonPathText | None = None

    @model_validator(mode="after")
    def _disjoint(self) -> StatusSpec:
        both = {str(v) for v in self.succeeded} & {str(v) for v in self.failed}
        if both:
            raise ValueError(f"{sorted(both)} both succeeded and failed")
        return self


ErrorStatus = Annotated[int, Field(ge=400, le=599)]


class ErrorsSpec(BaseModel):
    """Which HTTP statuses mean what. Unlisted statuses: 429 is rate-limited, 408/409/425
    and 5xx are retryable, other 4xx are permanent. `retry_after` points at a wait hint
    (seconds or an HTTP date) in a rate-limited answer's body; the Retry-After header is
    read too."""

    model_config = ConfigDict(extra="forbid")

    rate_limited: list[ErrorStatus] = [429]
    retryable: list[ErrorStatus] = []
    permanent: list[ErrorStatus] = []
    retry_after: JsonPathText | None = None

    @model_validator(mode="after")
    def _one_meaning(self) -> ErrorsSpec:
        seen: dict[int, str] = {}
        for name in ("rate_limited", "retryable", "permanent"):
            for status in getattr(self, name):
                if status in seen and seen[status] != name:
                    raise ValueError(f"status {status} is in both {seen[status]} and {name}")
                seen[status] = name
        return self


class HttpConfig(AccountConfig):
    """A JSON API from configuration alone. Synchronous when the submit's answer holds the
    output; asynchronous (`id`, `poll`, `status` all given) when it holds an id to poll."""

    kind: Literal["http"]
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    submit: SubmitSpec
    result: ResultSpec
    id: JsonPathText | None = None
    poll: PollSpec | None = None
    status: StatusSpec | None = None
    errors: ErrorsSpec = ErrorsSpec()

    @property
    def is_async(self) -> bool:
        return self.id is not None

    def missing_env(self) -> list[str]:
        """Besides `token_env`, the variables its headers read (a batch naming its models
        is refused while one is unset)."""
        names = [value.env for value in self.headers.values() if isinstance(value, EnvValue)]
        return [*super().missing_env(), *(name for name in names if not os.environ.get(name))]

    def input_roles(self) -> frozenset[InputRole]:
        """The input images the submit request sends: those its templates read."""
        used = set(variables_used(self.submit.path))
        used.update(name for text in _strings(self.submit.body) for name in variables_used(text))
        return frozenset(role for name, role in INPUT_VARIABLES.items() if name in used)

    @model_validator(mode="after")
    def _coherent(self) -> HttpConfig:
        errors: list[InitErrorDetails] = []
        url = httpx.URL(self.base_url) if self.base_url else None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            message = "an http(s) URL is required for a kind: http account"
            errors.append(_error(("base_url",), self.base_url, "bad_url", message))
        for name, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                errors.append(_error(("headers", name), name, "bad_header", "not a header name"))
            elif isinstance(value, str) and ("\r" in value or "\n" in value):
                errors.append(_error(("headers", name), "...", "bad_header", "a line break"))
        given = {key for key in ("id", "poll", "status") if getattr(self, key) is not None}
        if given and len(given) != 3:
            missing = ", ".join(sorted({"id", "poll", "status"} - given))
            message = f"an asynchronous API gives id, poll and status together; missing {missing}"
            errors.append(_error((sorted(given)[0],), None, "incomplete_async", message))
        _raise_all("HttpConfig", errors)
        return self
