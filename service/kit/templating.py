"""User-written Jinja2 templates (integration prompts, generic write-back requests),
rendered in Jinja2's sandbox with a bound on time and on size.

A template comes from an API caller, so it must not reach Python internals (the sandbox
refuses attribute access to underscored names and unsafe callables), must not loop for
ever (checked between output chunks and on every call it makes), and must not produce
megabytes of prompt.
"""

from __future__ import annotations

import re
import time
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined, meta, nodes
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

DEFAULT_MAX_CHARS = 20_000
DEFAULT_TIMEOUT_S = 0.5


class TemplateError(Exception):
    """The template cannot be rendered: a syntax error, an undefined variable, a sandbox
    violation, or a bound passed. The message is fit to show the user."""


class _TimeoutExceeded(Exception):
    pass


_LOOP_GUARD = "dr_bounded"
# The largest string or list a `*` may make, and the largest exponent of a `**`.
_MAX_PRODUCT = 100_000
_MAX_EXPONENT = 64


# The deadline of the render under way in this thread or task: compiled templates are
# cached and shared, so it cannot live on their environment.
_DEADLINE: ContextVar[float] = ContextVar("template_deadline", default=float("inf"))


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Checks a deadline on every call the template makes and on every loop iteration
    (each `for` iterates through a guard), so a template cannot spin without producing
    output; bounds `*` and `**`, which could build a gigabyte before any output."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        self.globals[_LOOP_GUARD] = self._bounded

    def _check_deadline(self) -> None:
        if time.monotonic() > _DEADLINE.get():
            raise _TimeoutExceeded

    def _bounded(self, iterable: Any) -> Any:
        for index, item in enumerate(iterable):
            if index % 64 == 0:
                self._check_deadline()
            yield item

    def call(self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self._check_deadline()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise TemplateError(f"exponent {right} is larger than {_MAX_EXPONENT}")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                    if len(sequence) * times > _MAX_PRODUCT:
                        raise TemplateError(
                            f"'*' would make more than {_MAX_PRODUCT} items or characters"
                        )
        return super().call_binop(context, operator, left, right)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_LOOP_GUARD, "load"), [loop.iter], [], None, None)
        return tree


# One for the process: nothing in it is per render (the deadline is a ContextVar).
_ENVIRONMENT = _BoundedEnvironment()


@lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    """Compiling costs far more than rendering (about a millisecond), and an integration
    renders the same few templates for every article. A syntax error is not cached."""
    return _ENVIRONMENT.from_string(source)


def check_syntax(source: str) -> None:
    """Raise TemplateError if `source` does not parse (used when a template is saved)."""
    try:
        _ENVIRONMENT.parse(source)
    except JinjaTemplateError as exc:
        raise TemplateError(_describe(exc)) from None


def render(
    source: str,
    variables: dict[str, Any],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str:
    deadline = time.monotonic() + timeout_s
    token = _DEADLINE.set(deadline)
    parts: list[str] = []
    size = 0
    try:
        template = _compiled(source)
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > max_chars:
                raise TemplateError(f"template output is longer than {max_chars} characters")
            if time.monotonic() > deadline:
                raise _TimeoutExceeded
            parts.append(chunk)
    except _TimeoutExceeded:
        raise TemplateError(f"template took longer than {timeout_s} s to render") from None
    except JinjaTemplateError as exc:
        raise TemplateError(_describe(exc)) from None
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}") from None
    finally:
        _DEADLINE.reset(token)
    return "".join(parts)


def _describe(exc: JinjaTemplateError) -> str:
    line = getattr(exc, "lineno", None)
    where = f" (line {line})" if line else ""
    return f"{type(exc).__name__}: {exc.message or exc}{where}"


# --- typed values (configuration that builds a JSON body) --------------------------------

_PLACEHOLDER_ONLY = re.compile(r"\A\{\{[-+]?(?P<expression>.*?)[-+]?\}\}\Z", re.DOTALL)


def single_expression(source: str) -> str | None:
    """The expression of a template that is exactly one `{{ ... }}` and nothing else
    (no text around it, no second placeholder, no block); None for any other template."""
    match = _PLACEHOLDER_ONLY.match(source)
    if match is None:
        return None
    try:
        tree = _ENVIRONMENT.parse(source)
    except JinjaTemplateError as exc:
        raise TemplateError(_describe(exc)) from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = tree.body[0].nodes
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    return match.group("expression")


def variables_used(source: str) -> set[str]:
    """The names a template reads from its variables (to refuse an unknown one when the
    template is configured, not when it is first rendered)."""
    try:
        tree = _ENVIRONMENT.parse(source)
    except JinjaTemplateError as exc:
        raise TemplateError(_describe(exc)) from None
    return meta.find_undeclared_variables(tree) - set(_ENVIRONMENT.globals)


@lru_cache(maxsize=512)
def _compiled_expression(expression: str) -> Any:
    return _ENVIRONMENT.compile_expression(expression, undefined_to_none=False)


def render_value(
    source: str,
    variables: dict[str, Any],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """Render a template that stands for one JSON value.

    The typing rule: a template that is exactly one placeholder keeps the type of what
    its expression gives (`{{ width }}` is the number 1024; `{{ width | string }}` is
    the string "1024", because the filter made a string); any other template (text
    around a placeholder, two placeholders, a block) renders to a string."""
    expression = single_expression(source)
    if expression is None:
        return render(source, variables, max_chars=max_chars, timeout_s=timeout_s)
    token = _DEADLINE.set(time.monotonic() + timeout_s)
    try:
        value = _compiled_expression(expression)(**variables)
    except _TimeoutExceeded:
        raise TemplateError(f"template took longer than {timeout_s} s to render") from None
    except JinjaTemplateError as exc:
        raise TemplateError(_describe(exc)) from None
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}") from None
    finally:
        _DEADLINE.reset(token)
    if isinstance(value, Undefined):
        raise TemplateError(f"'{expression.strip()}' is undefined")
    if isinstance(value, str) and len(value) > max_chars:
        raise TemplateError(f"template output is longer than {max_chars} characters")
    return value
