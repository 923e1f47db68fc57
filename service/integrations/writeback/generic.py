"""Generic write-back: one HTTP request, written by the user as templates, for a CMS or a
catalogue Darkroom has no client for ("PATCH the product with its image URL").

The block (a contract): {"method", "url", "headers": {...}, "body": {...}}.
- `url`, every header value and every string in `body` (at any depth; keys are kept as
  written) are Jinja2 templates, rendered in the sandbox of service.kit.templating. A
  rendered value is always a string.
- A header value may instead be {"env": "NAME"}: the value of that environment variable,
  so a token never sits in the database. A missing variable is a permanent failure.
- The variables:
  - the article's own (title, excerpt, slug, url, tags, authors, id, language, status,
    raw), as the webhook was read;
  - `output`: {url, content_type, bytes, sha256, filename}, the job's image;
  - `ref`: what the kind kept to find the article again (e.g. the entry id);
  - `event_type`: the CMS's event name.
  (The job's own record is not available to a write-back; its output is.)
- 2xx: done. 401/403/404/410/422 and other 4xx: permanent, with the receiver's answer.
  408/409/425/429/5xx, timeouts and resets: retried (429/503 with their Retry-After).
  Redirects are not followed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.integrations.kinds.base import Article, ImageSource, WritebackError
from service.integrations.writeback import register
from service.integrations.writeback.http import checked, env_secret, own_config, send
from service.kit.templating import TemplateError, check_syntax, render

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Headers httpx sets from the request itself; a template must not contradict them.
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
MAX_BODY_DEPTH = 16


class EnvValue(BaseModel):
    """A header value read from the environment: {"env": "NAME"}."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(min_length=1, max_length=128)

    @field_validator("env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name")
        return value


class GenericWriteback(BaseModel):
    """The integration's "writeback" block for the generic kind (a contract)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["POST", "PUT", "PATCH"]
    url: str = Field(min_length=1, max_length=2048)
    headers: dict[str, str | EnvValue] = Field(default_factory=dict)
    body: dict[str, Any] | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _url_template(cls, value: str) -> str:
        _check_template(value, "url")
        return value

    @field_validator("headers")
    @classmethod
    def _header_templates(cls, value: dict[str, str | EnvValue]) -> dict[str, str | EnvValue]:
        for name, header in value.items():
            if not _HEADER_NAME.match(name) or name.lower() in _RESERVED:
                raise ValueError(f"headers.{name}: not a header a write-back may set")
            if isinstance(header, str):
                _check_template(header, f"headers.{name}")
        return value

    @model_validator(mode="after")
    def _body_templates(self) -> GenericWriteback:
        for path, text in _strings(self.body, "body", 0):
            _check_template(text, path)
        return self


def _check_template(source: str, where: str) -> None:
    try:
        check_syntax(source)
    except TemplateError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _strings(value: Any, path: str, depth: int) -> list[tuple[str, str]]:
    """Every string in a JSON value, with its dotted path."""
    if depth > MAX_BODY_DEPTH:
        raise ValueError(f"{path}: nested deeper than {MAX_BODY_DEPTH} levels")
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        items = [(f"{path}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    else:
        return []
    found: list[tuple[str, str]] = []
    for item_path, item in items:
        found.extend(_strings(item, item_path, depth + 1))
    return found


def template_variables(article: Article, image: ImageSource) -> dict[str, Any]:
    """What a generic write-back's templates see (documented in the module docstring)."""
    return {
        **article.variables,
        "output": {
            "url": image.url,
            "content_type": image.content_type,
            "bytes": image.size,
            "sha256": image.sha256,
            "filename": image.filename,
        },
        "ref": dict(article.ref),
        "event_type": article.event_type,
    }


def _render(source: str, variables: dict[str, Any], where: str) -> str:
    try:
        return render(source, variables)
    except TemplateError as exc:
        raise WritebackError(f"{where}: {exc}", permanent=True) from None


def _render_body(value: Any, variables: dict[str, Any], path: str) -> Any:
    if isinstance(value, str):
        return _render(value, variables, path)
    if isinstance(value, dict):
        return {key: _render_body(item, variables, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_render_body(item, variables, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


class GenericWritebackKind:
    name: ClassVar[str] = "generic"
    config_model: ClassVar[type[BaseModel]] = GenericWriteback

    async def write_back(
        self,
        http: httpx.AsyncClient,
        config: BaseModel,
        article: Article,
        image: ImageSource,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        config = own_config(config, GenericWriteback)
        variables = template_variables(article, image)
        url = _render(config.url, variables, "url").strip()
        if not re.match(r"^https?://[^/\s]+", url):
            raise WritebackError("url: the rendered URL is not an http(s) URL", permanent=True)
        headers: dict[str, str] = {}
        secrets: list[str] = []
        for name, value in config.headers.items():
            if isinstance(value, EnvValue):
                headers[name] = env_secret(env, value.env)
                secrets.append(headers[name])
            else:
                headers[name] = _render(value, variables, f"headers.{name}")
        body = None if config.body is None else _render_body(config.body, variables, "body")
        target = url.split("?", 1)[0]  # a query may hold a token: never shown
        action = f"{config.method} {target}"
        request = http.build_request(config.method, url, headers=headers, json=body)
        response = await send(http, request, action, secrets=secrets)
        checked(response, action, secrets=secrets)
        return {"method": config.method, "url": target, "status": response.status_code}


register(GenericWritebackKind())
