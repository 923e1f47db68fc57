"""The configuration of a command account (kind `command`): a CLI on the worker's machine.

Only operators write it. It is checked when the configuration is loaded, each error at
its place (`providers.anycap.argv.4: ...`): placeholders must be known names, written
plainly (`{prompt}`, no format spec), never in the program itself; the environment is
passed through by variable name only.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from service.kit import jsonpath
from service.providers.account import AccountConfig
from service.providers.base import InputRole

# The job's input images, by placeholder: a file in the run's directory holding it.
INPUT_PLACEHOLDERS: dict[str, InputRole] = {"reference": "reference", "mask": "mask"}
PLACEHOLDERS = frozenset(
    {"prompt", "negative_prompt", "seed", "width", "height", "ref", "format", "output"}
    | set(INPUT_PLACEHOLDERS)
)
ErrorClass = Literal["rate_limited", "retryable", "permanent"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def placeholders(element: str) -> list[str]:
    """The placeholder names in one argv element (`{{` and `}}` are literal braces).
    ValueError, with the reason, for anything but plain known names."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(element))
    except ValueError as exc:
        raise ValueError(f"{element!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            known = ", ".join(f"{{{n}}}" for n in sorted(PLACEHOLDERS))
            raise ValueError(f"{element!r}: unknown placeholder {{{name}}} (known: {known})")
        if spec or conversion:
            raise ValueError(f"{element!r}: {{{name}}} takes no format spec or conversion")
        names.append(name)
    return names


def _check_jsonpath(value: str) -> str:
    jsonpath.parse(value)
    return value


JsonPathText = Annotated[str, AfterValidator(_check_jsonpath)]


class StdoutResult(BaseModel):
    """Where, in the command's JSON stdout, the output is: a file path (it must be inside
    the job's temporary directory) or a URL (fetched through the SSRF guard)."""

    model_config = ConfigDict(extra="forbid")

    image_path: JsonPathText | None = None
    image_url: JsonPathText | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StdoutResult:
        given = [name for name in ("image_path", "image_url") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of image_path, image_url (got {given or 'none'})")
        return self


class StderrRule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pattern: str
    class_: ErrorClass = Field(alias="class")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class CommandErrors(BaseModel):
    """How a failed run is classified: its exit code first, then the first stderr pattern
    that matches (a regex search); otherwise it is retryable."""

    model_config = ConfigDict(extra="forbid")

    exit_codes: dict[Annotated[int, Field(ge=1, le=255)], ErrorClass] = Field(default_factory=dict)
    stderr: list[StderrRule] = Field(default_factory=list)


class CommandConfig(AccountConfig):
    kind: Literal["command"]
    argv: Annotated[list[str], Field(min_length=1)]
    # `json`: stdout is a JSON document (a failure to parse it is retryable); `result`
    # then may say where the output is in it, instead of the `{output}` file.
    stdout: Literal["json"] | None = None
    result: StdoutResult | None = None
    errors: CommandErrors = Field(default_factory=CommandErrors)
    # Names of the worker's environment variables the command receives (besides PATH,
    # HOME and LANG); values are never written in the configuration.
    env: list[str] = Field(default_factory=list)

    def input_roles(self) -> frozenset[InputRole]:
        """The input images the command takes: those its argv has a placeholder for."""
        used = {name for element in self.argv for name in placeholders(element)}
        return frozenset(role for name, role in INPUT_PLACEHOLDERS.items() if name in used)

    @field_validator("argv")
    @classmethod
    def _argv_placeholders(cls, argv: list[str]) -> list[str]:
        if not argv[0].strip():
            raise ValueError("argv[0] is the program: it cannot be empty")
        if placeholders(argv[0]):
            raise ValueError("argv[0] is the program: it takes no placeholder")
        errors: list[InitErrorDetails] = []
        for index, element in enumerate(argv):
            try:
                if "\0" in element:
                    raise ValueError("a NUL byte cannot be in an argument")
                placeholders(element)
            except ValueError as exc:
                error = PydanticCustomError("bad_argument", str(exc))
                errors.append(InitErrorDetails(type=error, loc=(index,), input=element))
        if errors:  # each at its own index: providers.<name>.argv.<index>
            raise ValidationError.from_exception_data("argv", errors)
        return argv

    @field_validator("env")
    @classmethod
    def _env_names(cls, names: list[str]) -> list[str]:
        bad = [name for name in names if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"not environment variable names: {bad}")
        return names

    @model_validator(mode="after")
    def _output_somewhere(self) -> CommandConfig:
        if self.result is not None and self.stdout != "json":
            raise ValueError("result reads stdout as JSON: set stdout: json")
        writes_file = any("output" in placeholders(element) for element in self.argv)
        if self.result is None and not writes_file:
            raise ValueError("argv has no {output} and no result says where the output is")
        return self
